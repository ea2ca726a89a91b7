"""Open any tick source file (Kibot, generic CSV, Parquet) as a chunked, optionally spread stream."""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from streaming.kernel.bounds import SYMBOL_RULE
from streaming.kernel.errors import SourceError
from streaming.sources.blocks import by_symbol, symbol_blocks
from streaming.sources.columns import parse_mapping
from streaming.sources.frames import PUBLIC_COLUMNS, TickChunk
from streaming.sources.kibot import is_kibot_header, read_kibot
from streaming.sources.lines import WHOLE_FILE, Span, first_line, line_offsets, open_checked
from streaming.sources.merge import merge_streams, with_order_ts
from streaming.sources.naming import symbol_from_filename
from streaming.sources.spread import SecondSpreader
from streaming.sources.tables import csv_symbols, parquet_symbols, read_csv_table, read_parquet_table

DEFAULT_CHUNK_ROWS = 200_000
MIN_FILE_CHUNK_ROWS = 1_000
PARQUET_SUFFIXES = {".parquet", ".pq"}
_KIBOT_ROW = re.compile(r"^\d{1,2}/\d{1,2}/\d{4},\d{1,2}:\d{2}:\d{2},")


def source_format(path: Path) -> str:
    """"kibot", "csv" or "parquet"; SourceError for a missing or unreadable file."""
    if path.suffix.lower() in PARQUET_SUFFIXES:
        if not path.is_file():
            raise SourceError(f"{path}: no such file")
        return "parquet"
    open_checked(path)
    line = first_line(path)
    # Positional Kibot only without a header or with Kibot's exact one; a header in any other
    # order (even one starting Date,Time) is read by its column names as a generic CSV.
    if not line or is_kibot_header(line) or _KIBOT_ROW.match(line):
        return "kibot"
    if line[:1].isalpha() or line[:1] == '"':
        return "csv"
    raise SourceError(
        f"{path}: unrecognised format (first line {line[:60]!r}); expected Kibot Date,Time,Price,Bid,Ask,Size, "
        "a CSV with a header, or Parquet"
    )


@dataclass(frozen=True)
class Part:
    """One stream of the merge: a source (file or URL), or the spans of one symbol of a file in symbol blocks."""

    source: str
    spans: tuple[Span, ...] = WHOLE_FILE


def plan_parts(
    paths: Sequence[str | Path], symbol: str | None = None, columns: str | dict[str, str] | None = None
) -> list[Part]:
    """The streams to merge: one per source, and one per symbol for a CSV/Parquet file in symbol blocks.

    Pre-scans the symbol column of each CSV/Parquet file that has one (streaming/sources/blocks.py).
    SourceError at once for a source that cannot be read.
    """
    if not paths:
        raise SourceError("no tick source given")
    mapping = parse_mapping(columns) if isinstance(columns, str) or columns is None else columns
    parts: list[Part] = []
    for raw in paths:
        if "://" in str(raw):
            parts.append(Part(str(raw)))
            continue
        path = Path(raw)
        fmt = source_format(path)
        keys = {"csv": csv_symbols, "parquet": parquet_symbols}.get(fmt)
        blocks = symbol_blocks(keys(path, mapping, DEFAULT_CHUNK_ROWS)) if keys is not None else None
        groups = by_symbol(blocks) if blocks else []
        if len(groups) < 2:
            parts.append(Part(str(raw)))
            continue
        # Parquet rows need no byte offsets (row groups are addressed by row number).
        firsts = sorted(b.first for b in blocks or [])
        offsets = dict(zip(firsts, line_offsets(path, firsts) if fmt == "csv" else firsts, strict=True))
        for group in groups:
            parts.append(Part(str(raw), tuple(Span(b.first, b.last, offsets[b.first]) for b in group)))
    return parts


def open_file(
    path: Path,
    src: int,
    symbol: str | None,
    chunk_rows: int,
    columns: dict[str, str] | None = None,
    spans: Sequence[Span] = WHOLE_FILE,
) -> Iterator[TickChunk]:
    """One file's chunks (of `spans`: lines or rows) in file order (SourceError at once when it cannot be read)."""
    fmt = source_format(path)
    # The help text's precedence: a symbol column, else the file name, and --symbol only for files
    # without either (so AAA_x.txt and BBB_y.txt are never relabelled into one stream).
    chosen = symbol_from_filename(path) or symbol
    if fmt == "kibot":
        if chosen is None:
            raise SourceError(
                f"{path}: cannot tell the symbol: the file name does not start with one ({SYMBOL_RULE}, then '_', "
                "e.g. WDC_tickbidask.txt); rename the file or pass --symbol"
            )
        return read_kibot(path, chosen, chunk_rows, src)
    if fmt == "csv":
        return read_csv_table(path, chosen, columns or {}, chunk_rows, src, spans)
    return read_parquet_table(path, chosen, columns or {}, chunk_rows, src, spans)


def refuse_repeats(sources: Sequence[str | Path]) -> None:
    """SourceError when two sources are one file (`x`, `./x`, a symlink, a hard link) or one URL.

    Read twice, every tick of it would count twice; files are compared by device and inode.
    """
    seen: dict[tuple[object, ...], str] = {}
    for raw in sources:
        text = str(raw)
        if "://" in text:
            key: tuple[object, ...] = ("url", text)
        else:
            try:
                stat = Path(text).stat()
            except OSError:
                continue  # missing or unreadable: opening it says so in its own words
            key = (stat.st_dev, stat.st_ino)
        if key in seen:
            raise SourceError(f"{text}: the same source as {seen[key]}, given twice (every tick would count twice)")
        seen[key] = text


def spread_stream(stream: Iterator[TickChunk]) -> Iterator[TickChunk]:
    """Spread the ticks of each 1 s-resolution second (spread.py decides per second, never per chunk)."""
    spreader = SecondSpreader()
    for chunk in stream:
        yield TickChunk(spreader.push(chunk.ticks), chunk.rejects)
    tail = spreader.flush()
    if tail.height:
        yield TickChunk(tail)


def tick_stream(
    paths: Sequence[str | Path],
    symbol: str | None = None,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
    spread: bool = False,
    columns: str | dict[str, str] | None = None,
    parts: Sequence[Part] | None = None,
) -> Iterator[TickChunk]:
    """All streams merged in event-time order, with rejects and skipped rows, every tick with `src` and `order_ts`.

    A stream is a source, or one symbol of a file in symbol blocks (`plan_parts`, computed here
    unless given); `src` is the stream's index in `parts`. Every file is opened (and its format
    checked) before the first chunk is returned.
    """
    refuse_repeats(paths)
    mapping = parse_mapping(columns) if isinstance(columns, str) or columns is None else columns
    chosen = list(parts) if parts is not None else plan_parts(paths, symbol, mapping)
    # The merge holds a chunk of every stream at once: share the chunk budget so memory stays flat
    # (never above what was asked for, so a small --chunk-rows is honoured).
    chunk_rows = max(min(chunk_rows, MIN_FILE_CHUNK_ROWS), chunk_rows // len(chosen))
    streams: list[Iterator[TickChunk]] = []
    for src, part in enumerate(chosen):
        if "://" in part.source:
            from streaming.sources.http_source import api_ticks

            stream = api_ticks(part.source, chunk_rows, src)
        else:
            stream = open_file(Path(part.source), src, symbol, chunk_rows, mapping, part.spans)
        streams.append(with_order_ts(spread_stream(stream) if spread else stream))
    return merge_streams(streams)


def read_ticks(
    paths: str | Path | Sequence[str | Path],
    symbol: str | None = None,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
    columns: str | dict[str, str] | None = None,
) -> Iterator[pl.DataFrame]:
    """Good ticks of one or more files in event-time order, without spreading, in chunks.

    Columns: symbol, ts_ms (UTC epoch ms), price, bid, ask, size, file, line (1-based). Bad rows
    are left out (the replay dead-letters them); SourceError for a missing or unreadable file.
    """
    chosen = [paths] if isinstance(paths, str | Path) else list(paths)
    for chunk in tick_stream(chosen, symbol, chunk_rows, spread=False, columns=columns):
        if chunk.ticks.height:
            yield chunk.ticks.select(PUBLIC_COLUMNS)
