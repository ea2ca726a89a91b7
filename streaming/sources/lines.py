"""Text files read in chunks of lines at constant memory (BOM, CRLF and binary files handled)."""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl

from streaming.kernel.errors import SourceError


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
    """(1-based line numbers, lines without line end) in chunks of `chunk_rows` lines, of the spans in turn.

    The whole file is read through one open handle. Spans (the symbol streams of one file, read
    side by side by the merge) reopen the file for each chunk at the byte where the last one
    ended, so a file of hundreds of symbol streams never holds hundreds of open files.
    """
    if tuple(spans) == WHOLE_FILE:
        with path.open("r", encoding="utf-8-sig", errors="replace", newline=None) as handle:
            first = 1
            while True:
                lines = list(itertools.islice(handle, chunk_rows))
                if not lines:
                    return
                numbers = pl.int_range(first, first + len(lines), dtype=pl.Int64, eager=True).alias("line")
                yield numbers, pl.Series("raw", lines, dtype=pl.String).str.strip_chars_end("\r\n")
                first += len(lines)
    for span in spans:
        first, offset = span.first, span.offset
        while span.last is None or first <= span.last:
            want = chunk_rows if span.last is None else min(chunk_rows, span.last - first + 1)
            lines, offset = read_lines_at(path, offset, want)
            if not lines:
                break
            numbers = pl.int_range(first, first + len(lines), dtype=pl.Int64, eager=True).alias("line")
            yield numbers, pl.Series("raw", lines, dtype=pl.String)
            first += len(lines)


def _line_ends(data: bytes, final: bool) -> np.ndarray:
    """Indices of the last byte of each line end in `data` (`\n`, `\r\n` or a lone `\r`).

    Unless `final`, a trailing `\r` is left undecided (it may be the first half of `\r\n`).
    """
    codes = np.frombuffer(data, dtype=np.uint8)
    lf, cr = codes == 10, codes == 13
    next_lf = np.zeros_like(lf)
    next_lf[:-1] = lf[1:]
    ends = np.flatnonzero(lf | (cr & ~next_lf))
    if not final and len(ends) and ends[-1] == len(data) - 1 and cr[-1]:
        ends = ends[:-1]
    return ends


def read_lines_at(path: Path, offset: int, want: int, block_bytes: int = 1 << 20) -> tuple[list[str], int]:
    """Up to `want` lines from byte `offset` (decoded as text reading decodes them) and the byte after them."""
    lines: list[str] = []
    with path.open("rb") as handle:
        handle.seek(offset)
        buf = b""
        while len(lines) < want:
            block = handle.read(block_bytes)
            buf += block
            if not buf:
                break
            start = 0
            for end in _line_ends(buf, final=not block)[: want - len(lines)].tolist():
                lines.append(_decode(buf[start:end].rstrip(b"\r") if buf[end] == 10 else buf[start:end], offset))
                offset, start = offset + end + 1 - start, end + 1
            buf = buf[start:]
            if not block:
                if buf and len(lines) < want:  # a last line without a line end
                    lines.append(_decode(buf, offset))
                    offset += len(buf)
                break
    return lines, offset


def _decode(raw: bytes, offset: int) -> str:
    # A BOM can only stand at byte 0, as for utf-8-sig on the whole file.
    return raw.decode("utf-8-sig" if offset == 0 else "utf-8", errors="replace")


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
            ends = _line_ends(data, final=True)
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
