"""The pure window logic: exact bars, closing, lateness, revisions, idle/overflow flushes, rebuild."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from streaming.aggregate.windows import LatePolicy, PartitionWindows, WindowConfig
from streaming.kernel.records import Bin
from tick_platform_tests.test_aggregate_helpers import data_fields, make_bin, reference_bars

NOW = 1_800_000_000_000
T0 = 1_266_417_001_000  # 2010-02-17 14:30:01 UTC, a whole second


def run(bins: list[Bin], config: WindowConfig) -> PartitionWindows:
    windows = PartitionWindows(config)
    for i, b in enumerate(bins):
        windows.add(b, i, NOW)
    return windows


def test_one_window_exact_values_with_event_time_open_close() -> None:
    bins = [
        make_bin("WDC", T0 + 30, [10.0, 10.5], [100, 200], lateness=3, api_send=T0 + 40),
        make_bin("WDC", T0 + 10, [9.0], [50], api_send=None),  # earlier event time: becomes the open
        make_bin("WDC", T0 + 40, [11.0], [10], lateness=7, api_send=T0 + 35),  # latest start: the close
        make_bin("WDC", T0 + 20, [8.5, 9.5], [5, 5]),
    ]
    windows = run(bins, WindowConfig(grace_ms=100))
    assert windows.bars == []  # watermark T0 - 70 has not passed the end
    windows.flush_all(NOW)
    [bar] = windows.bars
    notional = 10.0 * 100 + 10.5 * 200 + 9.0 * 50 + 11.0 * 10 + 8.5 * 5 + 9.5 * 5
    assert (bar.bar_id, bar.start_ts_ms, bar.end_ts_ms) == (f"WDC-{T0:013d}-time-1s", T0, T0 + 1000)
    assert (bar.open, bar.high, bar.low, bar.close) == (9.0, 11.0, 8.5, 11.0)
    assert (bar.volume, bar.trade_count, bar.bin_count) == (370, 6, 4)
    assert bar.notional == pytest.approx(notional, rel=1e-12)
    assert bar.vwap == pytest.approx(notional / 370, rel=1e-12)
    assert (bar.max_lateness_ms, bar.api_send_ts_ms, bar.source_event_ts_ms) == (7, T0 + 35, T0 + 10)
    assert (bar.revision, bar.source, bar.ingest_ts_ms) == (0, "aggregator", NOW)


def test_window_closes_exactly_when_watermark_reaches_its_end() -> None:
    config = WindowConfig(grace_ms=100)
    windows = run([make_bin("A", T0 + 500, [1.0], [1]), make_bin("B", T0 + 1099, [2.0], [1])], config)
    assert windows.bars == []  # watermark = T0 + 999 < end
    windows.add(make_bin("B", T0 + 1100, [2.0], [1]), 2, NOW)  # watermark = T0 + 1000 = end
    assert [b.bar_id for b in windows.bars] == [f"A-{T0:013d}-time-1s"]
    assert windows.watermark == T0 + 1000


def test_closed_windows_of_one_step_come_sorted_by_start_then_symbol() -> None:
    bins = [make_bin(s, T0 + off, [1.0], [1]) for s, off in [("Z", 0), ("A", 900), ("M", 1500), ("B", 1400)]]
    windows = run([*bins, make_bin("Q", T0 + 5000, [1.0], [1])], WindowConfig(grace_ms=0))
    assert [(b.start_ts_ms - T0, b.symbol) for b in windows.bars] == [(0, "A"), (0, "Z"), (1000, "B"), (1000, "M")]


def test_late_bin_goes_to_dlq_with_late_by() -> None:
    windows = run([make_bin("A", T0 + 10, [1.0], [1]), make_bin("A", T0 + 2000, [1.0], [1]),
                   make_bin("A", T0 + 990, [5.0], [9])], WindowConfig(grace_ms=100))
    [bar] = windows.bars
    assert (bar.volume, bar.close) == (1, 1.0)  # the late bin did not change the emitted bar
    [late] = windows.late
    assert (late.offset, late.reason, late.late_by_ms, late.watermark) == (2, "late", 1900 - 990, T0 + 1900)


def test_revise_policy_emits_corrected_bar_with_same_id_and_next_revision() -> None:
    config = WindowConfig(grace_ms=100, late_policy="revise", revise_horizon_ms=5_000)
    windows = run([make_bin("A", T0 + 10, [1.0], [1]), make_bin("A", T0 + 2000, [1.0], [1]),
                   make_bin("A", T0 + 990, [5.0], [9]), make_bin("A", T0 + 995, [6.0], [1]),
                   make_bin("A", T0 + 20_000, [1.0], [1]), make_bin("A", T0 + 500, [7.0], [1])], config)
    first = [b for b in windows.bars if b.start_ts_ms == T0]
    bar_id = f"A-{T0:013d}-time-1s"
    assert [(b.bar_id, b.revision, b.volume, b.close, b.high) for b in first] == [
        (bar_id, 0, 1, 1.0, 1.0), (bar_id, 1, 10, 5.0, 5.0), (bar_id, 2, 11, 6.0, 6.0)]
    assert [(x.offset, x.reason) for x in windows.late] == [(5, "late_beyond_horizon")]


def test_revision_numbers_continue_after_a_rebuild() -> None:
    config = WindowConfig(window_ms=100, grace_ms=0, late_policy="revise", revise_horizon_ms=2_000)
    bins = [make_bin("A", T0, [1.0], [1]), make_bin("A", T0 + 250, [1.0], [1]),
            make_bin("A", T0 + 10, [2.0], [1]), make_bin("A", T0 + 20, [3.0], [1])]
    first = run(bins[:3], config)
    cp = first.checkpoint(3)
    assert (cp.rebuild_from, cp.closes) == (0, {T0: 1})
    resumed = PartitionWindows(config, cp.watermark, cp.closes)
    for i in range(cp.rebuild_from, 3):
        resumed.rebuild(bins[i], i)
    resumed.add(bins[3], 3, NOW)
    assert [(b.bar_id, b.revision, b.volume, b.close) for b in resumed.bars] == [(f"A-{T0:013d}-time-100ms", 2, 3, 3.0)]
    assert [(b.revision, b.volume) for b in first.bars if b.start_ts_ms == T0] == [(0, 1), (1, 2)]


def test_idle_flush_emits_newest_window_and_later_input_for_it_is_late() -> None:
    windows = run([make_bin("A", T0 + 10, [1.0], [1]), make_bin("B", T0 + 1010, [2.0], [1])], WindowConfig())
    assert windows.bars == []
    assert windows.flush_idle(NOW) == 2
    assert [b.symbol for b in windows.bars] == ["A", "B"]
    assert windows.watermark == T0 + 2000
    windows.add(make_bin("B", T0 + 1500, [2.0], [1]), 2, NOW)
    assert [x.offset for x in windows.late] == [2]


def test_bounded_state_flushes_oldest_windows() -> None:
    windows = run([make_bin(s, T0 + off, [1.0], [1]) for s, off in [("A", 0), ("B", 0), ("A", 1000),
                                                                     ("C", 2000)]],
                  WindowConfig(grace_ms=10_000, max_open_windows=2))
    assert [(b.symbol, b.start_ts_ms - T0) for b in windows.bars] == [("A", 0), ("B", 0)]
    assert windows.open_count == 2
    assert windows.watermark == T0 + 1000


def test_zero_volume_bar_has_vwap_equal_to_close() -> None:
    windows = run([make_bin("A", T0, [3.25], [0])], WindowConfig())
    windows.flush_all(NOW)
    assert (windows.bars[0].vwap, windows.bars[0].volume) == (3.25, 0)


def test_checkpoint_points_at_oldest_open_window_offset() -> None:
    windows = run([make_bin("A", T0 + 10, [1.0], [1]), make_bin("B", T0 + 1010, [1.0], [1]),
                   make_bin("A", T0 + 1050, [1.0], [1]), make_bin("B", T0 + 1150, [1.0], [1])], WindowConfig())
    cp = windows.checkpoint(4)
    assert (cp.rebuild_from, cp.watermark) == (1, T0 + 1050)  # window T0 closed, the T0+1000 ones began at 1
    windows.flush_all(NOW)
    assert windows.checkpoint(4).rebuild_from == 4


# -- properties ----------------------------------------------------------------------------

SYMBOLS = st.sampled_from(["A", "B", "C"])


def bins_within(span_10ms: int) -> st.SearchStrategy[list[Bin]]:
    """Bin sequences in arbitrary order over `span_10ms` x 10 ms of event time."""
    return st.lists(
        st.builds(lambda s, t, p, q, lt, send: make_bin(s, T0 + t * 10, [p], [q], lateness=lt, api_send=send),
                  SYMBOLS, st.integers(0, span_10ms), st.sampled_from([1.0, 1.5, 2.25, 3.0]), st.integers(0, 500),
                  st.integers(0, 50), st.one_of(st.none(), st.integers(0, 10**6))),
        max_size=80,
    )


BINS = bins_within(600)


@settings(max_examples=300, deadline=None)
@given(BINS, st.sampled_from([0, 30, 100, 10_000]), st.sampled_from([100, 1000]))
def test_property_bars_equal_a_plain_group_by(bins: list[Bin], grace: int, window: int) -> None:
    windows = run(bins, WindowConfig(window_ms=window, grace_ms=grace))
    windows.flush_all(NOW)
    bars, late = windows.drain()
    expected, expected_late = reference_bars(bins, window, grace)
    assert {b.bar_id: data_fields(b) for b in bars} == expected
    assert len(bars) == len(expected)  # each bar once
    assert [(b.start_ts_ms, b.symbol) for b in bars] == sorted((b.start_ts_ms, b.symbol) for b in bars)
    assert [x.offset for x in late] == expected_late


@settings(max_examples=400, deadline=None)
@given(st.one_of(BINS, bins_within(80)), st.integers(0, 80), st.sampled_from([0, 30, 100]), st.integers(1, 6),
       st.sampled_from(["dlq", "revise"]), st.sampled_from([0, 300, 2_000]), st.one_of(st.none(), st.integers(0, 80)))
def test_property_split_and_rebuild_gives_the_same_bars(bins: list[Bin], split: int, grace: int, max_open: int,
                                                        policy: LatePolicy, horizon: int, idle_at: int | None) -> None:
    """Stop anywhere, resume from the checkpoint: the same bars (revisions included) and late records."""
    config = WindowConfig(window_ms=100, grace_ms=grace, max_open_windows=max_open, late_policy=policy,
                          revise_horizon_ms=horizon)
    split = min(split, len(bins))

    def feed(windows: PartitionWindows, start: int, stop: int) -> None:
        for i in range(start, stop):
            if i == idle_at:  # a wall-clock idle flush happened just before this bin
                windows.flush_idle(NOW, i)
            windows.add(bins[i], i, NOW)

    whole = PartitionWindows(config)
    feed(whole, 0, len(bins))
    whole.flush_all(NOW, len(bins))
    all_bars, all_late = whole.drain()

    first = PartitionWindows(config)
    feed(first, 0, split)
    cp = first.checkpoint(split)
    bars_a, late_a = first.drain()
    resumed = PartitionWindows(config, cp.watermark, cp.closes)
    for i in range(cp.rebuild_from, split):
        resumed.rebuild(bins[i], i)
    feed(resumed, split, len(bins))
    resumed.flush_all(NOW, len(bins))
    bars_b, late_b = resumed.drain()
    assert bars_a + bars_b == all_bars
    assert [(x.offset, x.reason) for x in late_a + late_b] == [(x.offset, x.reason) for x in all_late]


def test_advance_watermark_closes_only_what_it_passes_and_makes_older_input_late() -> None:
    windows = PartitionWindows(WindowConfig(window_ms=1_000, grace_ms=100))
    t0 = 1_266_417_000_000
    windows.add(make_bin("AAA", t0 + 200, [10.0], [1]), 0, 0)
    windows.add(make_bin("AAA", t0 + 1_050, [11.0], [2]), 1, 0)  # its own watermark: t0 + 950
    assert windows.advance_watermark(t0 + 999, 0, 2) == 0  # [t0, t0+1000) not passed yet
    assert windows.advance_watermark(t0 + 500, 0, 2) == 0  # never backwards
    assert windows.watermark == t0 + 999
    assert windows.advance_watermark(t0 + 1_000, 0, 2) == 1
    bars, _ = windows.drain()
    assert [(b.start_ts_ms - t0, b.volume) for b in bars] == [(0, 1)]
    assert sorted(windows.open) == [t0 + 1_000]  # the second window stays open
    windows.add(make_bin("AAA", t0 + 900, [9.0], [3]), 2, 0)
    _, late = windows.drain()
    assert [x.bin.start_ts_ms - t0 for x in late] == [900]
