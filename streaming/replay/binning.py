"""10 ms bins per symbol with an event-time watermark (pure logic, no I/O).

watermark = max event time seen - allowed lateness. A bin [s, e) is emitted, final, once the
watermark >= e. A tick whose bin is already closed (its end <= the watermark including the tick
itself) is late. Both tests are vectorised over a whole chunk with a running maximum, so the
result does not depend on how the input is cut into chunks, nor on the replay speed.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import polars as pl

from streaming.kernel.bounds import MAX_NOTIONAL_UNITS, MAX_VOLUME, PRICE_SCALE

NO_TIME = -(2**62)
# Notional is summed exactly in integer micro-units (prices to 6 decimals): the float sum of a
# bin would depend on the order of additions, and so on how the input was cut into chunks.
NOTIONAL_SCALE = PRICE_SCALE
# Float sums are only a screen for the exact check of the bin sums: far below the bounds their
# rounding error cannot matter, so only bins above half a bound are summed exactly.
_SCREEN = 0.5
# The tick columns the binner keeps for open bins.
OPEN_COLUMNS: dict[str, pl.DataType] = {
    "symbol": pl.String(),
    "ts_ms": pl.Int64(),
    "price": pl.Float64(),
    "size": pl.Int64(),
    "src": pl.Int32(),
    "line": pl.Int64(),
    "seq": pl.Int64(),
    "orig_ts_ms": pl.Int64(),
    "api_send_ts_ms": pl.Int64(),
    "lateness_ms": pl.Int64(),
}
BIN_COLUMNS = [
    "bin_id", "symbol", "start_ts_ms", "end_ts_ms", "window_ms", "open", "high", "low", "close", "volume",
    "notional", "trade_count", "max_lateness_ms", "api_send_ts_ms", "source_event_ts_ms",
]


# No refused ticks: one shared empty frame (frames are never changed in place), built once
# because every push of a paced replay returns it.
_NO_OVER = pl.DataFrame(schema={**OPEN_COLUMNS, "over": pl.String()})


def _no_over() -> pl.DataFrame:
    return _NO_OVER


@dataclass(frozen=True)
class BinStep:
    """What one push produced: closed bins (sorted by end_ts_ms, symbol), late ticks, refused ticks.

    `over` holds the ticks that would push their bin's volume or notional beyond the contract's
    bounds, with the bound in its `over` column.
    """

    bins: pl.DataFrame
    late: pl.DataFrame
    over: pl.DataFrame = field(default_factory=_no_over)


def bin_start(ts: pl.Expr, bin_ms: int) -> pl.Expr:
    """Start of the bin holding `ts` (floor division, so also right for negative times)."""
    return (ts // bin_ms) * bin_ms


def aggregate_bins(ticks: pl.DataFrame, bin_ms: int) -> pl.DataFrame:
    """OHLCV bins of ticks in arrival order: open = first, close = last, notional summed left to right."""
    if ticks.height == 0:
        return pl.DataFrame(schema=_bin_schema())
    return (
        ticks.with_columns(start_ts_ms=bin_start(pl.col("ts_ms"), bin_ms))
        .group_by(["symbol", "start_ts_ms"], maintain_order=True)
        .agg(
            open=pl.col("price").first(),
            high=pl.col("price").max(),
            low=pl.col("price").min(),
            close=pl.col("price").last(),
            volume=pl.col("size").sum(),
            notional_units=(tick_units() * pl.col("size")).sum(),
            trade_count=pl.len().cast(pl.Int64),
            api_send_ts_ms=pl.col("api_send_ts_ms").min(),
            source_event_ts_ms=pl.col("orig_ts_ms").first(),
            max_lateness_ms=pl.col("lateness_ms").max(),
        )
        .with_columns(
            bin_id=pl.format("{}-{}", pl.col("symbol"), pl.col("start_ts_ms").cast(pl.String).str.zfill(13)),
            end_ts_ms=pl.col("start_ts_ms") + bin_ms,
            window_ms=pl.lit(bin_ms, pl.Int64),
            volume=pl.col("volume").cast(pl.Int64),
        )
        .pipe(_with_notional)
        .select(BIN_COLUMNS)
        .sort(["end_ts_ms", "symbol"])
    )


def tick_units() -> pl.Expr:
    """A tick's price in integer micro-dollars (exact in int64: price <= MAX_PRICE, checked at read)."""
    return (pl.col("price") * NOTIONAL_SCALE).round(0).cast(pl.Int64)


def within_bin_sums(open_ticks: pl.DataFrame, fresh: pl.DataFrame, bin_ms: int) -> tuple[pl.DataFrame, pl.DataFrame]:
    """Split `fresh` (arrival order) into ticks kept and ticks that would push their bin beyond the bounds.

    A bin's volume stays <= MAX_VOLUME and its notional <= MAX_NOTIONAL_UNITS micro-dollars, so
    the int64 sums of `aggregate_bins` never wrap. Decided tick by tick in arrival order on top
    of the bin's ticks still open, so the result does not depend on how the input is chunked;
    the refused frame has an `over` column naming the bound.
    """
    if fresh.height == 0:
        return fresh, _no_over()
    columns = fresh.columns
    # The sum over the whole chunk and the open ticks bounds every bin's: the common case needs no grouping.
    (fresh_u, fresh_v), (open_u, open_v) = _float_sums(fresh), _float_sums(open_ticks)
    if fresh_u + open_u <= _SCREEN * MAX_NOTIONAL_UNITS and fresh_v + open_v <= _SCREEN * MAX_VOLUME:
        return fresh, _no_over()
    units_f = tick_units().cast(pl.Float64) * pl.col("size").cast(pl.Float64)
    size_f = pl.col("size").cast(pl.Float64)
    start = bin_start(pl.col("ts_ms"), bin_ms).alias("start")
    keyed = fresh.with_columns(start, _u=units_f, _v=size_f, _row=pl.int_range(pl.len()))
    prior = (open_ticks.with_columns(start).group_by("symbol", "start").agg(_pu=units_f.sum(), _pv=size_f.sum())
        if open_ticks.height else pl.DataFrame(schema={"symbol": pl.String(), "start": pl.Int64(),
                                                         "_pu": pl.Float64(), "_pv": pl.Float64()}))
    totals = (keyed.group_by("symbol", "start").agg(pl.col("_u").sum(), pl.col("_v").sum())
              .join(prior, on=["symbol", "start"], how="left")
              .filter((pl.col("_u") + pl.col("_pu").fill_null(0) > _SCREEN * MAX_NOTIONAL_UNITS)
                      | (pl.col("_v") + pl.col("_pv").fill_null(0) > _SCREEN * MAX_VOLUME)))
    if totals.height == 0:
        return fresh, _no_over()
    # Exact, sequential check for the few bins near a bound (Python ints cannot wrap).
    sums: dict[tuple[str, int], list[int]] = {}
    if open_ticks.height:
        held = open_ticks.with_columns(start, _units=tick_units()).join(
            totals.select("symbol", "start"), on=["symbol", "start"])
        for sym, st, units, size in held.select("symbol", "start", "_units", "size").iter_rows():
            acc = sums.setdefault((sym, st), [0, 0])
            acc[0] += units * size
            acc[1] += size
    suspects = keyed.with_columns(_units=tick_units()).join(
        totals.select("symbol", "start"), on=["symbol", "start"]).sort("_row")
    refused: dict[int, str] = {}
    for row, sym, st, units, size in suspects.select("_row", "symbol", "start", "_units", "size").iter_rows():
        acc = sums.setdefault((sym, st), [0, 0])
        notional = acc[0] + units * size
        volume = acc[1] + size
        if volume > MAX_VOLUME:
            refused[row] = f"bin volume would exceed MAX_VOLUME ({MAX_VOLUME:,} shares)"
        elif notional > MAX_NOTIONAL_UNITS:
            refused[row] = f"bin notional would exceed MAX_NOTIONAL_UNITS ({MAX_NOTIONAL_UNITS:,} micro-dollars)"
        else:
            acc[0], acc[1] = notional, volume
    if not refused:
        return fresh, _no_over()
    mask = pl.Series([i in refused for i in range(fresh.height)])
    over = fresh.filter(mask).with_columns(over=pl.Series([refused[i] for i in sorted(refused)], dtype=pl.String))
    return fresh.filter(~mask).select(columns), over


def _float_sums(ticks: pl.DataFrame) -> tuple[float, float]:
    """Approximate (notional in micro-dollars, volume) of `ticks`: a screen, cheap on every push."""
    if ticks.height == 0:
        return 0.0, 0.0
    size = ticks["size"].to_numpy().astype(np.float64)
    return float(np.dot(ticks["price"].to_numpy() * NOTIONAL_SCALE, size)), float(size.sum())


def _with_notional(bins: pl.DataFrame) -> pl.DataFrame:
    # numpy divides exactly; polars may multiply by the reciprocal of a literal (off by one ulp).
    units = bins["notional_units"].to_numpy().astype(np.float64)
    return bins.with_columns(notional=pl.Series(units / NOTIONAL_SCALE, dtype=pl.Float64))


def _bin_schema() -> dict[str, pl.DataType]:
    return {
        "bin_id": pl.String(), "symbol": pl.String(), "start_ts_ms": pl.Int64(), "end_ts_ms": pl.Int64(),
        "window_ms": pl.Int64(), "open": pl.Float64(), "high": pl.Float64(), "low": pl.Float64(),
        "close": pl.Float64(), "volume": pl.Int64(), "notional": pl.Float64(), "trade_count": pl.Int64(),
        "max_lateness_ms": pl.Int64(), "api_send_ts_ms": pl.Int64(), "source_event_ts_ms": pl.Int64(),
    }


class Binner:
    """Open bins (kept as their ticks) and the watermark of one replay."""

    def __init__(self, bin_ms: int = 10, max_late_ms: int = 0) -> None:
        self.bin_ms = bin_ms
        self.max_late_ms = max_late_ms
        self.watermark = NO_TIME
        self.max_event_ts = NO_TIME
        self.open_ticks = pl.DataFrame(schema=OPEN_COLUMNS)

    def push(self, ticks: pl.DataFrame) -> BinStep:
        """Add ticks (in arrival order); return the bins this closes and the late ticks."""
        if ticks.height == 0:
            return BinStep(self._close(), _no_late())
        ts = ticks["ts_ms"]
        running = ts.cum_max().clip(lower_bound=self.max_event_ts)
        marks = (running - self.max_late_ms).clip(lower_bound=self.watermark)
        end = (ts // self.bin_ms) * self.bin_ms + self.bin_ms
        late_mask = end <= marks
        self.max_event_ts = int(running[-1])
        self.watermark = int(marks[-1])
        late = (
            ticks.filter(late_mask)
            .with_columns(watermark_ms=marks.filter(late_mask))
            .with_columns(late_by_ms=pl.col("watermark_ms") - pl.col("ts_ms"))
        )
        # How far behind the newest event time each tick arrived (0 for in-order input).
        fresh = ticks.with_columns(lateness_ms=running - ts).filter(~late_mask)
        kept, over = within_bin_sums(self.open_ticks, fresh, self.bin_ms)
        kept = kept.select(list(OPEN_COLUMNS))
        self.open_ticks = pl.concat([self.open_ticks, kept]) if self.open_ticks.height else kept
        return BinStep(self._close(), late, over)

    def advance(self, watermark: int) -> pl.DataFrame:
        """Move the watermark forward without a tick (a paced replay's clock); returns closed bins."""
        self.watermark = max(self.watermark, watermark)
        return self._close()

    def flush(self) -> pl.DataFrame:
        """End of input: every open bin, sorted by (end_ts_ms, symbol)."""
        bins = aggregate_bins(self.open_ticks, self.bin_ms)
        self.open_ticks = self.open_ticks.clear()
        return bins

    def restore(self, watermark: int, max_event_ts: int) -> None:
        """State after a restart: the checkpoint's watermark (open bins come back through `adopt`)."""
        self.watermark = watermark
        self.max_event_ts = max_event_ts

    def adopt(self, ticks: pl.DataFrame) -> None:
        """Re-read ticks (with `order_ts`) after a restart: those of still-open bins go back in."""
        end = bin_start(pl.col("ts_ms"), self.bin_ms) + self.bin_ms
        # In merged order the running maximum of event time is `order_ts`, so lateness is known again.
        kept = (
            ticks.filter(end > self.watermark)
            .with_columns(lateness_ms=pl.col("order_ts") - pl.col("ts_ms"))
            .select(list(OPEN_COLUMNS))
        )
        # Ticks refused for the bin sums before the restart were dead-lettered then: refused again, silently.
        kept, _over = within_bin_sums(self.open_ticks, kept, self.bin_ms)
        self.open_ticks = pl.concat([self.open_ticks, kept]) if self.open_ticks.height else kept

    def _close(self) -> pl.DataFrame:
        if self.open_ticks.height == 0:
            return aggregate_bins(self.open_ticks, self.bin_ms)
        end = bin_start(pl.col("ts_ms"), self.bin_ms) + self.bin_ms
        closing = end <= self.watermark
        done = self.open_ticks.filter(closing)
        if done.height == 0:
            return aggregate_bins(done, self.bin_ms)
        self.open_ticks = self.open_ticks.filter(~closing)
        return aggregate_bins(done, self.bin_ms)


def _no_late() -> pl.DataFrame:
    return pl.DataFrame(schema={**OPEN_COLUMNS, "watermark_ms": pl.Int64(), "late_by_ms": pl.Int64()})
