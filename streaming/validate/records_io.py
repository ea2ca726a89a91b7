"""Bins and bars as polars frames, from JSON lines files or raw Kafka values.

Each line is decoded against the contract (streaming.kernel.records); a line that does
not decode is counted, not fatal, so the report can say how many were unreadable.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import msgspec
import polars as pl

from streaming.kernel.errors import SourceError
from streaming.kernel.records import Bar, Bin, bar_decoder, bin_decoder

BIN_SCHEMA: dict[str, type[pl.DataType] | pl.DataType] = {
    "bin_id": pl.String,
    "symbol": pl.String,
    "start_ts_ms": pl.Int64,
    "end_ts_ms": pl.Int64,
    "window_ms": pl.Int64,
    "open": pl.Float64,
    "high": pl.Float64,
    "low": pl.Float64,
    "close": pl.Float64,
    "volume": pl.Int64,
    "notional": pl.Float64,
    "trade_count": pl.Int64,
    "max_lateness_ms": pl.Int64,
    "api_send_ts_ms": pl.Int64,
    "source_event_ts_ms": pl.Int64,
    "ingest_ts_ms": pl.Int64,
}
BAR_SCHEMA: dict[str, type[pl.DataType] | pl.DataType] = {
    "bar_id": pl.String,
    "symbol": pl.String,
    "spec": pl.String,
    "start_ts_ms": pl.Int64,
    "end_ts_ms": pl.Int64,
    "open": pl.Float64,
    "high": pl.Float64,
    "low": pl.Float64,
    "close": pl.Float64,
    "volume": pl.Int64,
    "notional": pl.Float64,
    "vwap": pl.Float64,
    "trade_count": pl.Int64,
    "bin_count": pl.Int64,
    "max_lateness_ms": pl.Int64,
    "api_send_ts_ms": pl.Int64,
    "source_event_ts_ms": pl.Int64,
    "ingest_ts_ms": pl.Int64,
    "revision": pl.Int64,
}
KAFKA_TS = "kafka_ts_ms"


@dataclass(frozen=True)
class Loaded:
    """Decoded records as a frame and the number of inputs that did not satisfy the contract."""

    frame: pl.DataFrame
    unreadable: int
    first_error: str | None = None


def _decode(
    values: Iterable[bytes], decoder: msgspec.json.Decoder[Bin] | msgspec.json.Decoder[Bar],
    schema: dict[str, type[pl.DataType] | pl.DataType], kafka_ts: Iterable[int] | None,
) -> Loaded:
    rows: list[dict[str, object]] = []
    stamps: list[int] = []
    bad = 0
    first_error: str | None = None
    ts_iter = iter(kafka_ts) if kafka_ts is not None else None
    for value in values:
        stamp = next(ts_iter) if ts_iter is not None else None
        if not value.strip() and ts_iter is None:
            continue  # a blank line of a JSON lines file; an empty Kafka message is unreadable
        try:
            record = decoder.decode(value)
        except (msgspec.DecodeError, UnicodeDecodeError) as exc:
            bad += 1
            first_error = first_error or str(exc)
            continue
        rows.append(msgspec.structs.asdict(record))
        if stamp is not None:
            stamps.append(stamp)
    frame = pl.DataFrame(rows, schema=schema, strict=False) if rows else pl.DataFrame(schema=schema)
    frame = frame.select(list(schema))
    if ts_iter is not None:
        frame = frame.with_columns(pl.Series(KAFKA_TS, stamps, dtype=pl.Int64))
    return Loaded(frame, bad, first_error)


def _lines(path: Path) -> list[bytes]:
    if not path.is_file():
        raise SourceError(f"no such file: {path}")
    return path.read_bytes().splitlines()


def read_bins_jsonl(path: Path) -> Loaded:
    """Bins of a JSON lines file (the replay's `--to bins.jsonl`)."""
    return _decode(_lines(path), bin_decoder, BIN_SCHEMA, None)


def read_bars_jsonl(path: Path) -> Loaded:
    """Bars of a JSON lines file (the aggregator's `--to bars.jsonl`)."""
    return _decode(_lines(path), bar_decoder, BAR_SCHEMA, None)


def bins_from_values(values: list[bytes], kafka_ts_ms: list[int]) -> Loaded:
    """Bins of Kafka message values, with each message's broker timestamp."""
    return _decode(values, bin_decoder, BIN_SCHEMA, kafka_ts_ms)


def bars_from_values(values: list[bytes], kafka_ts_ms: list[int]) -> Loaded:
    """Bars of Kafka message values, with each message's broker timestamp."""
    return _decode(values, bar_decoder, BAR_SCHEMA, kafka_ts_ms)
