"""Operator slips and the mock API (issue 15, items 14-17).

- a reset (`topics reset`, `demo`, `broker reset`) while live consumers use the topics or the group: refused in one
  line that says who, nothing changed; with --force done; with no active member done;
- the same replay command run again after it finished: says so, publishes nothing; --new-run publishes again;
- `/ticks?symbols=,,,` and other lists or bounds that name nothing: HTTP 422, no server traceback;
- `replay http://.../ticks` asks the API for the replay's own --speed unless the URL sets one, and says which.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from fastapi import FastAPI, Request
from fastapi.testclient import TestClient

from streaming.kernel.settings import PROJECT_ROOT, KafkaSettings, Settings, load_settings
from streaming.kernel.topics import list_groups
from streaming.replay.checkpoint import CHECKPOINT_TOPIC, derive_job_id
from streaming.replay.kafka_io import read_checkpoint
from streaming.replay.offline import replay_to_jsonl
from streaming.replay.producer import run_replay
from streaming.sources.api import create_app
from streaming.sources.http_source import with_replay_speed
from tick_platform_tests.test_replay_support import data_fields, read_jsonl, served
from tick_tools.broker.runner import LocalCluster

# ---- small inputs ---------------------------------------------------------------------------------


def kibot_file(path: Path, seconds: int, per_second: int = 3) -> Path:
    """A clean Kibot file of `seconds` consecutive seconds from 09:30:00, `per_second` ticks each."""
    rows = []
    for s in range(seconds):
        stamp = f"09:{30 + s // 60:02d}:{s % 60:02d}"
        for k in range(per_second):
            price = 10 + s * 0.01 + k * 0.001
            rows.append(f"02/17/2010,{stamp},{price:.3f},{price - 0.01:.3f},{price + 0.01:.3f},{100 + k}")
    path.write_text("\n".join(rows) + "\n")
    return path


@pytest.fixture()
def recording_api(tmp_path: Path) -> Iterator[tuple[str, list[dict[str, list[str]]], Path]]:
    """A real uvicorn server over a 4-second Kibot file of AAA; it records the query of every /ticks request."""
    data = kibot_file(tmp_path / "AAA_tickbidask.txt", seconds=4)
    app: FastAPI = create_app([str(data)])
    queries: list[dict[str, list[str]]] = []

    @app.middleware("http")
    async def record(request: Request, call_next):  # type: ignore[no-untyped-def]
        if request.url.path == "/ticks":
            queries.append(parse_qs(request.url.query, keep_blank_values=True))
        return await call_next(request)

    with served(app) as url:
        yield url, queries, data


# ---- item 16: the mock API refuses lists and bounds that name nothing ---------------------------


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("symbols=,,,", "symbols: no symbol in ',,,'"),
        ("symbols=", "symbols: no symbol in ''"),
        ("symbols=%20,%20", "symbols: no symbol in ' , '"),
        ("start=", "start: empty"),
        ("start=1&end=", "end: empty"),
    ],
)
def test_api_list_or_bound_naming_nothing_is_422(tmp_path: Path, query: str, message: str) -> None:
    # raise_server_exceptions: a traceback in the stream's generator would fail the test too.
    client = TestClient(create_app([str(kibot_file(tmp_path / "AAA_tickbidask.txt", seconds=2))]))
    response = client.get(f"/ticks?{query}")
    assert response.status_code == 422, response.text
    assert message in response.json()["detail"]


def test_api_symbols_with_empty_items_among_real_ones_still_serve_them(tmp_path: Path) -> None:
    client = TestClient(create_app([str(kibot_file(tmp_path / "AAA_tickbidask.txt", seconds=2))]))
    response = client.get("/ticks?symbols=AAA,,&speed=0")
    assert response.status_code == 200
    assert len([line for line in response.text.splitlines() if line]) == 6  # 2 seconds x 3 ticks


# ---- item 17: the replay's speed reaches the API ------------------------------------------------


def test_with_replay_speed_adds_the_speed_unless_the_url_sets_one() -> None:
    added = with_replay_speed("http://h:1/ticks?symbols=AAA", 0.0)
    assert parse_qs(urlsplit(added.url).query) == {"symbols": ["AAA"], "speed": ["0"]}
    assert (added.speed, added.from_url) == ("0", False)
    assert with_replay_speed("http://h:1/ticks", 2.5).url == "http://h:1/ticks?speed=2.5"
    kept = with_replay_speed("http://h:1/ticks?speed=7&live=true", 0.0)
    assert (kept.url, kept.speed, kept.from_url) == ("http://h:1/ticks?speed=7&live=true", "7", True)
    assert kept.line() == "replay from http://h:1/ticks?speed=7&live=true: speed 7 (7 x real time), set in the URL"


def test_replay_from_the_api_asks_for_the_replays_speed(
    recording_api: tuple[str, list[dict[str, list[str]]], Path], tmp_path: Path
) -> None:
    base, queries, data = recording_api
    settings = load_settings()  # speed 0 = max, the default
    from_api = replay_to_jsonl([f"{base}/ticks"], tmp_path / "api.jsonl", None, settings)
    assert queries == [{"speed": ["0"]}]
    from_file = replay_to_jsonl([str(data)], tmp_path / "file.jsonl", None, settings)
    assert (from_api.ticks, from_api.dlq, from_api.bins) == (12, 0, from_file.bins)
    assert data_fields(read_jsonl(tmp_path / "api.jsonl")) == data_fields(read_jsonl(tmp_path / "file.jsonl"))
    # A URL that sets its own speed keeps it: the replay does not override what the user wrote.
    replay_to_jsonl([f"{base}/ticks?speed=1000"], tmp_path / "api2.jsonl", None, settings)
    assert queries[1] == {"speed": ["1000"]}


def test_replay_cli_first_line_says_which_speed_is_in_force(
    recording_api: tuple[str, list[dict[str, list[str]]], Path], tmp_path: Path
) -> None:
    base, queries, _data = recording_api
    env = {**os.environ, "PYTHONPATH": str(PROJECT_ROOT)}
    done = subprocess.run([sys.executable, "-m", "streaming", "replay", f"{base}/ticks?symbols=AAA",
                           "--to", str(tmp_path / "b.jsonl")],
                          cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stderr.splitlines()[0] == (
        f"replay from {base}/ticks?symbols=AAA&speed=0: speed 0 (as fast as possible), "
        "the replay's --speed, passed to the API"
    )
    assert queries == [{"symbols": ["AAA"], "speed": ["0"]}]
    assert "ticks=12 " in done.stdout


# ---- Kafka helpers --------------------------------------------------------------------------------


def _end_offsets(kafka: KafkaSettings, topic: str) -> list[int]:
    consumer = Consumer({**kafka.client_base(), "group.id": f"t-{uuid.uuid4().hex}", "enable.auto.commit": False})
    try:
        md = consumer.list_topics(topic, timeout=10).topics[topic]
        return [consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in sorted(md.partitions)]
    finally:
        consumer.close()


def _env(kafka: KafkaSettings, **extra: str) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(PROJECT_ROOT), "KAFKA_BROKERS": kafka.brokers,
            "KAFKA_TOPIC_RAW": kafka.topic_raw, "KAFKA_TOPIC_AGG": kafka.topic_agg,
            "KAFKA_TOPIC_DLQ": kafka.topic_dlq, **extra}


def _settings(kafka: KafkaSettings) -> Settings:
    return load_settings(kafka={"brokers": kafka.brokers, "topic_raw": kafka.topic_raw,
                                "topic_agg": kafka.topic_agg, "topic_dlq": kafka.topic_dlq})


# ---- item 15: a completed replay run again -------------------------------------------------------


@pytest.mark.kafka
def test_rerun_of_a_completed_replay_publishes_nothing_and_new_run_publishes_again(
    kafka: KafkaSettings, tmp_path: Path
) -> None:
    data = kibot_file(tmp_path / "AAA_tickbidask.txt", seconds=30)
    settings = _settings(kafka)
    first = run_replay(settings, [str(data)])
    assert first.finished and first.ticks == 90 and first.bins > 0
    after_first = _end_offsets(kafka, kafka.topic_raw)
    assert sum(after_first) >= first.bins  # bins (+ transaction markers)

    cmd = [sys.executable, "-m", "streaming", "replay", str(data), "--quiet"]
    again = subprocess.run(cmd, cwd=PROJECT_ROOT, env=_env(kafka), capture_output=True, text=True, timeout=120)
    assert again.returncode == 0, again.stderr
    lines = again.stdout.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"replay already complete: job {first.job_id} ")
    assert f"ticks=90 bins={first.bins} " in lines[0] and "--new-run" in lines[0]
    assert _end_offsets(kafka, kafka.topic_raw) == after_first  # nothing published

    fresh = subprocess.run([*cmd, "--new-run"], cwd=PROJECT_ROOT, env=_env(kafka), capture_output=True, text=True,
                           timeout=120)
    assert fresh.returncode == 0, fresh.stderr
    assert f"replay done: ticks=90 bins={first.bins} " in fresh.stdout and "[resumed]" not in fresh.stdout
    # Every bin once more: the topic holds two copies now (plus a second run's transaction markers).
    grown = sum(_end_offsets(kafka, kafka.topic_raw)) - sum(after_first)
    assert grown >= first.bins
    checkpoint = read_checkpoint(kafka, CHECKPOINT_TOPIC, derive_job_id([str(data)], settings.replay,
                                                                         kafka.topic_raw))
    assert checkpoint is not None and checkpoint.done and checkpoint.bins == first.bins


# ---- item 14: no reset under a live consumer ----------------------------------------------------


def _fill(kafka: KafkaSettings, count: int) -> None:
    producer = Producer(kafka.client_base())
    for i in range(count):
        producer.produce(kafka.topic_raw, f"m{i}".encode(), f"K{i % 3}".encode())
    assert producer.flush(30) == 0


def _live_consumer(kafka: KafkaSettings, group: str) -> Consumer:
    """A consumer of ticks.raw in `group` that has joined, read everything and committed its offsets."""
    consumer = Consumer({**kafka.client_base(), "group.id": group, "client.id": "live-aggregator",
                         "enable.auto.commit": False, "auto.offset.reset": "earliest"})
    consumer.subscribe([kafka.topic_raw])
    deadline = time.monotonic() + 60
    seen = 0
    while time.monotonic() < deadline and (not consumer.assignment() or seen < 30):
        seen += len([m for m in consumer.consume(100, timeout=0.5) if m.error() is None])
    assert consumer.assignment() and seen == 30, "the consumer did not join and read in time"
    consumer.commit(asynchronous=False)
    return consumer


def _committed(consumer: Consumer, kafka: KafkaSettings) -> list[int]:
    tps = [TopicPartition(kafka.topic_raw, p) for p in range(kafka.partitions)]
    # -1001: nothing committed on that partition (no message was keyed there).
    return [max(0, tp.offset) for tp in consumer.committed(tps, timeout=30)]


@pytest.mark.kafka
def test_topics_reset_refuses_while_a_consumer_is_live_then_force_does_it(kafka: KafkaSettings) -> None:
    group = f"agg-{uuid.uuid4().hex[:8]}"
    env = _env(kafka, AGG_GROUP_ID=group)
    _fill(kafka, 30)
    consumer = _live_consumer(kafka, group)
    try:
        offsets, committed = _end_offsets(kafka, kafka.topic_raw), _committed(consumer, kafka)
        refused = subprocess.run([sys.executable, "-m", "streaming", "topics", "reset"], cwd=PROJECT_ROOT, env=env,
                                 capture_output=True, text=True, timeout=120)
        assert refused.returncode == 1
        error = refused.stderr.strip().splitlines()
        assert len(error) == 1 and "Traceback" not in refused.stderr
        assert error[0].startswith("error: refusing to recreate topics ")
        assert f"consumer group {group}: 1 active member (client ids live-aggregator" in error[0]
        assert f"on {kafka.topic_raw}" in error[0] and "pass --force" in error[0]
        # Nothing changed: the topic's messages and the group's committed offsets are where they were.
        assert _end_offsets(kafka, kafka.topic_raw) == offsets and sum(offsets) == 30
        assert _committed(consumer, kafka) == committed and sum(committed) == 30
        assert group in list_groups(kafka)

        forced = subprocess.run([sys.executable, "-m", "streaming", "topics", "reset", "--force"], cwd=PROJECT_ROOT,
                                env=env, capture_output=True, text=True, timeout=180)
        assert forced.returncode == 0, forced.stderr
        assert f"topics reset: {kafka.topic_raw}, " in forced.stdout
        assert _end_offsets(kafka, kafka.topic_raw) == [0] * kafka.partitions
    finally:
        consumer.close()


@pytest.mark.kafka
def test_topics_reset_without_an_active_member_recreates_topics_and_deletes_the_group(kafka: KafkaSettings) -> None:
    group = f"agg-{uuid.uuid4().hex[:8]}"
    _fill(kafka, 30)
    _live_consumer(kafka, group).close()  # committed offsets remain, no member does
    done = subprocess.run([sys.executable, "-m", "streaming", "topics", "reset"], cwd=PROJECT_ROOT,
                          env=_env(kafka, AGG_GROUP_ID=group), capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stderr
    assert f"consumer group {group}: deleted" in done.stdout
    assert _end_offsets(kafka, kafka.topic_raw) == [0] * kafka.partitions
    assert group not in list_groups(kafka)


@pytest.mark.kafka
def test_demo_refuses_to_reset_under_a_live_aggregator_group(kafka: KafkaSettings, tmp_path: Path) -> None:
    group = f"agg-{uuid.uuid4().hex[:8]}"
    _fill(kafka, 30)
    consumer = _live_consumer(kafka, group)
    try:
        offsets = _end_offsets(kafka, kafka.topic_raw)
        env = _env(kafka, AGG_GROUP_ID=group, DAGSTER_HOME=str(tmp_path / "dagster_home"))
        refused = subprocess.run([sys.executable, "-m", "tick_tools", "demo", "--data",
                                  str(kibot_file(tmp_path / "AAA_tickbidask.txt", 5))],
                                 cwd=PROJECT_ROOT, env=env, capture_output=True, text=True, timeout=180)
        assert refused.returncode == 1, refused.stdout + refused.stderr
        error = [line for line in refused.stderr.splitlines() if line.strip()]
        assert len(error) == 1 and "Traceback" not in refused.stderr
        assert f"consumer group {group}: 1 active member" in error[0]
        assert "pass --force (make demo ARGS=--force)" in error[0]
        assert _end_offsets(kafka, kafka.topic_raw) == offsets
        assert sum(_committed(consumer, kafka)) == 30
    finally:
        consumer.close()


@pytest.mark.kafka
def test_broker_reset_refuses_while_a_consumer_is_live(kafka: KafkaSettings, kafka_cluster: LocalCluster) -> None:
    """`make reset` would wipe every topic and group of the broker under a running consumer: refused."""
    group = f"agg-{uuid.uuid4().hex[:8]}"
    _fill(kafka, 30)
    consumer = _live_consumer(kafka, group)
    try:
        env = _env(kafka, BROKER_RUN_DIR=str(kafka_cluster.run_dir))
        refused = subprocess.run([sys.executable, "-m", "tick_tools", "broker", "reset"], cwd=PROJECT_ROOT, env=env,
                                 capture_output=True, text=True, timeout=120)
        assert refused.returncode == 1, refused.stdout + refused.stderr
        error = refused.stderr.strip().splitlines()
        assert len(error) == 1 and error[0].startswith("error: refusing to reset the broker")
        assert f"consumer group {group}: 1 active member" in error[0] and "make reset ARGS=--force" in error[0]
        assert kafka_cluster.running() and kafka_cluster.run_dir.is_dir()  # the broker and its data stay
        assert sum(_end_offsets(kafka, kafka.topic_raw)) == 30
    finally:
        consumer.close()
