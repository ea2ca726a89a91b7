"""Generic CSV (header + column mapping) and Parquet tick sources, read in chunks."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import polars as pl

from streaming.errors import SourceError
from streaming.sources.columns import resolve_columns, table_candidates
from streaming.sources.frames import TickChunk, checked, skipped_rows
from streaming.sources.lines import line_chunks


def _split_header(line: str) -> list[str]:
    return [name.strip().strip('"') for name in line.split(",")]


def read_csv_table(
    path: Path, symbol: str | None, mapping: dict[str, str], chunk_rows: int, src: int = 0
) -> Iterator[TickChunk]:
    """A CSV with a header row; fields split on commas (quotes around a field are removed)."""
    header: list[str] | None = None
    columns: dict[str, str] = {}
    for numbers, raw in line_chunks(path, chunk_rows):
        frame = pl.DataFrame([numbers.alias("line"), raw.alias("payload")])
        blank = frame["payload"].str.strip_chars() == ""
        skips = [skipped_rows(frame.filter(blank)["line"], frame.filter(blank)["payload"], "blank", str(path), src)]
        rows = frame.filter(~blank)
        if header is None and rows.height:
            header = _split_header(rows["payload"][0])
            columns = resolve_columns(header, mapping, str(path))
            skips.append(skipped_rows(rows["line"][:1], rows["payload"][:1], "header", str(path), src))
            rows = rows.slice(1)
        if header is None or rows.height == 0:
            yield TickChunk(checked(_no_rows(), str(path), src).ticks, pl.concat(skips))
            continue
        width = len(header)
        fields = rows["payload"].str.split_exact(",", width - 1).struct.rename_fields(header).struct.unnest()
        commas = rows["payload"].str.count_matches(",", literal=True)
        candidates = table_candidates(fields, columns, symbol, rows["line"], rows["payload"]).with_columns(
            reason=pl.when(commas != width - 1).then(pl.lit("malformed")),
            detail=pl.when(commas != width - 1).then(
                pl.format("expected {} fields, got {}", pl.lit(width), commas + 1)
            ),
        )
        chunk = checked(candidates, str(path), src)
        yield TickChunk(chunk.ticks, pl.concat([chunk.rejects, *skips]).sort("line"))


def _no_rows() -> pl.DataFrame:
    return pl.DataFrame(
        schema={
            "line": pl.Int64, "payload": pl.String, "symbol": pl.String, "ts_ms": pl.Int64, "price": pl.Float64,
            "bid": pl.Float64, "ask": pl.Float64, "size": pl.Int64, "reason": pl.String, "detail": pl.String,
        }
    )


def read_parquet_table(
    path: Path, symbol: str | None, mapping: dict[str, str], chunk_rows: int, src: int = 0
) -> Iterator[TickChunk]:
    """A Parquet file in row batches; `line` is the 1-based row number."""
    import pyarrow.parquet as pq

    try:
        parquet = pq.ParquetFile(path)
    except Exception as exc:  # pyarrow raises several types for a file that is not Parquet
        raise SourceError(f"{path}: not a readable Parquet file ({exc})") from None
    columns = resolve_columns(parquet.schema_arrow.names, mapping, str(path))
    first = 1
    for batch in parquet.iter_batches(batch_size=chunk_rows):
        table = pl.from_arrow(batch)
        assert isinstance(table, pl.DataFrame)
        lines = pl.int_range(first, first + table.height, dtype=pl.Int64, eager=True)
        payload = table.select(pl.struct(pl.all()).struct.json_encode()).to_series()
        yield checked(table_candidates(table, columns, symbol, lines, payload), str(path), src)
        first += table.height
