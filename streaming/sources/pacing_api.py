"""How the mock API cuts a frame of ticks into sends (pure)."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np


def batch_bounds(
    ts: np.ndarray, wall0_ms: float, event0_ms: int, speed: float, max_lines: int
) -> Iterator[tuple[int, int]]:
    """[lo, hi) slices to send together: at speed 0 runs of `max_lines`; else ticks due at the same ms."""
    total = len(ts)
    if speed <= 0:
        for lo in range(0, total, max_lines):
            yield lo, min(total, lo + max_lines)
        return
    due = np.floor(wall0_ms + (ts - event0_ms) / speed)
    lo = 0
    while lo < total:
        hi = int(np.searchsorted(due, due[lo], side="right"))
        hi = min(hi, lo + max_lines)
        yield lo, hi
        lo = hi
