"""The Kafka edge of the facts: find and read a window's 1 s bars in ticks.agg.1s by offsets.

Message timestamps are wall-clock production times (docs/processing_strategy.md,
"Time and Kafka retention"), so Kafka's time index cannot find a window. Instead,
per partition, revision-0 bars are ordered by start_ts_ms, and a binary search over
offsets finds the first revision-0 bar at or past a given event time.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import msgspec
import orjson
from confluent_kafka import Consumer, KafkaError, KafkaException, Message, TopicPartition

from streaming.kernel.errors import KafkaAccessError, TickPlatformError
from streaming.kernel.kafka_access import check_access, denied_access
from streaming.kernel.records import Bar, bar_decoder
from streaming.kernel.settings import KafkaSettings

_PROBE_TIMEOUT_S = 10.0
# A window's or a backfill chunk's bars are read in batches (consume): a poll per record cost
# three times as much. Larger fetch sizes than librdkafka's defaults made it slower, not faster.
_BATCH = 20_000
# consume() returns when it has its count or after this wait; a range's last call (its visible
# records fewer than its offsets: transaction markers, the partition's end) waits it once.
_BATCH_WAIT_S = 0.05


class BarReadError(TickPlatformError):
    """ticks.agg.1s could not be read (broker unreachable, topic missing, read timed out)."""


class ReadNotAuthorized(BarReadError):
    """The broker refused to hand out a topic's records (TOPIC_AUTHORIZATION_FAILED on the fetch).

    The warehouse principal may DESCRIBE ticks.raw (offsets, lag) but not READ it; its
    observation tells this apart from every other read failure. Raised at the first refusal:
    the same principal would get the same answer, so nothing waits or retries.
    """


@dataclass(frozen=True)
class OffsetRange:
    """Offsets `[start, end)` read from one partition."""

    partition: int
    start: int
    end: int

    def as_list(self) -> list[int]:
        return [self.start, self.end]


@dataclass(frozen=True)
class WindowBars:
    """A window's bars (every revision read, in offset order per partition) and where they came from."""

    start_ms: int
    end_ms: int
    bars: list[Bar]
    ranges: list[OffsetRange]
    skipped: int = 0
    # Partitions whose retention (or delete-records) removed offsets that may have held bars of the
    # window: the low offset is above 0 and no retained revision-0 bar lies before the window.
    truncated: list[int] = field(default_factory=list)

    def offsets_json(self) -> dict[str, list[int]]:
        """Offset ranges keyed by partition number (metadata-friendly)."""
        return {str(r.partition): r.as_list() for r in self.ranges}


@dataclass(frozen=True)
class PartitionHead:
    """A partition's offsets and newest revision-0 bar (event time), as the sensor sees it."""

    partition: int
    low: int
    high: int
    last_start_ms: int | None


@dataclass
class _Probe:
    """The first visible revision-0 bar at or after an offset (None: none before `end`)."""

    offset: int
    start_ms: int | None
    extra: dict[str, Any] = field(default_factory=dict)


def consumer_config(kafka: KafkaSettings) -> dict[str, Any]:
    """A non-committing read_committed consumer that reports the end of a partition."""
    return {
        **kafka.client_base("warehouse"),
        "group.id": f"tick-platform-reader-{uuid.uuid4().hex[:8]}",
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "isolation.level": "read_committed",
        "enable.partition.eof": True,
        "auto.offset.reset": "earliest",
        "fetch.wait.max.ms": 50,
    }


@contextmanager
def warehouse_access(kafka: KafkaSettings, what: str) -> Iterator[None]:
    """Kafka as the warehouse principal, a security failure being one KafkaAccessError line.

    First the stages' probe (streaming/kernel/kafka_access.py): librdkafka meets a refused
    password or a TLS mismatch with reconnects, so every read would only time out. Then an
    authorization refusal the reads meet (a missing ACL) becomes the stages' line. Both name
    settings, never their values, and are not retried; any other error passes unchanged.
    """
    try:
        check_access(kafka, "warehouse")
    except KafkaAccessError as exc:
        raise KafkaAccessError(f"{what}: {exc}") from None
    try:
        yield
    except (BarReadError, KafkaException) as exc:
        denied = denied_access(str(exc))
        if denied is None:
            raise
        raise KafkaAccessError(f"{what}: {denied}") from None


@contextmanager
def open_consumer(kafka: KafkaSettings) -> Iterator[Consumer]:
    """A consumer for offset reads, always closed."""
    consumer = Consumer(consumer_config(kafka))
    try:
        yield consumer
    finally:
        consumer.close()


def partitions_of(consumer: Consumer, topic: str) -> list[int]:
    """Partition numbers of `topic`; raises BarReadError if it does not exist."""
    try:
        md = consumer.list_topics(topic, timeout=_PROBE_TIMEOUT_S)
    except KafkaException as exc:
        raise BarReadError(f"cannot list {topic}: {exc}") from None
    tmd = md.topics.get(topic)
    if tmd is not None and tmd.error is not None and tmd.error.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED:
        raise BarReadError(f"cannot describe {topic}: {tmd.error}")  # exists or not, the principal may not know
    if tmd is None or tmd.error is not None or not tmd.partitions:
        raise BarReadError(f"topic {topic} does not exist")
    return sorted(tmd.partitions)


def watermarks(consumer: Consumer, topic: str, partition: int) -> tuple[int, int]:
    """(low, high) offsets of one partition."""
    try:
        low, high = consumer.get_watermark_offsets(TopicPartition(topic, partition), timeout=_PROBE_TIMEOUT_S)
    except KafkaException as exc:
        raise BarReadError(f"cannot get offsets of {topic}[{partition}]: {exc}") from None
    return int(low), int(high)


def _decode(value: bytes | None) -> Bar | None:
    if value is None:
        return None
    try:
        return bar_decoder.decode(value)
    except (msgspec.DecodeError, UnicodeDecodeError):
        return None  # not a bar: the aggregator never writes these; skip rather than stop


def _records(
    consumer: Consumer, topic: str, partition: int, start: int, end: int
) -> Iterator[tuple[int, bytes | None]]:
    """Visible records of offsets [start, end) in order, as (offset, value); stops at the partition's end."""
    if start >= end:
        return
    consumer.assign([TopicPartition(topic, partition, start)])
    try:
        # One message per poll: a batch consume() waits for its count, and transaction markers
        # make `end - start` overcount the visible records, so a batch would sit out its timeout.
        while True:
            msg = consumer.poll(_PROBE_TIMEOUT_S)
            if msg is None:
                raise BarReadError(f"timed out reading {topic}[{partition}] at offsets [{start}, {end})")
            err = msg.error()
            if err is not None:
                if err.code() == KafkaError._PARTITION_EOF:
                    return
                if err.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED:
                    raise ReadNotAuthorized(f"reading {topic}[{partition}]: {err}")
                raise BarReadError(f"reading {topic}[{partition}]: {err}")
            offset = int(msg.offset())
            if offset >= end:
                return
            yield offset, msg.value()
            if offset >= end - 1:
                return
    finally:
        consumer.unassign()


def _batches(consumer: Consumer, topic: str, partition: int, start: int, end: int) -> Iterator[list[bytes | None]]:
    """Values of the visible records of offsets [start, end) in order, a batch at a time.

    Same stop rule as `_records` (the partition's end, an offset at or past `end`); a batch
    consume costs a few microseconds per record where a poll per record costs several times that.
    """
    if start >= end:
        return
    consumer.assign([TopicPartition(topic, partition, start)])
    try:
        nxt, last_progress = start, time.monotonic()
        while True:
            msgs = consumer.consume(min(_BATCH, end - nxt), timeout=_BATCH_WAIT_S)
            # Whole-batch passes (comprehensions) instead of a loop per record: the loop was a third of the cost.
            good = [m for m in msgs if m.error() is None]
            done = len(good) != len(msgs) and _batch_ended(msgs, topic, partition)
            if good and good[-1].offset() >= end - 1:
                good = [m for m in good if m.offset() < end]
                done = True
            if good:
                nxt = int(good[-1].offset()) + 1
                last_progress = time.monotonic()
                yield [m.value() for m in good]
            if done:
                return
            if time.monotonic() - last_progress > _PROBE_TIMEOUT_S:
                raise BarReadError(f"timed out reading {topic}[{partition}] at offsets [{nxt}, {end})")
    finally:
        consumer.unassign()


def _batch_ended(msgs: list[Message], topic: str, partition: int) -> bool:
    """True when a batch's events include the partition's end; raises on any other error event."""
    ended = False
    for msg in msgs:
        err = msg.error()
        if err is None:
            continue
        if err.code() == KafkaError._PARTITION_EOF:
            ended = True
        elif err.code() == KafkaError.TOPIC_AUTHORIZATION_FAILED:
            raise ReadNotAuthorized(f"reading {topic}[{partition}]: {err}")
        else:
            raise BarReadError(f"reading {topic}[{partition}]: {err}")
    return ended


def _scan_bars(
    consumer: Consumer, topic: str, partition: int, start: int, end: int, start_ms: int, end_ms: int
) -> tuple[list[Bar], int]:
    """The bars of `[start_ms, end_ms)` among offsets [start, end), and how many records were not bars."""
    bars: list[Bar] = []
    skipped = 0
    for values in _batches(consumer, topic, partition, start, end):
        decoded = list(map(_decode, values))
        found = [b for b in decoded if b is not None]
        skipped += len(decoded) - len(found)
        bars += [b for b in found if start_ms <= b.start_ts_ms < end_ms]
    return bars, skipped


def _scan(consumer: Consumer, topic: str, partition: int, start: int, end: int) -> Iterator[tuple[int, Bar | None]]:
    """Like `_records`, decoded as bars (None where a record is not a bar)."""
    for offset, value in _records(consumer, topic, partition, start, end):
        yield offset, _decode(value)


def newest_event_ms(kafka: KafkaSettings, topic: str, tail: int = 16) -> int | None:
    """The largest event time among the last `tail` records of each partition.

    start_ts_ms of bins or bars, or watermark_ms of the replay's watermark records (in a live
    replay they can be all a quiet partition's tail holds). Raises ReadNotAuthorized at the
    first fetch the broker refuses (a principal with DESCRIBE but no READ on `topic`).
    """
    newest: int | None = None
    with open_consumer(kafka) as consumer:
        for p in partitions_of(consumer, topic):
            low, high = watermarks(consumer, topic, p)
            for _, value in _records(consumer, topic, p, max(low, high - tail), high):
                try:
                    record = orjson.loads(value or b"{}")
                    ts = int(record["start_ts_ms"] if "start_ts_ms" in record else record["watermark_ms"])
                except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
                    continue
                newest = ts if newest is None else max(newest, ts)
    return newest


def _probe(consumer: Consumer, topic: str, partition: int, offset: int, end: int) -> _Probe:
    for off, bar in _scan(consumer, topic, partition, offset, end):
        if bar is not None and bar.revision == 0:
            return _Probe(off, bar.start_ts_ms)
    return _Probe(end, None)


def first_offset_at(consumer: Consumer, topic: str, partition: int, low: int, high: int, ts_ms: int) -> int:
    """The first offset in [low, high] whose revision-0 bar has start_ts_ms >= ts_ms (high if none).

    `f(o)` = start of the first revision-0 bar at an offset >= o is non-decreasing in o
    (the aggregator's ordering contract), so a binary search over offsets finds it.
    """
    # The ends first: a backfill's range usually starts before a partition's first bar or ends
    # after its last, and then the answer costs one or two probes instead of a search.
    head = _probe(consumer, topic, partition, low, high)
    if head.start_ms is None:
        return high
    if head.start_ms >= ts_ms:
        return head.offset
    newest = last_revision0_start(consumer, topic, partition, head.offset, high)
    if newest is not None and newest < ts_ms:
        return high
    # Invariant: the answer is in [lo, hi) or is `best` (a revision-0 offset at/past ts_ms, or high).
    lo, hi, best = head.offset + 1, high, high
    while lo < hi:
        mid = (lo + hi) // 2
        probe = _probe(consumer, topic, partition, mid, hi)
        if probe.start_ms is None:
            hi = mid
        elif probe.start_ms >= ts_ms:
            best, hi = probe.offset, mid
        else:
            lo = probe.offset + 1
    return best


def read_window(kafka: KafkaSettings, start_ms: int, end_ms: int, horizon_ms: int = 0) -> WindowBars:
    """Every bar of `[start_ms, end_ms)` from ticks.agg.1s, with the offset range read per partition.

    Per partition the range runs from the first revision-0 bar at or past `start_ms` to
    the first at or past `end_ms + horizon_ms` (revisions arrive before that point).
    """
    bars: list[Bar] = []
    ranges: list[OffsetRange] = []
    truncated: list[int] = []
    skipped = 0
    topic = kafka.topic_agg
    with open_consumer(kafka) as consumer:
        for p in partitions_of(consumer, topic):
            low, high = watermarks(consumer, topic, p)
            first = first_offset_at(consumer, topic, p, low, high, start_ms)
            last = first_offset_at(consumer, topic, p, first, high, end_ms + horizon_ms)
            ranges.append(OffsetRange(p, first, last))
            if low > 0 and first == low:
                truncated.append(p)
            found, bad = _scan_bars(consumer, topic, p, first, last, start_ms, end_ms)
            bars += found
            skipped += bad
    return WindowBars(start_ms, end_ms, bars, ranges, skipped, truncated)


def read_ranges(kafka: KafkaSettings, ranges: list[OffsetRange], start_ms: int, end_ms: int) -> WindowBars:
    """Re-read the bars of `[start_ms, end_ms)` from exactly the given offset ranges (for checks)."""
    bars: list[Bar] = []
    skipped = 0
    with open_consumer(kafka) as consumer:
        for r in ranges:
            found, bad = _scan_bars(consumer, kafka.topic_agg, r.partition, r.start, r.end, start_ms, end_ms)
            bars += found
            skipped += bad
    return WindowBars(start_ms, end_ms, bars, list(ranges), skipped)


def last_revision0_start(consumer: Consumer, topic: str, partition: int, low: int, high: int) -> int | None:
    """start_ts_ms of the newest revision-0 bar of a partition (None if it has none)."""
    step = 64
    end = high
    while end > low:
        begin = max(low, end - step)
        newest: int | None = None
        for _, bar in _scan(consumer, topic, partition, begin, end):
            if bar is not None and bar.revision == 0:
                newest = bar.start_ts_ms if newest is None else max(newest, bar.start_ts_ms)
        if newest is not None:
            return newest
        end, step = begin, step * 4
    return None


def partition_heads(
    kafka: KafkaSettings, known: dict[int, tuple[int, int | None]] | None = None
) -> list[PartitionHead]:
    """Offsets and newest revision-0 bar time of every partition of ticks.agg.1s.

    `known` maps partition -> (high, last_start_ms) from an earlier look; unchanged
    partitions are not read again.
    """
    known = known or {}
    heads: list[PartitionHead] = []
    topic = kafka.topic_agg
    with open_consumer(kafka) as consumer:
        for p in partitions_of(consumer, topic):
            low, high = watermarks(consumer, topic, p)
            prev = known.get(p)
            if prev is not None and prev[0] == high:
                heads.append(PartitionHead(p, low, high, prev[1]))
                continue
            heads.append(PartitionHead(p, low, high, last_revision0_start(consumer, topic, p, low, high)))
    return heads


def first_revision0_start(kafka: KafkaSettings) -> int | None:
    """The earliest start_ts_ms among the first revision-0 bars of each partition (None if empty)."""
    earliest: int | None = None
    topic = kafka.topic_agg
    with open_consumer(kafka) as consumer:
        for p in partitions_of(consumer, topic):
            low, high = watermarks(consumer, topic, p)
            probe = _probe(consumer, topic, p, low, high)
            if probe.start_ms is not None:
                earliest = probe.start_ms if earliest is None else min(earliest, probe.start_ms)
    return earliest
