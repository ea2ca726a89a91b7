"""Kafka edges of the replay: the producer config, the checkpoint topic and reading the last checkpoint."""

from __future__ import annotations

import time
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from streaming.kernel.errors import BrokerError
from streaming.kernel.settings import KafkaSettings, ReplaySettings
from streaming.replay.checkpoint import ReplayCheckpoint, checkpoint_decoder


def producer_config(kafka: KafkaSettings, replay: ReplaySettings, transactional_id: str | None) -> dict[str, Any]:
    """Idempotent, acks=all, batched; transactional when `transactional_id` is given."""
    conf: dict[str, Any] = {
        **kafka.client_base("replay"),
        "enable.idempotence": True,
        "acks": "all",
        "linger.ms": 5,
        "batch.size": 1_000_000,
        "compression.type": "lz4",
        "queue.buffering.max.messages": 1_000_000,
        "queue.buffering.max.kbytes": 1_048_576,
        "message.timeout.ms": 60_000,
    }
    if transactional_id is not None:
        conf["transactional.id"] = transactional_id
        conf["transaction.timeout.ms"] = 90_000
    return conf


def ensure_checkpoint_topic(kafka: KafkaSettings, topic: str) -> None:
    """Create the compacted checkpoint topic if it does not exist yet."""
    admin = AdminClient(kafka.client_base("replay"))
    try:
        md = admin.list_topics(timeout=10)
    except KafkaException as exc:
        raise BrokerError(f"cannot reach Kafka at {kafka.brokers}: {exc}") from None
    if topic in md.topics:
        return
    rf = min(max(kafka.replication_factor, 3 if len(md.brokers) >= 3 else 1), len(md.brokers))
    new = NewTopic(
        topic,
        num_partitions=1,
        replication_factor=rf,
        config={
            "cleanup.policy": "compact",
            "min.insync.replicas": str(2 if rf >= 3 else 1),
            # Small segments that roll often, so compaction keeps the topic (read at every start) short.
            "segment.bytes": str(16 * 1024 * 1024),
            "segment.ms": str(10 * 60 * 1000),
            "min.cleanable.dirty.ratio": "0.1",
        },
    )
    try:
        admin.create_topics([new], request_timeout=30)[topic].result()
    except KafkaException as exc:
        if exc.args[0].code() != KafkaError.TOPIC_ALREADY_EXISTS:
            raise BrokerError(f"creating topic {topic} failed: {exc}") from None


def read_checkpoint(kafka: KafkaSettings, topic: str, job_id: str, timeout_s: float = 60.0) -> ReplayCheckpoint | None:
    """The last committed checkpoint of `job_id` (read_committed), or None."""
    deadline = time.monotonic() + timeout_s
    consumer = Consumer(
        {
            **kafka.client_base("replay"),
            "group.id": f"{job_id}-checkpoint-reader",
            "enable.auto.commit": False,
            "isolation.level": "read_committed",
        }
    )
    try:
        latest: ReplayCheckpoint | None = None
        key = job_id.encode()
        md = consumer.list_topics(topic, timeout=10).topics.get(topic)
        if md is None or md.error is not None:
            return None
        for partition in md.partitions:
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=10)
            if high <= low:
                continue
            consumer.assign([TopicPartition(topic, partition, low)])
            position = low
            while position < high:
                if time.monotonic() > deadline:
                    raise BrokerError(f"reading {topic} timed out (an open transaction holds it back?)")
                messages = consumer.consume(num_messages=10_000, timeout=1.0)
                if not messages:
                    # Past the last stable offset: only aborted or control records remain.
                    # Nothing fetched yet (position unknown) or the last stable offset is not there yet.
                    positions = consumer.position([TopicPartition(topic, partition)])
                    if positions[0].offset >= high:
                        break
                    continue
                for message in messages:
                    if message.error() is not None:
                        continue
                    position = message.offset() + 1
                    if message.key() == key and message.value():
                        latest = checkpoint_decoder.decode(message.value())
        return latest
    finally:
        consumer.close()
