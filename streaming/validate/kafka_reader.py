"""Read a whole topic as it is now: read_committed, from the low to the end offsets taken at the start.

No consumer group membership and no commits: the validator only looks.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, TopicPartition

from streaming.kernel.errors import BrokerError
from streaming.kernel.settings import KafkaSettings


@dataclass(frozen=True)
class TopicContents:
    """Values and broker timestamps of every committed message, in partition/offset order."""

    topic: str
    values: list[bytes] = field(default_factory=list)
    timestamps: list[int] = field(default_factory=list)
    partitions: int = 0

    @property
    def messages(self) -> int:
        """How many messages were read."""
        return len(self.values)


class TopicReadTimeout(BrokerError):
    """The end offsets were not reached in time (a transaction left open, or a lost broker)."""


def reader_consumer(kafka: KafkaSettings) -> Consumer:
    """A read_committed consumer that never commits and reports partition EOF."""
    return Consumer({
        **kafka.client_base("validate"),
        "group.id": f"tick-validate-{uuid.uuid4().hex[:8]}",
        "enable.auto.commit": False,
        "isolation.level": "read_committed",
        "enable.partition.eof": True,
        "auto.offset.reset": "earliest",
    })


def read_topic(kafka: KafkaSettings, topic: str, timeout_s: float = 120.0) -> TopicContents:
    """Every committed message of `topic` up to the end offsets at the moment of the call."""
    consumer = reader_consumer(kafka)
    try:
        try:
            md = consumer.list_topics(topic, timeout=10)
        except KafkaException as exc:
            raise BrokerError(f"cannot reach Kafka at {kafka.brokers}: {exc}") from None
        tmd = md.topics.get(topic)
        if tmd is None or tmd.error is not None:
            raise BrokerError(f"topic {topic} does not exist on {kafka.brokers}")
        ends: dict[int, int] = {}
        for pid in sorted(tmd.partitions):
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, pid), timeout=10)
            if high > low:
                ends[pid] = high
        contents = TopicContents(topic, partitions=len(tmd.partitions))
        if not ends:
            return contents
        consumer.assign([TopicPartition(topic, pid, OFFSET_BEGINNING) for pid in ends])
        pending = set(ends)
        deadline = time.monotonic() + timeout_s
        while pending:
            if time.monotonic() > deadline:
                raise TopicReadTimeout(
                    f"reading {topic}: partitions {sorted(pending)} did not reach their end offsets "
                    f"within {timeout_s:.0f}s"
                )
            for msg in consumer.consume(1000, timeout=1.0):
                err = msg.error()
                pid = msg.partition()
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF:
                        # EOF stops at the last stable offset, so an open transaction cannot stall us.
                        pending.discard(pid)
                        continue
                    raise BrokerError(f"reading {topic}: {err}")
                offset = msg.offset()
                if pid not in pending or offset >= ends[pid]:
                    continue
                contents.values.append(msg.value() or b"")
                contents.timestamps.append(msg.timestamp()[1])
                if offset >= ends[pid] - 1:
                    pending.discard(pid)
        return contents
    finally:
        consumer.close()
