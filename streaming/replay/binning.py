"""10 ms bins per symbol with an event-time watermark (pure logic, no I/O).

watermark = max event time seen - allowed lateness. A bin [s, e) is emitted, final, once the
watermark >= e. A tick whose bin is already closed (its end <= the watermark including the tick
itself) is late. Both tests are vectorised over a whole chunk with a running maximum, so the
result does not depend on how the input is cut into chunks, nor on the replay speed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import polars as pl

NO_TIME = -(2**62)
# Notional is summed exactly in integer micro-units (prices to 6 decimals): the float sum of a
# bin would depend on the order of additions, and so on how the input was cut into chunks.
NOTIONAL_SCALE = 1_000_000
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


@dataclass(frozen=True)
class BinStep:
    """What one push produced: closed bins, sorted by (end_ts_ms, symbol), and late ticks."""

    bins: pl.DataFrame
    late: pl.DataFrame


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
            notional_units=((pl.col("price") * NOTIONAL_SCALE).round(0).cast(pl.Int64) * pl.col("size")).sum(),
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
        fresh = ticks.with_columns(lateness_ms=running - ts).filter(~late_mask).select(list(OPEN_COLUMNS))
        self.open_ticks = pl.concat([self.open_ticks, fresh]) if self.open_ticks.height else fresh
        return BinStep(self._close(), late)

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
