"""Issue 15, acceptance: the whole offline chain on hostile files against a plain-Python recomputation.

A hypothesis property: a Kibot file of good ticks (zero sizes among them, seconds out of order
within the allowed lateness) with hostile rows mixed in (malformed rows, negative sizes, blank
lines, headers, bad times, the spring DST gap), replayed with any `chunk_rows`, with or without
spreading, then aggregated, gives exactly the bins and bars recomputed here in plain Python
(zoneinfo for the times, dicts for the group-bys), every input row is accounted for as kept,
dead-lettered with its reason and line, or skipped (kept + dlq + skipped == rows), and the
validator passes the result.
"""

from __future__ import annotations

import json
import math
import random
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from tempfile import TemporaryDirectory
from zoneinfo import ZoneInfo

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streaming.aggregate.offline import aggregate_file
from streaming.aggregate.processor import window_config
from streaming.kernel.settings import load_settings
from streaming.replay.offline import replay_to_jsonl
from streaming.validate.run import validate_files

NEW_YORK = ZoneInfo("America/New_York")
SESSION_START_S = 9 * 3600 + 30 * 60
BIN_MS, WINDOW_MS = 10, 1_000
REL_TOL = 1e-9

# Hostile rows: (kind, text from a second, expected outcome). Outcome "skip" is counted as skipped.
HOSTILE = {
    "blank": (lambda s: "", "skip"),
    "spaces": (lambda s: "   \t", "skip"),
    "header": (lambda s: "Date,Time,Price,Bid,Ask,Size", "skip"),
    "few_fields": (lambda s: f"07/01/2024,{_clock(s)},10.00", "malformed"),
    "many_fields": (lambda s: f"07/01/2024,{_clock(s)},10.00,9.99,10.01,100,7", "malformed"),
    "price_text": (lambda s: f"07/01/2024,{_clock(s)},ten,9.99,10.01,100", "malformed"),
    "size_decimal": (lambda s: f"07/01/2024,{_clock(s)},10.00,9.99,10.01,12.5", "malformed"),
    "garbage": (lambda s: "hello world", "malformed"),
    "negative_size": (lambda s: f"07/01/2024,{_clock(s)},10.00,9.99,10.01,-{s % 50 + 1}", "bad_size"),
    "zero_price": (lambda s: f"07/01/2024,{_clock(s)},0,0,0,100", "bad_price"),
    "bad_hour": (lambda s: "07/01/2024,25:61:00,10.00,9.99,10.01,100", "bad_time"),
    "bad_date": (lambda s: f"02/30/2024,{_clock(s)},10.00,9.99,10.01,100", "bad_time"),
    "dst_gap": (lambda s: "03/10/2024,02:30:00,10.00,9.99,10.01,100", "bad_time"),
}


def _clock(second: int) -> str:
    hh, rest = divmod(SESSION_START_S + second, 3600)
    mm, ss = divmod(rest, 60)
    return f"{hh:02d}:{mm:02d}:{ss:02d}"


def _epoch_ms(second: int) -> int:
    hh, rest = divmod(SESSION_START_S + second, 3600)
    mm, ss = divmod(rest, 60)
    return int(datetime(2024, 7, 1, hh, mm, ss, tzinfo=NEW_YORK).timestamp() * 1000)


@dataclass(frozen=True)
class Tick:
    line: int
    second: int
    cents: int
    size: int


@dataclass(frozen=True, repr=False)
class Scenario:
    """A generated file (its lines) with the ticks the replay must keep and the rows it must dead-letter."""

    lines: list[str]
    ticks: list[Tick]
    expected_dlq: dict[int, str]
    skipped: int
    max_late_ms: int
    chunk_rows: int
    spread: bool

    def __repr__(self) -> str:
        # The whole file would be a 100 kB repr; a falsifying example is reproduced from these.
        return (f"Scenario(rows={len(self.lines)}, ticks={len(self.ticks)}, dlq={self.expected_dlq}, "
                f"skipped={self.skipped}, max_late_ms={self.max_late_ms}, chunk_rows={self.chunk_rows}, "
                f"spread={self.spread})")


@st.composite
def scenarios(draw: st.DrawFn) -> Scenario:
    """A hostile Kibot file and the settings to replay it with, plus what the replay must make of it."""
    good = draw(st.integers(1_050, 2_400))  # above the smallest chunk: chunk boundaries fall inside
    rng = random.Random(draw(st.integers(0, 2**32 - 1)))
    max_back_s = draw(st.integers(0, 2))
    zero_share = draw(st.sampled_from([0.0, 0.05, 0.3]))
    spread = draw(st.booleans())
    # Within the allowed lateness: a tick at most max_back_s seconds behind the newest one is never late
    # (its bin ends after newest second + 999 ms - lateness); in-order input needs none.
    max_late_ms = 0 if max_back_s == 0 else max_back_s * 1000 + 1000 + draw(st.integers(0, 500))
    hostile = draw(st.lists(st.tuples(st.sampled_from(sorted(HOSTILE)), st.integers(1, 10**9)), max_size=80))
    chunk_rows = draw(st.integers(1_000, 3_000))

    rows: list[tuple[str, Tick | None, str | None]] = []
    newest = 0
    for _ in range(good):
        roll = rng.random()
        if max_back_s and roll < 0.15 and newest >= max_back_s:
            second = newest - rng.randint(1, max_back_s)
        elif roll < 0.6:
            second = newest
        else:
            second = newest + rng.randint(1, 3)
        newest = max(newest, second)
        cents = rng.randint(1_000, 2_000)
        size = 0 if rng.random() < zero_share else rng.randint(1, 900)
        text = f"07/01/2024,{_clock(second)},{cents / 100:.2f},{(cents - 1) / 100:.2f},{(cents + 1) / 100:.2f},{size}"
        rows.append((text, Tick(0, second, cents, size), None))
    for kind, where in hostile:
        make, reason = HOSTILE[kind]
        # Never first: the first line tells the format, and a file starting with junk is refused as a whole.
        rows.insert(1 + where % len(rows), (make(where % 3000), None, reason))

    lines: list[str] = []
    ticks: list[Tick] = []
    expected_dlq: dict[int, str] = {}
    skipped = 0
    for number, (text, tick, outcome) in enumerate(rows, start=1):
        lines.append(text)
        if tick is not None:
            ticks.append(Tick(number, tick.second, tick.cents, tick.size))
        elif outcome == "skip":
            skipped += 1
        else:
            expected_dlq[number] = str(outcome)
    return Scenario(lines, ticks, expected_dlq, skipped, max_late_ms, chunk_rows, spread)


def event_times(ticks: list[Tick], spread: bool) -> list[int]:
    """Each tick's event time: its second, plus floor(i*1000/n) in a run of n ticks of that second when spread."""
    times: list[int] = []
    start = 0
    while start < len(ticks):
        end = start
        while end < len(ticks) and ticks[end].second == ticks[start].second:
            end += 1
        n = end - start
        for i in range(n):
            times.append(_epoch_ms(ticks[start].second) + (i * 1000 // n if spread else 0))
        start = end
    return times


def bins_of(ticks: list[Tick], times: list[int]) -> dict[int, dict[str, float | int]]:
    """OHLCV per 10 ms bin, open/close in file (arrival) order; notional exact in cents x shares."""
    out: dict[int, dict[str, float | int]] = {}
    for tick, event in zip(ticks, times, strict=True):
        start = event // BIN_MS * BIN_MS
        price = tick.cents / 100
        rec = out.get(start)
        if rec is None:
            rec = out[start] = {"open": price, "high": price, "low": price, "close": price, "volume": 0,
                                "cents": 0, "trade_count": 0}
        rec["high"] = max(rec["high"], price)
        rec["low"] = min(rec["low"], price)
        rec["close"] = price
        rec["volume"] += tick.size
        rec["cents"] += tick.cents * tick.size
        rec["trade_count"] += 1
    for rec in out.values():
        rec["notional"] = rec["cents"] / 100
    return out


def bars_of(bins: dict[int, dict[str, float | int]]) -> dict[int, dict[str, float | int]]:
    """1 s bars over their bins in event-time order (the contract): open of the first bin, close of the last."""
    out: dict[int, dict[str, float | int]] = {}
    for start in sorted(bins):
        b = bins[start]
        window = start // WINDOW_MS * WINDOW_MS
        rec = out.get(window)
        if rec is None:
            rec = out[window] = {**b, "bin_count": 0}
        else:
            rec.update(high=max(rec["high"], b["high"]), low=min(rec["low"], b["low"]), close=b["close"],
                       volume=rec["volume"] + b["volume"], cents=rec["cents"] + b["cents"],
                       trade_count=rec["trade_count"] + b["trade_count"])
        rec["bin_count"] += 1
    for rec in out.values():
        rec["notional"] = rec["cents"] / 100
        rec["vwap"] = rec["cents"] / 100 / rec["volume"] if rec["volume"] else rec["close"]
    return out


def assert_same(actual: list[dict], expected: dict[int, dict[str, float | int]], fields: list[str], what: str) -> None:
    by_start = {rec["start_ts_ms"]: rec for rec in actual}
    assert len(by_start) == len(actual), f"{what}: a window twice"
    assert sorted(by_start) == sorted(expected), f"{what}: windows differ"
    for start, exp in expected.items():
        got = by_start[start]
        for name in fields:
            if isinstance(exp[name], int):
                assert got[name] == exp[name], (what, start, name, got[name], exp[name])
            else:
                assert math.isclose(got[name], exp[name], rel_tol=REL_TOL), (what, start, name, got[name], exp[name])


def jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_bytes().splitlines() if line.strip()]


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(case=scenarios())
def test_hostile_file_through_the_chain_matches_a_plain_recomputation(case: Scenario) -> None:
    with TemporaryDirectory() as folder:
        tmp = Path(folder)
        ticks_path = tmp / "HOST_tickbidask.txt"
        ticks_path.write_text("\n".join(case.lines) + "\n")
        stage = load_settings(replay={"chunk_rows": case.chunk_rows, "spread": case.spread,
                                      "max_late_ms": case.max_late_ms})
        bins_path, dlq_path, bars_path = tmp / "bins.jsonl", tmp / "dlq.jsonl", tmp / "bars.jsonl"
        summary = replay_to_jsonl([str(ticks_path)], bins_path, dlq_path, stage)
        result = aggregate_file(bins_path, bars_path, None, window_config(stage))

        # Every input row accounted for: kept, dead-lettered with its reason and line, or skipped.
        assert summary.ticks + summary.dlq + summary.skipped == len(case.lines)
        assert (summary.ticks, summary.skipped) == (len(case.ticks), case.skipped)
        dlq = {rec["position"]["line"]: rec["reason"] for rec in jsonl(dlq_path)}
        assert dlq == case.expected_dlq
        assert (result.late, result.poison) == (0, 0)

        times = event_times(case.ticks, case.spread)
        bin_fields = ["open", "high", "low", "close", "volume", "notional", "trade_count"]
        bins = bins_of(case.ticks, times)
        assert_same(jsonl(bins_path), bins, bin_fields, "bins")
        assert_same(jsonl(bars_path), bars_of(bins), [*bin_fields, "bin_count", "vwap"], "bars")

        report = validate_files(bins_path, bars_path, [ticks_path], spread=case.spread)
        assert report.ok, (report.problems, [c for c in report.comparisons if not c.ok])
        assert report.totals["ticks"] == len(case.ticks)
        assert report.totals["tick_rows_rejected"] == len(case.expected_dlq)
