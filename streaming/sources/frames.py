"""The tick and reject frames every reader yields, and the vectorised row checks they share."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import polars as pl

from streaming.kernel.bounds import (
    MAX_NOTIONAL,
    MAX_NOTIONAL_UNITS,
    MAX_PRICE,
    MAX_SIZE,
    PRICE_DECIMALS,
    PRICE_SCALE,
    SYMBOL_REGEX,
    SYMBOL_RULE,
)
from streaming.kernel.wallclock import RepeatedHour, second_pass_flags

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


def empty_rejects() -> pl.DataFrame:
    """A reject frame without rows."""
    return pl.DataFrame(schema=REJECT_SCHEMA)


@dataclass(frozen=True)
class TickChunk:
    """Good ticks (file order or merged event-time order) plus the rows rejected or skipped on the way."""

    ticks: pl.DataFrame
    rejects: pl.DataFrame = field(default_factory=empty_rejects)


class WallClock:
    """One stream's side of the repeated-hour rule (streaming/kernel/wallclock.py), carried across its chunks."""

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


def _row_rules() -> list[tuple[pl.Expr, str, str]]:
    """The per-row acceptance rules in the order they are decided: (violation, reason, detail).

    The first rule a row breaks names its reason. Bounds are the contract's (streaming/kernel/bounds.py),
    so a tick that passes can be summed as exact int64 micro-dollars without wrapping.
    """
    price_ok = pl.col("price").is_finite() & (pl.col("price") > 0)
    quotes_ok = (pl.col("bid").is_null() | (pl.col("bid").is_finite() & (pl.col("bid") >= 0))) & (
        pl.col("ask").is_null() | (pl.col("ask").is_finite() & (pl.col("ask") >= 0))
    )
    # price <= MAX_PRICE here, so its micro-dollars fit int64; non-strict, as every rule is
    # evaluated on every row (a 1e13 price would fail a strict cast before its rule decides).
    units = (pl.col("price") * PRICE_SCALE).round(0).cast(pl.Int64, strict=False)
    # units * size > MAX_NOTIONAL_UNITS without computing the product (which could wrap).
    notional_over = (pl.col("size") > 0) & (units > pl.lit(MAX_NOTIONAL_UNITS) // pl.col("size"))
    return [
        (pl.col("price").is_null(), "malformed", "price is not a number"),
        (pl.col("size").is_null(), "malformed", "size is not an integer"),
        (pl.col("ts_ms").is_null(), "bad_time", "date/time unparsable or not a valid America/New_York time"),
        (~price_ok, "bad_price", f"price must be a finite number > 0 (at {PRICE_DECIMALS} decimals)"),
        (~quotes_ok, "bad_price", "bid/ask must be finite numbers >= 0"),
        (pl.col("size") < 0, "bad_size", "size must be >= 0"),
        (pl.col("price") > MAX_PRICE, "out_of_range", f"price above MAX_PRICE ({MAX_PRICE:,.0f} dollars)"),
        (pl.col("size") > MAX_SIZE, "out_of_range", f"size above MAX_SIZE ({MAX_SIZE:,} shares)"),
        (notional_over, "out_of_range", f"price * size above MAX_NOTIONAL ({MAX_NOTIONAL:,.0f} dollars)"),
        (pl.col("symbol").is_null() | (pl.col("symbol") == ""), "bad_symbol",
         "no symbol (an empty symbol cell, or no symbol column, file-name symbol or --symbol)"),
        # A symbol outside the one pattern would need escaping in JSON, Kafka keys and ids: refused here.
        (~pl.col("symbol").str.contains(SYMBOL_REGEX), "bad_symbol", f"symbol is not {SYMBOL_RULE}"),
    ]


def rounded_prices(frame: pl.DataFrame) -> pl.DataFrame:
    """Price, bid and ask rounded half away from zero to the contract's 6 decimals (PRICE_SCALE).

    Done once where rows are read, so OHLC, notional and VWAP all use the same number.
    """
    return frame.with_columns(
        pl.col(name).cast(pl.Float64).round(PRICE_DECIMALS, mode="half_away_from_zero")
        for name in ("price", "bid", "ask")
    )


def checked(candidates: pl.DataFrame, file: str, src: int, clock: WallClock | None = None) -> TickChunk:
    """Split parsed rows into good ticks and rejects with reason and detail.

    `candidates` has line, payload, symbol, ts_ms, price, bid, ask, size (nulls where a cast
    failed) and `reason`/`detail` already set for rows a reader refused outright. Prices are
    rounded to 6 decimals first (`rounded_prices`); a row beyond the contract's bounds is
    rejected as `out_of_range` with the bound in its detail. Readers of local wall-clock times
    add `REPEAT_SHIFT`, resolved by `clock` (the stream's, so its state goes on from chunk to
    chunk; a fresh one when None). Only good ticks move the clock's state.
    """
    rules = _row_rules()
    # coalesce takes the first rule broken, after a reason the reader already set.
    reason = pl.coalesce(pl.col("reason"), *(pl.when(broken).then(pl.lit(why)) for broken, why, _ in rules))
    detail = pl.coalesce(pl.col("detail"), *(pl.when(broken).then(pl.lit(text)) for broken, _, text in rules))
    judged = rounded_prices(candidates).with_columns(reason=reason, detail=detail)
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
