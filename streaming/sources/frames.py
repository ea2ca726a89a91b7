"""The tick and reject frames every reader yields, and the vectorised row checks they share."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import polars as pl

from streaming.wallclock import RepeatedHour, second_pass_flags

TICK_SCHEMA: dict[str, pl.DataType] = {
    "symbol": pl.String(),
    "ts_ms": pl.Int64(),
    "price": pl.Float64(),
    "bid": pl.Float64(),
    "ask": pl.Float64(),
    "size": pl.Int64(),
    "file": pl.String(),
    "line": pl.Int64(),
    "src": pl.Int32(),
    "api_send_ts_ms": pl.Int64(),
}
PUBLIC_COLUMNS = ["symbol", "ts_ms", "price", "bid", "ask", "size", "file", "line"]

REJECT_SCHEMA: dict[str, pl.DataType] = {
    "file": pl.String(),
    "line": pl.Int64(),
    "src": pl.Int32(),
    "reason": pl.String(),
    "detail": pl.String(),
    "payload": pl.String(),
}
# Rows that are not ticks but not errors either: counted as skipped, never dead-lettered.
SKIP_REASONS = frozenset({"blank", "header"})
# Candidate column of readers of local wall-clock times: ms to add to `ts_ms` (read as the first
# pass) when the tick is on the second pass of a repeated hour; 0 or null elsewhere.
REPEAT_SHIFT = "repeat_shift_ms"


def empty_ticks() -> pl.DataFrame:
    """A tick frame without rows."""
    return pl.DataFrame(schema=TICK_SCHEMA)


def empty_rejects() -> pl.DataFrame:
    """A reject frame without rows."""
    return pl.DataFrame(schema=REJECT_SCHEMA)


@dataclass(frozen=True)
class TickChunk:
    """Good ticks (file order or merged event-time order) plus the rows rejected or skipped on the way."""

    ticks: pl.DataFrame
    rejects: pl.DataFrame = field(default_factory=empty_rejects)


class WallClock:
    """One stream's side of the repeated-hour rule (streaming/wallclock.py), carried across its chunks."""

    def __init__(self) -> None:
        self.state = RepeatedHour()

    def resolve(self, ts_ms: pl.Series, shift_ms: pl.Series) -> pl.Series:
        """`ts_ms` (good ticks in stream order, repeated hours read as the first pass) with the second pass moved on."""
        ambiguous = (shift_ms.fill_null(0) > 0).to_numpy()
        if not ambiguous.any():
            return ts_ms
        ts = ts_ms.to_numpy().copy()
        flags, self.state = second_pass_flags(ts[ambiguous].tolist(), self.state)
        at = np.flatnonzero(ambiguous)[np.asarray(flags, dtype=bool)]
        ts[at] += shift_ms.to_numpy()[at]
        return pl.Series(ts_ms.name, ts, dtype=pl.Int64)


def checked(candidates: pl.DataFrame, file: str, src: int, clock: WallClock | None = None) -> TickChunk:
    """Split parsed rows into good ticks and rejects with reason and detail.

    `candidates` has line, payload, symbol, ts_ms, price, bid, ask, size (nulls where a cast
    failed) and `reason`/`detail` already set for rows a reader refused outright; readers of local
    wall-clock times add `REPEAT_SHIFT`, resolved by `clock` (the stream's, so its state goes on
    from chunk to chunk; a fresh one when None). Only good ticks move the clock's state.
    """
    price_ok = pl.col("price").is_finite() & (pl.col("price") > 0)
    quotes_ok = (pl.col("bid").is_null() | (pl.col("bid").is_finite() & (pl.col("bid") >= 0))) & (
        pl.col("ask").is_null() | (pl.col("ask").is_finite() & (pl.col("ask") >= 0))
    )
    judged = candidates.with_columns(
        reason=pl.when(pl.col("reason").is_not_null())
        .then(pl.col("reason"))
        .when(pl.col("price").is_null() | pl.col("size").is_null())
        .then(pl.lit("malformed"))
        .when(pl.col("ts_ms").is_null())
        .then(pl.lit("bad_time"))
        .when(~price_ok)
        .then(pl.lit("bad_price"))
        .when(~quotes_ok)
        .then(pl.lit("bad_price"))
        .when(pl.col("size") < 0)
        .then(pl.lit("bad_size"))
        .when(pl.col("symbol").is_null() | (pl.col("symbol") == ""))
        .then(pl.lit("bad_symbol")),
        detail=pl.when(pl.col("detail").is_not_null())
        .then(pl.col("detail"))
        .when(pl.col("price").is_null())
        .then(pl.lit("price is not a number"))
        .when(pl.col("size").is_null())
        .then(pl.lit("size is not an integer"))
        .when(pl.col("ts_ms").is_null())
        .then(pl.lit("date/time unparsable or not a valid America/New_York time"))
        .when(~price_ok)
        .then(pl.lit("price must be a finite number > 0"))
        .when(~quotes_ok)
        .then(pl.lit("bid/ask must be finite numbers >= 0"))
        .when(pl.col("size") < 0)
        .then(pl.lit("size must be >= 0"))
        .otherwise(pl.lit("no symbol (give --symbol or a symbol column)")),
    )
    good = judged.filter(pl.col("reason").is_null())
    bad = judged.filter(pl.col("reason").is_not_null())
    if REPEAT_SHIFT in good.columns:
        good = good.with_columns((clock or WallClock()).resolve(good["ts_ms"].cast(pl.Int64), good[REPEAT_SHIFT]))
    ticks = good.select(
        pl.col("symbol").cast(pl.String),
        pl.col("ts_ms").cast(pl.Int64),
        pl.col("price").cast(pl.Float64),
        pl.col("bid").cast(pl.Float64),
        pl.col("ask").cast(pl.Float64),
        pl.col("size").cast(pl.Int64),
        pl.lit(file, pl.String).alias("file"),
        pl.col("line").cast(pl.Int64),
        pl.lit(src, pl.Int32).alias("src"),
        pl.lit(None, pl.Int64).alias("api_send_ts_ms"),
    )
    rejects = bad.select(
        pl.lit(file, pl.String).alias("file"),
        pl.col("line").cast(pl.Int64),
        pl.lit(src, pl.Int32).alias("src"),
        pl.col("reason").cast(pl.String),
        pl.col("detail").cast(pl.String),
        pl.col("payload").cast(pl.String),
    )
    return TickChunk(ticks, rejects)


def skipped_rows(lines: pl.Series, payloads: pl.Series, reason: str, file: str, src: int) -> pl.DataFrame:
    """Reject-frame rows for skipped lines (blank, header)."""
    return pl.DataFrame(
        {
            "file": pl.Series([file] * len(lines), dtype=pl.String),
            "line": lines.cast(pl.Int64),
            "src": pl.Series([src] * len(lines), dtype=pl.Int32),
            "reason": pl.Series([reason] * len(lines), dtype=pl.String),
            "detail": pl.Series([reason] * len(lines), dtype=pl.String),
            "payload": payloads.cast(pl.String),
        }
    )
