"""`make smoke`: one message through the real broker and back."""

from __future__ import annotations

import time
import uuid

from confluent_kafka import Consumer, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic

from streaming.kernel.errors import BrokerError
from streaming.kernel.settings import KafkaSettings
from streaming.kernel.topics import bootstrap_topics

SMOKE_TOPIC = "ticks.smoke"


def _ensure_smoke_topic(kafka: KafkaSettings) -> None:
    admin = AdminClient(kafka.client_base())
    if SMOKE_TOPIC in admin.list_topics(timeout=10).topics:
        return
    fut = admin.create_topics([NewTopic(SMOKE_TOPIC, 1, -1, config={"retention.ms": "3600000"})])[SMOKE_TOPIC]
    try:
        fut.result()
    except KafkaException as exc:
        if "TOPIC_ALREADY_EXISTS" not in str(exc):
            raise BrokerError(f"creating {SMOKE_TOPIC} failed: {exc}") from None


def round_trip(kafka: KafkaSettings, timeout_s: float = 30.0) -> str:
    """Produce a message with an idempotent acks=all producer and consume it back (read_committed).

    It uses its own topic, `ticks.smoke`, so the pipeline's topics never see a test message.
    """
    bootstrap_topics(kafka)
    topic = SMOKE_TOPIC
    _ensure_smoke_topic(kafka)
    token = f"smoke-{uuid.uuid4().hex[:8]}"
    delivered: list[tuple[int, int]] = []

    def on_delivery(err, msg) -> None:  # type: ignore[no-untyped-def]
        if err is not None:
            raise BrokerError(f"smoke message not delivered: {err}")
        delivered.append((msg.partition(), msg.offset()))

    producer = Producer({**kafka.client_base(), "enable.idempotence": True, "acks": "all"})
    producer.produce(topic, key=b"SMOKE", value=token.encode(), on_delivery=on_delivery)
    if producer.flush(timeout_s) != 0 or not delivered:
        raise BrokerError(f"smoke message not acknowledged by {kafka.brokers} within {timeout_s:.0f}s")
    partition, offset = delivered[0]
    consumer = Consumer({**kafka.client_base(), "group.id": f"smoke-{token}", "enable.auto.commit": False,
                         "isolation.level": "read_committed"})
    try:
        consumer.assign([TopicPartition(topic, partition, offset)])
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            msg = consumer.poll(0.5)
            if msg is None:
                continue
            if msg.error():
                raise BrokerError(f"smoke consume failed: {msg.error()}")
            value = msg.value().decode()
            if value == token:
                return f"{topic}[{partition}]@{offset} key=SMOKE value={value}"
    except KafkaException as exc:
        raise BrokerError(f"smoke consume failed: {exc}") from None
    finally:
        consumer.close()
    raise BrokerError(f"smoke message not read back within {timeout_s:.0f}s")
