"""The merge of many tick streams: event-time order, each stream's own order kept, chunk sizes irrelevant."""

from __future__ import annotations

from collections.abc import Iterator

import polars as pl
from hypothesis import given, settings
from hypothesis import strategies as st

from streaming.sources.frames import TickChunk
from streaming.sources.merge import MERGE_KEY, OrderTs, merge_streams

Stream = list[int]  # event times of one file, in file order (not necessarily sorted)


def chunks_of(src: int, times: Stream, sizes: list[int]) -> Iterator[TickChunk]:
    """One file's ticks as the readers hand them over: `sizes` rows at a time (cycled), with order_ts and seq."""
    order = OrderTs()
    at, k = 0, 0
    while at < len(times):
        size = max(1, sizes[k % len(sizes)])
        part = pl.DataFrame({"ts_ms": times[at:at + size], "src": [src] * len(times[at:at + size])},
                            schema={"ts_ms": pl.Int64, "src": pl.Int32})
        yield TickChunk(order(part))
        at, k = at + size, k + 1


def merged(files: list[Stream], sizes: list[int]) -> pl.DataFrame:
    out = [c.ticks for c in merge_streams([chunks_of(i, t, sizes) for i, t in enumerate(files)])]
    return pl.concat(out).select("src", "seq", "ts_ms", "order_ts") if out else pl.DataFrame()


def reference(files: list[Stream]) -> pl.DataFrame:
    """Everything at once, sorted by the merge key: what any chunking must give."""
    parts = [next(chunks_of(i, t, [len(t)])).ticks for i, t in enumerate(files) if t]
    return pl.concat(parts).sort(MERGE_KEY).select("src", "seq", "ts_ms", "order_ts")


files_st = st.lists(st.lists(st.integers(0, 400), max_size=60), min_size=2, max_size=12)
sizes_st = st.lists(st.integers(1, 25), min_size=1, max_size=4)


@settings(max_examples=150, deadline=None)
@given(files=files_st, sizes=sizes_st)
def test_any_chunking_of_any_number_of_streams_merges_like_one_sort(files: list[Stream], sizes: list[int]) -> None:
    got = merged(files, sizes)
    if not any(files):
        assert got.height == 0
        return
    want = reference(files)
    assert got.height == want.height == sum(len(t) for t in files)
    assert got.to_dicts() == want.to_dicts()
    # Each stream keeps its own order (seq 1, 2, 3, ... in turn).
    for src in range(len(files)):
        assert got.filter(pl.col("src") == src)["seq"].to_list() == list(range(1, len(files[src]) + 1))


def test_a_thousand_short_streams_merge_in_order() -> None:
    files = [[(i * 7 + j * 13) % 1_000 for j in range(30)] for i in range(1_000)]
    got = merged(files, [30])
    assert got.to_dicts() == reference(files).to_dicts()
