"""The streaming sensor: watches ticks.agg.1s and requests the fact partitions whose windows closed."""

import time

from dagster import (
    AssetObservation,
    AssetSelection,
    AutomationConditionSensorDefinition,
    DefaultSensorStatus,
    MetadataValue,
    RunRequest,
    RunsFilter,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    sensor,
)

from streaming.kernel.settings import Settings
from tick_platform.assets.streams import TICKS_AGG_1S, TICKS_RAW, observe_topic
from tick_platform.bar_reader import first_revision0_start, partition_heads, warehouse_access
from tick_platform.calendar import TradingCalendar
from tick_platform.closure import SensorCursor, advance_states, closed_until, offsets_went_back, windows_to_request
from tick_platform.jobs import FACT_JOB_NAME
from tick_platform.partitions import (
    RANGE_END_TAG,
    WINDOW_MS,
    configured_calendar,
    floor_window,
    partitions_bounds_ms,
    range_tags,
)
from tick_platform.resources import KafkaResource

MAX_REQUESTS_PER_TICK = 100


def _run_requests(starts: list[int], calendar: TradingCalendar) -> list[RunRequest]:
    """One run per closed window in live mode; ONE ranged run when the sensor catches up on many.

    The facts have a single-run backfill policy, so a replayed hour is one process, not twelve.
    """
    if len(starts) <= 1:
        return [RunRequest(run_key=calendar.key(t0), partition_key=calendar.key(t0)) for t0 in starts]
    first, last = calendar.key(starts[0]), calendar.key(starts[-1])
    return [RunRequest(run_key=f"{first}...{last}", tags=range_tags(first, last))]


SENSOR_NAME = "closed_windows_sensor"
PARTITION_TAG = "dagster/partition"
PARENT_RUN_TAG = "dagster/parent_run_id"


def requested_until(context: SensorEvaluationContext, calendar: TradingCalendar) -> int | None:
    """The end of the last window the sensor's newest run (not a retry) covers, from the instance.

    The cursor is stored after the runs are submitted: a daemon killed in between leaves a tick
    whose runs exist but whose cursor does not, and the next tick, on the old cursor, would
    request those windows again under a wider run key. The runs themselves are the record.
    """
    for run in context.instance.get_runs(filters=RunsFilter(tags={"dagster/sensor_name": SENSOR_NAME}), limit=10):
        if PARENT_RUN_TAG in run.tags:
            continue  # a run retry re-runs older windows
        last = run.tags.get(RANGE_END_TAG) or run.tags.get(PARTITION_TAG)
        return calendar.key_start_ms(last) + WINDOW_MS if last else None
    return None


@sensor(
    name=SENSOR_NAME,
    job_name=FACT_JOB_NAME,
    minimum_interval_seconds=5,  # a window closes at most ~5 s before the sensor sees it
    default_status=DefaultSensorStatus.RUNNING,
    description="Requests every fact partition whose window ticks.agg.1s has closed (closure rule).",
)
def closed_windows_sensor(context: SensorEvaluationContext, kafka: KafkaResource) -> SensorResult:
    """Scan partition heads, advance the cursor, request closed windows (run_key = partition key).

    As the warehouse principal: READ on ticks.agg.1s, DESCRIBE on ticks.raw and the
    aggregator's group suffice. A security failure fails the tick with one KafkaAccessError line.
    """
    full = kafka.settings()
    with warehouse_access(full.kafka, "streaming sensor"):
        return _evaluate(context, kafka, full)


def _evaluate(context: SensorEvaluationContext, kafka: KafkaResource, full: Settings) -> SensorResult:
    cursor = SensorCursor.from_json(context.cursor)
    settings = full.kafka
    known = {p: (s.high, s.last_start_ms) for p, s in cursor.partitions.items()}
    heads = {h.partition: (h.high, h.last_start_ms) for h in partition_heads(settings, known)}
    now_ms = int(time.time() * 1000)
    previous, next_window = cursor.partitions, cursor.next_window_ms
    went_back = offsets_went_back(previous, heads)
    if went_back:
        # The topic was recreated: its bars are new ones, and the windows they fill may lie before
        # the cursor's next window. Start again from its first bar (a re-run replaces rows per window).
        context.log.warning(
            f"{settings.topic_agg} was recreated under the sensor's cursor (end offsets went back on "
            f"partition(s) {went_back}): requesting its windows again from its first bar"
        )
        previous, next_window = {}, None
        # Look again without the old topic's heads: a partition that came back to the same end
        # offset would otherwise keep the old topic's newest bar time.
        heads = {h.partition: (h.high, h.last_start_ms) for h in partition_heads(settings)}
    states = advance_states(previous, heads, now_ms)
    calendar = configured_calendar(full.warehouse)
    if next_window is None:
        first = first_revision0_start(settings)
        if first is not None:
            next_window = floor_window(first)
    loader = full.warehouse
    first_ms, end_ms = partitions_bounds_ms(loader.partitions_start, loader.partitions_end, loader.session_hours)
    if next_window is not None:
        next_window = max(next_window, first_ms)
    closed_end = closed_until(states, now_ms, kafka.idle_ms(), kafka.horizon_ms())
    if closed_end is not None and end_ms is not None:
        closed_end = min(closed_end, end_ms)  # bars past WAREHOUSE_PARTITIONS_END have no partition
    if next_window is not None and not went_back:
        # A topic recreated on purpose is read again from its first bar; otherwise never re-request.
        done = requested_until(context, calendar)
        if done is not None and done > next_window:
            context.log.warning(
                f"the cursor's next window {calendar.key(next_window)} is behind the sensor's last run "
                f"(up to {calendar.key(done - WINDOW_MS)}): its tick was cut off before the cursor was stored"
            )
            next_window = done
    starts = (
        windows_to_request(next_window, closed_end, MAX_REQUESTS_PER_TICK, calendar) if next_window is not None else []
    )
    requests = _run_requests(starts, calendar)
    if starts:
        next_window = starts[-1] + WINDOW_MS
    raw_version, raw_meta = observe_topic(settings, settings.topic_raw, full.agg.group_id)
    # Observe again when the aggregator's lag moves too, so the last observation shows it caught up.
    raw_seen = f"{raw_version.value}|lag={raw_meta['consumer_lag'].value}"
    new_cursor = SensorCursor(states, next_window, raw_seen)
    events = []
    if raw_seen != cursor.raw_version:
        events.append(AssetObservation(asset_key=TICKS_RAW.key, metadata=raw_meta))
    if any(cursor.partitions.get(p) != s for p, s in states.items()):
        events.append(
            AssetObservation(
                asset_key=TICKS_AGG_1S.key,
                metadata={
                    "end_offsets": MetadataValue.json({str(p): s.high for p, s in sorted(states.items())}),
                    "latest_event_ts_ms": MetadataValue.int(
                        max((s.last_start_ms for s in states.values() if s.last_start_ms is not None), default=-1)
                    ),
                    "closed_until_ms": MetadataValue.int(closed_end if closed_end is not None else -1),
                },
            )
        )
    if not requests:
        return SensorResult(
            skip_reason=SkipReason(f"no new closed window (closed until {closed_end}, next {next_window})"),
            cursor=new_cursor.to_json(),
            asset_events=events,
        )
    context.log.info(f"requesting {len(starts)} partition(s): {calendar.key(starts[0])} .. {calendar.key(starts[-1])}")
    return SensorResult(run_requests=requests, cursor=new_cursor.to_json(), asset_events=events)


# Declarative automation for the dimensions only (their condition: refresh after new facts);
# Dagster's default automation sensor starts stopped, this one runs.
dimensions_automation = AutomationConditionSensorDefinition(
    "dimensions_automation",
    target=AssetSelection.groups("dimensions"),
    default_status=DefaultSensorStatus.RUNNING,
    minimum_interval_seconds=30,
    description="Refreshes dim_symbol and dim_calendar after new fact partitions land.",
)
