"""10 ms bins and the watermark: pure logic, checked against plain-Python reference computations."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streaming.replay.binning import OPEN_COLUMNS, Binner
from streaming.sources import tick_stream
from streaming.sources.spread import SecondSpreader, spread_within_second
from tick_platform_tests.test_replay_support import (
    SAMPLE_TICKS,
    SAMPLE_VOLUME,
    RefTick,
    assert_bins_match_reference,
    kibot_ticks,
    reference_bins,
    spread,
)


def _ticks(rows: list[tuple[str, int, float, int]]) -> pl.DataFrame:
    """Ticks (symbol, ts_ms, price, size) in arrival order, with the binner's bookkeeping columns."""
    n = len(rows)
    return pl.DataFrame(
        {
            "symbol": [r[0] for r in rows], "ts_ms": [r[1] for r in rows], "price": [r[2] for r in rows],
            "size": [r[3] for r in rows], "src": [0] * n, "line": list(range(1, n + 1)),
            "seq": list(range(1, n + 1)), "orig_ts_ms": [r[1] for r in rows], "api_send_ts_ms": [0] * n,
            "file": ["f"] * n, "bid": [None] * n, "ask": [None] * n,
        },
        schema_overrides={**OPEN_COLUMNS, "bid": pl.Float64, "ask": pl.Float64},
    )


def _run(binner: Binner, frames: list[pl.DataFrame]) -> tuple[list[dict], list[dict]]:
    bins: list[dict] = []
    late: list[dict] = []
    for frame in frames:
        step = binner.push(frame)
        bins += step.bins.to_dicts()
        late += step.late.to_dicts()
    bins += binner.flush().to_dicts()
    return bins, late


def _sample_frame(sample_path: Path, spread_on: bool) -> pl.DataFrame:
    chunks = list(tick_stream([sample_path], spread=spread_on))
    return pl.concat([c.ticks for c in chunks]).with_columns(orig_ts_ms=pl.col("ts_ms"), api_send_ts_ms=pl.lit(0))


@pytest.mark.parametrize("spread_on", [True, False])
def test_real_sample_with_lateness_zero_has_no_late_tick(sample_path: Path, spread_on: bool) -> None:
    """The regression: an off-by-one watermark dead-lettered 9,384 of these in-order ticks."""
    frame = _sample_frame(sample_path, spread_on)
    bins, late = _run(Binner(10, 0), [frame.slice(i, 1_000) for i in range(0, frame.height, 1_000)])
    assert late == []
    assert sum(b["trade_count"] for b in bins) == SAMPLE_TICKS
    assert sum(b["volume"] for b in bins) == SAMPLE_VOLUME
    ref_ticks = kibot_ticks(sample_path, "WDC")
    assert_bins_match_reference(bins, reference_bins(spread(ref_ticks) if spread_on else ref_ticks))
    assert [(b["end_ts_ms"], b["symbol"]) for b in bins] == sorted((b["end_ts_ms"], b["symbol"]) for b in bins)
    assert all(b["max_lateness_ms"] == 0 for b in bins)


def test_spread_offsets_are_floor_i_times_1000_over_n() -> None:
    rows = [("A", 5_000, 1.0, 1)] * 3 + [("A", 6_000, 1.0, 1)] * 7 + [("A", 9_000, 1.0, 1)]
    ts = spread_within_second(_ticks(rows))["ts_ms"].to_list()
    assert ts == [5_000, 5_333, 5_666] + [6_000 + (i * 1000) // 7 for i in range(7)] + [9_000]


def test_spreader_across_chunk_boundaries_equals_whole() -> None:
    rows = [("A", 1_000 * (k // 5), 1.0, 1) for k in range(53)]
    whole = spread_within_second(_ticks(rows))["ts_ms"].to_list()
    spreader = SecondSpreader()
    frame = _ticks(rows)
    parts = [spreader.push(frame.slice(i, 4)) for i in range(0, frame.height, 4)] + [spreader.flush()]
    assert pl.concat([p for p in parts if p.height])["ts_ms"].to_list() == whole


def test_multi_symbol_second_is_ordered_by_spread_time() -> None:
    rows = [("A", 0, 1.0, 1), ("A", 0, 2.0, 1), ("B", 0, 3.0, 1), ("B", 0, 4.0, 1)]
    out = spread_within_second(_ticks(rows))
    assert out.select("symbol", "ts_ms").rows() == [("A", 0), ("B", 0), ("A", 500), ("B", 500)]


def test_bin_closes_exactly_when_watermark_reaches_its_end() -> None:
    binner = Binner(10, 5)
    step = binner.push(_ticks([("A", 100, 1.0, 1), ("A", 114, 2.0, 1)]))
    assert step.bins.height == 0 and binner.watermark == 109  # 114 - 5 < 110: [100, 110) still open
    step = binner.push(_ticks([("A", 115, 3.0, 1)]))
    assert step.bins["bin_id"].to_list() == ["A-0000000000100"] and binner.watermark == 110


def test_late_tick_goes_to_dlq_and_within_lateness_is_merged() -> None:
    binner = Binner(10, 20)
    rows = [
        ("A", 1_000, 10.0, 1),
        ("A", 1_035, 11.0, 2),  # watermark 1015: [1000, 1010) closes
        ("A", 1_012, 12.0, 3),  # bin [1010, 1020) still open (1020 > 1015): merged, 23 ms behind
        ("A", 1_005, 13.0, 4),  # bin [1000, 1010) was emitted: late by 1015 - 1005 = 10
        ("A", 1_060, 14.0, 5),
    ]
    bins, late = _run(binner, [_ticks(rows)])
    assert [(b["bin_id"], b["trade_count"], b["volume"], b["max_lateness_ms"]) for b in bins] == [
        ("A-0000000001000", 1, 1, 0),
        ("A-0000000001010", 1, 3, 23),
        ("A-0000000001030", 1, 2, 0),
        ("A-0000000001060", 1, 5, 0),
    ]
    assert [(t["ts_ms"], t["late_by_ms"], t["watermark_ms"]) for t in late] == [(1_005, 10, 1_015)]


def test_advance_closes_bins_without_ticks_and_makes_later_ticks_late() -> None:
    binner = Binner(10, 0)
    binner.push(_ticks([("A", 100, 1.0, 1), ("B", 103, 1.0, 1)]))
    closed = binner.advance(110)
    assert closed["bin_id"].to_list() == ["A-0000000000100", "B-0000000000100"]
    assert binner.push(_ticks([("A", 105, 1.0, 1)])).late["late_by_ms"].to_list() == [5]


@settings(max_examples=40, deadline=None)
@given(
    st.lists(st.tuples(st.sampled_from(["A", "B", "C"]), st.integers(0, 400), st.integers(1, 500)), min_size=1,
             max_size=120),
    st.integers(0, 60),
    st.lists(st.integers(1, 30), min_size=1, max_size=10),
)
def test_any_chunking_gives_the_same_bins_and_late_ticks(
    raw: list[tuple[str, int, int]], lateness: int, cuts: list[int]
) -> None:
    rows = [(s, ts, round(1 + p / 100, 2), p) for s, ts, p in raw]
    whole_bins, whole_late = _run(Binner(10, lateness), [_ticks(rows)])
    frame = _ticks(rows)
    frames, at, k = [], 0, 0
    while at < frame.height:
        frames.append(frame.slice(at, cuts[k % len(cuts)]))
        at += cuts[k % len(cuts)]
        k += 1
    bins, late = _run(Binner(10, lateness), frames)
    assert sorted(b["bin_id"] for b in bins) == sorted(b["bin_id"] for b in whole_bins)
    assert {b["bin_id"]: b for b in bins} == {b["bin_id"]: b for b in whole_bins}
    assert [t["seq"] for t in late] == [t["seq"] for t in whole_late]
    # Independent check: a tick is late iff its bin end <= (max ts so far - lateness); the rest are binned.
    seen, expected_late, kept = -(10**9), [], []
    for i, (s, ts, price, size) in enumerate(rows, start=1):
        seen = max(seen, ts)
        if (ts // 10) * 10 + 10 <= seen - lateness:
            expected_late.append(i)
        else:
            kept.append(RefTick(s, ts, price, size))
    assert [t["seq"] for t in late] == expected_late
    ref = reference_bins(kept)
    assert {b["bin_id"]: (b["trade_count"], b["volume"], b["open"], b["close"]) for b in bins} == {
        k: (v["trade_count"], v["volume"], v["open"], v["close"]) for k, v in ref.items()
    }
    ends = [(b["end_ts_ms"], b["symbol"]) for b in bins]
    assert ends == sorted(ends)
