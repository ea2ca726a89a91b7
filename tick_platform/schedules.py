"""The 5-minute schedule: materializes the window that closed (after the allowed lateness)."""

from dagster import DefaultScheduleStatus, RunRequest, ScheduleEvaluationContext, SkipReason, schedule

from tick_platform.assets.facts import FACT_60S_KEY
from tick_platform.bar_reader import partition_heads
from tick_platform.closure import scheduled_window
from tick_platform.jobs import FACT_JOB_NAME
from tick_platform.partitions import configured_calendar, partitions_bounds_ms, to_ms
from tick_platform.resources import KafkaResource

# One minute past each 5-minute boundary: the window that just closed has had its lateness by then.
FACT_CRON = "1-59/5 * * * *"


@schedule(
    job_name=FACT_JOB_NAME,
    cron_schedule=FACT_CRON,
    execution_timezone="UTC",
    default_status=DefaultScheduleStatus.RUNNING,
    description="Every 5 minutes: the fact partition of the window that closed, after the allowed lateness.",
)
def fact_ticks_schedule(context: ScheduleEvaluationContext, kafka: KafkaResource) -> RunRequest | SkipReason:
    """The safety net behind the sensor: the newest window closed for at least the allowed lateness."""
    scheduled = context.scheduled_execution_time
    if scheduled is None:
        return SkipReason("no scheduled time")
    start = scheduled_window(to_ms(scheduled), kafka.lateness_ms())
    settings = kafka.settings()
    loader = settings.warehouse
    first_ms, end_ms = partitions_bounds_ms(loader.partitions_start, loader.partitions_end, loader.session_hours)
    if start < first_ms or (end_ms is not None and start >= end_ms):
        return SkipReason("window outside WAREHOUSE_PARTITIONS_START..WAREHOUSE_PARTITIONS_END")
    calendar = configured_calendar(loader)
    key = calendar.key(start)
    if not calendar.is_window(start):
        return SkipReason(f"{key} is outside the {calendar.hours} sessions of {calendar.exchange}")
    # Skip what would only write an empty window (a historical replay, a quiet stream) or redo
    # the sensor's work; a window the sensor missed is exactly what remains.
    starts = [h.last_start_ms for h in partition_heads(settings.kafka) if h.last_start_ms is not None]
    newest = max(starts, default=None)
    if newest is None or newest < start:
        return SkipReason(f"no bar in ticks.agg.1s reaches the window {key} (newest bar starts at {newest})")
    if key in context.instance.get_materialized_partitions(FACT_60S_KEY):
        return SkipReason(f"{key} is already materialized (by the sensor)")
    return RunRequest(run_key=key, partition_key=key)
