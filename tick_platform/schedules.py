"""The 5-minute schedule: materializes the window that closed (after the allowed lateness)."""

from dagster import DefaultScheduleStatus, RunRequest, ScheduleEvaluationContext, SkipReason, schedule

from streaming.config import load_settings
from tick_platform.closure import scheduled_window
from tick_platform.jobs import FACT_JOB
from tick_platform.partitions import partition_key, partitions_start_ms, to_ms
from tick_platform.resources import KafkaResource

# One minute past each 5-minute boundary: the window that just closed has had its lateness by then.
FACT_CRON = "1-59/5 * * * *"


@schedule(
    job=FACT_JOB,
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
    if start < partitions_start_ms(load_settings().loader.partitions_start):
        return SkipReason("window before the partitions start")
    key = partition_key(start)
    return RunRequest(run_key=key, partition_key=key)
