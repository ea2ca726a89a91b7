"""Wall-clock time: `now_ms`, and the repeated hour of the autumn DST change, decided by file order.

`now_ms` is the one reading of the wall clock in epoch milliseconds that the daemons and the
dashboard share. The rest of the module is pure logic (no I/O).

On the first Sunday of November, 01:00-01:59 happens twice in America/New_York: first in EDT
(UTC-4), then in EST (UTC-5). A wall-clock time in that hour alone cannot say which. The rule,
written once here and used by the replay's readers and by the validator (docs/replay.md):

* the first pass through the hour is EDT;
* once the wall clock steps back within the hour (a tick of the hour earlier than one before it
  in the same stream), that tick and every later tick of the hour is EST.

The state is carried from chunk to chunk, so the result does not depend on chunk sizes; each
file (each stream) starts with a fresh state. The spring gap (02:00-02:59 in March) has no such
rule: it does not exist and stays `bad_time`.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

DAY_MS = 86_400_000


def now_ms() -> int:
    """Wall clock in epoch milliseconds."""
    return time.time_ns() // 1_000_000


@dataclass(frozen=True)
class RepeatedHour:
    """Where a stream stands in a repeated hour: which one, its latest first-pass time, passed back yet."""

    day: int | None = None
    latest_ms: int = 0
    second_pass: bool = False


def second_pass_flags(first_pass_ms: Sequence[int], state: RepeatedHour) -> tuple[list[bool], RepeatedHour]:
    """For ticks in a repeated hour, in stream order: True where the tick is on the second (standard time) pass.

    `first_pass_ms` are the ticks' times read as the first pass (EDT), UTC epoch ms; within one
    repeated hour they order exactly as the wall clock does. Returns the flags and the state to
    hand to the next call for the same stream.
    """
    flags: list[bool] = []
    day, latest, second = state.day, state.latest_ms, state.second_pass
    for ts in first_pass_ms:
        # The day tells one November apart from the next (a file spanning years).
        if ts // DAY_MS != day:
            day, latest, second = ts // DAY_MS, ts, False
        elif ts < latest:
            second = True
        latest = max(latest, ts)
        flags.append(second)
    return flags, RepeatedHour(day, latest, second)
