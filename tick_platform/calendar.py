"""The exchange's trading sessions and their 5-minute fact windows, from a maintained calendar.

Sessions come from `exchange_calendars` (holidays and early closes included); everything else
here is plain arithmetic on epoch milliseconds, so the partitions, the sensor's closure rule,
the schedule, the checks and `dim_calendar` all follow the same calendar.

Regular hours are the exchange's own session (NYSE 09:30-16:00 America/New_York, 13:00 on an
early close). Extended hours add the pre-market from 04:00 and the after-hours until 20:00
(17:00 after an early close): 5 h 30 before the open and 4 h after the close. `always` is
every UTC day around the clock, weekends included: for a 24/7 market, or a replay whose
timestamps are shifted to now (`make pipeline`), which may be any hour of any day.

Partition keys are a window's start on the calendar's clock: New York time for the exchange's
sessions (readable across DST, which never touches 04:00-20:00), UTC for `always` (whose
repeated November hour would otherwise give two windows the same key).
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from functools import lru_cache
from typing import Literal
from zoneinfo import ZoneInfo

import numpy as np
import polars as pl

SessionHours = Literal["regular", "extended", "always"]
KEY_FORMAT = "%Y-%m-%d-%H:%M"
DAY_MS = 86_400_000
WINDOW_MS = 300_000
MINUTE_MS = 60_000
EXTENDED_BEFORE_OPEN_MS = (5 * 60 + 30) * MINUTE_MS
EXTENDED_AFTER_CLOSE_MS = 4 * 60 * MINUTE_MS
EXCHANGE_TZ = "America/New_York"


@dataclass(frozen=True)
class Session:
    """One trading day's hours as epoch ms: `[open_ms, close_ms)`."""

    day: date
    open_ms: int
    close_ms: int

    @property
    def windows(self) -> range:
        """The starts of its 5-minute windows."""
        return range(self.open_ms, self.close_ms, WINDOW_MS)


class TradingCalendar:
    """The sessions of `exchange` from `first_day` to `last_day` (inclusive), regular or extended hours.

    Lookups are binary searches over the session opens: O(log n), whatever the history's length.
    """

    def __init__(self, sessions: list[Session], hours: SessionHours, exchange: str, timezone: str) -> None:
        self.sessions = sessions
        self.hours: SessionHours = hours
        self.exchange = exchange
        self.timezone = timezone
        self.key_zone = key_zone(hours, timezone)
        self._zone = ZoneInfo(self.key_zone)
        self._opens = [s.open_ms for s in sessions]

    def key(self, start_ms: int) -> str:
        """The partition key of the window starting at `start_ms`."""
        return datetime.fromtimestamp(start_ms / 1000, tz=self._zone).strftime(KEY_FORMAT)

    def key_start_ms(self, key: str) -> int:
        """Epoch ms of the start of partition `key` (the inverse of `key`)."""
        return int(datetime.strptime(key, KEY_FORMAT).replace(tzinfo=self._zone).timestamp() * 1000)

    def session_at(self, ts_ms: int) -> Session | None:
        """The session whose hours hold `ts_ms`, or None outside every session."""
        i = bisect.bisect_right(self._opens, ts_ms) - 1
        if i >= 0 and ts_ms < self.sessions[i].close_ms:
            return self.sessions[i]
        return None

    def is_window(self, start_ms: int) -> bool:
        """Whether a 5-minute fact window (a partition) starts at `start_ms`."""
        s = self.session_at(start_ms)
        return s is not None and (start_ms - s.open_ms) % WINDOW_MS == 0

    def windows(self, start_ms: int, end_ms: int) -> list[int]:
        """The starts of the session windows inside `[start_ms, end_ms)` (whole windows only), in order."""
        starts: list[int] = []
        t = self.next_window(start_ms)
        i = max(bisect.bisect_right(self._opens, t) - 1, 0) if t is not None else len(self.sessions)
        while t is not None and t + WINDOW_MS <= end_ms:
            s = self.sessions[i]
            starts.extend(range(t, min(s.close_ms, end_ms - WINDOW_MS + 1), WINDOW_MS))
            i += 1
            t = self.sessions[i].open_ms if i < len(self.sessions) else None
        return starts

    def next_window(self, ts_ms: int) -> int | None:
        """The first window starting at or after `ts_ms`, or None past the calendar's last session."""
        i = bisect.bisect_right(self._opens, ts_ms) - 1
        if i >= 0:
            s = self.sessions[i]
            t = s.open_ms + -(-(ts_ms - s.open_ms) // WINDOW_MS) * WINDOW_MS
            if t < s.close_ms:
                return t
        return self.sessions[i + 1].open_ms if i + 1 < len(self.sessions) else None

    def window_ms_of(self, ts_ms: int) -> int | None:
        """The start of the session window holding `ts_ms`, or None outside the sessions."""
        s = self.session_at(ts_ms)
        return None if s is None else s.open_ms + (ts_ms - s.open_ms) // WINDOW_MS * WINDOW_MS

    def last_close_by(self, ts_ms: int) -> int | None:
        """The close of the newest session that closed at or before `ts_ms`, or None before the first."""
        i = bisect.bisect_right(self._opens, ts_ms) - 1
        if i >= 0 and self.sessions[i].close_ms > ts_ms:
            i -= 1  # `ts_ms` is inside session i: the one before it closed last
        return self.sessions[i].close_ms if i >= 0 else None

    def gap_before(self, start_ms: int) -> int | None:
        """Where the gap before a session's first window begins (the previous close), else None.

        The first window of a session also accounts for the bars between the previous session's
        close and its open (after-hours, pre-market, a bar stamped on a holiday), so that every
        bar is read by exactly one run however the windows are batched into runs.
        """
        s = self.session_at(start_ms)
        if s is None or s.open_ms != start_ms:
            return None
        i = bisect.bisect_left(self._opens, start_ms)
        return self.sessions[i - 1].close_ms if i > 0 else None

    def minutes(self) -> pl.DataFrame:
        """One row per trading minute (dim_calendar), keyed by its UTC start MINUTE_TS."""
        starts = [t for s in self.sessions for t in range(s.open_ms, s.close_ms, MINUTE_MS)]
        days = [s.day for s in self.sessions for _ in range(s.open_ms, s.close_ms, MINUTE_MS)]
        opens = [s.open_ms for s in self.sessions for _ in range(s.open_ms, s.close_ms, MINUTE_MS)]
        frame = pl.DataFrame(
            {"TS_MS": starts, "TRADE_DATE": days, "OPEN_MS": opens},
            schema={"TS_MS": pl.Int64(), "TRADE_DATE": pl.Date(), "OPEN_MS": pl.Int64()},
        )
        utc = pl.from_epoch(pl.col("TS_MS"), time_unit="ms").cast(pl.Datetime("us"))
        return frame.select(
            utc.alias("MINUTE_TS"),
            utc.dt.replace_time_zone("UTC")
            .dt.convert_time_zone(self.timezone)
            .dt.replace_time_zone(None)
            .alias("MINUTE_ET"),
            pl.col("TRADE_DATE"),
            pl.col("TRADE_DATE").dt.year().cast(pl.Int64).alias("YEAR"),
            pl.col("TRADE_DATE").dt.weekday().cast(pl.Int64).alias("WEEKDAY"),
            ((pl.col("TS_MS") - pl.col("OPEN_MS")) // MINUTE_MS).cast(pl.Int64).alias("MINUTE_OF_SESSION"),
            pl.from_epoch(pl.col("TS_MS") // WINDOW_MS * WINDOW_MS, time_unit="ms")
            .cast(pl.Datetime("us"))
            .alias("WINDOW_300S_TS"),
        )


def _ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


def key_zone(hours: SessionHours, exchange_tz: str = EXCHANGE_TZ) -> str:
    """The zone partition keys are written in for `hours`."""
    return "UTC" if hours == "always" else exchange_tz


def key_start_ms(key: str, hours: SessionHours = "regular") -> int:
    """Epoch ms of the start of partition `key` of a calendar with `hours`."""
    zone = ZoneInfo(key_zone(hours))
    return int(datetime.strptime(key, KEY_FORMAT).replace(tzinfo=zone).timestamp() * 1000)


@lru_cache(maxsize=16)
def trading_calendar(
    first_day: date, last_day: date, hours: SessionHours = "regular", exchange: str = "XNYS"
) -> TradingCalendar:
    """The sessions of `exchange` (an exchange_calendars code) between two days, inclusive.

    Built once per process and arguments: the library needs about a second to import and a
    fraction of one per decade of sessions.
    """
    if hours == "always":
        days = (last_day - first_day).days + 1
        start = int(datetime(first_day.year, first_day.month, first_day.day, tzinfo=UTC).timestamp() * 1000)
        around = [
            Session(first_day + timedelta(days=i), start + i * DAY_MS, start + (i + 1) * DAY_MS) for i in range(days)
        ]
        return TradingCalendar(around, hours, exchange, EXCHANGE_TZ)
    import exchange_calendars  # pandas underneath: only the processes that need a calendar pay for it

    cal = exchange_calendars.get_calendar(
        exchange, start=first_day.isoformat(), end=max(last_day, first_day + timedelta(days=1)).isoformat()
    )
    schedule = cal.schedule
    sessions: list[Session] = []
    for label, opens, closes in zip(schedule.index, schedule["open"], schedule["close"], strict=True):
        open_ms, close_ms = _ms(opens.to_pydatetime()), _ms(closes.to_pydatetime())
        if hours == "extended":
            open_ms, close_ms = open_ms - EXTENDED_BEFORE_OPEN_MS, close_ms + EXTENDED_AFTER_CLOSE_MS
        day = label.date()
        if first_day <= day <= last_day:
            sessions.append(Session(day, open_ms, close_ms))
    return TradingCalendar(sessions, hours, exchange, str(cal.tz) if cal.tz else EXCHANGE_TZ)


def session_minutes(years: list[int], hours: SessionHours = "regular", exchange: str = "XNYS") -> pl.DataFrame:
    """dim_calendar's rows: every trading minute of the given years, holidays and early closes honoured."""
    if not years:
        return trading_calendar(date(2000, 1, 3), date(2000, 1, 2), hours, exchange).minutes()
    ordered = sorted(set(years))
    frames = [trading_calendar(date(y, 1, 1), date(y, 12, 31), hours, exchange).minutes() for y in ordered]
    return pl.concat(frames).sort("MINUTE_TS")


def session_bars(bars: pl.DataFrame, calendar: TradingCalendar, column: str = "start_ts_ms") -> pl.DataFrame:
    """The rows of `bars` whose `column` (epoch ms) lies inside a session of `calendar`."""
    if bars.is_empty():
        return bars
    return bars.filter(_in_session(bars[column], calendar))


def outside_session(bars: pl.DataFrame, calendar: TradingCalendar, column: str = "start_ts_ms") -> pl.DataFrame:
    """The rows of `bars` outside every session (counted and reported, never rolled up)."""
    if bars.is_empty():
        return bars
    return bars.filter(~_in_session(bars[column], calendar))


def _in_session(values: pl.Series, calendar: TradingCalendar) -> pl.Series:
    # Vectorized session_at: one binary search per row in C, for millions of bars per day.
    if not calendar.sessions:
        return pl.Series([False] * len(values), dtype=pl.Boolean())
    ts = values.to_numpy()
    opens = np.asarray(calendar._opens, dtype=np.int64)
    closes = np.asarray([s.close_ms for s in calendar.sessions], dtype=np.int64)
    idx = np.searchsorted(opens, ts, side="right") - 1
    inside = (idx >= 0) & (ts < closes[np.clip(idx, 0, None)])
    return pl.Series(inside, dtype=pl.Boolean())


def calendar_covering(start_ms: int, end_ms: int, hours: SessionHours, exchange: str) -> TradingCalendar:
    """A calendar with every session that may touch `[start_ms, end_ms)`, and the one before it.

    A week of margin before: the gap before a Monday after a long weekend reaches back four days.
    """
    first = datetime.fromtimestamp(start_ms / 1000, tz=UTC).date() - timedelta(days=7)
    last = datetime.fromtimestamp(end_ms / 1000, tz=UTC).date() + timedelta(days=1)
    return trading_calendar(first, last, hours, exchange)
