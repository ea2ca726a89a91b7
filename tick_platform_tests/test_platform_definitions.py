"""The code location loads and validates; its pieces are wired as the design says."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from dagster import AssetKey, BackfillPolicy, DagsterInstance

from tick_platform.definitions import defs
from tick_platform.partitions import FACT_PARTITIONS
from tick_tools.pipeline.services import prepare_dagster_home

ROOT = Path(__file__).resolve().parent.parent


def test_dagster_definitions_validate_passes(tmp_path: Path) -> None:
    env = {**os.environ, "DAGSTER_HOME": str(tmp_path)}
    proc = subprocess.run(
        [str(Path(sys.executable).parent / "dagster"), "definitions", "validate", "-w", "workspace.yaml"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "All code locations passed validation" in proc.stdout + proc.stderr


def test_lineage_partitions_checks_and_automation() -> None:
    graph = defs.resolve_asset_graph()
    keys = {k.to_user_string() for k in graph.get_all_asset_keys()}
    assert {"ticks_raw", "ticks_agg_1s", "fact_ticks_60s", "fact_ticks_300s", "dim_symbol", "dim_calendar"} <= keys
    assert graph.get(AssetKey("ticks_agg_1s")).parent_keys == {AssetKey("ticks_raw")}
    assert graph.get(AssetKey("fact_ticks_60s")).parent_keys == {AssetKey("ticks_agg_1s")}
    assert graph.get(AssetKey("fact_ticks_300s")).parent_keys == {AssetKey("fact_ticks_60s")}
    facts = defs.resolve_assets_def(AssetKey("fact_ticks_60s"))
    assert facts.partitions_def == FACT_PARTITIONS
    assert facts.backfill_policy == BackfillPolicy.single_run()
    checks = {k.name for k in graph.asset_check_keys}
    assert len(checks) == 9
    assert defs.resolve_sensor_def("closed_windows_sensor").job_name == "fact_ticks_job"
    assert defs.resolve_schedule_def("fact_ticks_schedule").cron_schedule == "1-59/5 * * * *"


def test_prepared_dagster_home_has_the_warehouse_pool(tmp_path: Path) -> None:
    home = prepare_dagster_home(tmp_path / "home")
    assert (home / "dagster.yaml").is_file()
    instance = DagsterInstance.from_config(str(home))
    try:
        settings = instance.get_concurrency_config()
        assert settings.pool_config.default_pool_limit == 1
        assert instance.run_retries_enabled and instance.run_retries_max_retries == 3
        assert instance.run_monitoring_enabled
    finally:
        instance.dispose()
