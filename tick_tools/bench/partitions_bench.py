"""Fact partitions at history scale: what a lookup costs as the history grows, Dagster's and the calendar's.

For 1 and 5 years of NYSE regular sessions (the default) against the former around-the-clock
5-minute partitions: the partition count, Dagster's own lookups (`get_partition_keys`,
`has_partition_key`, `time_window_for_partition_key`, a range of 100 keys) and the calendar's
binary searches the platform's hot paths use (the sensor's tick, the asset's windows, backfill
ranges). No broker: pure CPU, in this process.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import date
from typing import Any

from dagster import PartitionKeyRange, TimeWindowPartitionsDefinition

from tick_tools.bench.harness import PYTHON, Bench, Figure

YEARS = (1, 5)
LAST_YEAR = 2025


def _timed(fn: Callable[[], object], repeat: int = 1) -> float:
    """Seconds per call (best of `repeat`)."""
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def _around_the_clock(start: str, end: str) -> TimeWindowPartitionsDefinition:
    """The former partitions: every 5 minutes in UTC, nights and weekends included."""
    from datetime import datetime

    return TimeWindowPartitionsDefinition(
        cron_schedule="*/5 * * * *", start=datetime.fromisoformat(start), end=datetime.fromisoformat(end),
        fmt="%Y-%m-%d-%H:%M", timezone="UTC", end_offset=0,
    )


def _measure(years: int) -> dict[str, Any]:
    from tick_platform.closure import windows_to_request
    from tick_platform.partitions import calendar_for, session_partitions

    start, end = f"{LAST_YEAR - years + 1}-01-01", f"{LAST_YEAR + 1}-01-01"
    t0 = time.perf_counter()
    cal = calendar_for(start, end)
    calendar_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    parts = session_partitions(cal, start, end)
    build_s = time.perf_counter() - t0
    keys: list[str] = []

    def all_keys() -> None:
        keys[:] = parts.get_partition_keys()

    keys_s = _timed(all_keys)
    late = keys[-500]
    span = PartitionKeyRange(keys[-600], keys[-500])
    old = _around_the_clock(start, end)
    old_keys = old.get_partition_keys()
    old_late = old_keys[-500]
    last_day_ms = cal.sessions[-1].open_ms
    first_ms, end_ms = cal.sessions[0].open_ms, cal.sessions[-1].close_ms
    return {
        "years": years,
        "sessions": len(cal.sessions),
        "partitions": len(keys),
        "partitions_around_the_clock": len(old_keys),
        "calendar_build_s": calendar_s,
        "dagster_definition_build_s": build_s,
        "dagster_get_partition_keys_s": keys_s,
        "dagster_has_partition_key_ms": 1000 * _timed(lambda: parts.has_partition_key(late), 5),
        "dagster_time_window_ms": 1000 * _timed(lambda: parts.time_window_for_partition_key(late), 5),
        "dagster_range_100_ms": 1000 * _timed(lambda: parts.get_partition_keys_in_range(span), 5),
        "around_the_clock_has_partition_key_ms": 1000 * _timed(lambda: old.has_partition_key(old_late), 5),
        "calendar_is_window_us": 1e6 * _timed(lambda: [cal.is_window(last_day_ms) for _ in range(1000)], 3) / 1000,
        "calendar_day_windows_us": 1e6 * _timed(lambda: cal.windows(last_day_ms, last_day_ms + 86_400_000), 5),
        # The sensor's tick after a whole history closed at once: the capped request of 100 windows.
        "sensor_request_ms": 1000 * _timed(lambda: windows_to_request(first_ms, end_ms, 100, cal), 3),
        "start": start,
        "end": end,
        "first_day": str(date.fromisoformat(start)),
    }


def run_partitions_section(bench: Bench) -> None:
    """Partition counts and lookup costs for 1 and 5 years (Dagster's lookups vs the calendar's)."""
    bench.command("partitions", [PYTHON, "-m", "tick_tools", "bench", "--only", "partitions"], "")
    rows = [_measure(y) for y in YEARS]
    bench.sections["partitions"] = {"rows": rows}
    one, five = rows[0], rows[-1]
    bench.add(Figure("partitions", "fact partitions per asset, a year of NYSE regular sessions", one["partitions"],
                     "", goal="<= 25,000", met=one["partitions"] <= 25_000,
                     note=f"{one['partitions_around_the_clock']:,} around the clock; {one['sessions']} sessions"))
    for r in rows:
        y = r["years"]
        bench.add(Figure("partitions", f"Dagster get_partition_keys, {y} year(s)", r["dagster_get_partition_keys_s"],
                         "s", note=f"{r['partitions']:,} keys"))
        bench.add(Figure("partitions", f"Dagster has_partition_key, {y} year(s)", r["dagster_has_partition_key_ms"],
                         "ms", ratio=r["dagster_has_partition_key_ms"] / max(r["around_the_clock_has_partition_key_ms"],
                                                                            1e-6),
                         ratio_to="around-the-clock partitions (Dagster's fixed-interval fast path)"))
        bench.add(Figure("partitions", f"Dagster time_window_for_partition_key, {y} year(s)",
                         r["dagster_time_window_ms"], "ms"))
        speedup = r["dagster_has_partition_key_ms"] * 1000 / max(r["calendar_is_window_us"], 1e-9)
        bench.add(Figure("partitions", f"calendar is_window (the sensor's and schedule's lookup), {y} year(s)",
                         r["calendar_is_window_us"], "us",
                         note=f"{speedup:,.0f}x faster than Dagster's has_partition_key"))
        bench.add(Figure("partitions", f"sensor request over the whole history (100 windows), {y} year(s)",
                         r["sensor_request_ms"], "ms"))
    growth = five["calendar_is_window_us"] / max(one["calendar_is_window_us"], 1e-9)
    bench.add(Figure("partitions", "calendar lookup, 5 years vs 1 year", growth, "x",
                     goal="flat (<= 2x)", met=growth <= 2.0, note="binary search over session opens"))
