"""The replay through the real broker: exactly-once bins in ticks.raw, DLQ in ticks.dlq, resume after kill -9."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from confluent_kafka import Consumer, TopicPartition

from streaming.kernel.records import bin_decoder, dlq_decoder, encode
from streaming.kernel.settings import PROJECT_ROOT, KafkaSettings, Settings, load_settings
from streaming.replay.checkpoint import derive_job_id
from streaming.replay.kafka_io import read_checkpoint
from streaming.replay.offline import replay_to_jsonl
from streaming.replay.producer import run_replay
from streaming.sources.synth import write_synth
from tick_platform_tests.test_replay_support import (
    SAMPLE_TICKS,
    SAMPLE_VOLUME,
    data_fields,
    read_jsonl,
    write_lines,
)

pytestmark = pytest.mark.kafka


def read_topic(kafka: KafkaSettings, topic: str) -> list[tuple[int, int, bytes | None, bytes]]:
    """(partition, offset, key, value) of every committed message, read_committed, per partition in order."""
    consumer = Consumer({**kafka.client_base(), "group.id": f"t-{uuid.uuid4().hex}", "enable.auto.commit": False,
                         "isolation.level": "read_committed"})
    try:
        md = consumer.list_topics(topic, timeout=10).topics[topic]
        out: list[tuple[int, int, bytes | None, bytes]] = []
        for partition in sorted(md.partitions):
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=10)
            if high <= low:
                continue
            consumer.assign([TopicPartition(topic, partition, low)])
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                position = consumer.position([TopicPartition(topic, partition)])[0].offset
                if position >= high:
                    break
                for message in consumer.consume(num_messages=10_000, timeout=0.5):
                    if message.error() is None:
                        out.append((partition, message.offset(), message.key(), message.value()))
        return out
    finally:
        consumer.close()


def settings_for(kafka: KafkaSettings, **replay: object) -> Settings:
    return load_settings(
        kafka={"brokers": kafka.brokers, "topic_raw": kafka.topic_raw, "topic_dlq": kafka.topic_dlq},
        replay=replay,  # type: ignore[arg-type]
    )


def test_real_sample_through_kafka_equals_offline(kafka: KafkaSettings, sample_path: Path, tmp_path: Path) -> None:
    settings = settings_for(kafka)
    summary = run_replay(settings, [str(sample_path)])
    offline = replay_to_jsonl([str(sample_path)], tmp_path / "bins.jsonl", tmp_path / "dlq.jsonl", settings)
    messages = read_topic(kafka, kafka.topic_raw)
    bins = [bin_decoder.decode(value) for _p, _o, _k, value in messages]
    assert (summary.ticks, summary.dlq, summary.bins) == (SAMPLE_TICKS, 0, offline.bins)
    assert sum(b.trade_count for b in bins) == SAMPLE_TICKS
    assert sum(b.volume for b in bins) == SAMPLE_VOLUME
    assert {key for _p, _o, key, _v in messages} == {b"WDC"}
    assert len({p for p, _o, _k, _v in messages}) == 1  # one symbol, one partition
    assert [encode(b) for b in bins] == [value for *_rest, value in messages]
    as_dicts = [{f: getattr(b, f) for f in b.__struct_fields__} for b in bins]
    assert data_fields(as_dicts) == data_fields(read_jsonl(tmp_path / "bins.jsonl"))
    assert read_topic(kafka, kafka.topic_dlq) == []
    checkpoint = read_checkpoint(kafka, "ticks.replay.checkpoints", summary.job_id)
    assert checkpoint is not None and checkpoint.done and checkpoint.ticks == SAMPLE_TICKS


def test_bad_rows_go_to_the_dlq_topic(kafka: KafkaSettings, tmp_path: Path) -> None:
    rows = [f"02/17/2010,09:30:{s:02d},10.0,9.9,10.1,5" for s in range(30)]
    rows[3] = "02/17/2010,09:30:03,10.0,9.9"
    rows[7] = "02/17/2010,09:30:07,10.0,9.9,10.1,-5"
    rows.insert(20, "02/17/2010,09:30:01,10.0,9.9,10.1,5")  # late by far
    path = write_lines(tmp_path / "ABC_bad.txt", rows)
    summary = run_replay(settings_for(kafka, max_late_ms=0), [str(path)])
    records = [dlq_decoder.decode(value) for *_rest, value in read_topic(kafka, kafka.topic_dlq)]
    assert summary.dlq == 3 and summary.ticks == 29
    assert sorted((r.position["line"], r.reason) for r in records) == [(4, "malformed"), (8, "bad_size"), (21, "late")]
    late = next(r for r in records if r.reason == "late")
    assert late.late_by_ms is not None and late.late_by_ms == 18_000 and late.symbol == "ABC"
    bins = [bin_decoder.decode(value) for *_rest, value in read_topic(kafka, kafka.topic_raw)]
    assert sum(b.trade_count for b in bins) == 28


def _replay_cmd(files: list[Path], *extra: str) -> list[str]:
    return [sys.executable, "-m", "streaming", "replay", *map(str, files), "--quiet", *extra]


def test_kill_9_mid_replay_then_resume_publishes_every_bin_exactly_once(
    kafka: KafkaSettings, tmp_path: Path
) -> None:
    files = [f.path for f in write_synth(3, 20_000, 11, __import__("datetime").date(2024, 3, 8), tmp_path / "data")]
    settings = settings_for(kafka)
    job_id = derive_job_id([str(f) for f in files], settings.replay, kafka.topic_raw)
    env = {**os.environ, "KAFKA_BROKERS": kafka.brokers, "KAFKA_TOPIC_RAW": kafka.topic_raw,
           "KAFKA_TOPIC_DLQ": kafka.topic_dlq, "REPLAY_COMMIT_INTERVAL_MS": "20", "REPLAY_CHUNK_ROWS": "1000"}
    # A whole synthetic day at speed 2000 takes ~12 s: plenty of committed transactions before the kill.
    victim = subprocess.Popen(_replay_cmd(files, "--speed", "2000"), cwd=PROJECT_ROOT, env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            checkpoint = read_checkpoint(kafka, "ticks.replay.checkpoints", job_id)
            if checkpoint is not None and checkpoint.ticks > 5_000:
                break
            assert victim.poll() is None, victim.stderr.read().decode() if victim.stderr else ""
            time.sleep(0.2)
        else:
            pytest.fail("the replay committed no checkpoint in time")
        victim.send_signal(signal.SIGKILL)
        victim.wait(30)
    finally:
        if victim.poll() is None:
            victim.kill()
            victim.wait(30)
    assert checkpoint is not None and not checkpoint.done
    resumed = subprocess.run(_replay_cmd(files, "--speed", "0"), cwd=PROJECT_ROOT, env=env, capture_output=True,
                             text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr
    assert "[resumed]" in resumed.stdout and "ticks=60000 " in resumed.stdout
    offline = replay_to_jsonl([str(f) for f in files], tmp_path / "clean.jsonl", None, settings)
    clean = read_jsonl(tmp_path / "clean.jsonl")
    messages = read_topic(kafka, kafka.topic_raw)
    got = [bin_decoder.decode(value) for *_rest, value in messages]
    ids = [b.bin_id for b in got]
    assert len(ids) == len(set(ids)) == offline.bins  # nothing twice, nothing lost
    as_dicts = {b.bin_id: {f: getattr(b, f) for f in b.__struct_fields__} for b in got}
    assert sorted(data_fields(as_dicts.values())) == sorted(data_fields(clean))
    # Per partition the bins stay ordered by end time across the restart (the aggregator relies on it).
    for partition in {p for p, *_ in messages}:
        ends = [bin_decoder.decode(v).end_ts_ms for p, _o, _k, v in messages if p == partition]
        assert ends == sorted(ends)
    assert read_topic(kafka, kafka.topic_dlq) == []


def test_sigterm_commits_and_stops_cleanly_then_a_rerun_finishes(kafka: KafkaSettings, tmp_path: Path) -> None:
    files = [f.path for f in write_synth(2, 10_000, 5, __import__("datetime").date(2024, 3, 8), tmp_path / "data")]
    settings = settings_for(kafka)
    job_id = derive_job_id([str(f) for f in files], settings.replay, kafka.topic_raw)
    env = {**os.environ, "KAFKA_BROKERS": kafka.brokers, "KAFKA_TOPIC_RAW": kafka.topic_raw,
           "KAFKA_TOPIC_DLQ": kafka.topic_dlq, "REPLAY_CHUNK_ROWS": "1000"}
    proc = subprocess.Popen(_replay_cmd(files, "--speed", "2000"), cwd=PROJECT_ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            checkpoint = read_checkpoint(kafka, "ticks.replay.checkpoints", job_id)
            if checkpoint is not None and checkpoint.ticks > 1_000:
                break
            time.sleep(0.2)
        proc.send_signal(signal.SIGTERM)
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(30)
    assert proc.returncode == 0, stderr
    assert "stopped (resumable)" in stdout and "stopped by SIGTERM" in stdout
    stopped = read_checkpoint(kafka, "ticks.replay.checkpoints", job_id)
    assert stopped is not None and not stopped.done and 0 < stopped.ticks < 20_000
    # What was committed at the stop is exactly what is visible: the stop committed its last transaction.
    assert len(read_topic(kafka, kafka.topic_raw)) == stopped.bins
    rerun = subprocess.run(_replay_cmd(files, "--speed", "0"), cwd=PROJECT_ROOT, env=env, capture_output=True,
                           text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    assert "[resumed]" in rerun.stdout and "ticks=20000 " in rerun.stdout
    offline = replay_to_jsonl([str(f) for f in files], tmp_path / "clean.jsonl", None, settings)
    ids = [bin_decoder.decode(v).bin_id for *_rest, v in read_topic(kafka, kafka.topic_raw)]
    assert len(ids) == len(set(ids)) == offline.bins
