"""Fact partitions on the exchange's calendar: sessions, keys, DST, holidays, the closure rule over gaps.

Expected values come from NYSE's published calendar and plain datetime arithmetic, not from
the module under test.
"""

from __future__ import annotations

import itertools
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import polars as pl
import pytest

from tick_platform.assets.facts import run_windows
from tick_platform.backfill import BackfillError, partition_range, session_chunks
from tick_platform.calendar import outside_session, session_bars, trading_calendar
from tick_platform.closure import windows_to_request
from tick_platform.partitions import calendar_for, fact_partitions

NY = ZoneInfo("America/New_York")
W = 300_000


def _ms(y: int, mo: int, d: int, h: int, mi: int, zone: ZoneInfo = NY) -> int:
    return int(datetime(y, mo, d, h, mi, tzinfo=zone).timestamp() * 1000)


# NYSE 2024 (nyse.com): 10 full-day holidays, early closes at 13:00 on Jul 3, Nov 29 and Dec 24.
HOLIDAYS_2024 = [date(2024, 1, 1), date(2024, 1, 15), date(2024, 2, 19), date(2024, 3, 29), date(2024, 5, 27),
                 date(2024, 6, 19), date(2024, 7, 4), date(2024, 9, 2), date(2024, 11, 28), date(2024, 12, 25)]
EARLY_CLOSES_2024 = [date(2024, 7, 3), date(2024, 11, 29), date(2024, 12, 24)]


def _expected_keys_2024() -> list[str]:
    """Every 5-minute window 09:30-16:00 New York (13:00 on early closes) of 2024's NYSE sessions."""
    keys: list[str] = []
    day = date(2024, 1, 1)
    while day.year == 2024:
        if day.weekday() < 5 and day not in HOLIDAYS_2024:
            close = 13 * 60 if day in EARLY_CLOSES_2024 else 16 * 60
            keys += [f"{day.isoformat()}-{m // 60:02d}:{m % 60:02d}" for m in range(9 * 60 + 30, close, 5)]
        day += timedelta(days=1)
    return keys


def test_a_year_of_regular_sessions_is_under_25000_partitions_and_exactly_the_sessions() -> None:
    parts = fact_partitions("2024-01-01", "2025-01-01")
    keys = parts.get_partition_keys()
    expected = _expected_keys_2024()
    assert len(expected) == 252 * 78 - 3 * 36 == 19_548
    assert keys == expected
    assert len(keys) <= 25_000
    # The calendar's own windows give the same keys (the platform's fast path).
    cal = calendar_for("2024-01-01", "2025-01-01")
    assert [cal.key(t) for t in cal.windows(_ms(2024, 1, 1, 0, 0), _ms(2025, 1, 1, 0, 0))] == expected


def test_keys_follow_new_york_time_across_dst() -> None:
    parts = fact_partitions("2024-03-08", "2024-03-12")
    cal = calendar_for("2024-03-08", "2024-03-12")
    # Friday before the change: 09:30 EST is 14:30 UTC; Monday after: 09:30 EDT is 13:30 UTC.
    friday = parts.time_window_for_partition_key("2024-03-08-09:30").start
    monday = parts.time_window_for_partition_key("2024-03-11-09:30").start
    assert friday.astimezone(UTC) == datetime(2024, 3, 8, 14, 30, tzinfo=UTC)
    assert monday.astimezone(UTC) == datetime(2024, 3, 11, 13, 30, tzinfo=UTC)
    assert cal.key_start_ms("2024-03-11-09:30") == _ms(2024, 3, 11, 13, 30, UTC)
    assert parts.get_num_partitions() == 2 * 78  # no weekend keys


def test_extended_hours_and_around_the_clock() -> None:
    ext = calendar_for("2024-11-29", "2024-11-30", hours="extended")
    (session,) = ext.sessions  # early close 13:00: after-hours end at 17:00
    assert (session.open_ms, session.close_ms) == (_ms(2024, 11, 29, 4, 0), _ms(2024, 11, 29, 17, 0))
    assert fact_partitions("2024-11-29", "2024-11-30", hours="extended").get_num_partitions() == 13 * 12
    always = fact_partitions("2024-11-02", "2024-11-04", hours="always")  # a weekend, and the NY DST change
    keys = always.get_partition_keys()
    assert len(keys) == 2 * 288 == len(set(keys)) and keys[0] == "2024-11-02-00:00"  # UTC keys never repeat


def test_bars_outside_the_session_are_split_off_not_lost() -> None:
    cal = trading_calendar(date(2024, 3, 7), date(2024, 3, 12))
    starts = [_ms(2024, 3, 8, 9, 29), _ms(2024, 3, 8, 9, 30), _ms(2024, 3, 8, 15, 59), _ms(2024, 3, 8, 16, 0),
              _ms(2024, 3, 9, 12, 0), _ms(2024, 3, 11, 9, 30)]
    bars = pl.DataFrame({"start_ts_ms": [t + 59_000 for t in starts]})  # a second before the minute ends
    inside, outside = session_bars(bars, cal), outside_session(bars, cal)
    assert inside.height + outside.height == bars.height
    assert inside["start_ts_ms"].to_list() == [starts[1] + 59_000, starts[2] + 59_000, starts[5] + 59_000]


def test_a_session_opening_window_reads_the_gap_before_it() -> None:
    cal = calendar_for("2024-03-01", "2024-04-10")
    # Monday 2024-04-01 follows Good Friday (Mar 29, a holiday): its gap starts Thursday at 16:00.
    run = run_windows("2024-04-01-09:30", "2024-04-01-09:35", cal)
    assert run.read_start_ms == _ms(2024, 3, 28, 16, 0) and run.windows == [_ms(2024, 4, 1, 9, 30),
                                                                           _ms(2024, 4, 1, 9, 35)]
    mid = run_windows("2024-04-01-10:00", "2024-04-01-10:00", cal)
    assert mid.read_start_ms == _ms(2024, 4, 1, 10, 0) and mid.end_ms == _ms(2024, 4, 1, 10, 5)
    # A range over a weekend: every session window in it, none of the nights.
    span = run_windows("2024-03-08-15:00", "2024-03-11-10:00", cal)
    assert len(span.windows) == 12 + 7


def test_the_sensor_cap_counts_session_windows_not_a_night_of_empty_ones() -> None:
    cal = calendar_for("2024-03-01", "2024-03-20")
    # From Friday 15:00 to Monday 12:00 (through a weekend and the DST change): 12 + 30 session
    # windows, against 2 * 24 * 12 + ... empty 5-minute windows around the clock.
    starts = windows_to_request(_ms(2024, 3, 8, 15, 0), _ms(2024, 3, 11, 12, 0), 100, cal)
    assert len(starts) == 12 + 30
    assert starts[11] == _ms(2024, 3, 8, 15, 55) and starts[12] == _ms(2024, 3, 11, 9, 30)
    # Over a two-week backlog the cap still applies, to session windows only.
    capped = windows_to_request(_ms(2024, 3, 1, 9, 30), _ms(2024, 3, 20, 0, 0), 100, cal)
    assert len(capped) == 100 and all(cal.is_window(t) for t in capped)
    assert capped[78] == _ms(2024, 3, 4, 9, 30)  # Friday's 78, then Monday


def test_a_backfill_range_counts_session_partitions_and_refuses_a_closed_day() -> None:
    first, last, count = partition_range(
        datetime(2024, 3, 8, 14, 0), datetime(2024, 3, 12, 0, 0), "2024-03-01", "2024-03-20"
    )
    assert (first, last, count) == ("2024-03-08-09:30", "2024-03-11-15:55", 2 * 78)
    with pytest.raises(BackfillError, match="holds no window"):
        partition_range(datetime(2024, 3, 9, 0, 0), datetime(2024, 3, 10, 0, 0), "2024-03-01", "2024-03-20")


def test_a_long_backfill_is_cut_into_runs_of_whole_sessions() -> None:
    # July 2024: 22 sessions (Jul 4 a holiday, Jul 3 closes at 13:00 after 42 windows).
    cal = calendar_for("2024-07-01", "2024-08-01")
    chunks = session_chunks(cal, "2024-07-01-09:30", "2024-07-31-15:55", 5)
    assert [c.partitions for c in chunks] == [4 * 78 + 42, 5 * 78, 5 * 78, 5 * 78, 2 * 78]
    assert sum(c.partitions for c in chunks) == 21 * 78 + 42
    assert [(c.first, c.last) for c in chunks[:2]] == [
        ("2024-07-01-09:30", "2024-07-08-15:55"),  # Mon, Tue, Wed (early close), Fri, Mon
        ("2024-07-09-09:30", "2024-07-15-15:55"),
    ]
    # Every run after the first starts a session, so it reads the gap before it: no bar read twice.
    reads = [run_windows(c.first, c.last, cal) for c in chunks]
    assert all(a.end_ms == b.read_start_ms for a, b in itertools.pairwise(reads))
    # A range starting inside a session keeps its first windows in the first run.
    assert session_chunks(cal, "2024-07-02-15:00", "2024-07-05-10:00", 1)[0].partitions == 12
    with pytest.raises(BackfillError, match="at least 1"):
        session_chunks(cal, "2024-07-01-09:30", "2024-07-31-15:55", 0)


def test_the_last_close_skips_holidays_and_the_session_in_progress() -> None:
    cal = calendar_for("2024-07-01", "2024-08-01")
    jul3_close = _ms(2024, 7, 3, 13, 0)  # an early close, then the Jul 4 holiday
    assert cal.last_close_by(_ms(2024, 7, 4, 12, 0)) == jul3_close
    assert cal.last_close_by(_ms(2024, 7, 5, 10, 0)) == jul3_close  # Jul 5 is still open
    assert cal.last_close_by(_ms(2024, 7, 5, 16, 0)) == _ms(2024, 7, 5, 16, 0)
    assert cal.last_close_by(_ms(2024, 7, 1, 9, 0)) is None
