"""Run monitoring of the platform's DAGSTER_HOME template, under a frozen clock instead of wall-clock sleeps.

The Dagster kill scenario (test_reliability_dagster.py) reports the runs it killed as failed at the
kill, so that no live run has to beat a shortened runtime limit; this is the other half: with the
template's settings, Dagster's own run monitoring fails a run whose worker is gone once its maximum
runtime has passed (and not a second before), and marks it for run retries.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta
from pathlib import Path

from dagster import DagsterInstance, DagsterRunStatus
from dagster._core.events import DagsterEvent, DagsterEventType
from dagster._core.test_utils import create_run_for_test, freeze_time
from dagster._daemon.monitoring.run_monitoring import monitor_started_run

from tick_tools.pipeline.services import prepare_dagster_home

T0 = datetime(2026, 3, 8, 6, 0, tzinfo=UTC)  # any instant: the limit is counted from the run's start


def _monitor_at(instance: DagsterInstance, run_id: str, at: datetime) -> DagsterRunStatus:
    """One pass of the monitoring daemon over a STARTED run at the instant `at`; returns the run's status after it."""
    with freeze_time(at):
        record = instance.get_run_record_by_id(run_id)
        assert record is not None
        if record.dagster_run.status == DagsterRunStatus.STARTED:
            # The default launcher has no worker health check, so the workspace is never consulted.
            monitor_started_run(instance, None, record, logging.getLogger("run-monitoring-test"))  # type: ignore[arg-type]
        run = instance.get_run_by_id(run_id)
        assert run is not None
        return run.status


def test_the_templates_run_monitoring_fails_a_dead_run_after_its_maximum_runtime(tmp_path: Path) -> None:
    instance = DagsterInstance.from_config(str(prepare_dagster_home(tmp_path / "dagster_home")))
    try:
        assert instance.run_monitoring_enabled
        limit = instance.run_monitoring_max_runtime_seconds
        assert limit == 1800
        # Why the limit is the only signal: this launcher cannot ask a (dead) run worker for its health.
        assert not instance.run_launcher.supports_check_run_worker_health
        with freeze_time(T0):
            run = create_run_for_test(instance, job_name="fact_job", status=DagsterRunStatus.NOT_STARTED)
            instance.report_dagster_event(DagsterEvent(DagsterEventType.RUN_START.value, job_name="fact_job"),
                                          run.run_id)
        record = instance.get_run_record_by_id(run.run_id)
        assert record is not None and record.start_time == T0.timestamp()

        assert _monitor_at(instance, run.run_id, T0 + timedelta(seconds=limit - 1)) == DagsterRunStatus.STARTED
        assert _monitor_at(instance, run.run_id, T0 + timedelta(seconds=limit + 1)) == DagsterRunStatus.FAILURE
        failed = instance.get_run_by_id(run.run_id)
        assert failed is not None
        assert failed.tags.get("dagster/will_retry") == "true"  # run retries (max_retries 3) take it from here
    finally:
        instance.dispose()
