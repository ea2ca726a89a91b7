"""Fault tests: SIGKILL at random moments, and two processes in one group, against the clean run."""

from __future__ import annotations

import random
import re
import signal
import time
from collections import Counter
from pathlib import Path

import pytest
from confluent_kafka import Consumer, TopicPartition

from streaming.kernel.settings import KafkaSettings
from tick_platform_tests.test_aggregate_helpers import (
    aggregator_env,
    assert_partition_order,
    data_fields,
    owned,
    partition_of,
    per_partition_reference,
    produce_bins,
    read_bars,
    read_dlq,
    settings_for,
    start_aggregator,
    synthetic_bins,
)

pytestmark = pytest.mark.kafka


class CommitWatcher:
    """Reads the group's committed offsets on ticks.raw (without joining the group)."""

    def __init__(self, kafka: KafkaSettings, group: str) -> None:
        self.consumer = Consumer({**kafka.client_base(), "group.id": group, "isolation.level": "read_committed"})
        self.tps = [TopicPartition(kafka.topic_raw, p) for p in range(kafka.partitions)]

    def total(self) -> int:
        return sum(max(tp.offset, 0) for tp in self.consumer.committed(self.tps, timeout=30))

    def __enter__(self) -> CommitWatcher:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.consumer.close()


def committed_total(kafka: KafkaSettings, group: str) -> int:
    """Sum of the group's committed offsets on ticks.raw."""
    with CommitWatcher(kafka, group) as watcher:
        return watcher.total()


def assert_equals_clean_run(kafka: KafkaSettings, expected: dict[str, dict[str, object]], late: int) -> None:
    rows = read_bars(kafka)
    ids = Counter(bar.bar_id for _p, _o, bar in rows)
    assert [i for i, n in ids.items() if n > 1] == []  # each bar exactly once
    got = {bar.bar_id: data_fields(bar) for _p, _o, bar in rows}
    late_got = sum(1 for r in read_dlq(kafka) if r.reason == "late")
    gone = sorted(set(expected) - set(got))
    spans = {partition_of(i.split("-")[0], kafka.partitions): (min(i[-13:] for i in gone), len(gone)) for i in gone}
    assert not gone, f"{len(gone)} bars missing (first/count per partition {spans}); late {late_got} vs {late}"
    missing = gone[:5]
    extra = sorted(set(got) - set(expected))[:5]
    changed = [(k, got[k], expected[k]) for k in sorted(set(got) & set(expected)) if got[k] != expected[k]][:3]
    assert (missing, extra, changed) == ([], [], [])
    assert len(got) == len(expected)
    assert_partition_order(kafka, rows)
    assert sum(1 for r in read_dlq(kafka) if r.reason == "late") == late


def test_sigkill_at_random_moments_commits_exactly_the_clean_run(kafka: KafkaSettings, tmp_path: Path) -> None:
    bins = synthetic_bins(symbols=20, ticks=500_000, seed=11, late_every=4_999)
    assert sum(b.trade_count for b in bins) >= 500_000
    total = len(bins)
    group = f"agg-{kafka.topic_raw}"
    expected, expected_late = per_partition_reference(bins, settings_for(kafka))
    # The kill phases never go idle (an idle flush would end the stream early); the last run does.
    killed_env = aggregator_env(kafka, group, instance_id="fault", idle_timeout_ms="20000")
    final_env = aggregator_env(kafka, group, instance_id="fault", idle_timeout_ms="1000")
    log = tmp_path / "aggregator.log"
    rng = random.Random(20261124)
    # Kill points: once early (start-up / rebuild), then as the commits pass random fractions of the input.
    targets = [0.0, rng.uniform(0.1, 0.3), rng.uniform(0.35, 0.55), rng.uniform(0.6, 0.85)]
    # The input arrives in stages that end a little past the next kill point, so a kill always
    # lands mid-stream, however fast the aggregator runs on the machine of the day.
    produced = 0
    progress = [0]
    with CommitWatcher(kafka, group) as watcher:
        for i, target in enumerate(targets):
            stage_end = int(min(1.0, max(target, targets[min(i + 1, len(targets) - 1)]) + 0.1) * total)
            produced += produce_bins(kafka, bins[produced:stage_end])
            proc = start_aggregator(killed_env, "--until-idle", log=log)
            if target == 0.0:
                time.sleep(rng.uniform(0.3, 1.5))
            else:
                deadline = time.monotonic() + 180
                while proc.poll() is None and watcher.total() < target * total and time.monotonic() < deadline:
                    time.sleep(0.05)
                assert watcher.total() >= target * total, log.read_text()[-3000:]
                time.sleep(rng.uniform(0.0, 0.2))
            assert proc.poll() is None, "the aggregator finished before it could be killed"
            proc.send_signal(signal.SIGKILL)
            proc.wait(30)
            progress.append(watcher.total())
    assert progress[-1] <= produced < total  # every kill landed before the end of the input
    produced += produce_bins(kafka, bins[produced:])
    assert produced == total
    final = start_aggregator(final_env, "--until-idle", log=log)
    assert final.wait(240) == 0, log.read_text()[-3000:]
    assert committed_total(kafka, group) == total
    assert_equals_clean_run(kafka, expected, expected_late)


def test_two_processes_in_one_group_one_killed_equal_the_clean_run(kafka: KafkaSettings, tmp_path: Path) -> None:
    bins = synthetic_bins(symbols=24, ticks=300_000, seed=5, late_every=3_001)
    group = f"agg-{kafka.topic_raw}"
    expected, expected_late = per_partition_reference(bins, settings_for(kafka))
    log_a, log_b = tmp_path / "a.log", tmp_path / "b.log"
    # The idle timeout must exceed any pause of the input (an idle flush mid-stream would
    # correctly dead-letter the rest of a window): here the pause while a is killed.
    a = start_aggregator(aggregator_env(kafka, group, instance_id="a", idle_timeout_ms="10000"), "--until-idle",
                         log=log_a)
    b = start_aggregator(aggregator_env(kafka, group, instance_id="b", idle_timeout_ms="10000"), "--until-idle",
                         log=log_b)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:  # both members own partitions: the group is split
        got_a, got_b = owned(log_a), owned(log_b)
        if got_a and got_b and sorted([*got_a, *got_b]) == list(range(kafka.partitions)):
            break
        time.sleep(0.1)
    else:
        pytest.fail(f"the group never split: a={owned(log_a)} b={owned(log_b)}")
    # The input arrives while both run (a live stream); a dies once a third of it is committed,
    # with the rest not yet sent, so the kill always lands mid-stream.
    total = len(bins)
    first = produce_bins(kafka, bins[: total * 9 // 20])
    with CommitWatcher(kafka, group) as watcher:
        deadline = time.monotonic() + 120
        while a.poll() is None and watcher.total() < total // 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert a.poll() is None, log_a.read_text()[-3000:]
        a.send_signal(signal.SIGKILL)
        a.wait(30)
        at_kill = watcher.total()
    assert total // 3 <= at_kill <= first < total
    assert produce_bins(kafka, bins[first:]) == total - first
    assert b.wait(240) == 0, log_b.read_text()[-3000:]
    assert sorted(owned(log_b)) == list(range(kafka.partitions))  # b took over a's partitions
    assert committed_total(kafka, group) == total
    assert_equals_clean_run(kafka, expected, expected_late)


def test_sigterm_stops_cleanly_and_a_restart_finishes_exactly_once(kafka: KafkaSettings, tmp_path: Path) -> None:
    bins = synthetic_bins(symbols=8, ticks=60_000, seed=3)
    total = produce_bins(kafka, bins)
    group = f"agg-{kafka.topic_raw}"
    expected, expected_late = per_partition_reference(bins, settings_for(kafka))
    log = tmp_path / "aggregator.log"
    env = aggregator_env(kafka, group, idle_timeout_ms="600000")  # no idle flush: windows stay open at stop
    proc = start_aggregator(env, log=log)
    with CommitWatcher(kafka, group) as watcher:
        deadline = time.monotonic() + 120
        while proc.poll() is None and watcher.total() < total and time.monotonic() < deadline:
            time.sleep(0.1)
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(60) == 0, log.read_text()[-3000:]
    assert "aggregate stopped (SIGTERM)" in log.read_text()
    open_at_stop = len(expected) - len(read_bars(kafka))
    assert open_at_stop > 0  # the last windows were still open, kept in the checkpoint
    final = start_aggregator(aggregator_env(kafka, group, idle_timeout_ms="500"), "--until-idle", log=log)
    assert final.wait(120) == 0, log.read_text()[-3000:]
    assert re.findall(r"rebuilt ([\d,]+)", log.read_text())[-1] != "0"
    assert_equals_clean_run(kafka, expected, expected_late)
