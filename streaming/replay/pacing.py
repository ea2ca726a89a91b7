"""The replay schedule: event time -> wall-clock due time at a given speed (pure)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Schedule:
    """Tick with event time t is due at wall0_ms + (t - event0_ms) / speed; speed 0 means "now"."""

    speed: float
    wall0_ms: float
    event0_ms: int

    def due_ms(self, event_ms: np.ndarray) -> np.ndarray:
        """Wall-clock due times (ms) of event times."""
        if self.speed <= 0:
            return np.full(event_ms.shape, self.wall0_ms, dtype=np.float64)
        return self.wall0_ms + (event_ms - self.event0_ms) / self.speed

    def event_now(self, wall_ms: float) -> float:
        """The event time the schedule has reached at `wall_ms`."""
        if self.speed <= 0:
            return float("inf")
        return self.event0_ms + (wall_ms - self.wall0_ms) * self.speed


def live_shift_ms(first_event_ms: int, now_ms: int) -> int:
    """Shift that moves the first tick to now or just after (< 1 s), in whole seconds so 1 s windows keep their ticks.

    Rounding up, not down, lets a paced live replay start its schedule at the first tick's own
    (shifted) event time: event time then equals wall-clock time at speed 1, instead of trailing
    it by the sub-second part of the start time.
    """
    return -((first_event_ms - now_ms) // 1000) * 1000


def live_wall0_ms(now_ms: float, first_event_ms: int) -> float:
    """Where a live schedule starts: at the first tick's event time when that is still ahead (a fresh start)."""
    return max(now_ms, float(first_event_ms))


def loop_period_ms(first_event_ms: int, max_event_ms: int) -> int:
    """Shift between two rounds of a looped replay: whole seconds, at least one second past the last tick."""
    return ((max_event_ms - first_event_ms) // 1000 + 2) * 1000
