"""Reliability: fatal Kafka client errors mid-stream are ridden through in-process.

A broker restart or a coordinator move can leave a client fenced for good (findings 3, 4 and 14 of
docs/reliability.md): the transactional producer of the replay or of the aggregator, or the
aggregator's static group member. Here the same errors are caused on purpose, the way Kafka
causes them: a second producer with the same transactional.id (its init_transactions bumps the
epoch, so the running producer's next transactional call is fenced), and a second consumer with
the same group.instance.id (the running member gets FENCED_INSTANCE_ID). Each stage must restart
its clients itself from its last commit (no exit, no stall for the supervisor to see), and both
topics must equal the clean run.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest
from confluent_kafka import Consumer, Producer

from streaming.kernel.settings import KafkaSettings, ReplaySettings
from tick_platform_tests.reliability_support import (
    Stage,
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


def fence_producer(kafka: KafkaSettings, transactional_id: str) -> None:
    """Initialise a producer with the same transactional.id: the running one is fenced."""
    producer = Producer({**kafka.client_base(), "transactional.id": transactional_id})
    producer.init_transactions(60)
    producer.flush(5)


def fence_static_member(kafka: KafkaSettings, group: str, instance_id: str, fenced: Callable[[], bool]) -> None:
    """Join the group with the running member's group.instance.id and stay until `fenced()` (the running one is out).

    Whoever joins last with an instance id takes it over. If the running member rejoins first (a
    rebalance in flight), the intruder is the one fenced: it then joins again, up to three times.
    """
    for _attempt in range(3):
        consumer = Consumer({**kafka.client_base(), "group.id": group, "group.instance.id": instance_id,
                             "enable.auto.commit": False, "isolation.level": "read_committed",
                             "session.timeout.ms": 6_000})
        consumer.subscribe([kafka.topic_raw])
        try:
            deadline = time.monotonic() + 30
            while not fenced() and time.monotonic() < deadline:
                msg = consumer.poll(0.2)
                if msg is not None and msg.error() is not None and msg.error().fatal():
                    break  # the running member took the id back first: join again
            if fenced():
                return
        finally:
            consumer.close()
    raise AssertionError("three intruding static members did not fence the running aggregator")


def _progress(pipeline: Supervised, after: int) -> None:
    """Wait until the aggregator committed past `after` input offsets (the stage works again)."""
    kafka = pipeline.kafka
    wait_until(pipeline.tended(lambda: committed_offsets(kafka, pipeline.group, kafka.topic_raw, kafka.partitions)
                               > after), 120, f"aggregator progress past {after}")


@pytest.mark.kafka
def test_fenced_producers_and_static_member_restart_in_process_and_equal_the_clean_run(kafka: KafkaSettings) -> None:
    """Fence the replay's producer, the aggregator's producer and its static membership mid-stream."""
    with work_dir("fencing") as work:
        files = synth_files(work / "synth", 8, 4_000, seed=31)
        expected_bins, expected_bars = offline_run(files, work)
        pipeline = start_pipeline(kafka, files, work, speed=350, idle_timeout_ms=10_000, watermarks_ms=10)
        job = pipeline.group.removeprefix("agg-")
        instance = pipeline.aggregator.env["AGG_INSTANCE_ID"]
        injected: list[tuple[str, float]] = []
        try:
            total = len(expected_bins)
            group, topic, parts = pipeline.group, kafka.topic_raw, kafka.partitions
            wait_until(pipeline.tended(lambda: committed_offsets(kafka, group, topic, parts) >= total // 6),
                       120, "a sixth of the bins aggregated")
            replay_txn_id = ReplaySettings().transactional_id  # type: ignore[call-arg]  # defaults: pydantic-settings
            # Each fence gets "has the stage restarted since?" (only the static member needs it).
            steps: list[tuple[str, Callable[[Callable[[], bool]], None], Stage]] = [
                ("replay producer", lambda _done: fence_producer(kafka, f"{replay_txn_id}-{job}"),
                 pipeline.replay),
                ("aggregator producer", lambda _done: fence_producer(kafka, f"tick-aggregator-{instance}"),
                 pipeline.aggregator),
                ("aggregator static member", lambda done: fence_static_member(kafka, group, instance, done),
                 pipeline.aggregator),
            ]
            for what, fence, stage in steps:
                assert pipeline.replay.poll() is None, f"the replay finished before fencing the {what}: slow it down"
                before = stage.in_process_restarts
                committed = committed_offsets(kafka, group, topic, parts)
                started = time.monotonic()
                def moved_on(stage: Stage = stage, before: int = before) -> bool:
                    return stage.in_process_restarts > before

                restarted = pipeline.tended(moved_on)
                fence(restarted)
                wait_until(restarted, 120, f"the {what} to be restarted in-process")
                _progress(pipeline, committed)
                injected.append((what, time.monotonic() - started))
            pipeline.run_to_end(300)
            run = check_against_clean_run(kafka, expected_bins, expected_bars, pipeline)
            if not (run.bins.exact and run.bars.exact) or pipeline.failures:
                run.notes.append(f"logs kept in {keep_logs(work, 'fencing')}")
        finally:
            stop_all(pipeline.replay, pipeline.aggregator)
    score("fenced clients", "transactional producer of the replay and of the aggregator fenced by a second "
          "producer with the same transactional.id, then the aggregator's static member by a second consumer "
          "with the same group.instance.id, while the replay publishes (with watermark records)", 8 * 4_000, run,
          max(s for _w, s in injected), fenced={w: round(s, 1) for w, s in injected})
    # Ridden through: no stage exited or stalled (assert_exact: no harness restart, one start each),
    # and each restarted its clients in-process exactly once per fence: the replay's producer (1), the
    # aggregator's producer and its static membership (2). One more would be a restart loop.
    assert_exact(run, injected_restarts={}, in_process={"replay": 1, "aggregate": 2})
