"""Programmatic backfill: materialize every fact partition of a time range in ONE run, with checks.

`make demo` (and anyone scripting the platform) calls `materialize_facts`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from dagster import DagsterInstance, materialize

from streaming.kernel.errors import TickPlatformError
from streaming.kernel.settings import KafkaSettings, Settings, load_settings
from streaming.kernel.warehouse.schema import FACT_SPECS
from tick_platform.assets.dimensions import dim_calendar, dim_symbol
from tick_platform.assets.facts import build_fact_ticks, run_windows
from tick_platform.calendar import TradingCalendar
from tick_platform.checks import FACT_CHECKS
from tick_platform.fact_store import naive_utc
from tick_platform.partitions import (
    WINDOW_MS,
    calendar_for,
    configured_calendar,
    configured_partitions,
    floor_window,
    partitions_bounds_ms,
    range_tags,
    to_ms,
)
from tick_platform.resources import KafkaResource, WarehouseResource, warehouse_resource


class BackfillError(TickPlatformError):
    """The requested range cannot be backfilled (outside the partitions, empty)."""


@dataclass(frozen=True)
class CheckOutcome:
    """One asset check's verdict."""

    asset: str
    name: str
    passed: bool
    metadata: dict[str, Any]


@dataclass(frozen=True)
class BackfillReport:
    """What a backfill run did."""

    run_id: str
    success: bool
    first_partition: str
    last_partition: str
    partitions: int
    rows: dict[str, int]
    checks: list[CheckOutcome] = field(default_factory=list)
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def checks_passed(self) -> bool:
        return bool(self.checks) and all(c.passed for c in self.checks)


def partition_range(
    start: datetime,
    end: datetime,
    partitions_start: str,
    partitions_end: str | None = None,
    calendar: TradingCalendar | None = None,
) -> tuple[str, str, int]:
    """First and last session partition key covering `[start, end)` and how many partitions that is.

    `calendar` defaults to NYSE regular hours over the partitions' range.
    """
    t0 = floor_window(to_ms(start))
    t1 = -(-to_ms(end) // WINDOW_MS) * WINDOW_MS
    if t1 <= t0:
        raise BackfillError(f"empty range [{start}, {end})")
    sessions = calendar or calendar_for(partitions_start, partitions_end)
    first_ms, end_ms = partitions_bounds_ms(partitions_start, partitions_end, sessions.hours)
    if t0 < first_ms:
        raise BackfillError(
            f"{naive_utc(t0):%Y-%m-%d %H:%M} UTC is before WAREHOUSE_PARTITIONS_START={partitions_start}; "
            "set it to the replayed day or earlier"
        )
    if end_ms is not None and t1 > end_ms:
        raise BackfillError(
            f"{naive_utc(t1):%Y-%m-%d %H:%M} UTC is past WAREHOUSE_PARTITIONS_END={partitions_end}; "
            "set it after the replayed day (or leave it empty)"
        )
    windows = sessions.windows(t0, t1)
    if not windows:
        raise BackfillError(
            f"[{naive_utc(t0):%Y-%m-%d %H:%M}, {naive_utc(t1):%Y-%m-%d %H:%M}) UTC holds no window of the "
            f"{sessions.hours} sessions of {sessions.exchange} (a weekend, a holiday, outside the hours)"
        )
    return sessions.key(windows[0]), sessions.key(windows[-1]), len(windows)


def _console_level(level: str) -> dict[str, Any]:
    """Run config for the console logger: the run's events still go to the instance in full."""
    return {"loggers": {"console": {"config": {"log_level": level.upper()}}}}


def _instance() -> DagsterInstance:
    return DagsterInstance.get() if os.environ.get("DAGSTER_HOME") else DagsterInstance.ephemeral()


def _count_rows(warehouse: WarehouseResource, start_ms: int, end_ms: int) -> dict[str, int]:
    counts: dict[str, int] = {}
    with warehouse.connect() as conn:
        for table in (spec.table for spec in FACT_SPECS):
            frame = conn.query(
                f"SELECT COUNT(*) AS N FROM {table.qualified} WHERE START_TS >= {{p}} AND START_TS < {{p}}",
                [naive_utc(start_ms), naive_utc(end_ms)],
            )
            counts[table.name] = int(frame["N"][0])
    return counts


def materialize_facts(
    start: datetime,
    end: datetime,
    settings: Settings | None = None,
    *,
    kafka: KafkaSettings | None = None,
    instance: DagsterInstance | None = None,
    with_dimensions: bool = True,
    env_file: str | None = None,
    log_level: str = "INFO",
) -> BackfillReport:
    """Materialize fact_ticks_60s/300s for every 5-minute partition covering `[start, end)` in ONE run.

    Runs the asset checks in the same run; then (by default) dim_symbol and dim_calendar.
    `settings` defaults to load_settings(); its partitions are the run's (whatever the environment says);
    `kafka` overrides its Kafka section (brokers, topics);
    `instance` defaults to DAGSTER_HOME's instance (ephemeral without DAGSTER_HOME).
    Naive datetimes are UTC. `log_level` filters the console only (the instance keeps every event).
    Raises BackfillError for a range outside the partitions.
    """
    chosen = settings or load_settings(env_file)
    loader = chosen.warehouse
    calendar = configured_calendar(loader)
    first, last, count = partition_range(start, end, loader.partitions_start, loader.partitions_end, calendar)
    run = run_windows(first, last, calendar)
    t0, t1 = run.read_start_ms, run.end_ms
    resources = {
        # The same env file as the warehouse: SASL/SSL of a secured broker come from it.
        "kafka": KafkaResource.from_settings(kafka or chosen.kafka, env_file=env_file),
        "warehouse": warehouse_resource(chosen, env_file),
    }
    dagster_instance = instance or _instance()
    result = materialize(
        [build_fact_ticks(configured_partitions(loader), loader.session_hours, loader.exchange), *FACT_CHECKS],
        resources=resources,
        instance=dagster_instance,
        tags=range_tags(first, last),
        run_config=_console_level(log_level),
        raise_on_error=False,
    )
    checks = [
        CheckOutcome(
            ev.asset_key.to_user_string(), ev.check_name, ev.passed, {k: v.value for k, v in ev.metadata.items()}
        )
        for ev in result.get_asset_check_evaluations()
    ]
    meta: dict[str, Any] = {}
    for mat in result.asset_materializations_for_node("fact_ticks")[:1]:
        meta = {k: v.value for k, v in mat.metadata.items()}
    success = result.success
    if success and with_dimensions:
        dims = materialize(
            [dim_symbol, dim_calendar],
            resources=resources,
            instance=dagster_instance,
            run_config=_console_level(log_level),
            raise_on_error=False,
        )
        success = dims.success
    return BackfillReport(
        run_id=result.run_id,
        success=success,
        first_partition=first,
        last_partition=last,
        partitions=count,
        rows=_count_rows(resources["warehouse"], t0, t1),  # type: ignore[arg-type]
        checks=checks,
        metadata=meta,
    )
