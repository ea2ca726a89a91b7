"""Generic CSV (header + column mapping) and Parquet tick sources, read in chunks (or in row spans)."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import polars as pl

from streaming.kernel.errors import SourceError
from streaming.sources.columns import resolve_columns, table_candidates
from streaming.sources.frames import TickChunk, WallClock, checked, skipped_rows
from streaming.sources.lines import WHOLE_FILE, Span, first_line_numbered, line_chunks

if TYPE_CHECKING:
    import pyarrow.parquet as pq


def _split_header(line: str) -> list[str]:
    return [name.strip().strip('"') for name in line.split(",")]


def csv_header(path: Path, mapping: dict[str, str]) -> tuple[int, list[str], dict[str, str]] | None:
    """(line number, names, tick field -> column) of a CSV's header; None for a file of blank lines."""
    found = first_line_numbered(path)
    if found is None:
        return None
    header = _split_header(found[1])
    return found[0], header, resolve_columns(header, mapping, str(path))


def read_csv_table(
    path: Path,
    symbol: str | None,
    mapping: dict[str, str],
    chunk_rows: int,
    src: int = 0,
    spans: Sequence[Span] = WHOLE_FILE,
) -> Iterator[TickChunk]:
    """A CSV with a header row; fields split on commas (quotes around a field are removed).

    With `spans`, only those lines are read (the header comes from the file's first line all the same).
    """
    found = csv_header(path, mapping)
    header_line, header, columns = found if found is not None else (0, [], {})
    clock = WallClock()  # one per stream: the repeated hour is decided by this stream's own order
    for numbers, raw in line_chunks(path, chunk_rows, spans):
        frame = pl.DataFrame([numbers.alias("line"), raw.alias("payload")])
        blank = frame["payload"].str.strip_chars() == ""
        is_header = ~blank & (frame["line"] == header_line)
        skips = [
            skipped_rows(frame.filter(blank)["line"], frame.filter(blank)["payload"], "blank", str(path), src),
            skipped_rows(frame.filter(is_header)["line"], frame.filter(is_header)["payload"], "header", str(path), src),
        ]
        rows = frame.filter(~blank & ~is_header)
        if not header or rows.height == 0:
            yield TickChunk(checked(_no_rows(), str(path), src).ticks, pl.concat(skips).sort("line"))
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
        chunk = checked(candidates, str(path), src, clock)
        yield TickChunk(chunk.ticks, pl.concat([chunk.rejects, *skips]).sort("line"))


def csv_symbols(path: Path, mapping: dict[str, str], chunk_rows: int) -> Iterator[tuple[pl.Series, pl.Series]]:
    """(line numbers, symbol field or null) of a CSV in chunks, for the block pre-scan (none: no symbol column)."""
    found = csv_header(path, mapping)
    if found is None or "symbol" not in found[2]:
        return
    header_line, header, columns = found
    index = header.index(columns["symbol"])
    for numbers, raw in line_chunks(path, chunk_rows):
        value = raw.str.split(",").list.get(index, null_on_oob=True).str.strip_chars().str.strip_chars('"')
        value = value.set(((numbers == header_line) | (value == "")).fill_null(False), None)  # type: ignore[arg-type]
        yield numbers, value


def _no_rows() -> pl.DataFrame:
    return pl.DataFrame(
        schema={
            "line": pl.Int64, "payload": pl.String, "symbol": pl.String, "ts_ms": pl.Int64, "price": pl.Float64,
            "bid": pl.Float64, "ask": pl.Float64, "size": pl.Int64, "reason": pl.String, "detail": pl.String,
        }
    )


def _open_parquet(path: Path) -> pq.ParquetFile:
    import pyarrow.parquet as pq  # only when a Parquet file is read: pyarrow is slow to import

    try:
        return pq.ParquetFile(path)
    except Exception as exc:  # pyarrow raises several types for a file that is not Parquet
        raise SourceError(f"{path}: not a readable Parquet file ({exc})") from None


def read_parquet_table(
    path: Path,
    symbol: str | None,
    mapping: dict[str, str],
    chunk_rows: int,
    src: int = 0,
    spans: Sequence[Span] = WHOLE_FILE,
) -> Iterator[TickChunk]:
    """A Parquet file in row batches; `line` is the 1-based row number. With `spans`, only those rows."""
    parquet = _open_parquet(path)
    columns = resolve_columns(parquet.schema_arrow.names, mapping, str(path))
    sizes = [parquet.metadata.row_group(i).num_rows for i in range(parquet.num_row_groups)]
    starts = [1 + sum(sizes[:i]) for i in range(len(sizes))]
    clock = WallClock()
    for span in spans:
        last = span.last if span.last is not None else sum(sizes)
        groups = [i for i, (s, n) in enumerate(zip(starts, sizes, strict=True)) if s <= last and s + n > span.first]
        if not groups:
            continue
        first = starts[groups[0]]
        for batch in parquet.iter_batches(batch_size=chunk_rows, row_groups=groups):
            table = pl.from_arrow(batch)
            assert isinstance(table, pl.DataFrame)
            lo, hi = max(first, span.first), min(first + table.height - 1, last)
            table, start = table.slice(lo - first, max(0, hi - lo + 1)), lo
            first += batch.num_rows
            if table.height == 0:
                continue
            lines = pl.int_range(start, start + table.height, dtype=pl.Int64, eager=True)
            payload = table.select(pl.struct(pl.all()).struct.json_encode()).to_series()
            yield checked(table_candidates(table, columns, symbol, lines, payload), str(path), src, clock)


def parquet_symbols(path: Path, mapping: dict[str, str], chunk_rows: int) -> Iterator[tuple[pl.Series, pl.Series]]:
    """(row numbers, symbol or null) of a Parquet file in batches, for the block pre-scan (none: no symbol column)."""
    parquet = _open_parquet(path)
    columns = resolve_columns(parquet.schema_arrow.names, mapping, str(path))
    if "symbol" not in columns:
        return
    first = 1
    for batch in parquet.iter_batches(batch_size=chunk_rows, columns=[columns["symbol"]]):
        values = pl.from_arrow(batch.column(0))
        assert isinstance(values, pl.Series)
        text = values.cast(pl.String).str.strip_chars()
        yield (
            pl.int_range(first, first + len(text), dtype=pl.Int64, eager=True),
            text.set((text == "").fill_null(False), None),  # type: ignore[arg-type]
        )
        first += len(text)
