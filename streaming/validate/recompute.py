"""Independent recomputation of bins and bars with polars group-bys.

Deliberately not the daemons' window code: a batch group-by over the whole
input, so a bug in the streaming windows (watermarks, state, restarts) shows
up as a difference instead of being reproduced.
"""

from __future__ import annotations

import polars as pl

from streaming.kernel.bar_spec import time_bars

BIN_FIELDS_INT = ["start_ts_ms", "end_ts_ms", "volume", "trade_count"]
BIN_FIELDS_FLOAT = ["open", "high", "low", "close", "notional"]
BAR_FIELDS_INT = [*BIN_FIELDS_INT, "bin_count"]
BAR_FIELDS_FLOAT = [*BIN_FIELDS_FLOAT, "vwap"]


def event_times(ticks: pl.DataFrame, spread: bool) -> pl.DataFrame:
    """Add `event_ms`: the tick's second, plus floor(i*1000/n) ms for the i-th of n ticks when spread.

    As the replay documents it (docs/replay.md): the n ticks are those of one symbol in one
    run of the same second in file order (per file, `src`); a second that comes back after
    another second (out-of-order input) is a new run.
    """
    if not spread:
        return ticks.with_columns(pl.col("ts_ms").alias("event_ms"))
    if "src" not in ticks.columns:
        ticks = ticks.with_columns(pl.lit(0, pl.Int64).alias("src"))
    second = pl.col("ts_ms") // 1000
    ordered = ticks.sort(["src", "seq"]).with_columns(
        # A new run where the second changes from the previous tick of the same file.
        _run=(second != second.shift(1).over("src")).fill_null(True).cum_sum()
    )
    group = ["_run", "symbol"]
    index = pl.int_range(pl.len(), dtype=pl.Int64).over(group)
    count = pl.len().over(group).cast(pl.Int64)
    return ordered.with_columns((second * 1000 + (index * 1000) // count).alias("event_ms")).drop("_run")


def _ohlcv(order_by: str) -> list[pl.Expr]:
    return [
        pl.col("price").sort_by(order_by).first().alias("open"),
        pl.col("price").max().alias("high"),
        pl.col("price").min().alias("low"),
        pl.col("price").sort_by(order_by).last().alias("close"),
        pl.col("size").sum().cast(pl.Int64).alias("volume"),
        (pl.col("price") * pl.col("size")).sum().alias("notional"),
        pl.len().cast(pl.Int64).alias("trade_count"),
    ]


def _id(symbol: str, start: str) -> pl.Expr:
    return (pl.col(symbol) + "-" + pl.col(start).cast(pl.String).str.zfill(13)).alias("id")


def bins_from_ticks(ticks: pl.DataFrame, bin_ms: int, spread: bool) -> pl.DataFrame:
    """The bins the replay should publish for these ticks (one row per bin_id)."""
    timed = event_times(ticks, spread).with_columns(
        ((pl.col("event_ms") // bin_ms) * bin_ms).alias("start_ts_ms")
    )
    bins = timed.group_by(["symbol", "start_ts_ms"]).agg(_ohlcv("seq"))
    return (
        bins.with_columns((pl.col("start_ts_ms") + bin_ms).alias("end_ts_ms"), _id("symbol", "start_ts_ms"))
        .rename({"id": "bin_id"})
        .sort(["symbol", "start_ts_ms"])
    )


def bars_from_ticks(ticks: pl.DataFrame, window_ms: int, bin_ms: int, spread: bool) -> pl.DataFrame:
    """The bars the aggregator should emit for these ticks; bin_count counts the bins of each window.

    As the contract defines a bar over its bins in event-time order: open is the open of the
    earliest bin, close the close of the latest (each bin's open/close in arrival order), so
    out-of-order ticks within a window give the same bar as the aggregator's bins do.
    """
    bins = bins_from_ticks(ticks, bin_ms, spread).with_columns(
        ((pl.col("start_ts_ms") // window_ms) * window_ms).alias("window_start")
    )
    bars = bins.group_by(["symbol", "window_start"]).agg(*_bar_of_bins())
    return _finish_bars(bars.rename({"window_start": "start_ts_ms"}), window_ms)


def _bar_of_bins() -> list[pl.Expr]:
    """A bar over its bins in event-time order: the open of the earliest, the close of the latest, sums."""
    return [
        pl.col("open").sort_by("start_ts_ms").first(),
        pl.col("high").max(),
        pl.col("low").min(),
        pl.col("close").sort_by("start_ts_ms").last(),
        pl.col("volume").sum().cast(pl.Int64),
        pl.col("notional").sum(),
        pl.col("trade_count").sum().cast(pl.Int64),
        pl.len().cast(pl.Int64).alias("bin_count"),
    ]


def bars_from_bins(bins: pl.DataFrame, window_ms: int) -> pl.DataFrame:
    """The bars the aggregator should emit for these bins (each bin_id counted once)."""
    unique = bins.unique(subset=["bin_id"], keep="first", maintain_order=True).with_columns(
        ((pl.col("start_ts_ms") // window_ms) * window_ms).alias("window_start")
    )
    bars = unique.group_by(["symbol", "window_start"]).agg(
        *_bar_of_bins(),
        pl.col("api_send_ts_ms").min(),
        pl.col("ingest_ts_ms").max().alias("last_bin_ingest_ts_ms"),
    )
    return _finish_bars(bars.rename({"window_start": "start_ts_ms"}), window_ms)


def _finish_bars(bars: pl.DataFrame, window_ms: int) -> pl.DataFrame:
    # The contract's spec text (kernel/bar_spec.py) ends the bar_id: bars of another size never match.
    spec = time_bars(window_ms).text
    return (
        bars.with_columns(
            (pl.col("start_ts_ms") + window_ms).alias("end_ts_ms"),
            # The contract: vwap = notional / volume, and close for a bar without volume (size-0 ticks only).
            pl.when(pl.col("volume") == 0)
            .then(pl.col("close"))
            .otherwise(pl.col("notional") / pl.col("volume"))
            .alias("vwap"),
            (_id("symbol", "start_ts_ms") + f"-{spec}").alias("id"),
            pl.lit(spec).alias("spec"),
        )
        .rename({"id": "bar_id"})
        .sort(["symbol", "start_ts_ms"])
    )


def latest_revisions(bars: pl.DataFrame) -> pl.DataFrame:
    """One row per bar_id: the highest revision (the one a consumer keeps)."""
    return bars.sort(["bar_id", "revision"]).unique(subset=["bar_id"], keep="last", maintain_order=True)
