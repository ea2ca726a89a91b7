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
from tick_platform.checks import FACT_CHECKS, fact_window_checks
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

    run_id: str  # the first run's
    success: bool
    first_partition: str
    last_partition: str
    partitions: int
    rows: dict[str, int]
    checks: list[CheckOutcome] = field(default_factory=list)
    metadata: dict[str, Any] = field(default_factory=dict)  # the first run's fact materialization
    run_ids: list[str] = field(default_factory=list)  # one ranged run per chunk of sessions, in order

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


@dataclass(frozen=True)
class RunChunk:
    """One ranged run of a backfill: its first and last partition key and how many partitions."""

    first: str
    last: str
    partitions: int


def session_chunks(calendar: TradingCalendar, first_key: str, last_key: str, sessions_per_run: int) -> list[RunChunk]:
    """The partitions `first_key`..`last_key` cut into ranged runs of at most `sessions_per_run` sessions.

    Cuts fall between sessions, so every run but the first starts a session and reads the gap
    before it (facts.run_windows): each bar is read by exactly one run, whatever the chunk size.
    """
    if sessions_per_run < 1:
        raise BackfillError(f"sessions per run must be at least 1, not {sessions_per_run}")
    windows = calendar.windows(calendar.key_start_ms(first_key), calendar.key_start_ms(last_key) + WINDOW_MS)
    by_session: dict[object, list[int]] = {}
    for start in windows:
        session = calendar.session_at(start)
        by_session.setdefault(session.day if session is not None else None, []).append(start)
    groups = list(by_session.values())
    chunks = []
    for i in range(0, len(groups), sessions_per_run):
        part = [w for group in groups[i : i + sessions_per_run] for w in group]
        chunks.append(RunChunk(calendar.key(part[0]), calendar.key(part[-1]), len(part)))
    return chunks


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
    sessions_per_run: int | None = None,
) -> BackfillReport:
    """Materialize fact_ticks_60s/300s for every session partition covering `[start, end)`.

    One ranged run per chunk of `sessions_per_run` sessions (WAREHOUSE_BACKFILL_SESSIONS_PER_RUN),
    in order, stopping at the first that fails: a run's memory holds its chunk's bars, and Dagster
    still records every partition. Each run holds its window's asset checks; then (by default)
    dim_symbol and dim_calendar.
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
    whole = run_windows(first, last, calendar)
    chunks = session_chunks(calendar, first, last, sessions_per_run or loader.backfill_sessions_per_run)
    resources = {
        # The same env file as the warehouse: SASL/SSL of a secured broker come from it.
        "kafka": KafkaResource.from_settings(kafka or chosen.kafka, env_file=env_file),
        "warehouse": warehouse_resource(chosen, env_file),
    }
    dagster_instance = instance or _instance()
    facts = build_fact_ticks(configured_partitions(loader), loader.session_hours, loader.exchange)
    checks: list[CheckOutcome] = []
    meta: dict[str, Any] = {}
    run_ids: list[str] = []
    success = True
    for i, chunk in enumerate(chunks):
        # Freshness compares the newest loaded window with the stream: only the last run is whole.
        run_checks = FACT_CHECKS if i == len(chunks) - 1 else [fact_window_checks]
        result = materialize(
            [facts, *run_checks],
            resources=resources,
            instance=dagster_instance,
            tags=range_tags(chunk.first, chunk.last),
            run_config=_console_level(log_level),
            raise_on_error=False,
        )
        run_ids.append(result.run_id)
        checks += [
            CheckOutcome(
                ev.asset_key.to_user_string(), ev.check_name, ev.passed, {k: v.value for k, v in ev.metadata.items()}
            )
            for ev in result.get_asset_check_evaluations()
        ]
        if not meta:
            for mat in result.asset_materializations_for_node("fact_ticks")[:1]:
                meta = {k: v.value for k, v in mat.metadata.items()}
        if not result.success:
            success = False
            break
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
        run_id=run_ids[0],
        success=success,
        first_partition=first,
        last_partition=last,
        partitions=count,
        rows=_count_rows(resources["warehouse"], whole.read_start_ms, whole.end_ms),  # type: ignore[arg-type]
        checks=checks,
        metadata=meta,
        run_ids=run_ids,
    )
