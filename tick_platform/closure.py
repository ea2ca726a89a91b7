"""Which 5-minute windows are closed: the closure rule of docs/processing_strategy.md, pure.

A window `[t0, t1)` is closed when every partition of ticks.agg.1s either has a
revision-0 bar at or past `t1 + horizon`, or has been idle (no new offsets) for longer
than the aggregator's idle timeout. The sensor keeps, per partition, the high offset it
last saw and since when (wall clock), in its cursor.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from tick_platform.calendar import TradingCalendar
from tick_platform.partitions import WINDOW_MS, floor_window


@dataclass(frozen=True)
class SensorPartitionState:
    """What the sensor last saw of one partition."""

    high: int
    last_start_ms: int | None
    since_ms: int


@dataclass(frozen=True)
class SensorCursor:
    """The streaming sensor's cursor: partition states and the next window to request."""

    partitions: dict[int, SensorPartitionState] = field(default_factory=dict)
    next_window_ms: int | None = None
    raw_version: str | None = None  # ticks.raw end offsets and lag last observed (observe on change)

    def to_json(self) -> str:
        """Stable JSON for Dagster's cursor storage."""
        return json.dumps(
            {
                "partitions": {
                    str(p): {"high": s.high, "last_start_ms": s.last_start_ms, "since_ms": s.since_ms}
                    for p, s in sorted(self.partitions.items())
                },
                "next_window_ms": self.next_window_ms,
                "raw_version": self.raw_version,
            },
            sort_keys=True,
        )

    @classmethod
    def from_json(cls, text: str | None) -> SensorCursor:
        """Parse a cursor; None or empty gives the initial cursor."""
        if not text:
            return cls()
        raw = json.loads(text)
        parts = {
            int(p): SensorPartitionState(int(v["high"]), v.get("last_start_ms"), int(v["since_ms"]))
            for p, v in raw.get("partitions", {}).items()
        }
        return cls(parts, raw.get("next_window_ms"), raw.get("raw_version"))


def advance_states(
    previous: dict[int, SensorPartitionState], heads: dict[int, tuple[int, int | None]], now_ms: int
) -> dict[int, SensorPartitionState]:
    """New partition states from the current (high, last revision-0 start) per partition."""
    states: dict[int, SensorPartitionState] = {}
    for p, (high, last_start) in heads.items():
        prev = previous.get(p)
        if prev is not None and prev.high == high:
            states[p] = prev
        else:
            states[p] = SensorPartitionState(high, last_start, now_ms)
    return states


def offsets_went_back(previous: dict[int, SensorPartitionState], heads: dict[int, tuple[int, int | None]]) -> list[int]:
    """The partitions whose end offset is below the one the cursor remembers.

    Kafka never lowers a partition's end offset, so this means ticks.agg.1s was deleted and
    created again (a `topics reset`, `make demo`) under the stored cursor. Retention moves only
    the low offset, so it never shows up here.
    """
    return sorted(p for p, (high, _) in heads.items() if p in previous and high < previous[p].high)


def closed_until(
    states: dict[int, SensorPartitionState], now_ms: int, idle_timeout_ms: int, horizon_ms: int
) -> int | None:
    """The end (ms) up to which every window is closed, or None if no partition has a bar.

    Never past the window holding the newest bar: windows after the data are not closed, only empty.
    """
    with_bars = [s for s in states.values() if s.last_start_ms is not None]
    if not with_bars:
        return None
    newest = max(s.last_start_ms for s in with_bars if s.last_start_ms is not None)
    bound = floor_window(newest) + WINDOW_MS
    for s in with_bars:
        idle = now_ms - s.since_ms > idle_timeout_ms
        if not idle and s.last_start_ms is not None:
            bound = min(bound, s.last_start_ms - horizon_ms)
    return bound


def windows_to_request(
    next_window_ms: int, closed_end_ms: int | None, limit: int, calendar: TradingCalendar | None = None
) -> list[int]:
    """Starts of the closed windows from `next_window_ms` on, at most `limit` of them.

    With a `calendar`, only its session windows: a night or a weekend of empty windows never
    counts against `limit`. Without one, every 5-minute window.
    """
    if closed_end_ms is None:
        return []
    if calendar is not None:
        return calendar.windows(next_window_ms, closed_end_ms)[:limit]
    starts: list[int] = []
    t0 = next_window_ms
    while t0 + WINDOW_MS <= closed_end_ms and len(starts) < limit:
        starts.append(t0)
        t0 += WINDOW_MS
    return starts


def scheduled_window(scheduled_ms: int, lateness_ms: int) -> int:
    """Start of the newest window that has been closed for at least `lateness_ms` at `scheduled_ms`."""
    return floor_window(scheduled_ms - lateness_ms) - WINDOW_MS
