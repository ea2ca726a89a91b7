"""Text files read in chunks of lines at constant memory (BOM, CRLF and binary files handled)."""

from __future__ import annotations

import io
import itertools
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
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


def first_line_numbered(path: Path) -> tuple[int, str] | None:
    """(1-based number, text) of the first non-blank line, as `first_line`; None for a file without one."""
    with path.open("r", encoding="utf-8-sig", errors="replace", newline=None) as handle:
        for number, line in enumerate(handle, start=1):
            if line.strip():
                return number, line.strip()
    return None


@dataclass(frozen=True)
class Span:
    """Lines `first`..`last` (1-based, inclusive; `last` None = to the end) starting at byte `offset`."""

    first: int
    last: int | None
    offset: int


WHOLE_FILE = (Span(1, None, 0),)


def line_chunks(
    path: Path, chunk_rows: int, spans: Sequence[Span] = WHOLE_FILE
) -> Iterator[tuple[pl.Series, pl.Series]]:
    """(1-based line numbers, lines without line end) in chunks of `chunk_rows` lines, of the spans in turn."""
    for span in spans:
        with path.open("rb") as raw:
            raw.seek(span.offset)
            # Universal newlines as for the whole file; a BOM can only stand at byte 0.
            handle = io.TextIOWrapper(
                raw, encoding="utf-8-sig" if span.offset == 0 else "utf-8", errors="replace", newline=None
            )
            first = span.first
            while span.last is None or first <= span.last:
                want = chunk_rows if span.last is None else min(chunk_rows, span.last - first + 1)
                lines = list(itertools.islice(handle, want))
                if not lines:
                    break
                numbers = pl.int_range(first, first + len(lines), dtype=pl.Int64, eager=True).alias("line")
                yield numbers, pl.Series("raw", lines, dtype=pl.String).str.strip_chars_end("\r\n")
                first += len(lines)


def line_offsets(path: Path, lines: Sequence[int], block_bytes: int = 1 << 23) -> list[int]:
    """Byte offsets where the given 1-based lines (ascending) start, counted as text reading counts lines.

    A line ends at `\n`, `\r\n` or a lone `\r` (universal newlines); none of these bytes occurs
    inside a UTF-8 sequence, so counting bytes gives the same lines as decoding.
    """
    wanted = np.asarray(lines, dtype=np.int64)
    found = np.full(len(wanted), -1, dtype=np.int64)
    found[wanted == 1] = 0
    line, pos, pending = 1, 0, b""
    with path.open("rb") as handle:
        while True:
            block = handle.read(block_bytes)
            data = pending + block
            if not data:
                break
            # A trailing \r may be the first half of \r\n: decide it with the next block.
            if block and data.endswith(b"\r"):
                data, pending = data[:-1], b"\r"
            else:
                pending = b""
            codes = np.frombuffer(data, dtype=np.uint8)
            lf, cr = codes == 10, codes == 13
            next_lf = np.zeros_like(lf)
            next_lf[:-1] = lf[1:]
            ends = np.flatnonzero(lf | (cr & ~next_lf))
            # The i-th line end here is followed by line number line + 1 + i.
            index = wanted - line - 1
            hit = (index >= 0) & (index < len(ends))
            found[hit] = pos + ends[index[hit]] + 1
            line += len(ends)
            pos += len(data)
            if not block:
                break
    if (found < 0).any():
        raise SourceError(f"{path}: changed while being read (line {int(wanted[found < 0][0])} is gone)")
    return [int(v) for v in found]
