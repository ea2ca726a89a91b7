"""Data the demo replays: the synthetic session (no file given), and histories built from a one-day sample."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import TYPE_CHECKING

from streaming.kernel.errors import SourceError
from streaming.kernel.settings import PROJECT_ROOT
from streaming.sources.kibot import KIBOT_FIELDS, is_kibot_header
from streaming.sources.naming import symbol_from_filename

if TYPE_CHECKING:
    from tick_platform.calendar import Session

DEMO_DIR = PROJECT_ROOT / "data" / "samples" / "demo"
DEMO_SYMBOLS = 8
DEMO_TICKS_PER_SYMBOL = 25_000
DEMO_SEED = 20240308
DEMO_DATE = "2024-03-08"


def ensure_demo_data(out_dir: Path = DEMO_DIR) -> list[str]:
    """Generate the deterministic demo session once (Kibot files, one per symbol); return the paths."""
    files = sorted(out_dir.glob("*_tickbidask.txt"))
    if len(files) >= DEMO_SYMBOLS:
        return [str(f) for f in files]
    out_dir.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(
        [sys.executable, "-m", "streaming", "synth", "--symbols", str(DEMO_SYMBOLS),
         "--ticks-per-symbol", str(DEMO_TICKS_PER_SYMBOL), "--seed", str(DEMO_SEED),
         "--date", DEMO_DATE, "--out-dir", str(out_dir)],
        capture_output=True, text=True,
    )
    if proc.returncode != 0:
        raise SourceError(f"generating the demo data failed: {proc.stderr.strip()[-300:]}")
    files = sorted(out_dir.glob("*_tickbidask.txt"))
    if not files:
        raise SourceError(f"the synthetic generator wrote no files into {out_dir}")
    return [str(f) for f in files]


# The sample's day repeated as history: each repetition shifts every price, bid and ask by this
# many dollars per day, so a day mixed up with another shows in its OHLC and VWAP.
HISTORY_PRICE_STEP = Decimal("0.01")


@dataclass(frozen=True)
class HistoryFile:
    """A multi-day Kibot file written from a one-day sample."""

    path: Path
    days: list[date]
    ticks_per_day: int

    @property
    def ticks(self) -> int:
        """Tick lines in the file."""
        return self.ticks_per_day * len(self.days)


def trading_sessions(first: date, count: int, exchange: str = "XNYS") -> list[Session]:
    """The first `count` regular sessions of `exchange` on or after `first` (weekends and holidays skipped)."""
    from tick_platform.calendar import trading_calendar

    if count < 1:
        raise SourceError(f"a history needs at least one day, not {count}")
    span = 2 * count + 14  # about 252 sessions a year: twice the count in calendar days always holds them
    while True:
        sessions = trading_calendar(first, first + timedelta(days=span), "regular", exchange).sessions
        if len(sessions) >= count:
            return list(sessions[:count])
        span *= 2


def trading_days(first: date, count: int, exchange: str = "XNYS") -> list[date]:
    """The days of `trading_sessions(first, count, exchange)`."""
    return [s.day for s in trading_sessions(first, count, exchange)]


def _sample_rows(sample: Path) -> tuple[str, list[tuple[str, Decimal, Decimal, Decimal, str]]]:
    """The sample's one date and its rows (time, price, bid, ask, size text), blank lines and a header skipped."""
    dates: set[str] = set()
    rows = []
    with sample.open("r", encoding="utf-8-sig", newline=None) as handle:
        for number, line in enumerate(handle, start=1):
            text = line.strip()
            if not text or is_kibot_header(text):
                continue
            fields = [f.strip() for f in text.split(",")]
            if len(fields) != len(KIBOT_FIELDS):
                raise SourceError(f"{sample}:{number}: expected 6 fields (Date,Time,Price,Bid,Ask,Size): {text[:80]}")
            day, time, price, bid, ask, size = fields
            try:
                rows.append((time, Decimal(price), Decimal(bid), Decimal(ask), size))
            except InvalidOperation:
                raise SourceError(f"{sample}:{number}: price, bid or ask is not a number: {text[:80]}") from None
            dates.add(day)
    if len(dates) != 1:
        raise SourceError(f"{sample}: a history is built from a one-day sample, this one has {len(dates)} dates")
    return dates.pop(), rows


def write_history_from_sample(
    sample: Path, days: Sequence[date], out: Path, *, price_step: Decimal = HISTORY_PRICE_STEP
) -> HistoryFile:
    """Write a Kibot file holding the one-day `sample` once per day of `days`, in that order.

    Day i keeps the sample's times (New York wall clock) and sizes; its price, bid and ask are the
    sample's plus `i * price_step` (exact decimals), so the days differ. `days` is taken as given
    (see `trading_days` for sessions only). `out` must name the sample's symbol (`WDC_...`), since
    Kibot files carry it in their name; it is written next to itself and renamed, so a reader
    never sees half a file.
    """
    if not days:
        raise SourceError("a history needs at least one day")
    if list(days) != sorted(set(days)):
        raise SourceError("the days of a history must be distinct and in order")
    symbol = symbol_from_filename(sample)
    if symbol_from_filename(out) != symbol:
        raise SourceError(f"{out.name}: the history must name the sample's symbol {symbol} (e.g. {symbol}_history.txt)")
    _, rows = _sample_rows(sample)
    if not rows:
        raise SourceError(f"{sample}: no tick rows")
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(out.name + ".partial")
    with partial.open("w", encoding="ascii", newline="\n") as handle:
        for i, day in enumerate(days):
            stamp = day.strftime("%m/%d/%Y")
            shift = price_step * i
            handle.writelines(
                f"{stamp},{time},{price + shift},{bid + shift},{ask + shift},{size}\n"
                for time, price, bid, ask, size in rows
            )
    partial.replace(out)
    return HistoryFile(out, list(days), len(rows))
