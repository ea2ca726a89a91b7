"""Contract records (Bin, Bar) built from the independent recomputation.

Used to plant faults in known-good inputs and to feed the dashboard when no
daemon output is at hand; never by the daemons themselves.
"""

from __future__ import annotations

from pathlib import Path

import polars as pl

from streaming.kernel.outputs import write_atomic
from streaming.kernel.records import Bar, Bin, encode
from streaming.validate.recompute import bars_from_bins, bins_from_ticks


def reference_bins(ticks: pl.DataFrame, bin_ms: int = 10, spread: bool = True, ingest_ts_ms: int = 0) -> list[Bin]:
    """The bins of `ticks` as contract records."""
    frame = bins_from_ticks(ticks, bin_ms, spread)
    return [
        Bin(
            bin_id=row["bin_id"], symbol=row["symbol"], start_ts_ms=row["start_ts_ms"], end_ts_ms=row["end_ts_ms"],
            window_ms=bin_ms, open=row["open"], high=row["high"], low=row["low"], close=row["close"],
            volume=row["volume"], notional=row["notional"], trade_count=row["trade_count"], max_lateness_ms=0,
            api_send_ts_ms=None, source_event_ts_ms=row["start_ts_ms"], ingest_ts_ms=ingest_ts_ms,
        )
        for row in frame.iter_rows(named=True)
    ]


def reference_bars(bins: list[Bin], window_ms: int = 1_000, ingest_ts_ms: int = 0) -> list[Bar]:
    """The bars of `bins` as contract records (revision 0)."""
    frame = pl.DataFrame([{
        "bin_id": b.bin_id, "symbol": b.symbol, "start_ts_ms": b.start_ts_ms, "open": b.open, "high": b.high,
        "low": b.low, "close": b.close, "volume": b.volume, "notional": b.notional,
        "trade_count": b.trade_count, "api_send_ts_ms": b.api_send_ts_ms, "ingest_ts_ms": b.ingest_ts_ms,
    } for b in bins], schema_overrides={"api_send_ts_ms": pl.Int64})
    bars = bars_from_bins(frame, window_ms)
    return [
        Bar(
            bar_id=row["bar_id"], symbol=row["symbol"], spec=row["spec"],
            start_ts_ms=row["start_ts_ms"], end_ts_ms=row["end_ts_ms"],
            open=row["open"], high=row["high"], low=row["low"], close=row["close"], volume=row["volume"],
            notional=row["notional"], vwap=row["vwap"], trade_count=row["trade_count"], bin_count=row["bin_count"],
            max_lateness_ms=0, api_send_ts_ms=row["api_send_ts_ms"], source_event_ts_ms=row["start_ts_ms"],
            ingest_ts_ms=ingest_ts_ms,
        )
        for row in bars.iter_rows(named=True)
    ]


def write_jsonl(path: Path, records: list[Bin] | list[Bar]) -> Path:
    """One JSON document per line, as the daemons' `--to` writes them."""
    write_atomic(path, b"".join(encode(r) + b"\n" for r in records))
    return path
