"""The fact partitions a pipeline or demo run needs: the days of its data, not every day since 2010.

Dagster's UI and any step that enumerates partitions slow down with their count (288 per
day), so a historical replay gets a partition set bounded to the days it covers, and a live
run one that starts today. A user's explicit WAREHOUSE_PARTITIONS_START (or its deprecated name
SNOWFLAKE_PARTITIONS_START) always wins.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta

from streaming.kernel.settings import is_configured

START = "WAREHOUSE_PARTITIONS_START"
END = "WAREHOUSE_PARTITIONS_END"
# The deprecated name a user's .env may still use (streaming/kernel/settings.py reads both).
DEPRECATED_START = "SNOWFLAKE_PARTITIONS_START"


def data_days(files: Sequence[str], symbol: str | None = None) -> tuple[date, date] | None:
    """First and last UTC day of the ticks in `files` (None if they hold no valid tick)."""
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
    return datetime.fromtimestamp(ts_ms / 1000, tz=UTC).date()


def partitions_env(
    files: Sequence[str], *, realtime: bool, symbol: str | None = None, env_file: str | None = None
) -> dict[str, str]:
    """WAREHOUSE_PARTITIONS_START/END for the run's children; empty when the user chose them."""
    if is_configured(START, env_file) or is_configured(DEPRECATED_START, env_file):
        return {}
    if realtime:  # live timestamps: the data is shifted to now
        return {START: datetime.now(tz=UTC).date().isoformat()}
    days = data_days(files, symbol)
    if days is None:
        return {}
    first, last = days
    return {START: first.isoformat(), END: (last + timedelta(days=1)).isoformat()}
