"""The code location loads and validates; its pieces are wired as the design says."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from dagster import AssetKey, BackfillPolicy, DagsterInstance

from streaming.kernel.settings import load_settings
from tick_platform.code_location import build_definitions
from tick_platform.partitions import configured_partitions, fact_partitions
from tick_platform_tests.test_platform_support import (
    SAMPLE_PARTITIONS_END,
    SAMPLE_PARTITIONS_START,
    sample_definitions,
    sample_settings,
)
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
    defs = sample_definitions()
    graph = defs.resolve_asset_graph()
    keys = {k.to_user_string() for k in graph.get_all_asset_keys()}
    assert {"ticks_raw", "ticks_agg_1s", "fact_ticks_60s", "fact_ticks_300s", "dim_symbol", "dim_calendar"} <= keys
    assert graph.get(AssetKey("ticks_agg_1s")).parent_keys == {AssetKey("ticks_raw")}
    assert graph.get(AssetKey("fact_ticks_60s")).parent_keys == {AssetKey("ticks_agg_1s")}
    assert graph.get(AssetKey("fact_ticks_300s")).parent_keys == {AssetKey("fact_ticks_60s")}
    facts = defs.resolve_assets_def(AssetKey("fact_ticks_60s"))
    sample = fact_partitions(SAMPLE_PARTITIONS_START, SAMPLE_PARTITIONS_END)
    assert facts.partitions_def == sample
    # Two NYSE regular sessions (Wednesday and Thursday), 78 windows each, keyed on New York's clock.
    assert sample.get_first_partition_key() == "2010-02-17-09:30" and sample.get_num_partitions() == 2 * 78
    assert sample.get_last_partition_key() == "2010-02-18-15:55"
    assert defs.resolve_job_def("fact_ticks_job").partitions_def == sample
    assert facts.backfill_policy == BackfillPolicy.single_run()
    checks = {k.name for k in graph.asset_check_keys}
    assert len(checks) == 10 and "fact_60s_bars_in_session" in checks
    assert defs.resolve_sensor_def("closed_windows_sensor").job_name == "fact_ticks_job"
    assert defs.resolve_schedule_def("fact_ticks_schedule").cron_schedule == "1-59/5 * * * *"


def test_the_partitions_are_those_of_the_settings_built_with() -> None:
    live = sample_settings(warehouse={"partitions_start": "2026-11-01", "partitions_end": ""})
    facts = build_definitions(live).resolve_assets_def(AssetKey("fact_ticks_300s"))
    assert facts.partitions_def == fact_partitions("2026-11-01")
    assert facts.partitions_def == configured_partitions(live.warehouse)
    # The entry point Dagster loads builds from the environment (the conftest's window here).
    from tick_platform.definitions import defs

    entry = defs.resolve_assets_def(AssetKey("fact_ticks_60s")).partitions_def
    assert entry == configured_partitions(load_settings().warehouse) == fact_partitions("2010-02-17", "2010-02-19")


_IMPORT_THEN_BUILD = """
import importlib, sys
for name in sys.argv[1:]:
    importlib.import_module(name)
print("imported")
from streaming.kernel.errors import ConfigError
from tick_platform.code_location import build_definitions
try:
    build_definitions()
except ConfigError as exc:
    print("ConfigError:", exc)
"""
_PLATFORM_MODULES = [
    "tick_platform.partitions", "tick_platform.assets.facts", "tick_platform.assets.dimensions",
    "tick_platform.assets.streams", "tick_platform.jobs", "tick_platform.checks", "tick_platform.schedules",
    "tick_platform.sensors", "tick_platform.backfill", "tick_platform.code_location",
]


def test_importing_the_platform_reads_no_settings(tmp_path: Path) -> None:
    """A bad WAREHOUSE_PARTITIONS_START breaks building the Definitions, never an import."""
    bad = tmp_path / "bad.env"
    bad.write_text("WAREHOUSE_PARTITIONS_START=17.02.2010\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("WAREHOUSE_PARTITIONS_")}
    env |= {"ENV_FILE": str(bad), "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-c", _IMPORT_THEN_BUILD, *_PLATFORM_MODULES],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.splitlines()
    assert lines[0] == "imported"
    assert lines[1].startswith("ConfigError: WAREHOUSE_PARTITIONS_START:") and "'17.02.2010'" in lines[1]
    # Only the entry point reads them on import.
    entry = subprocess.run([sys.executable, "-c", "import tick_platform.definitions"],
                           cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert entry.returncode != 0 and "WAREHOUSE_PARTITIONS_START" in entry.stderr


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
