"""The real broker: CLI lifecycle, topics, an idempotent acks=all round trip, a 3-node cluster."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from streaming.kernel.settings import PROJECT_ROOT, KafkaSettings
from streaming.kernel.topics import bootstrap_topics, describe_topics
from tick_tools.broker.runner import LocalCluster, free_port_base

pytestmark = pytest.mark.kafka


def test_topics_have_the_designed_partitions_and_retention(kafka: KafkaSettings) -> None:
    infos = {info.name: info for info in describe_topics(kafka)}
    assert len(infos[kafka.topic_raw].partitions) == 6
    assert len(infos[kafka.topic_agg].partitions) == 6
    assert len(infos[kafka.topic_dlq].partitions) == 1
    assert infos[kafka.topic_raw].retention_ms == str(60 * 60 * 1000)
    assert infos[kafka.topic_agg].retention_ms == str(60 * 60 * 1000)
    assert infos[kafka.topic_dlq].retention_ms == str(7 * 24 * 60 * 60 * 1000)
    assert set(bootstrap_topics(kafka).values()) == {"exists"}


def test_idempotent_acks_all_round_trip_keeps_key_order(kafka: KafkaSettings) -> None:
    producer = Producer({**kafka.client_base(), "enable.idempotence": True, "acks": "all"})
    sent = [(f"SYM{i % 3}", f"v{i}") for i in range(300)]
    delivered: list[tuple[str, int, int]] = []
    for key, value in sent:
        producer.produce(kafka.topic_raw, key=key.encode(), value=value.encode(),
                         on_delivery=lambda err, msg: delivered.append(
                             (msg.key().decode(), msg.partition(), msg.offset())) if err is None else None)
    assert producer.flush(30) == 0
    assert len(delivered) == len(sent)
    assert len({(p, o) for _, p, o in delivered}) == len(sent)
    # one key, one partition
    assert all(len({p for k, p, _ in delivered if k == key}) == 1 for key in {"SYM0", "SYM1", "SYM2"})

    consumer = Consumer({**kafka.client_base(), "group.id": "rt", "isolation.level": "read_committed",
                         "enable.auto.commit": False})
    consumer.assign([TopicPartition(kafka.topic_raw, p, 0) for p in range(6)])
    got: list[tuple[str, str]] = []
    while len(got) < len(sent):
        msgs = consumer.consume(500, timeout=5)
        assert msgs, "timed out reading back"
        got += [(m.key().decode(), m.value().decode()) for m in msgs if m.error() is None]
    consumer.close()
    assert sorted(got) == sorted(sent)
    for key in {"SYM0", "SYM1", "SYM2"}:
        assert [v for k, v in got if k == key] == [v for k, v in sent if k == key]


def _cli(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "tick_tools", *args], capture_output=True, text=True,
                          env=env, cwd=PROJECT_ROOT, timeout=240)


def test_cli_up_is_idempotent_smoke_round_trips_and_down_stops_exactly_it(tmp_path: Path) -> None:
    port = free_port_base(1)
    env = {**os.environ, "KAFKA_BROKERS": f"127.0.0.1:{port}", "BROKER_RUN_DIR": str(tmp_path / "run"),
           "BROKER_HEAP": "512m"}
    try:
        first = _cli(["broker", "up"], env)
        assert first.returncode == 0, first.stderr
        assert f"127.0.0.1:{port}" in first.stdout
        pid = int((tmp_path / "run" / "node-1" / "pid").read_text())
        second = _cli(["broker", "up"], env)
        assert second.returncode == 0 and "already running" in second.stdout
        assert int((tmp_path / "run" / "node-1" / "pid").read_text()) == pid

        smoke = _cli(["smoke"], env)
        assert smoke.returncode == 0, smoke.stderr
        assert "smoke ok" in smoke.stdout and "value=smoke-" in smoke.stdout

        listed = _cli(["topics", "list"], env)
        assert listed.returncode == 0 and "ticks.agg.1s" in listed.stdout
    finally:
        down = _cli(["broker", "down"], env)
    assert down.returncode == 0 and "1 node(s) stopped" in down.stdout
    assert not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text().split()[2]
    status = _cli(["broker", "status"], env)
    assert status.returncode == 1 and "stopped" in status.stdout


def test_three_node_cluster_replicates_every_topic(tmp_path: Path) -> None:
    base = free_port_base(3)
    cluster = LocalCluster(tmp_path / "c3", PROJECT_ROOT / ".cache" / "kafka", f"127.0.0.1:{base}", 3, "512m")
    try:
        cluster.up(timeout_s=180)
        assert len(cluster.running()) == 3
        kafka = KafkaSettings(brokers=cluster.bootstrap)
        bootstrap_topics(kafka)
        for info in describe_topics(kafka):
            assert all(p.replicas == 3 for p in info.partitions), info
            assert all(p.isr == 3 for p in info.partitions), info
        # acks=all with min.insync.replicas=2 still writes with one broker down
        cluster.stop_node(3)
        producer = Producer({**kafka.client_base(), "enable.idempotence": True, "acks": "all"})
        errors: list[object] = []
        for i in range(50):
            producer.produce(kafka.topic_raw, key=b"WDC", value=str(i).encode(),
                             on_delivery=lambda err, _m: errors.append(err) if err else None)
        assert producer.flush(60) == 0 and errors == []
    finally:
        cluster.down()
    assert cluster.running() == []
