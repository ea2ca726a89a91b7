"""Even spreading of the ticks of one second inside that second (deterministic, never leaving it).

Whether a second is spread is decided by that second's own ticks (a run of one second of one
symbol in file order): when all of them sit on the whole second it is a 1 s-resolution second and
is spread; when any has a sub-second time it is left as it is. The decision needs nothing outside
the run, so it cannot depend on chunk sizes, on where a chunk boundary falls, or on how the input
was split into files (docs/replay.md).
"""

from __future__ import annotations

import polars as pl


def spread_within_second(ticks: pl.DataFrame) -> pl.DataFrame:
    """The n ticks of one symbol in one second (a run of the same second, file order) get +floor(i*1000/n) ms.

    A run holding any sub-second time keeps its times (and its file order).
    """
    if ticks.height == 0:
        return ticks
    second = pl.col("ts_ms") // 1000
    run = (second != second.shift(1)).fill_null(True).cum_sum()
    group = ["_run", "symbol"]
    whole = (pl.col("ts_ms") % 1000 == 0).all().over(group)
    spread = (pl.col("ts_ms") // 1000) * 1000 + (pl.int_range(pl.len()).over(group) * 1000) // pl.len().over(group)
    return (
        ticks.with_columns(_run=run)
        .with_columns(
            ts_ms=pl.when(whole).then(spread).otherwise(pl.col("ts_ms")),
            # The sort key of a run left alone is its running maximum, so the stable sort keeps its order.
            _key=pl.when(whole).then(spread).otherwise(pl.col("ts_ms").cum_max().over(group)),
        )
        # Several symbols in one file: order the second's ticks by their spread time (each symbol keeps its order).
        .sort(["_run", "_key"], maintain_order=True)
        .drop("_run", "_key")
    )


class SecondSpreader:
    """Spreads a chunked stream; the trailing second of a chunk waits for the next (it may go on there)."""

    def __init__(self) -> None:
        self._carry: pl.DataFrame | None = None

    def push(self, ticks: pl.DataFrame) -> pl.DataFrame:
        """Spread what is complete; keep the last second's ticks back."""
        if self._carry is not None and self._carry.height:
            ticks = pl.concat([self._carry, ticks])
        if ticks.height == 0:
            self._carry = ticks
            return ticks
        seconds = ticks["ts_ms"] // 1000
        changes = (seconds != seconds.shift(1)).fill_null(True)
        tail_start = int(changes.arg_true()[-1])
        self._carry = ticks.slice(tail_start)
        return spread_within_second(ticks.slice(0, tail_start))

    def flush(self) -> pl.DataFrame:
        """The held-back last second, spread (end of input)."""
        carry, self._carry = self._carry, None
        return spread_within_second(carry) if carry is not None else pl.DataFrame()
