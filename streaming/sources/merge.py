"""Several tick streams merged in event-time order, each stream's own order kept.

The merge key of a tick is the running maximum of its stream's event time (`order_ts`), then
the stream index, then its sequence number in the stream (`seq`): for sorted files this is
plain event-time order, and a tick that is out of order inside its file stays where the file
put it (the watermark judges it).
Ticks are only released below the smallest pending key of all open streams, so the result
does not depend on chunk sizes.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import polars as pl

from streaming.sources.frames import TickChunk, empty_rejects

MERGE_KEY = ["order_ts", "src", "seq"]


class OrderTs:
    """Adds `order_ts` (running max of ts_ms across the chunks of one stream) and `seq` (1-based tick number)."""

    def __init__(self) -> None:
        self._max: int | None = None
        self._seq = 1

    def __call__(self, ticks: pl.DataFrame) -> pl.DataFrame:
        seq = pl.int_range(self._seq, self._seq + ticks.height, dtype=pl.Int64, eager=True)
        self._seq += ticks.height
        if ticks.height == 0:
            return ticks.with_columns(order_ts=pl.col("ts_ms"), seq=seq)
        order = ticks["ts_ms"].cum_max()
        if self._max is not None:
            order = order.clip(lower_bound=self._max)
        self._max = int(order[-1])
        return ticks.with_columns(order_ts=order, seq=seq)


def with_order_ts(stream: Iterator[TickChunk]) -> Iterator[TickChunk]:
    """The stream with its `order_ts` and `seq` columns."""
    order = OrderTs()
    for chunk in stream:
        yield TickChunk(order(chunk.ticks), chunk.rejects)


def merge_streams(streams: list[Iterator[TickChunk]]) -> Iterator[TickChunk]:
    """Merge chunked streams (each with `order_ts`) by (order_ts, src, line); rejects pass at once."""
    if len(streams) == 1:
        yield from streams[0]
        return
    buffers: list[pl.DataFrame | None] = [None] * len(streams)
    # Each buffer's first and last order_ts, kept beside it: with many files the rounds below
    # would otherwise ask every buffer for them again and again (polars calls cost ~µs each).
    first: dict[int, int] = {}
    last: dict[int, int] = {}
    open_streams = set(range(len(streams)))

    def keep(i: int, buf: pl.DataFrame) -> None:
        buffers[i] = buf
        if buf.height:
            order = buf["order_ts"].to_numpy()
            first[i], last[i] = int(order[0]), int(order[-1])
        else:
            first.pop(i, None)

    def pull(i: int) -> pl.DataFrame:
        """Read stream i until it yields ticks or ends; returns the rejects met on the way."""
        rejects = [empty_rejects()]
        while True:
            try:
                chunk = next(streams[i])
            except StopIteration:
                open_streams.discard(i)
                return pl.concat(rejects)
            rejects.append(chunk.rejects)
            if chunk.ticks.height:
                buf = buffers[i]
                keep(i, chunk.ticks if buf is None or buf.height == 0 else pl.concat([buf, chunk.ticks]))
                return pl.concat(rejects)

    pending_rejects = [empty_rejects()]
    for i in range(len(streams)):
        pending_rejects.append(pull(i))
    while True:
        for i in [i for i in open_streams if i not in first]:  # open, nothing buffered: read on
            pending_rejects.append(pull(i))
        if not open_streams:
            rest = [b for b in buffers if b is not None and b.height]
            ticks = pl.concat(rest).sort(MERGE_KEY) if rest else None
            if ticks is not None or any(r.height for r in pending_rejects):
                yield TickChunk(ticks if ticks is not None else _empty_like(buffers), pl.concat(pending_rejects))
            return
        # No open stream can later yield a tick below the smallest last time any of them holds.
        horizon = min(last[i] for i in open_streams)
        ready: list[pl.DataFrame] = []
        for i in sorted(i for i, ts in first.items() if ts < horizon):
            buf = buffers[i]
            assert buf is not None
            cut = int(np.searchsorted(buf["order_ts"].to_numpy(), horizon, side="left"))
            ready.append(buf.slice(0, cut))
            # A copy of the rest, so the consumed part of the chunk's memory can be freed.
            keep(i, buf.slice(cut).rechunk())
        if ready:
            yield TickChunk(pl.concat(ready).sort(MERGE_KEY), pl.concat(pending_rejects))
            pending_rejects = [empty_rejects()]
        else:
            lagging = min(open_streams, key=lambda i: last[i])
            pending_rejects.append(pull(lagging))


def _empty_like(buffers: list[pl.DataFrame | None]) -> pl.DataFrame:
    for buf in buffers:
        if buf is not None:
            return buf.clear()
    return pl.DataFrame()
