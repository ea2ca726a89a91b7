"""The background consumer that keeps the bar cache filled from ticks.agg.1s (read_committed).

One thread per (brokers, topic), started once by the app via st.cache_resource.
It never commits offsets and never joins a group: it only watches.
"""

from __future__ import annotations

import threading
import time
import uuid
from dataclasses import dataclass
from typing import Literal

import msgspec
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, TopicPartition

from dashboard.bar_cache import BarCache
from streaming.kernel.records import bar_decoder
from streaming.kernel.settings import KafkaSettings
from streaming.kernel.wallclock import now_ms

State = Literal["connecting", "connected", "unreachable", "no_topic"]
RETRY_S = 2.0
METADATA_TIMEOUT_S = 5.0


@dataclass(frozen=True)
class FeedStatus:
    """Where the consumer stands, for the empty states."""

    state: State
    message: str
    messages: int
    rejected: int


class BarFeed:
    """Consumes the bar topic from the beginning into a BarCache on a daemon thread."""

    def __init__(self, kafka: KafkaSettings, cache: BarCache) -> None:
        self.kafka = kafka
        self.topic = kafka.topic_agg
        self.cache = cache
        self._stop = threading.Event()
        self._changed = threading.Condition()
        self._state: State = "connecting"
        self._message = f"connecting to {kafka.brokers}"
        self._messages = 0
        self._rejected = 0
        self._thread = threading.Thread(target=self._run, name=f"bar-feed-{self.topic}", daemon=True)

    def start(self) -> BarFeed:
        """Start the consumer thread."""
        self._thread.start()
        return self

    def stop(self, timeout_s: float = 10.0) -> None:
        """Stop the thread and close the consumer."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout_s)

    def status(self) -> FeedStatus:
        """The current state and counters."""
        with self._changed:
            return FeedStatus(self._state, self._message, self._messages, self._rejected)

    def wait_until_known(self, timeout_s: float) -> FeedStatus:
        """Block until the first connection attempt has an answer (or the timeout)."""
        deadline = time.monotonic() + timeout_s
        with self._changed:
            while self._state == "connecting" and time.monotonic() < deadline:
                self._changed.wait(max(0.0, deadline - time.monotonic()))
        return self.status()

    def _set(self, state: State, message: str) -> None:
        with self._changed:
            self._state, self._message = state, message
            self._changed.notify_all()

    def _on_error(self, err: KafkaError) -> None:
        if err.code() in (KafkaError._ALL_BROKERS_DOWN, KafkaError._TRANSPORT, KafkaError._RESOLVE):
            self._set("unreachable", f"cannot reach Kafka at {self.kafka.brokers}: {err.str()}")

    def _consumer(self) -> Consumer:
        return Consumer({
            **self.kafka.client_base("dashboard"),
            "group.id": f"tick-dashboard-{uuid.uuid4().hex[:8]}",
            "enable.auto.commit": False,
            "isolation.level": "read_committed",
            "auto.offset.reset": "earliest",
            "error_cb": self._on_error,
            # Connection failures reach the page through error_cb; the log lines would only be noise.
            "log_level": 0,
        })

    def _assign(self, consumer: Consumer) -> bool:
        try:
            md = consumer.list_topics(self.topic, timeout=METADATA_TIMEOUT_S)
        except KafkaException as exc:
            self._set("unreachable", f"cannot reach Kafka at {self.kafka.brokers}: {exc.args[0].str()}")
            return False
        tmd = md.topics.get(self.topic)
        if tmd is None or tmd.error is not None or not tmd.partitions:
            self._set("no_topic", f"topic {self.topic} does not exist on {self.kafka.brokers} yet")
            return False
        consumer.assign([TopicPartition(self.topic, p, OFFSET_BEGINNING) for p in sorted(tmd.partitions)])
        self._set("connected", f"reading {self.topic} from {self.kafka.brokers}")
        return True

    def _run(self) -> None:
        consumer = self._consumer()
        try:
            while not self._stop.is_set() and not self._assign(consumer):
                self._stop.wait(RETRY_S)
            last_probe = time.monotonic()
            while not self._stop.is_set():
                batch = consumer.consume(500, timeout=0.5)
                received = now_ms()
                for msg in batch:
                    if msg.error() is not None:
                        continue
                    try:
                        bar = bar_decoder.decode(msg.value() or b"")
                    except (msgspec.DecodeError, UnicodeDecodeError):
                        self._rejected += 1
                        continue
                    self._messages += 1
                    self.cache.add(bar, received, msg.timestamp()[1])
                if batch and self._state != "connected":
                    self._set("connected", f"reading {self.topic} from {self.kafka.brokers}")
                elif self._state == "unreachable" and time.monotonic() - last_probe > RETRY_S:
                    # librdkafka reconnects by itself; probing tells us when it has.
                    last_probe = time.monotonic()
                    try:
                        consumer.list_topics(self.topic, timeout=1.0)
                        self._set("connected", f"reading {self.topic} from {self.kafka.brokers}")
                    except KafkaException:
                        pass
        finally:
            consumer.close()


_FEEDS: dict[tuple[str, str, int], BarFeed] = {}
_FEEDS_LOCK = threading.Lock()


def feed_for(kafka: KafkaSettings, max_bars_per_symbol: int) -> BarFeed:
    """The one running feed of these brokers and topic (started on first use)."""
    key = (kafka.brokers, kafka.topic_agg, max_bars_per_symbol)
    with _FEEDS_LOCK:
        feed = _FEEDS.get(key)
        if feed is None:
            feed = _FEEDS[key] = BarFeed(kafka, BarCache(max_bars_per_symbol)).start()
        return feed


def stop_all_feeds() -> None:
    """Stop every feed of this process (tests, shutdown)."""
    with _FEEDS_LOCK:
        feeds = list(_FEEDS.values())
        _FEEDS.clear()
    for feed in feeds:
        feed.stop()
