"""The facts' 5-minute time partitions (UTC) and conversions between keys and windows.

Nothing here reads the settings: the code location builds its partitions from them (code_location.py).
"""

from __future__ import annotations

from datetime import UTC, datetime

from dagster import TimeWindowPartitionsDefinition

from streaming.kernel.settings import WarehouseSettings

WINDOW_S = 300
WINDOW_MS = WINDOW_S * 1000
KEY_FORMAT = "%Y-%m-%d-%H:%M"
# The tags that make one run cover a range of partitions (single-run backfills, the sensor's catch-up).
RANGE_START_TAG = "dagster/asset_partition_range_start"
RANGE_END_TAG = "dagster/asset_partition_range_end"


def fact_partitions(start: str, end: str | None = None) -> TimeWindowPartitionsDefinition:
    """5-minute UTC partitions from `start` to `end` (YYYY-MM-DD, exclusive; open if None)."""
    return TimeWindowPartitionsDefinition(
        cron_schedule="*/5 * * * *",
        start=datetime.strptime(start, "%Y-%m-%d"),
        end=datetime.strptime(end, "%Y-%m-%d") if end else None,
        fmt=KEY_FORMAT,
        timezone="UTC",
        end_offset=0,
    )


def configured_partitions(loader: WarehouseSettings) -> TimeWindowPartitionsDefinition:
    """The partitions WAREHOUSE_PARTITIONS_START .. WAREHOUSE_PARTITIONS_END of `loader` (settings.warehouse)."""
    return fact_partitions(loader.partitions_start, loader.partitions_end)


def range_tags(first_key: str, last_key: str) -> dict[str, str]:
    """Run tags for ONE run over the partitions `first_key` .. `last_key` (inclusive)."""
    return {RANGE_START_TAG: first_key, RANGE_END_TAG: last_key}


def partition_key(start_ms: int) -> str:
    """The key of the 5-minute partition starting at `start_ms`."""
    return datetime.fromtimestamp(start_ms / 1000, tz=UTC).strftime(KEY_FORMAT)


def to_ms(moment: datetime) -> int:
    """Epoch ms of an aware datetime (naive ones are taken as UTC)."""
    aware = moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
    return int(aware.timestamp() * 1000)


def floor_window(ts_ms: int) -> int:
    """Start of the 5-minute window holding `ts_ms`."""
    return ts_ms // WINDOW_MS * WINDOW_MS


def _day_ms(day: str) -> int:
    return to_ms(datetime.strptime(day, "%Y-%m-%d"))


def partitions_bounds_ms(start: str, end: str | None) -> tuple[int, int | None]:
    """`(start_ms, end_ms)` of the configured partitions (YYYY-MM-DD days); end None when open."""
    return _day_ms(start), _day_ms(end) if end else None
