"""Multi-symbol files in symbol blocks (all of AAA, then all of BBB): one stream per symbol.

One watermark spans all symbols of a stream, so a file sorted by symbol read as one stream
would dead-letter every symbol after the first as late. A pre-scan reads only the symbol
column and finds the blocks (maximal runs of rows of one symbol; a row without a symbol
belongs to the block it stands in). When the file holds more than one symbol in at most
`MAX_SYMBOL_BLOCKS` blocks, each symbol becomes its own stream (its blocks in file order,
each read from its byte offset), and the k-way merge of streams (merge.py) merges them by time.
A file whose symbols alternate more often than that is in time order (the usual export) and is
read as one stream, as before. Memory: the pre-scan holds one chunk of the symbol column and the
block list; the replay then holds one chunk per symbol stream (the chunk budget is shared).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import polars as pl

# Above this many blocks the symbols alternate (a time-ordered file): one stream reads it best.
MAX_SYMBOL_BLOCKS = 1_000


@dataclass(frozen=True)
class Block:
    """Rows `first`..`last` (1-based, inclusive; `last` None = to the end) of one symbol."""

    symbol: str
    first: int
    last: int | None


def symbol_blocks(chunks: Iterable[tuple[pl.Series, pl.Series]], limit: int = MAX_SYMBOL_BLOCKS) -> list[Block] | None:
    """The blocks of (row numbers, symbol or null) chunks in file order; None when more than `limit`.

    Leading rows without a symbol belong to the first block; the first block starts at row 1.
    Stops reading as soon as the limit is passed (a time-ordered file gets there quickly).
    """
    starts: list[tuple[int, str]] = []
    current: str | None = None
    for lines, symbols in chunks:
        frame = pl.DataFrame({"line": lines, "symbol": symbols}).filter(pl.col("symbol").is_not_null())
        if frame.height == 0:
            continue
        previous = frame["symbol"].shift(1, fill_value=current)
        changes = frame.filter(previous.is_null() | (frame["symbol"] != previous))
        starts.extend(changes.iter_rows())
        current = frame["symbol"][-1]
        if len(starts) > limit:
            return None
    if not starts:
        return []
    bounds = [1] + [line for line, _ in starts[1:]]
    return [
        Block(symbol, first, bounds[i + 1] - 1 if i + 1 < len(bounds) else None)
        for i, ((_, symbol), first) in enumerate(zip(starts, bounds, strict=True))
    ]


def by_symbol(blocks: list[Block]) -> list[list[Block]]:
    """The blocks grouped per symbol (each group in file order), groups in order of first appearance."""
    groups: dict[str, list[Block]] = {}
    for block in blocks:
        groups.setdefault(block.symbol, []).append(block)
    return list(groups.values())
