"""Pure logic: rollups, revisions, LOAD_TS carry-over, closure rule, calendar, validation."""

from __future__ import annotations

from datetime import date, datetime
from pathlib import Path

import polars as pl
from hypothesis import given, settings
from hypothesis import strategies as st

from streaming.kernel.bar_spec import DEFAULT_BAR_SPEC, make_bar_id
from streaming.kernel.records import Bar
from tick_platform.calendar import session_minutes
from tick_platform.closure import (
    SensorCursor,
    SensorPartitionState,
    advance_states,
    closed_until,
    offsets_went_back,
    scheduled_window,
    windows_to_request,
)
from tick_platform.rollup import bars_frame, fact_bar_id, rollup_bars, rollup_facts, stamp_load_ts
from tick_platform.validation import compare_rows, missing_bar_counts, ohlc_violations
from tick_platform_tests.test_platform_support import assert_facts_equal, bars_from_ticks, expected_ohlcv, read_kibot

T0 = 1266417000000  # 2010-02-17 14:30 UTC


def _bar(symbol: str, start: int, o: float, h: float, low: float, c: float, v: int, revision: int = 0) -> Bar:
    return Bar(
        bar_id=make_bar_id(symbol, start, DEFAULT_BAR_SPEC),
        symbol=symbol,
        spec=DEFAULT_BAR_SPEC.text,
        start_ts_ms=start,
        end_ts_ms=start + 1000,
        open=o,
        high=h,
        low=low,
        close=c,
        volume=v,
        notional=v * (o + c) / 2,
        vwap=(o + c) / 2,
        trade_count=1,
        bin_count=1,
        max_lateness_ms=0,
        api_send_ts_ms=None,
        source_event_ts_ms=start,
        ingest_ts_ms=start + 5,
        revision=revision,
    )


def test_sample_rollups_equal_independent_ohlcv(sample_path: Path) -> None:
    ticks = read_kibot(sample_path)
    bars = bars_frame(bars_from_ticks(ticks))
    assert bars.height == 5049
    rows_60, rows_300 = rollup_bars(bars, 60), rollup_bars(bars, 300)
    assert (rows_60.height, rows_300.height) == (374, 75)
    assert_facts_equal(rows_60, expected_ohlcv(ticks, 60))
    assert_facts_equal(rows_300, expected_ohlcv(ticks, 300))
    assert compare_rows(rows_300, rollup_facts(rows_60, 300)) == []
    assert int(rows_300["VOLUME"].sum()) == 3_582_490 and int(rows_60["SOURCE_COUNT"].sum()) == 5049


def test_bar_id_format() -> None:
    assert fact_bar_id("WDC", T0, 60) == "WDC-1266417000000-60"
    assert fact_bar_id("A", 5, 300) == "A-0000000000005-300"


def test_highest_revision_wins_regardless_of_order() -> None:
    original = _bar("X", T0 + 1000, 10, 11, 9, 10.5, 100)
    revised = _bar("X", T0 + 1000, 10, 15, 9, 10.5, 300, revision=2)
    middle = _bar("X", T0 + 1000, 10, 12, 9, 10.5, 200, revision=1)
    other = _bar("X", T0, 9.5, 10, 9.5, 10, 50)
    for order in ([original, revised, middle, other], [revised, other, middle, original]):
        row = rollup_bars(bars_frame(order), 60).row(0, named=True)
        assert (row["HIGH"], row["VOLUME"], row["SOURCE_COUNT"], row["OPEN"]) == (15.0, 350, 2, 9.5)


def test_load_ts_kept_for_unchanged_rows_only() -> None:
    rows = rollup_bars(bars_frame([_bar("X", T0, 1, 2, 1, 2, 10), _bar("Y", T0, 5, 6, 5, 6, 10)]), 60)
    old = stamp_load_ts(rows, pl.DataFrame(), datetime(2026, 1, 1))
    changed = rows.with_columns(pl.when(pl.col("SYMBOL") == "Y").then(7.0).otherwise(pl.col("HIGH")).alias("HIGH"))
    new = stamp_load_ts(changed, old, datetime(2026, 2, 2)).sort("SYMBOL")
    assert new["LOAD_TS"].to_list() == [datetime(2026, 1, 1), datetime(2026, 2, 2)]


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["A", "B"]), st.integers(0, 899), st.floats(1, 100), st.floats(0, 5), st.integers(0, 1000)
        ),
        min_size=1,
        max_size=80,
        unique_by=lambda t: (t[0], t[1]),
    )
)
def test_300s_rollup_equals_rollup_of_60s(spec: list[tuple[str, int, float, float, int]]) -> None:
    bars = [
        _bar(s, T0 + sec * 1000, p, p + d, p - d / 2, p + d / 3, v)
        for s, sec, p, d, v in sorted(spec, key=lambda t: t[1])
    ]
    frame = bars_frame(bars)
    direct = rollup_bars(frame, 300)
    assert compare_rows(direct, rollup_facts(rollup_bars(frame, 60), 300)) == []
    assert ohlc_violations(direct) == []


def test_closure_rule_and_cursor_roundtrip() -> None:
    w = 300_000
    states = {
        0: SensorPartitionState(10, T0 + 2 * w + 5, since_ms=1_000),
        1: SensorPartitionState(4, T0 + w + 1, since_ms=1_000),
    }
    assert closed_until(states, now_ms=1_500, idle_timeout_ms=2_000, horizon_ms=0) == T0 + w + 1
    assert windows_to_request(T0, T0 + w + 1, limit=10) == [T0]
    # partition 1 idle: only the newest data bounds, up to the end of its window
    assert closed_until(states, now_ms=3_001, idle_timeout_ms=2_000, horizon_ms=0) == T0 + 3 * w
    assert closed_until(states, now_ms=1_500, idle_timeout_ms=2_000, horizon_ms=w) == T0 + 1
    assert closed_until({0: SensorPartitionState(0, None, 0)}, 10**12, 1, 0) is None
    moved = advance_states(states, {0: (10, T0 + 2 * w + 5), 1: (6, T0 + 2 * w)}, now_ms=9_000)
    assert moved[0] is states[0] and moved[1] == SensorPartitionState(6, T0 + 2 * w, 9_000)
    cursor = SensorCursor(moved, T0 + w)
    assert SensorCursor.from_json(cursor.to_json()) == cursor
    assert SensorCursor.from_json(None) == SensorCursor()
    assert scheduled_window(T0 + 2 * w + 60_000, 2_100) == T0 + w


def test_calendar_minutes_follow_new_york_time() -> None:
    cal = session_minutes([2010])
    # NYSE 2010: 261 weekdays less 9 holidays (published calendar), one early close (Nov 26, 13:00).
    holidays = [date(2010, 1, 1), date(2010, 1, 18), date(2010, 2, 15), date(2010, 4, 2), date(2010, 5, 31),
                date(2010, 7, 5), date(2010, 9, 6), date(2010, 11, 25), date(2010, 12, 24)]
    assert cal.height == (261 - 9) * 390 - 180
    assert cal.filter(pl.col("TRADE_DATE").is_in(holidays)).height == 0
    nov26 = cal.filter(pl.col("TRADE_DATE") == date(2010, 11, 26))
    assert nov26["MINUTE_ET"].max() == datetime(2010, 11, 26, 12, 59) and nov26.height == 210
    feb17 = cal.filter(pl.col("TRADE_DATE") == date(2010, 2, 17))
    assert feb17["MINUTE_TS"].min() == datetime(2010, 2, 17, 14, 30)  # EST: UTC-5
    jul1 = cal.filter(pl.col("TRADE_DATE") == date(2010, 7, 1))
    assert jul1["MINUTE_TS"].min() == datetime(2010, 7, 1, 13, 30) and jul1["MINUTE_TS"].max() == datetime(
        2010, 7, 1, 19, 59
    )
    assert cal.filter(pl.col("WEEKDAY") > 5).height == 0


def test_validation_reports_offending_rows() -> None:
    rows = rollup_bars(
        bars_frame([_bar("X", T0, 10, 11, 9, 10.5, 100), _bar("X", T0 + 60_000, 10, 11, 9, 10.5, 100)]), 60
    )
    broken = rows.with_columns(
        pl.when(pl.col("BAR_ID") == "X-1266417000000-60").then(8.0).otherwise(pl.col("HIGH")).alias("HIGH")
    )
    problems = compare_rows(broken, rows)
    assert [(p["BAR_ID"], p["problem"], p["warehouse"], p["expected"]) for p in problems] == [
        ("X-1266417000000-60", "HIGH differs", 8.0, 11.0)
    ]
    assert [v["BAR_ID"] for v in ohlc_violations(broken)] == ["X-1266417000000-60"]
    assert missing_bar_counts(rows.head(1), rows) == [
        {"BAR_ID": "X-1266417060000-60", "bars_in_kafka": 1, "bars_in_warehouse": 0, "missing": 1}
    ]


def test_offsets_going_back_mean_the_topic_was_recreated_not_retention() -> None:
    state = SensorPartitionState
    cursor = {0: state(120, T0, 1), 1: state(40, T0, 1), 2: state(0, None, 1)}
    # Partition 0 recreated (0 < 120) and partition 1 refilled below its old end; 2 grew; 3 is new.
    assert offsets_went_back(cursor, {0: (0, None), 1: (39, T0), 2: (5, T0), 3: (7, T0)}) == [0, 1]
    # Growth, no change, and a partition the look did not return are no reset.
    assert offsets_went_back(cursor, {0: (120, T0), 1: (41, T0)}) == []
    assert offsets_went_back({}, {0: (0, None)}) == []
