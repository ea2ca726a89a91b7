"""Reliability, Dagster side: the whole orchestrator (`dagster dev`: daemon, webserver, code server
and the run in progress) killed with SIGKILL mid-run while a paced replay flows, then restarted.

What must hold afterwards, read through the webserver's GraphQL API and the DuckDB file:
* the killed run is failed (see _fail_dead_runs) and retried by run retries, and the retry succeeds;
* the streaming sensor's cursor survived: every window of the replay was requested by exactly one
  sensor run (nothing skipped, nothing repeated), across the restart;
* every partition is materialized, every check passes, and the rows equal an independent OHLCV
  of the ticks with no BAR_ID twice.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest

from streaming.kernel.settings import PROJECT_ROOT, KafkaSettings
from tick_platform.checks import FACT_CHECK_NAMES
from tick_platform_tests.reliability_support import record_score
from tick_platform_tests.test_platform_dagster_dev import _nodes, _table, pipeline_env
from tick_platform_tests.test_platform_support import assert_facts_equal, expected_ohlcv, read_kibot
from tick_tools.broker.runner import free_port_base
from tick_tools.pipeline.services import DAGSTER_YAML_TEMPLATE

pytestmark = pytest.mark.kafka

WINDOWS = 75  # 5-minute windows of the real sample (2010-02-17 14:30 .. 20:45 UTC)
DEAD_RUN = "run worker killed with dagster dev (SIGKILL by the test)"

RUNS = """
{
  runsOrError { ... on Runs { results { runId status startTime endTime tags { key value } } } }
  assetNodes {
    assetKey { path }
    partitionStats { numMaterialized numPartitions numFailed numMaterializing }
    assetChecksOrError {
      ... on AssetChecks { checks { name executionForLatestMaterialization { status evaluation { success } } } }
    }
  }
}
"""


def _query(port: int) -> dict[str, Any] | None:
    try:
        body: dict[str, Any] = httpx.post(f"http://127.0.0.1:{port}/graphql", json={"query": RUNS}, timeout=30).json()
    except (httpx.HTTPError, ValueError):
        return None  # the webserver is (re)starting
    return body.get("data")


def _tags(run: dict[str, Any]) -> dict[str, str]:
    return {t["key"]: t["value"] for t in run["tags"]}


def _windows(tags: dict[str, str]) -> list[str]:
    """The partition keys a fact run covers (one key, or a range stepped by five minutes)."""
    if "dagster/partition" in tags:
        return [tags["dagster/partition"]]
    fmt = "%Y-%m-%d-%H:%M"
    first = datetime.strptime(tags["dagster/asset_partition_range_start"], fmt)
    last = datetime.strptime(tags["dagster/asset_partition_range_end"], fmt)
    return [(first + timedelta(minutes=5 * i)).strftime(fmt) for i in range((last - first) // timedelta(minutes=5) + 1)]


def _dagster_home(home: Path) -> Path:
    """The platform's DAGSTER_HOME template with run monitoring polling every 5 s (its runtime limit unchanged)."""
    home.mkdir(parents=True, exist_ok=True)
    text = DAGSTER_YAML_TEMPLATE.read_text()
    text = re.sub(r"poll_interval_seconds: \d+", "poll_interval_seconds: 5", text)
    assert "max_runtime_seconds: 1800" in text and "max_retries: 3" in text
    (home / "dagster.yaml").write_text(text)
    return home


def _start_dagster(env: dict[str, str], port: int, log: Path) -> subprocess.Popen[bytes]:
    with open(log, "ab") as out:
        return subprocess.Popen(
            [str(Path(sys.executable).with_name("dagster")), "dev", "-w", str(PROJECT_ROOT / "workspace.yaml"),
             "-h", "127.0.0.1", "-p", str(port)],
            stdout=out, stderr=subprocess.STDOUT, env=env, cwd=PROJECT_ROOT, start_new_session=True,
        )


def _stop(proc: subprocess.Popen[bytes], sig: int = signal.SIGINT, timeout_s: float = 90) -> int | None:
    if proc.poll() is None:
        with_group = sig == signal.SIGKILL
        try:
            os.killpg(proc.pid, sig) if with_group else proc.send_signal(sig)
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=30)
    return proc.returncode


def _fact_runs(data: dict[str, Any]) -> list[dict[str, Any]]:
    return [r for r in data["runsOrError"]["results"] if _tags(r).get("dagster/sensor_name") == "closed_windows_sensor"
            or "dagster/parent_run_id" in _tags(r)]


def test_dagster_killed_mid_run_is_retried_and_the_sensor_neither_skips_nor_repeats(
    kafka: KafkaSettings, sample_path: Path, tmp_path: Path
) -> None:
    port, api_port = free_port_base(1), free_port_base(1, start=41_000)
    db = tmp_path / "warehouse.duckdb"
    # The sample's 6.25 h in about three minutes: windows keep closing across the kill.
    home = _dagster_home(tmp_path / "dagster_home")
    env = pipeline_env(kafka, api_port, home, db, replay_speed=120)
    pipeline_log, dagster_log = tmp_path / "pipeline.log", tmp_path / "dagster.log"
    with open(pipeline_log, "wb") as out:
        pipeline = subprocess.Popen(
            [sys.executable, "-m", "tick_tools", "pipeline", "--data", str(sample_path), "--no-dagster"],
            stdout=out, stderr=subprocess.STDOUT, env=env, cwd=PROJECT_ROOT, start_new_session=True,
        )
    dagster = _start_dagster(env, port, dagster_log)
    killed: dict[str, Any] | None = None
    in_progress: set[str] = set()
    data: dict[str, Any] | None = None
    restarted_at = 0.0  # wall clock: GraphQL gives run times as epoch seconds
    try:
        # 1. Wait for a sensor run in progress, then SIGKILL the whole orchestrator with it.
        deadline = time.monotonic() + 300
        while killed is None:
            assert pipeline.poll() is None, pipeline_log.read_text()[-3000:]
            assert dagster.poll() is None, dagster_log.read_text()[-3000:]
            assert time.monotonic() < deadline, f"no fact run started\n{dagster_log.read_text()[-3000:]}"
            data = _query(port)
            running = [r for r in (_fact_runs(data) if data else []) if r["status"] == "STARTED"]
            if data is not None and running:
                killed = running[0]
                in_progress = {r["runId"] for r in data["runsOrError"]["results"] if r["status"] == "STARTED"}
                _stop(dagster, signal.SIGKILL)
                break
            time.sleep(0.3)
        leftovers = [pid for run_id in in_progress
                     for pid in subprocess.run(["pgrep", "-f", run_id], capture_output=True, text=True).stdout.split()]
        for pid in leftovers:  # a run worker outside the process group dies too: "the daemon and its runs"
            os.kill(int(pid), signal.SIGKILL)
        _fail_dead_runs(home, in_progress)
        time.sleep(3)
        # 2. Restart it on the same instance; wait until every window is loaded and nothing is left to run.
        dagster = _start_dagster(env, port, dagster_log)
        restarted_at = time.time()
        deadline = time.monotonic() + 480
        while True:
            assert dagster.poll() is None, dagster_log.read_text()[-3000:]
            assert time.monotonic() < deadline, f"not settled: {data}\n{dagster_log.read_text()[-3000:]}"
            data = _query(port)
            if data is not None and _settled(data, killed["runId"]):
                break
            time.sleep(3)
    finally:
        _stop(dagster)
        _stop(pipeline)
    assert data is not None and killed is not None
    runs = {r["runId"]: r for r in data["runsOrError"]["results"]}
    assert all(runs[i]["status"] == "FAILURE" for i in in_progress)  # the dead runs stay failed
    retries = [r for r in runs.values() if _tags(r).get("dagster/parent_run_id") == killed["runId"]]
    assert [r["status"] for r in retries] == ["SUCCESS"], retries  # run retries ran it again, once
    assert _windows(_tags(retries[0])) == _windows(_tags(killed))

    # The sensor's cursor survived the kill: each window requested by exactly one sensor run.
    sensor_runs = [r for r in runs.values() if "dagster/parent_run_id" not in _tags(r)
                   and _tags(r).get("dagster/sensor_name") == "closed_windows_sensor"]
    requested = [w for r in sensor_runs for w in _windows(_tags(r))]
    assert len(requested) == len(set(requested)) == WINDOWS, sorted(requested)
    assert all(r["status"] == "SUCCESS" for r in runs.values() if r["runId"] not in in_progress), runs

    nodes = _nodes(data)
    for key in ("fact_ticks_60s", "fact_ticks_300s"):
        assert nodes[key]["partitionStats"]["numMaterialized"] == WINDOWS
    checks = [c["executionForLatestMaterialization"] for key in ("fact_ticks_60s", "fact_ticks_300s")
              for c in nodes[key]["assetChecksOrError"]["checks"]]
    assert len(checks) == len(FACT_CHECK_NAMES)
    assert all(c["status"] == "SUCCEEDED" and c["evaluation"]["success"] for c in checks), checks

    ticks = read_kibot(sample_path)
    rows_60, rows_300 = _table(db, "FACT_TICKS_60S"), _table(db, "FACT_TICKS_300S")
    expected_60, expected_300 = expected_ohlcv(ticks, 60), expected_ohlcv(ticks, 300)
    rows_in = expected_60.height + expected_300.height
    rows_out = rows_60.height + rows_300.height
    unique = rows_60["BAR_ID"].n_unique() + rows_300["BAR_ID"].n_unique()
    # Recovery: from the restart until the retry of the killed run had loaded its windows.
    record_score("Dagster killed mid-run", "SIGKILL of `dagster dev` (daemon, webserver, code server) and of the "
                 "fact run in progress during a paced replay, restarted after 3 s; the dead runs failed "
                 "at the kill, run retries re-run them", rows_in, rows_out, max(0, rows_in - unique), rows_out - unique,
                 retries[0]["endTime"] - restarted_at, harness_restarts=0, unit="fact rows",
                 killed_run_windows=len(_windows(_tags(killed))), sensor_runs=len(sensor_runs),
                 leftover_run_workers=len(leftovers))
    assert (rows_60.height, rows_300.height) == (expected_60.height, expected_300.height)
    assert_facts_equal(rows_60, expected_60)
    assert_facts_equal(rows_300, expected_300)


def _fail_dead_runs(home: Path, run_ids: set[str]) -> None:
    """Report the runs whose workers the test killed as failed, on the instance (while Dagster is down).

    Why not wait for run monitoring: the default run launcher cannot tell it that a worker died, so only
    the maximum runtime fails such a run (the template: 1800 s). Shortening it for the instance, as this
    test did (20 s), also failed live fact runs that a loaded machine made slower than that, and a
    per-run limit is inherited by the retry. The test knows the event (it killed the workers), so it
    reports it as run monitoring would (a RUN_FAILURE event); run retries, the sensor and the checks
    after it are Dagster's own. That run monitoring with the template fails a dead run after its
    maximum runtime is test_platform_monitoring.py, under a frozen clock.
    """
    from dagster import DagsterInstance

    instance = DagsterInstance.from_config(str(home))
    try:
        for run_id in run_ids:
            run = instance.get_run_by_id(run_id)
            assert run is not None and not run.is_finished, (run_id, run)
            instance.report_run_failed(run, message=DEAD_RUN)
    finally:
        instance.dispose()


def _settled(data: dict[str, Any], killed_run: str) -> bool:
    """Every window loaded, the killed run retried, nothing queued or in progress."""
    nodes = _nodes(data)
    runs = data["runsOrError"]["results"]
    facts = [nodes["fact_ticks_60s"], nodes["fact_ticks_300s"]]
    return (
        all(n["partitionStats"]["numMaterialized"] == WINDOWS for n in facts)
        and any(_tags(r).get("dagster/parent_run_id") == killed_run and r["status"] == "SUCCESS" for r in runs)
        and all(r["status"] not in {"QUEUED", "NOT_STARTED", "STARTING", "STARTED", "CANCELING"} for r in runs)
    )
