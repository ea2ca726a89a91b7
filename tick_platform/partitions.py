"""The facts' 5-minute partitions: the windows of the exchange's trading sessions only.

Keys are the window's start in the exchange's zone (`2024-03-11-09:30`, America/New_York), so
a key reads like the exchange's clock on either side of a DST change. A year of NYSE regular
sessions is about 19,600 partitions per asset instead of 105,000 around the clock.

Dagster knows the set as a cron in the exchange's zone with exclusions (pre-open minutes,
holidays, early closes). Its lookups walk that set (milliseconds each, growing with the
history), so the platform's own hot paths (the sensor, the asset's windows, backfill ranges)
use the calendar's binary searches (tick_platform/calendar.py) and give Dagster only keys.

Nothing here reads the settings: the code location builds its partitions from them (code_location.py).
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

from dagster import TimeWindowPartitionsDefinition

from streaming.kernel.settings import WarehouseSettings
from tick_platform.calendar import (
    EXCHANGE_TZ,
    SessionHours,
    TradingCalendar,
    key_zone,
    trading_calendar,
)
from tick_platform.calendar import KEY_FORMAT as KEY_FORMAT  # re-exported
from tick_platform.calendar import WINDOW_MS as WINDOW_MS  # the partitions' window, re-exported

WINDOW_S = WINDOW_MS // 1000
# An open-ended range knows its holidays this far ahead: the code location is reloaded long before.
OPEN_END_HORIZON_DAYS = 400
# The tags that make one run cover a range of partitions (single-run backfills, the sensor's catch-up).
RANGE_START_TAG = "dagster/asset_partition_range_start"
RANGE_END_TAG = "dagster/asset_partition_range_end"
_ZONE = ZoneInfo(EXCHANGE_TZ)


def calendar_for(
    start: str, end: str | None, hours: SessionHours = "regular", exchange: str = "XNYS", today: date | None = None
) -> TradingCalendar:
    """The sessions from `start` to `end` (YYYY-MM-DD, end exclusive; open: a horizon past today)."""
    first = date.fromisoformat(start)
    last = (
        date.fromisoformat(end) - timedelta(days=1)
        if end
        else (today or datetime.now(tz=UTC).date()) + timedelta(days=OPEN_END_HORIZON_DAYS)
    )
    return trading_calendar(first, last, hours, exchange)


def configured_calendar(loader: WarehouseSettings) -> TradingCalendar:
    """The calendar of the configured partitions (range, session hours, exchange)."""
    return calendar_for(loader.partitions_start, loader.partitions_end, loader.session_hours, loader.exchange)


def _cron_hours(calendar: TradingCalendar) -> tuple[int, int]:
    """The first and last local hour any session window starts in."""
    if not calendar.sessions:
        return 9, 15
    opens = [datetime.fromtimestamp(s.open_ms / 1000, _ZONE).hour for s in calendar.sessions]
    lasts = [datetime.fromtimestamp((s.close_ms - WINDOW_MS) / 1000, _ZONE).hour for s in calendar.sessions]
    return min(opens), max(lasts)


def session_partitions(calendar: TradingCalendar, start: str, end: str | None) -> TimeWindowPartitionsDefinition:
    """5-minute partitions inside the calendar's sessions from `start` to `end` (YYYY-MM-DD, exclusive)."""
    if calendar.hours == "always":  # every 5 minutes in UTC: Dagster's own fast path, no exclusions
        return TimeWindowPartitionsDefinition(
            cron_schedule="*/5 * * * *",
            start=datetime.strptime(start, "%Y-%m-%d"),
            end=datetime.strptime(end, "%Y-%m-%d") if end else None,
            fmt=KEY_FORMAT,
            timezone="UTC",
            end_offset=0,
        )
    first_hour, last_hour = _cron_hours(calendar)
    usual_open = _usual_open_minute(calendar)
    exclusions: list[str | datetime] = []
    if usual_open % 60:
        # The minutes of the opening hour before the usual open (09:00-09:25 for NYSE regular hours).
        exclusions.append(f"0-{usual_open % 60 - 5}/5 {first_hour} * * 1-5")
    exclusions.extend(_off_session_ticks(calendar, start, first_hour, last_hour, usual_open))
    return TimeWindowPartitionsDefinition(
        cron_schedule=f"*/5 {first_hour}-{last_hour} * * 1-5",
        start=datetime.strptime(start, "%Y-%m-%d"),
        end=_dagster_end(end, first_hour) if end else None,
        fmt=KEY_FORMAT,
        timezone=EXCHANGE_TZ,
        end_offset=0,
        exclusions=exclusions or None,
    )


def _dagster_end(end: str, first_hour: int) -> datetime:
    """Dagster's end for partitions ending before the day `end`: the first cron tick on or after it.

    Dagster closes each window at the next cron tick, excluded or not, so the last window of a
    session reaches the next weekday's first tick; an end at midnight would drop it.
    """
    day = date.fromisoformat(end)
    while day.weekday() >= 5:
        day += timedelta(days=1)
    return datetime(day.year, day.month, day.day, first_hour)


def _usual_open_minute(calendar: TradingCalendar) -> int:
    """The most common session open as minutes after local midnight (570 = 09:30)."""
    counts: dict[int, int] = {}
    for s in calendar.sessions:
        o = datetime.fromtimestamp(s.open_ms / 1000, _ZONE)
        counts[o.hour * 60 + o.minute] = counts.get(o.hour * 60 + o.minute, 0) + 1
    return max(counts, key=lambda m: counts[m]) if counts else 9 * 60 + 30


def _off_session_ticks(
    calendar: TradingCalendar, start: str, first_hour: int, last_hour: int, usual_open: int
) -> list[str | datetime]:
    """Every cron tick on a weekday that is no session window: holidays, early closes, late opens.

    The usual pre-open minutes are already a cron exclusion, so only ticks from the usual open
    on are listed.
    """
    if not calendar.sessions:
        return []
    ticks: list[str | datetime] = []
    by_day = {s.day: s for s in calendar.sessions}
    day = date.fromisoformat(start)
    last = calendar.sessions[-1].day
    while day <= last:
        if day.weekday() < 5:
            session = by_day.get(day)
            for minute in range(max(first_hour * 60, usual_open), (last_hour + 1) * 60, 5):
                tick = datetime(day.year, day.month, day.day, minute // 60, minute % 60, tzinfo=_ZONE)
                t_ms = int(tick.timestamp() * 1000)
                if session is None or not (session.open_ms <= t_ms < session.close_ms):
                    ticks.append(tick)
        day += timedelta(days=1)
    return ticks


def fact_partitions(
    start: str, end: str | None = None, hours: SessionHours = "regular", exchange: str = "XNYS"
) -> TimeWindowPartitionsDefinition:
    """The session partitions of `exchange` from `start` to `end` (YYYY-MM-DD, exclusive; open if None)."""
    return session_partitions(calendar_for(start, end, hours, exchange), start, end)


def configured_partitions(loader: WarehouseSettings) -> TimeWindowPartitionsDefinition:
    """The partitions WAREHOUSE_PARTITIONS_START .. WAREHOUSE_PARTITIONS_END of `loader`, on its calendar."""
    return session_partitions(configured_calendar(loader), loader.partitions_start, loader.partitions_end)


def range_tags(first_key: str, last_key: str) -> dict[str, str]:
    """Run tags for ONE run over the partitions `first_key` .. `last_key` (inclusive)."""
    return {RANGE_START_TAG: first_key, RANGE_END_TAG: last_key}


def partition_key(start_ms: int, hours: SessionHours = "regular") -> str:
    """The key of the 5-minute partition starting at `start_ms` on a calendar with `hours`."""
    zone = ZoneInfo(key_zone(hours))
    return datetime.fromtimestamp(start_ms / 1000, tz=zone).strftime(KEY_FORMAT)


def to_ms(moment: datetime) -> int:
    """Epoch ms of an aware datetime (naive ones are taken as UTC)."""
    aware = moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
    return int(aware.timestamp() * 1000)


def floor_window(ts_ms: int) -> int:
    """Start of the 5-minute window holding `ts_ms`."""
    return ts_ms // WINDOW_MS * WINDOW_MS


def _day_ms(day: str, hours: SessionHours = "regular") -> int:
    # Partition ranges are days on the calendar's clock: the exchange's midnight, not UTC's.
    return to_ms(datetime.strptime(day, "%Y-%m-%d").replace(tzinfo=ZoneInfo(key_zone(hours))))


def partitions_bounds_ms(start: str, end: str | None, hours: SessionHours = "regular") -> tuple[int, int | None]:
    """`(start_ms, end_ms)` of the configured partitions (YYYY-MM-DD days); end None when open."""
    return _day_ms(start, hours), _day_ms(end, hours) if end else None
