"""The fact partitions a pipeline or demo run needs: the days of its data, not every day since 2010.

Dagster's UI and any step that enumerates partitions slow down with their count (78 per
NYSE session), so a historical replay gets a partition set bounded to the days it covers, and a live
run one that starts today. A user's explicit WAREHOUSE_PARTITIONS_START (or its deprecated name
SNOWFLAKE_PARTITIONS_START) always wins.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

from streaming.kernel.settings import is_configured

_EXCHANGE_ZONE = ZoneInfo("America/New_York")

START = "WAREHOUSE_PARTITIONS_START"
END = "WAREHOUSE_PARTITIONS_END"
HOURS = "WAREHOUSE_SESSION_HOURS"
# The deprecated names a user's .env may still use (streaming/kernel/settings.py reads both).
DEPRECATED_START = "SNOWFLAKE_PARTITIONS_START"
DEPRECATED_HOURS = "SNOWFLAKE_SESSION_HOURS"


def data_days(files: Sequence[str], symbol: str | None = None) -> tuple[date, date] | None:
    """First and last exchange day (New York) of the ticks in `files` (None if they hold no valid tick).

    The partitions are days on the exchange's calendar, so an after-hours tick past 19:00 New
    York time (midnight UTC) still belongs to its New York day.
    """
    from streaming.sources.files import read_ticks

    low: int | None = None
    high: int | None = None
    for chunk in read_ticks(list(files), symbol):
        lo, hi = int(chunk["ts_ms"].min()), int(chunk["ts_ms"].max())  # type: ignore[arg-type]
        low = lo if low is None else min(low, lo)
        high = hi if high is None else max(high, hi)
    if low is None or high is None:
        return None
    return _day(low), _day(high)


def _day(ts_ms: int) -> date:
    return datetime.fromtimestamp(ts_ms / 1000, tz=_EXCHANGE_ZONE).date()


def partitions_env(
    files: Sequence[str], *, realtime: bool, symbol: str | None = None, env_file: str | None = None
) -> dict[str, str]:
    """WAREHOUSE_PARTITIONS_START/END for the run's children; empty when the user chose them.

    A live run (timestamps shifted to now) may run at any hour of any day, when the exchange is
    closed: it also gets WAREHOUSE_SESSION_HOURS=always (partitions around the clock, UTC keys)
    unless the user chose the session hours.
    """
    if is_configured(START, env_file) or is_configured(DEPRECATED_START, env_file):
        return {}
    if realtime:  # live timestamps: the data is shifted to now
        configured = is_configured(HOURS, env_file) or is_configured(DEPRECATED_HOURS, env_file)
        hours = {} if configured else {HOURS: "always"}
        return {START: datetime.now(tz=UTC).date().isoformat(), **hours}
    days = data_days(files, symbol)
    if days is None:
        return {}
    first, last = days
    return {START: first.isoformat(), END: (last + timedelta(days=1)).isoformat()}
