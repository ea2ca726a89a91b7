"""Shared fixtures: an isolated environment and one real Kafka broker for the whole session.

The broker runs from the project's cached Maven jars on free loopback ports in a
temporary run folder, so it never collides with a broker the user runs, and it is
stopped at the end of the session, also when tests fail.
"""

from __future__ import annotations

import os
import sys
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from streaming.kernel.settings import PROJECT_ROOT, KafkaSettings
from streaming.kernel.topics import bootstrap_topics
from tick_platform_tests.test_platform_support import SAMPLE_PARTITIONS_END, SAMPLE_PARTITIONS_START
from tick_tools.broker.runner import LocalCluster, free_port_base

# No module reads the settings when it is imported, so the environment can be set after the imports.
# It is set here, for the whole process, because every subprocess a test starts (the pipeline,
# dagster dev, a backfill) inherits it and tests build settings with load_settings().
# Tests never read the developer's .env: an empty settings file and no KAFKA_* overrides.
_EMPTY_ENV = Path(tempfile.mkdtemp(prefix="tick-env-")) / "empty.env"
_EMPTY_ENV.write_text("")
os.environ["ENV_FILE"] = str(_EMPTY_ENV)
# Nor the developer's choice of Dagster instance storage (DAGSTER_STORAGE, DAGSTER_PG_*): tests pick it.
_OURS = {"KAFKA", "REPLAY", "AGG", "SNOW", "SNOWFLAKE", "DASHBOARD", "API", "BROKER"}
for _name in list(os.environ):
    if _name.split("_", 1)[0] in _OURS or _name == "DAGSTER_STORAGE" or _name.startswith("DAGSTER_PG_"):
        del os.environ[_name]
# The facts of the suite are those of the real sample (2010-02-17): the window the sensor and the
# schedule read when they run, and the one subprocesses get (tests of other days set their own).
# Definitions in tests are built from settings with it (test_platform_support.sample_definitions).
os.environ["WAREHOUSE_PARTITIONS_START"] = SAMPLE_PARTITIONS_START
os.environ["WAREHOUSE_PARTITIONS_END"] = SAMPLE_PARTITIONS_END

SHARED_SAMPLE = PROJECT_ROOT.parent / "shared" / "data" / "WDC_tickbidask_first_20000.txt"
OUTPUT_DIR = PROJECT_ROOT / "tick_platform_tests" / "_output"


@pytest.fixture(scope="session")
def sample_path() -> Path:
    """The real 20,000-tick WDC sample from ../shared (never copied into the repo)."""
    if not SHARED_SAMPLE.is_file():
        pytest.fail(f"the real sample is missing: {SHARED_SAMPLE} (../shared must sit beside the checkout)")
    return SHARED_SAMPLE


@pytest.fixture(scope="session")
def kafka_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalCluster]:
    """One real single-node Kafka for the session, on free ports, stopped at the end."""
    # Not under pytest's basetemp: concurrent pytest sessions prune each other's old basetemps.
    run_dir = Path(tempfile.mkdtemp(prefix="tick-kafka-"))
    base = free_port_base(1)
    cluster = LocalCluster(run_dir, PROJECT_ROOT / ".cache" / "kafka", f"127.0.0.1:{base}", 1, "768m")
    try:
        cluster.up(timeout_s=120)
        yield cluster
    finally:
        cluster.down()


@pytest.fixture()
def kafka(kafka_cluster: LocalCluster) -> KafkaSettings:
    """KafkaSettings for the session broker with topics unique to this test (created, empty)."""
    suffix = uuid.uuid4().hex[:8]
    settings = KafkaSettings(
        brokers=kafka_cluster.bootstrap,
        topic_raw=f"ticks.raw.{suffix}",
        topic_agg=f"ticks.agg.1s.{suffix}",
        topic_dlq=f"ticks.dlq.{suffix}",
    )
    bootstrap_topics(settings)
    return settings


@pytest.fixture()
def output_dir(request: pytest.FixtureRequest) -> Path:
    """A folder for a test's artefacts (screenshots, reports), kept after the run."""
    path = OUTPUT_DIR / request.node.name
    path.mkdir(parents=True, exist_ok=True)
    return path


def _defs_state_storage() -> object:
    """Dagster's process-wide definitions-state storage (None until Dagster is imported)."""
    state = sys.modules.get("dagster._core.storage.defs_state.base")
    return state.DefsStateStorage.get() if state else None


@pytest.fixture(autouse=True)
def _no_dagster_instance_left_entered() -> Iterator[None]:
    """Fail a test that leaves a DagsterInstance entered (e.g. an evaluation context not closed).

    Dagster keeps the definitions-state storage of the entered instance in a process-wide
    context variable; once that instance is collected, a later test that builds Definitions
    fails with "undefined DagsterInstance weakref", far from the cause.
    """
    before = _defs_state_storage()
    yield
    assert _defs_state_storage() is before, "a DagsterInstance was left entered: close the context (use `with`)"
