"""Independent reference computations for the replay tests (plain Python: csv + zoneinfo, no polars).

No tests here; the other test_replay*/test_binning* modules import these helpers.
"""

from __future__ import annotations

import contextlib
import csv
import json
import socket
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

NEW_YORK = ZoneInfo("America/New_York")
SAMPLE_TICKS = 20_000
SAMPLE_VOLUME = 3_582_490
# Bin fields that depend only on the data, not on when the replay ran.
DATA_FIELDS = (
    "bin_id", "symbol", "start_ts_ms", "end_ts_ms", "window_ms", "open", "high", "low", "close",
    "volume", "notional", "trade_count", "max_lateness_ms", "source_event_ts_ms", "source",
)


@dataclass(frozen=True)
class RefTick:
    symbol: str
    ts_ms: int
    price: float
    size: int


def eastern_ms(date: str, time: str) -> int:
    """Kibot MM/DD/YYYY HH:MM:SS in New York -> UTC epoch ms, with zoneinfo."""
    naive = datetime.strptime(f"{date} {time}", "%m/%d/%Y %H:%M:%S")
    return int(naive.replace(tzinfo=NEW_YORK).timestamp() * 1000)


def kibot_ticks(path: Path, symbol: str) -> list[RefTick]:
    """Every row of a clean Kibot file, in file order."""
    with path.open(newline="") as handle:
        return [
            RefTick(symbol, eastern_ms(row[0], row[1]), float(row[2]), int(row[5]))
            for row in csv.reader(handle)
            if row
        ]


def spread(ticks: list[RefTick]) -> list[RefTick]:
    """The i-th of n ticks of a (symbol, second) run gets floor(i * 1000 / n) ms."""
    out: list[RefTick] = []
    i = 0
    while i < len(ticks):
        j = i
        same = (ticks[i].ts_ms // 1000, ticks[i].symbol)
        while j < len(ticks) and (ticks[j].ts_ms // 1000, ticks[j].symbol) == same:
            j += 1
        n = j - i
        for k in range(n):
            t = ticks[i + k]
            out.append(RefTick(t.symbol, t.ts_ms + (k * 1000) // n, t.price, t.size))
        i = j
    return out


def reference_bins(ticks: Iterable[RefTick], bin_ms: int = 10) -> dict[str, dict[str, float | int]]:
    """bin_id -> OHLC, volume, notional, trade_count of in-order ticks (nothing late)."""
    bins: dict[str, dict[str, float | int]] = {}
    for t in ticks:
        start = (t.ts_ms // bin_ms) * bin_ms
        key = f"{t.symbol}-{start:013d}"
        b = bins.get(key)
        if b is None:
            bins[key] = {"open": t.price, "high": t.price, "low": t.price, "close": t.price,
                         "volume": t.size, "notional": t.price * t.size, "trade_count": 1, "start_ts_ms": start}
        else:
            b["high"] = max(b["high"], t.price)
            b["low"] = min(b["low"], t.price)
            b["close"] = t.price
            b["volume"] += t.size
            b["notional"] += t.price * t.size
            b["trade_count"] += 1
    return bins


def read_jsonl(path: Path) -> list[dict]:
    """JSON lines of a file."""
    return [json.loads(line) for line in path.read_bytes().splitlines() if line.strip()]


def data_fields(bins: Iterable[dict]) -> list[tuple]:
    """The speed-independent fields of bins, in their order."""
    return [tuple(b[f] for f in DATA_FIELDS) for b in bins]


def assert_bins_match_reference(bins: list[dict], reference: dict[str, dict[str, float | int]]) -> None:
    """Every bin equals the reference bin of the same id (notional to float rounding), and no bin is missing."""
    assert len(bins) == len(reference)
    for b in bins:
        ref = reference[b["bin_id"]]
        assert (b["open"], b["high"], b["low"], b["close"]) == (ref["open"], ref["high"], ref["low"], ref["close"])
        assert (b["volume"], b["trade_count"]) == (ref["volume"], ref["trade_count"])
        assert b["start_ts_ms"] == ref["start_ts_ms"]
        assert b["end_ts_ms"] == b["start_ts_ms"] + b["window_ms"]
        assert abs(b["notional"] - ref["notional"]) <= 1e-9 * max(1.0, abs(ref["notional"]))


def write_lines(path: Path, lines: list[str], newline: str = "\n", bom: bool = False) -> Path:
    """A text file with these lines."""
    data = newline.join(lines) + newline
    path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + data.encode())
    return path


@contextlib.contextmanager
def served(app: Any) -> Iterator[str]:
    """A real uvicorn server for `app` on a free loopback port, in a thread; yields its base URL, then stops it."""
    import uvicorn

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(10)
