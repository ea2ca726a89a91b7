"""Reliability: broker failures under a running replay and aggregator, against the clean (offline) run.

Each scenario runs its own LocalCluster on free loopback ports in a temporary folder (the
session broker is not stopped under other tests), replays a synthetic multi-symbol day through
`python -m streaming replay` into ticks.raw while `python -m streaming aggregate` turns it into
ticks.agg.1s, injects the failure, and then compares both topics (read_committed, to the end)
with an offline replay + offline aggregate of the same files: 0 lost, 0 duplicated, equal data.

The stages run as subprocesses under a tiny supervisor loop (`Supervised`): if a stage exits
with an error, or makes no progress for a minute while the broker answers, the loop records it
(a finding, reported in the scorecard row) and starts it again, as an operator or systemd would
(Restart=on-failure plus a liveness check), so the run reaches its end and can be compared. The
tests assert that the output is exact and that no such restart was needed (the stages ride
through a broker's absence in-process, each restarting its Kafka clients at most once:
ONE_FAULT); the scorecard reports both counts. The aggregator runs as a daemon and is
ended with SIGTERM once its group is caught up and ticks.agg.1s stays quiet.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from streaming.kernel.settings import PROJECT_ROOT, KafkaSettings
from streaming.kernel.topics import bootstrap_topics
from tick_platform_tests.reliability_support import (
    Run,
    Supervised,
    assert_exact,
    check_against_clean_run,
    committed_offsets,
    keep_logs,
    offline_run,
    score,
    start_pipeline,
    stop_all,
    synth_files,
    wait_until,
    work_dir,
)
from tick_tools.broker.runner import LocalCluster, free_port_base

CACHE = PROJECT_ROOT / ".cache" / "kafka"
# One broker away once: a stage may find its clients fatal once (depending on where the fault lands,
# e.g. a transaction coordinator that lost its state), and restarts them in-process; twice is a loop.
ONE_FAULT = {"replay": range(2), "aggregate": range(2)}


def new_cluster(work: Path, nodes: int) -> LocalCluster:
    """A private cluster on free ports (never the default 9092) in the scenario's work folder."""
    base = free_port_base(nodes)
    return LocalCluster(work / "kafka", CACHE, f"127.0.0.1:{base}", nodes, "512m")


def hanging_hints(cluster: LocalCluster) -> str:
    """Broker log lines that explain a stuck read_committed reader: transaction markers the broker skipped.

    Seen on a single node: during a controlled shutdown the partitions lose their leader before the
    transaction coordinator resigns, so it drops the commit markers of an in-flight transaction
    ("Couldn't find leader endpoint ... can be skipped") and the partitions keep a hanging transaction.
    """
    hints = []
    for node in cluster.nodes:
        log = cluster.node_dir(node) / "logs" / "server.log"
        if log.is_file():
            hints += [line[:400] for line in log.read_text(errors="replace").splitlines()
                      if "Couldn't find leader endpoint" in line]
    return "broker log: " + ("\n".join(hints) if hints else "no skipped transaction markers")


def progress_resumed(kafka: KafkaSettings, group: str, before: int) -> Callable[[], bool]:
    """True once the aggregator group committed past `before` (work continues after the failure)."""
    return lambda: committed_offsets(kafka, group, kafka.topic_raw, kafka.partitions) > before


def broker_failure_scenario(name: str, *, nodes: int, victim: int, sig: int, down_s: float,
                            symbols: int, ticks: int, speed: float) -> tuple[Run, int, float, float]:
    """Run the pipeline, take broker `victim` down with `sig` for `down_s` once a third of the bins are in, restart it.

    Returns the run, the number of ticks, the seconds the broker was away and the recovery time
    (from the restart until the aggregator committed new progress).
    """
    with work_dir(name) as work:
        return _broker_failure(work, nodes=nodes, victim=victim, sig=sig, down_s=down_s, symbols=symbols,
                               ticks=ticks, speed=speed)


def _broker_failure(work: Path, *, nodes: int, victim: int, sig: int, down_s: float,
                    symbols: int, ticks: int, speed: float) -> tuple[Run, int, float, float]:
    files = synth_files(work / "synth", symbols, ticks, seed=20261124 + nodes)
    expected_bins, expected_bars = offline_run(files, work)
    cluster = new_cluster(work, nodes)
    pipeline: Supervised | None = None
    try:
        cluster.up(timeout_s=180)
        kafka = KafkaSettings(brokers=cluster.bootstrap)  # type: ignore[call-arg]  # defaults: pydantic-settings
        bootstrap_topics(kafka)
        pipeline = start_pipeline(kafka, files, work, speed)
        group = pipeline.aggregator.env["AGG_GROUP_ID"]
        third = len(expected_bins) // 3
        wait_until(pipeline.tended(lambda: committed_offsets(kafka, group, kafka.topic_raw, kafka.partitions) >= third),
                   180, "a third of the bins aggregated")
        before = committed_offsets(kafka, group, kafka.topic_raw, kafka.partitions)
        stopped_at = time.monotonic()
        cluster.stop_node(victim, sig)
        time.sleep(down_s)
        cluster.start_node(victim)
        cluster.wait_ready(180)
        away_s = time.monotonic() - stopped_at
        restarted = time.monotonic()
        try:
            wait_until(pipeline.tended(progress_resumed(kafka, group, before)), 300,
                       "the aggregator to commit again after the broker came back")
            recovery_s = time.monotonic() - restarted
            pipeline.run_to_end(300)
            run = check_against_clean_run(kafka, expected_bins, expected_bars, pipeline)
            if not (run.bins.exact and run.bars.exact) or pipeline.failures:
                run.notes.append(f"logs kept in {keep_logs(work, f'broker-{nodes}-nodes')}")
        except AssertionError as exc:
            raise AssertionError(f"{exc}\nstage failures: {pipeline.failures}\n{hanging_hints(cluster)}") from None
        return run, symbols * ticks, away_s, recovery_s
    finally:
        if pipeline is not None:
            stop_all(pipeline.replay, pipeline.aggregator)
        cluster.down()


@pytest.mark.kafka
def test_single_broker_restart_mid_replay_equals_the_clean_run() -> None:
    """SIGTERM the only broker while replay and aggregator run, start it again: output equals the clean run."""
    run, ticks, away_s, recovery_s = broker_failure_scenario(
        "restart", nodes=1, victim=1, sig=signal.SIGTERM, down_s=3.0, symbols=6, ticks=4_000, speed=800)
    score("broker restart (1 node)", f"SIGTERM of the only broker mid-replay, back after {away_s:.0f}s",
          ticks, run, recovery_s, broker_away_s=round(away_s, 1))
    assert_exact(run, injected_restarts={}, in_process=ONE_FAULT)  # ridden through in-process


@pytest.mark.slow
@pytest.mark.ci
@pytest.mark.kafka
def test_single_broker_crash_mid_replay_equals_the_clean_run() -> None:
    """kill -9 the only broker while replay and aggregator run, start it again: output equals the clean run."""
    run, ticks, away_s, recovery_s = broker_failure_scenario(
        "crash", nodes=1, victim=1, sig=signal.SIGKILL, down_s=3.0, symbols=6, ticks=4_000, speed=800)
    score("broker crash (1 node)", f"kill -9 of the only broker mid-replay, back after {away_s:.0f}s",
          ticks, run, recovery_s, broker_away_s=round(away_s, 1))
    assert_exact(run, injected_restarts={}, in_process=ONE_FAULT)


@pytest.mark.slow
@pytest.mark.ci
@pytest.mark.kafka
def test_one_of_three_brokers_killed_and_back_equals_the_clean_run() -> None:
    """kill -9 one of three brokers (RF 3, min.insync.replicas 2) mid-run, bring it back: nothing lost or doubled."""
    run, ticks, away_s, recovery_s = broker_failure_scenario(
        "three-nodes", nodes=3, victim=2, sig=signal.SIGKILL, down_s=8.0, symbols=6, ticks=4_000, speed=800)
    score("broker loss (3 nodes)", f"kill -9 of broker 2 of 3 mid-run, back after {away_s:.0f}s",
          ticks, run, recovery_s, broker_away_s=round(away_s, 1))
    assert_exact(run, injected_restarts={}, in_process=ONE_FAULT)
