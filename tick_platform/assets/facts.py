"""The fact assets (fact_ticks_60s, fact_ticks_300s): 5-minute partitions rolled up from ticks.agg.1s by offsets.

`build_fact_ticks(partitions_def)` makes the multi-asset, one asset per entry of the fact registry
(`FACT_SPECS`): its partitions come from the settings the code location is built with
(code_location.build_definitions), never from an import.
"""

import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from confluent_kafka import Consumer, KafkaException, TopicPartition
from dagster import (
    AssetExecutionContext,
    AssetKey,
    AssetsDefinition,
    AssetSpec,
    BackfillPolicy,
    Backoff,
    Failure,
    MaterializeResult,
    MetadataValue,
    PartitionsDefinition,
    RetryPolicy,
    multi_asset,
)

from streaming.kernel.errors import KafkaAccessError
from streaming.kernel.settings import KafkaSettings
from streaming.kernel.warehouse.schema import FACT_SPECS, FACTS_60S, FACTS_300S, FactSpec, fact_spec
from tick_platform.bar_reader import OffsetRange, read_window, warehouse_access
from tick_platform.calendar import (
    SessionHours,
    TradingCalendar,
    calendar_covering,
    key_start_ms,
    outside_session,
    session_bars,
)
from tick_platform.fact_store import RetainedWindowError, RetentionGuard, naive_utc, replace_window
from tick_platform.partitions import WINDOW_MS
from tick_platform.resources import KafkaResource, WarehouseResource
from tick_platform.rollup import bars_frame, latest_revisions, rollup_bars

BARS_ASSET = "ticks_agg_1s"


def fact_key(spec: FactSpec) -> AssetKey:
    """The Dagster asset key of a fact resolution."""
    return AssetKey(spec.asset_key)


FACT_60S_KEY = fact_key(FACTS_60S)
FACT_300S_KEY = fact_key(FACTS_300S)
WAREHOUSE_POOL = "warehouse"
# A warehouse away for a while (Snowflake unreachable, a DuckDB lock held past its own minute of
# retries) fails the step; Dagster retries it after 5, 10 and 20 s. Each attempt replaces the
# window's rows in one transaction, so a retry never doubles them.
WAREHOUSE_RETRY = RetryPolicy(max_retries=3, delay=5, backoff=Backoff.EXPONENTIAL)


def commit_progress(kafka: KafkaSettings, group: str, ranges: list[OffsetRange]) -> None:
    """Move the facts' consumer group forward to the ends read, so lag shows how far facts trail the stream.

    Informational only (facts never resume from it); it never moves a committed offset back.
    """
    consumer = Consumer({**kafka.client_base("warehouse"), "group.id": group, "enable.auto.commit": False})
    try:
        tps = [TopicPartition(kafka.topic_agg, r.partition) for r in ranges]
        committed = {tp.partition: tp.offset for tp in consumer.committed(tps, timeout=10)}
        ahead = [
            TopicPartition(kafka.topic_agg, r.partition, r.end)
            for r in ranges
            if r.end > max(committed.get(r.partition, -1), 0)
        ]
        if ahead:
            consumer.commit(offsets=ahead, asynchronous=False)
    finally:
        consumer.close()


@dataclass(frozen=True)
class RunWindows:
    """The session windows one run replaces and the event-time range it reads for them."""

    windows: list[int]
    read_start_ms: int
    end_ms: int


def run_windows(first_key: str, last_key: str, calendar: TradingCalendar) -> RunWindows:
    """The windows of the partition range `first_key`..`last_key` and the range of bars read for them.

    The read starts at the previous session's close when the range starts a session, so the bars
    between two sessions are read (and reported) once, by the next session's first window,
    however the windows are grouped into runs.
    """
    first_ms, end_ms = calendar.key_start_ms(first_key), calendar.key_start_ms(last_key) + WINDOW_MS
    gap = calendar.gap_before(first_ms)
    return RunWindows(calendar.windows(first_ms, end_ms), gap if gap is not None else first_ms, end_ms)


def fact_ticks_window(
    context: AssetExecutionContext,
    kafka: KafkaResource,
    warehouse: WarehouseResource,
    session_hours: SessionHours,
    exchange: str,
) -> Iterator[MaterializeResult[Any]]:
    """Read the windows' bars by offsets, roll up those inside the sessions, replace the range in one transaction."""
    keys = context.partition_key_range  # the whole range in a single-run backfill
    first_ms, last_end = key_start_ms(keys.start, session_hours), key_start_ms(keys.end, session_hours) + WINDOW_MS
    calendar = calendar_covering(first_ms, last_end, session_hours, exchange)
    run = run_windows(keys.start, keys.end, calendar)
    start_ms, end_ms = run.read_start_ms, run.end_ms
    label = f"fact_ticks [{keys.start} .. {keys.end}]"
    settings = kafka.settings()
    began = time.perf_counter()
    try:
        with warehouse_access(settings.kafka, label):
            read = read_window(settings.kafka, start_ms, end_ms, kafka.horizon_ms())
    except KafkaAccessError as exc:  # one line; not retried (WAREHOUSE_RETRY is for the warehouse being away)
        raise Failure(description=str(exc), allow_retries=False) from None
    read_at = time.perf_counter()
    all_bars = bars_frame(read.bars)
    read.bars.clear()  # the frame holds them now: a chunk of sessions' bars is not kept twice
    bars = session_bars(all_bars, calendar)
    outside = latest_revisions(outside_session(all_bars, calendar))
    rows = {spec: rollup_bars(bars, spec.window_s) for spec in FACT_SPECS}
    guard = RetentionGuard(read.truncated, settings.kafka.topic_agg) if read.truncated else None
    rolled_at = time.perf_counter()
    try:
        with warehouse.connect() as conn:
            written = replace_window(conn, start_ms, end_ms, rows, guard=guard)
    except RetainedWindowError as exc:  # retrying cannot bring deleted bars back
        raise Failure(description=str(exc), allow_retries=False) from None
    written_at = time.perf_counter()
    try:
        commit_progress(settings.kafka, settings.warehouse.consumer_group, read.ranges)
    except KafkaException as exc:  # informational only: the facts are written, lag shows next time
        context.log.warning(f"could not commit progress of {settings.warehouse.consumer_group}: {exc}")
    unique_bars = latest_revisions(bars).height
    if outside.height:
        context.log.warning(
            f"{label}: {outside.height} bar(s) outside the {session_hours} sessions of {exchange} "
            f"from {naive_utc(int(outside['start_ts_ms'].min())):%Y-%m-%d %H:%M:%S} to "  # type: ignore[arg-type]
            f"{naive_utc(int(outside['start_ts_ms'].max())):%Y-%m-%d %H:%M:%S} UTC are not in the facts"  # type: ignore[arg-type]
        )
    finest = rows[FACT_SPECS[0]]
    common = {
        "window_start": MetadataValue.text(naive_utc(start_ms).isoformat()),
        "window_end": MetadataValue.text(naive_utc(end_ms).isoformat()),
        "window_start_ms": MetadataValue.int(start_ms),
        "window_end_ms": MetadataValue.int(end_ms),
        "session_windows": MetadataValue.int(len(run.windows)),
        "session_hours": MetadataValue.text(session_hours),
        "exchange": MetadataValue.text(exchange),
        "topic": MetadataValue.text(settings.kafka.topic_agg),
        "offsets": MetadataValue.json(read.offsets_json()),
        "bars_read": MetadataValue.int(all_bars.height),
        "bars_1s": MetadataValue.int(unique_bars),
        "bars_outside_session": MetadataValue.int(outside.height),
        "revisions_superseded": MetadataValue.int(all_bars.height - latest_revisions(all_bars).height),
        "undecodable_skipped": MetadataValue.int(read.skipped),
        "partitions_truncated": MetadataValue.json(read.truncated),
        "symbols": MetadataValue.int(finest["SYMBOL"].n_unique() if finest.height else 0),
        "warehouse": MetadataValue.text(warehouse.target),
        # The step's own work; the rest of a run's time is Dagster's bookkeeping (docs/benchmarks.md, history).
        "read_seconds": MetadataValue.float(round(read_at - began, 3)),
        "rollup_seconds": MetadataValue.float(round(rolled_at - read_at, 3)),
        "write_seconds": MetadataValue.float(round(written_at - rolled_at, 3)),
    }
    context.log.info(
        f"{label} ({len(run.windows)} session windows, bars from {naive_utc(start_ms):%Y-%m-%d %H:%M} to "
        f"{naive_utc(end_ms):%Y-%m-%d %H:%M} UTC): {all_bars.height} bars from {read.offsets_json()} -> {written}"
    )
    for spec in FACT_SPECS:
        yield MaterializeResult(
            asset_key=fact_key(spec), metadata={**common, "rows": MetadataValue.int(written[spec.table.name])}
        )


def fact_asset_spec(spec: FactSpec) -> AssetSpec:
    """The asset of one fact resolution: upstream the finer facts it rolls up exactly, or the bars."""
    upstream = fact_key(fact_spec(spec.rolled_from)) if spec.rolled_from else AssetKey(BARS_ASSET)
    return AssetSpec(
        fact_key(spec),
        deps=[upstream],
        description=spec.description,
        metadata={"table": spec.table.qualified, "window_s": spec.window_s},
        kinds={"polars", "sql"},
    )


def build_fact_ticks(
    partitions_def: PartitionsDefinition, session_hours: SessionHours = "regular", exchange: str = "XNYS"
) -> AssetsDefinition:
    """The multi-asset `fact_ticks` (one asset per registered resolution) over `partitions_def`.

    `session_hours` and `exchange` name the calendar of `partitions_def` (partitions.session_partitions):
    bars outside its sessions are counted, never rolled up.
    """

    def fact_ticks(
        context: AssetExecutionContext, kafka: KafkaResource, warehouse: WarehouseResource
    ) -> Iterator[MaterializeResult[Any]]:
        """Read the windows' bars by offsets, roll up those inside the sessions, replace them in one transaction."""
        yield from fact_ticks_window(context, kafka, warehouse, session_hours, exchange)

    return multi_asset(
        specs=[fact_asset_spec(spec) for spec in FACT_SPECS],
        name="fact_ticks",
        partitions_def=partitions_def,
        backfill_policy=BackfillPolicy.single_run(),
        pool=WAREHOUSE_POOL,
        retry_policy=WAREHOUSE_RETRY,
        group_name="facts",
        can_subset=False,
    )(fact_ticks)
