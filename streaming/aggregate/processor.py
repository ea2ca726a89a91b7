"""The Kafka edge of the aggregator: consume ticks.raw, window, produce the bar topic (ticks.agg.1s), exactly once.

Consume-process-produce in Kafka transactions: the bars, the DLQ records and the
consumed offsets of one commit interval go in one transaction. Each committed
offset carries `{"rebuild_from": offset, "watermark": ms}` so that whoever owns the
partition next (a restart after kill -9, or another group member after a
rebalance) rebuilds the open windows silently and emits no committed bar again.
"""

from __future__ import annotations

import contextlib
import os
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import (
    OFFSET_BEGINNING,
    OFFSET_INVALID,
    Consumer,
    KafkaError,
    KafkaException,
    Message,
    Producer,
    TopicPartition,
)

from streaming.aggregate.checkpoints import decode_checkpoint, encode_checkpoint, window_config
from streaming.aggregate.counters import Counters
from streaming.aggregate.dead_letters import decode_bin, late_record, poison_record
from streaming.aggregate.kinds import BarWindows, windows_for
from streaming.aggregate.windows import LateBin
from streaming.kernel.errors import StageKafkaError
from streaming.kernel.records import Bar, DlqRecord, Watermark, decode_watermark, encode
from streaming.kernel.settings import Settings
from streaming.kernel.topics import committed_offsets
from streaming.kernel.wallclock import now_ms

BATCH = 2_000
IDLE_CHECK_S = 0.05
# A partition is aligned only after this long without input: during a backlog nothing is quiet,
# so a full-speed replay never pays for the end-offset queries.
ALIGN_QUIET_S = 0.05
DONE_CHECK_S = 1.0


def _retrying(call: Callable[[], None], attempts: int = 5) -> None:
    """Run a transactional call again while librdkafka calls its error retriable (documented as safe)."""
    for attempt in range(attempts):
        try:
            call()
            return
        except KafkaException as exc:
            if not exc.args[0].retriable() or attempt == attempts - 1:
                raise
            time.sleep(0.2)


def instance_suffix(settings: Settings) -> str:
    """AGG_INSTANCE_ID, or host-pid (then a crashed process's open transaction waits for its timeout)."""
    return settings.agg.instance_id or f"{socket.gethostname()}-{os.getpid()}"


@dataclass
class InputPartitionState:
    """One assigned input partition: its windows and where reading stands."""

    windows: BarWindows
    next_offset: int  # next offset to process (-1: nothing read or committed yet)
    rebuild_until: int  # offsets below this were processed before: rebuild only
    last_input: float = field(default_factory=time.monotonic)

    @property
    def rebuilding(self) -> bool:
        return self.next_offset < self.rebuild_until


# librdkafka memory of one aggregator: the producer queue and the consumer's prefetch, in KiB.
PRODUCER_QUEUE_KBYTES = 131_072
CONSUMER_PREFETCH_KBYTES = 65_536
SEND_WAIT_POLLS = 600  # 0.1 s each: a queue that cannot drain in a minute is a broker problem


class Aggregator:
    """One aggregator process (a member of AGG_GROUP_ID); `run` until stopped, idle or N bins."""

    def __init__(self, settings: Settings, stop: Callable[[], bool] = lambda: False,
                 max_bins: int | None = None, until_idle: bool = False,
                 progress: Callable[[Counters], None] | None = None,
                 log: Callable[[str], None] | None = None, counters: Counters | None = None) -> None:
        self.settings = settings
        self.kafka = settings.kafka
        self.config = window_config(settings)
        self.exactly_once = settings.agg.exactly_once
        self.stop = stop
        self.max_bins = max_bins
        self.until_idle = until_idle
        self.progress = progress
        self.log = log or (lambda _line: None)
        self.counters = counters if counters is not None else Counters()
        self.states: dict[int, InputPartitionState] = {}
        self.idle_s = settings.agg.idle_timeout_ms / 1000
        self.align = settings.agg.align_watermarks
        self.grace_ms = settings.agg_grace_ms
        self.window_ms = settings.agg.window_ms
        self.commit_s = settings.agg.commit_interval_ms / 1000
        self._in_txn = False
        self._closing = False
        self._epoch = 0  # bumped whenever partition state is reset (rebalance, rewind)
        self._dirty = False
        self._commit_now = False  # bars closed by a producer's watermark: commit at once (live latency)
        self._delivery_error: str | None = None
        suffix = instance_suffix(settings)
        base = self.kafka.client_base("agg")
        consumer_conf: dict[str, Any] = {
            **base,
            "group.id": settings.agg.group_id,
            "isolation.level": "read_committed",
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "auto.offset.reset": "earliest",
            "session.timeout.ms": 6_000,
            "heartbeat.interval.ms": 1_000,
            "fetch.wait.max.ms": 100,
            "queued.max.messages.kbytes": CONSUMER_PREFETCH_KBYTES,
        }
        if settings.agg.instance_id:
            # Static membership: a restarted process takes its partitions back without a rebalance.
            consumer_conf["group.instance.id"] = suffix
        producer_conf: dict[str, Any] = {
            **base,
            "enable.idempotence": True,
            "acks": "all",
            "linger.ms": 5,
            "compression.type": "lz4",
            "queue.buffering.max.messages": 1_000_000,
            # A bounded producer queue (librdkafka's default is 1 GB): a flood of DLQ records inside
            # an open transaction waits for deliveries (`_send`) instead of growing RSS (finding 10).
            "queue.buffering.max.kbytes": PRODUCER_QUEUE_KBYTES,
        }
        if self.exactly_once:
            producer_conf["transactional.id"] = f"{settings.agg.transactional_id_prefix}-{suffix}"
            producer_conf["transaction.timeout.ms"] = 10_000
        self.consumer = Consumer(consumer_conf)
        self.producer = Producer(producer_conf)

    # -- lifecycle ------------------------------------------------------------------------

    def run(self) -> Counters:
        """Consume until stopped (or idle / max bins); commits or aborts the open transaction on the way out."""
        try:
            if self.exactly_once:
                self.producer.init_transactions(30)
            self.consumer.subscribe([self.kafka.topic_raw], on_assign=self._on_assign,
                                    on_revoke=self._on_revoke, on_lost=self._on_lost)
            self._loop()
            self._commit()
        except KafkaException as exc:
            self._abort_quietly()
            raise StageKafkaError(f"aggregator stopped on a Kafka error: {exc}") from None
        except BaseException:
            self._abort_quietly()  # e.g. a second Ctrl+C: nothing half-done becomes visible
            raise
        finally:
            self._closing = True  # group callbacks fired by close() find nothing left to do
            # A fenced or fatal client raises its error again here; it was reported already.
            with contextlib.suppress(KafkaException):
                self.consumer.close()
            with contextlib.suppress(KafkaException):
                self.producer.flush(10)
        return self.counters

    def _loop(self) -> None:
        last_commit = last_idle = last_done = last_progress = time.monotonic()
        progress_s = self.settings.agg.progress_interval_s
        while not self.stop():
            epoch = self._epoch
            msgs = self.consumer.consume(num_messages=BATCH, timeout=0.05)
            # The first assignment of the process has no older generation to leave messages behind.
            if msgs and epoch != self._epoch and (epoch, self._epoch) != (0, 1):
                msgs = self._drop_stale_batch(msgs)
            if msgs:
                self._process(msgs)
            self.producer.poll(0)
            mono = time.monotonic()
            if mono - last_idle >= IDLE_CHECK_S:
                last_idle = mono
                if self.align:
                    self._align_watermarks(mono)
                self._flush_idle(mono)
                self._gauge_open_windows()  # also after flushes and rebalances, which no batch follows
            if self._dirty and (self._commit_now or mono - last_commit >= self.commit_s):
                self._commit()
                last_commit = time.monotonic()
            if msgs:
                self.counters.last_bin_at = mono
            if self.progress is not None and mono - last_progress >= progress_s:
                last_progress = mono
                self.progress(self.counters)
            if self.max_bins is not None and self.counters.bins_in >= self.max_bins:
                return
            if self.until_idle and mono - last_done >= DONE_CHECK_S:
                last_done = mono
                self._commit()  # also moves committed offsets past trailing transaction markers
                last_commit = time.monotonic()
                if self._group_done():
                    return

    # -- the hot path ---------------------------------------------------------------------

    def _process(self, msgs: list[Message]) -> None:
        clock = now_ms()
        mono = time.monotonic()
        states = self.states
        counters = self.counters
        if counters.first_bin_at is None:
            counters.first_bin_at = mono
        for m in msgs:
            if m.error() is not None:
                if m.error().code() == KafkaError._PARTITION_EOF:
                    continue
                raise KafkaException(m.error())
            p = m.partition()
            st = states.get(p)
            offset = m.offset()
            if st is None or offset < st.next_offset:
                continue  # not ours any more, or a re-delivery after a seek
            st.next_offset = offset + 1
            st.last_input = mono
            decoded = decode_bin(m.value())
            if offset < st.rebuild_until:
                if not isinstance(decoded, tuple):
                    st.windows.rebuild(decoded, offset)
                    counters.rebuilt += 1
                continue
            self._dirty = True
            if isinstance(decoded, tuple):
                watermark = decode_watermark(m.value())
                if watermark is not None:
                    self._on_watermark(p, st.windows, watermark, offset, clock)
                    continue
                if decoded[0] == "out_of_range":
                    counters.out_of_range += 1
                else:
                    counters.poison += 1
                position = {"topic": m.topic(), "partition": p, "offset": offset}
                self._produce_dlq(poison_record(decoded[0], decoded[1], m.value(), "kafka", position, clock))
                continue
            counters.bins_in += 1
            windows = st.windows
            windows.add(decoded, offset, clock)
            if windows.open_count > counters.open_windows_peak:
                counters.open_windows_peak = windows.open_count
            if windows.bars or windows.late:
                self._emit(p, windows, clock)
        self._gauge_open_windows()

    def _gauge_open_windows(self) -> None:
        """The open-windows gauge: (symbol, window) pairs open over all assigned partitions."""
        self.counters.open_windows = sum(st.windows.open_count for st in self.states.values())

    def _on_watermark(self, partition: int, windows: BarWindows, watermark: Watermark, offset: int,
                      clock: int) -> None:
        """The producer promised no bin starting before `watermark_ms` follows here: close what that passes.

        Deterministic like a bin (it is part of the partition's sequence), so a rebuild after a
        restart reaches the same state; during the rebuild it is skipped, the checkpoint's
        watermark already holds it.
        """
        self.counters.watermarks_in += 1
        closed = windows.advance_watermark(watermark.watermark_ms, clock, offset + 1)
        if watermark.final:
            # The end of the job's input: every open bar is complete, whatever its size.
            closed += windows.finish(clock, offset + 1)
        if closed:
            self.counters.watermark_closes += 1
            self._commit_now = True
            self._emit(partition, windows, clock)

    def _drop_stale_batch(self, msgs: list[Message]) -> list[Message]:
        """A rebalance or rewind ran inside consume(): drop the batch and re-read from each resume point.

        librdkafka's batch API hands back the messages it had dequeued before running the
        callback, fetched for the previous assignment and possibly past the offset the restored
        state resumes from; processing them would skip the bins in between (finding 0 of
        docs/reliability.md). Nothing of the batch was processed, so seeking each partition back
        to where its state resumes loses nothing.
        """
        for m in msgs:
            err = m.error()
            if err is not None and err.code() != KafkaError._PARTITION_EOF:
                raise KafkaException(err)  # e.g. a fatal fencing: dropping it would leave a dead consumer
        self.counters.stale_batches += 1
        self.log(f"dropped {len(msgs)} messages fetched before a rebalance/rewind; "
                 "re-reading from the restored offsets")
        for p, st in self.states.items():
            offset = st.next_offset if st.next_offset >= 0 else OFFSET_BEGINNING
            try:
                self.consumer.seek(TopicPartition(self.kafka.topic_raw, p, offset))
            except KafkaException as exc:
                # Not fetching yet (assignment still being applied): it starts at the assigned
                # offset, which is this resume point.
                if exc.args[0].code() != KafkaError._STATE:
                    raise
        return []

    def _emit(self, partition: int, windows: BarWindows, clock: int) -> None:
        bars, late = windows.drain()
        self._produce_bars(partition, bars, clock)
        for x in late:
            self._produce_late(partition, x, clock)
        max_event = windows.max_event_ts
        if max_event is not None:
            self.counters.watermark_lag_ms = max(0, max_event - windows.watermark)

    def _produce_bars(self, partition: int, bars: list[Bar], clock: int) -> None:
        if not bars:
            return
        topic = self.kafka.topic_agg
        for bar in bars:
            self._ensure_txn()
            self._send(topic, encode(bar), bar.symbol, partition)
        counters = self.counters
        counters.bars_out += len(bars)
        counters.revisions += sum(1 for b in bars if b.revision)
        counters.close_latency_ms = clock - bars[-1].end_ts_ms

    def _produce_late(self, partition: int, late: LateBin, clock: int) -> None:
        if late.reason == "duplicate_bin":
            self.counters.duplicates += 1
        elif late.reason == "out_of_range":
            self.counters.out_of_range += 1
        elif late.reason == "bad_window":
            self.counters.poison += 1  # not a bin of these windows at all
        else:
            self.counters.late += 1
        position = {"topic": self.kafka.topic_raw, "partition": partition, "offset": late.offset}
        self._produce_dlq(late_record(late, "kafka", position, clock))

    def _produce_dlq(self, record: DlqRecord) -> None:
        self._ensure_txn()
        self.counters.dlq += 1
        self._send(self.kafka.topic_dlq, encode(record), b"aggregate")

    def _send(self, topic: str, value: bytes, key: str | bytes, partition: int = -1) -> None:
        """Produce one record; while the bounded queue is full, serve deliveries until it has room."""
        for _ in range(SEND_WAIT_POLLS):
            try:
                self.producer.produce(topic, value, key, partition=partition, on_delivery=self._delivered)
                return
            except BufferError:
                self.producer.poll(0.1)
        raise StageKafkaError(f"the producer queue stayed full for {SEND_WAIT_POLLS // 10} s (broker unreachable?)")

    def _delivered(self, err: KafkaError | None, _msg: Message) -> None:
        if err is not None:
            self._delivery_error = str(err)

    def _ensure_txn(self) -> None:
        if self.exactly_once and not self._in_txn:
            self.producer.begin_transaction()
            self._in_txn = True

    # -- idle partitions ------------------------------------------------------------------

    def _flush_idle(self, mono: float) -> None:
        clock = now_ms()
        for p, st in self.states.items():
            windows = st.windows
            if not windows.open_count or st.rebuilding or mono - st.last_input < self.idle_s:
                continue
            if not self._caught_up(p, st):
                continue  # a backlog is not a quiet partition: more data is on its way
            windows.flush_idle(clock, st.next_offset)
            self.counters.idle_flushes += 1
            self._dirty = True
            self._emit(p, windows, clock)

    def _align_watermarks(self, mono: float) -> None:
        """AGG_ALIGN_WATERMARKS: a quiet partition with nothing left to read follows the newest event time.

        Sound when one producer writes ticks.raw in event-time order (one replay job): every later
        bin of the partition then starts after the newest bin already committed anywhere. The end
        offset is asked of the broker (not the fetch cache), so a committed bin still unread
        keeps the partition waiting.
        """
        newest = max((st.windows.max_event_ts for st in self.states.values()
                      if st.windows.max_event_ts is not None), default=None)
        if newest is None:
            return
        target = newest - self.grace_ms
        clock: int | None = None
        for p, st in self.states.items():
            windows = st.windows
            oldest_end = windows.oldest_open_end()
            if (oldest_end is None or st.rebuilding or target <= windows.watermark
                    or oldest_end > target or mono - st.last_input < ALIGN_QUIET_S):
                continue
            _low, high = self.consumer.get_watermark_offsets(TopicPartition(self.kafka.topic_raw, p), timeout=1.0)
            if st.next_offset < high and self._position(p) < high:
                continue  # committed input still to read: it may belong to the windows we would close
            clock = clock if clock is not None else now_ms()
            if windows.advance_watermark(target, clock, st.next_offset):
                self.counters.aligned_closes += 1
                self._dirty = True
                self._emit(p, windows, clock)

    def _caught_up(self, partition: int, st: InputPartitionState) -> bool:
        _low, end = self.consumer.get_watermark_offsets(
            TopicPartition(self.kafka.topic_raw, partition), cached=True)
        high = int(end)
        if high < 0:
            return False  # no fetch answered yet: unknown is not quiet
        return st.next_offset >= high or self._position(partition) >= high

    def _position(self, partition: int) -> int:
        [tp] = self.consumer.position([TopicPartition(self.kafka.topic_raw, partition)])
        return int(tp.offset)

    # -- commits --------------------------------------------------------------------------

    def _offsets(self, partitions: list[int] | None, use_position: bool) -> list[TopicPartition]:
        """Offsets (+checkpoints) to commit; `use_position` moves past transaction markers the consumer skipped.

        Only safe between batches: inside a rebalance callback the consumer may have taken
        messages we have not processed yet, so there the last processed offset is used.
        """
        chosen = list(self.states) if partitions is None else [p for p in partitions if p in self.states]
        positions: dict[int, int] = {}
        if use_position and chosen:
            tps = [TopicPartition(self.kafka.topic_raw, p) for p in chosen]
            positions = {tp.partition: tp.offset for tp in self.consumer.position(tps)}
        out: list[TopicPartition] = []
        for p in chosen:
            st = self.states[p]
            if st.rebuilding or st.next_offset < 0:
                continue
            offset = max(st.next_offset, positions.get(p, -1))
            cp = st.windows.checkpoint(offset)
            out.append(TopicPartition(self.kafka.topic_raw, p, offset, metadata=encode_checkpoint(cp)))
        return out

    def _commit(self, partitions: list[int] | None = None, use_position: bool = True) -> None:
        """Bars, DLQ records and offsets(+checkpoint) become visible together, or not at all."""
        offsets = self._offsets(partitions, use_position)
        if self.exactly_once:
            if not offsets and not self._in_txn:
                return
            self._ensure_txn()
            try:
                if offsets:
                    group = self.consumer.consumer_group_metadata()
                    _retrying(lambda: self.producer.send_offsets_to_transaction(offsets, group, 30))
                _retrying(lambda: self.producer.commit_transaction(30))
            except KafkaException as exc:
                self._in_txn = False
                if exc.args[0].txn_requires_abort():
                    self.log(f"transaction aborted ({exc.args[0].str()}): rebuilding from the last commit")
                    self.producer.abort_transaction(30)
                    self.counters.aborts += 1
                    self._rewind()
                    return
                raise
            self._in_txn = False
        else:
            remaining = self.producer.flush(30)
            if remaining or self._delivery_error:
                raise StageKafkaError(f"delivery failed: {self._delivery_error or f'{remaining} undelivered'}")
            if offsets:
                self.consumer.commit(offsets=offsets, asynchronous=False)
        self._dirty = False
        self._commit_now = False
        self.counters.commits += 1

    def _abort_quietly(self) -> None:
        if self.exactly_once and self._in_txn:
            with contextlib.suppress(KafkaException):
                self.producer.abort_transaction(10)
            self._in_txn = False

    def _rewind(self) -> None:
        """After an aborted transaction: forget the state and rebuild every partition from its commit."""
        self._epoch += 1
        partitions = [TopicPartition(self.kafka.topic_raw, p) for p in self.states]
        self.states.clear()
        for tp in self._restore(partitions):
            self.consumer.seek(tp)

    # -- rebalances -----------------------------------------------------------------------

    def _restore(self, partitions: list[TopicPartition]) -> list[TopicPartition]:
        """Fresh state for each partition from its committed offset and checkpoint; returns where to read."""
        committed = committed_offsets(self.consumer, partitions, wait_s=60) if partitions else []
        starts: list[TopicPartition] = []
        for tp in committed:
            if tp.error is not None:
                raise KafkaException(tp.error)
            if tp.offset < 0:  # nothing committed yet: from the beginning, nothing to rebuild
                self.states[tp.partition] = InputPartitionState(windows_for(self.config), -1, -1)
                starts.append(TopicPartition(tp.topic, tp.partition, OFFSET_INVALID))
                continue
            cp = decode_checkpoint(tp.metadata, tp.offset)
            windows = windows_for(self.config, cp.watermark, cp.closes)
            self.states[tp.partition] = InputPartitionState(windows, cp.rebuild_from, tp.offset)
            starts.append(TopicPartition(tp.topic, tp.partition, cp.rebuild_from))
        return starts

    def _on_assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        if self._closing:
            return
        self._epoch += 1
        starts = self._restore(partitions)
        self.counters.assignments += 1
        consumer.assign(starts)
        rebuild = {p: st.rebuild_until - st.next_offset for p, st in self.states.items() if st.rebuilding}
        self.log(f"assigned partitions {sorted(self.states)} (bins to rebuild per partition: {rebuild})")

    def _on_revoke(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        if self._closing:
            return
        self._epoch += 1
        revoked = [tp.partition for tp in partitions]
        self.log(f"revoked partitions {sorted(revoked)}")
        # Everything of this generation goes out with its offsets before someone else owns them.
        self._commit(use_position=False)
        for p in revoked:
            self.states.pop(p, None)

    def _on_lost(self, _consumer: Consumer, partitions: list[TopicPartition]) -> None:
        if self._closing:
            return
        self._epoch += 1
        self.log(f"lost partitions {sorted(tp.partition for tp in partitions)}: aborting the transaction")
        self._abort_quietly()
        # The aborted transaction held output of every partition: rebuild all of them.
        for tp in partitions:
            self.states.pop(tp.partition, None)
        if self.states:
            self._rewind()

    # -- until-idle -----------------------------------------------------------------------

    def _group_done(self) -> bool:
        """Whether the group is done: input exists and every partition is committed to its end, no window open."""
        if any(st.windows.open_count or st.rebuilding for st in self.states.values()):
            return False
        md = self.consumer.list_topics(self.kafka.topic_raw, timeout=10)
        topic = md.topics.get(self.kafka.topic_raw)
        if topic is None or topic.error is not None:
            return False
        tps = [TopicPartition(self.kafka.topic_raw, p) for p in topic.partitions]
        seen_input = False
        for tp in committed_offsets(self.consumer, tps, wait_s=60):
            _low, high = self.consumer.get_watermark_offsets(tp, timeout=10, cached=False)
            if high == 0:
                continue
            seen_input = True
            if tp.offset < high:
                return False
            cp = decode_checkpoint(tp.metadata, tp.offset)
            if cp.rebuild_from < tp.offset:
                return False
        return seen_input  # an empty topic is not done: its input has not started
