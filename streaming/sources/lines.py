"""Text files read in chunks of lines at constant memory (BOM, CRLF and binary files handled)."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path

import polars as pl

from streaming.errors import SourceError


def open_checked(path: Path) -> None:
    """Raise SourceError when `path` is missing, unreadable or binary."""
    if not path.exists():
        raise SourceError(f"{path}: no such file")
    if not path.is_file():
        raise SourceError(f"{path}: not a file")
    try:
        with path.open("rb") as handle:
            head = handle.read(8192)
    except OSError as exc:
        raise SourceError(f"{path}: cannot read: {exc.strerror}") from None
    if b"\x00" in head:
        raise SourceError(f"{path}: binary data, not a text tick file (Kibot, CSV) nor Parquet")


def first_line(path: Path) -> str:
    """The first non-blank line (without BOM and line end), or "" for an empty file."""
    with path.open("r", encoding="utf-8-sig", errors="replace", newline=None) as handle:
        for line in handle:
            if line.strip():
                return line.strip()
    return ""


def line_chunks(path: Path, chunk_rows: int) -> Iterator[tuple[pl.Series, pl.Series]]:
    """(1-based line numbers, lines without line end) in chunks of `chunk_rows` lines."""
    with path.open("r", encoding="utf-8-sig", errors="replace", newline=None) as handle:
        first = 1
        while True:
            lines = list(itertools.islice(handle, chunk_rows))
            if not lines:
                return
            numbers = pl.int_range(first, first + len(lines), dtype=pl.Int64, eager=True).alias("line")
            yield numbers, pl.Series("raw", lines, dtype=pl.String).str.strip_chars_end("\r\n")
            first += len(lines)
