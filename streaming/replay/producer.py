"""The replay producer: bins into ticks.raw (key = symbol), bad input into ticks.dlq.

Idempotent and acks=all; with REPLAY_EXACTLY_ONCE each commit interval is one Kafka transaction
that also carries a checkpoint record, so a restart (after kill -9 too) resumes without
publishing any bin twice or losing one (docs/processing_strategy.md).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable

from confluent_kafka import KafkaError, KafkaException, Producer
from rich.console import Console

from streaming.cli_support import StopFlag
from streaming.kernel.errors import BrokerError, StageKafkaError
from streaming.kernel.records import WATERMARK_KEY, Watermark, encode
from streaming.kernel.settings import KafkaSettings, Settings
from streaming.replay.checkpoint import CHECKPOINT_TOPIC, ReplayCheckpoint, derive_job_id
from streaming.replay.driver import drive
from streaming.replay.encoding import bin_json_lines
from streaming.replay.engine import ReplayEngine, Step
from streaming.replay.kafka_io import ensure_checkpoint_topic, producer_config, read_checkpoint
from streaming.replay.summary import ReplaySummary
from streaming.restarts import RestartPolicy, run_with_restarts

DLQ_KEY = b"replay"


class KafkaSink:
    """Produces steps; in transactional mode commits them with the checkpoint."""

    def __init__(self, kafka: KafkaSettings, producer: Producer, transactional: bool, checkpoint_topic: str,
                 job_id: str = "") -> None:
        self.kafka = kafka
        self.producer = producer
        self.transactional = transactional
        self.checkpoint_topic = checkpoint_topic
        self.job_id = job_id
        self._in_txn = False
        self._errors: list[str] = []
        self._partitions: list[int] | None = None

    def _on_delivery(self, err: KafkaError | None, _msg: object) -> None:
        if err is not None:
            self._errors.append(str(err))

    def _produce(self, topic: str, value: bytes | str, key: bytes | str) -> None:
        # Transactions report a failed delivery at commit; without them a callback has to.
        callback = None if self.transactional else self._on_delivery
        while True:
            try:
                self.producer.produce(topic, value, key, on_delivery=callback)
                return
            except BufferError:
                # The local queue is full: let librdkafka send, then retry.
                self.producer.poll(0.05)

    def _begin(self) -> None:
        if self.transactional and not self._in_txn:
            self.producer.begin_transaction()
            self._in_txn = True

    def write(self, step: Step) -> None:
        """Produce the step's bins (key = symbol), DLQ records (key = stage) and watermark records."""
        if step.bins.height == 0 and not step.dlq and step.watermark_ms is None:
            return
        try:
            self._write(step)
        except KafkaException as exc:  # a fatal producer (fenced, broken transaction) refuses every call
            raise StageKafkaError(f"replay producer failed ({exc.args[0]})") from None

    def _write(self, step: Step) -> None:
        self._begin()
        topic = self.kafka.topic_raw
        lines = bin_json_lines(step.bins, int(time.time() * 1000))
        symbols = step.bins["symbol"].to_list()
        produce = self.producer.produce
        callback = None if self.transactional else self._on_delivery
        # The hot loop: one C call per bin, the slow path only when the local queue is full.
        for symbol, value in zip(symbols, lines, strict=True):
            try:
                produce(topic, value, symbol, on_delivery=callback)
            except BufferError:
                self._produce(topic, value, symbol)
        for record in step.dlq:
            self._produce(self.kafka.topic_dlq, encode(record), DLQ_KEY)
        if step.watermark_ms is not None:
            self._write_watermark(step.watermark_ms, step.final)
        self.producer.poll(0)
        self._raise_delivery_errors()

    def _write_watermark(self, watermark_ms: int, final: bool = False) -> None:
        """One watermark record per partition, after the bins it vouches for (same transaction); `final` at the end."""
        topic = self.kafka.topic_raw
        if self._partitions is None:
            meta = self.producer.list_topics(topic, timeout=10).topics.get(topic)
            if meta is None or meta.error is not None or not meta.partitions:
                raise StageKafkaError(f"cannot write watermarks: topic {topic} has no partitions")
            self._partitions = sorted(meta.partitions)
        value = encode(Watermark(watermark_ms=watermark_ms, job_id=self.job_id, final=final))
        callback = None if self.transactional else self._on_delivery
        for partition in self._partitions:
            self.producer.produce(topic, value, WATERMARK_KEY, partition=partition, on_delivery=callback)

    def commit(self, checkpoint: ReplayCheckpoint) -> None:
        """Transactional: the checkpoint joins the open transaction, which is committed. Else: flush."""
        if not self.transactional:
            self.producer.flush(60)
            self._raise_delivery_errors()
            return
        try:
            self._begin()
            self._produce(self.checkpoint_topic, encode(checkpoint), checkpoint.job_id.encode())
            self.producer.commit_transaction(60)
        except KafkaException as exc:
            error = exc.args[0]
            if error.txn_requires_abort():
                with contextlib.suppress(KafkaException):
                    self.producer.abort_transaction(30)
            self._in_txn = False
            raise StageKafkaError(f"commit of a replay transaction failed ({error})") from None
        self._in_txn = False

    def close(self) -> None:
        """Abort a transaction left open by an error; deliver what is queued."""
        if self._in_txn:
            with contextlib.suppress(KafkaException):
                self.producer.abort_transaction(30)
            self._in_txn = False
        # A fatal producer raises its error again here; the caller has it already.
        with contextlib.suppress(KafkaException):
            self.producer.flush(60)

    def _raise_delivery_errors(self) -> None:
        if self._errors:
            raise BrokerError(f"Kafka delivery failed: {self._errors[0]}")


def run_replay(
    settings: Settings,
    sources: list[str],
    stop: StopFlag | None = None,
    *,
    job_id: str | None = None,
    columns: str | None = None,
    console: Console | None = None,
    checkpoint_topic: str = CHECKPOINT_TOPIC,
    log: Callable[[str], None] | None = None,
    new_run: bool = False,
) -> ReplaySummary:
    """Replay `sources` into Kafka; resumes an unfinished run of the same job (exactly-once mode).

    A job whose last checkpoint says it is complete is not published again: the summary says so
    (`already_complete`) and nothing is produced, unless `new_run` asks for a new run from the start.
    An unfinished run resumes with or without `new_run`.

    A failed transaction (fenced producer, broker gone past the transaction timeout) resumes
    in-process from the last checkpoint, up to REPLAY_MAX_RESTARTS times; without checkpoints
    (at-least-once, or an API source) it ends the run.
    """
    replay, kafka = settings.replay, settings.kafka
    job = job_id or derive_job_id(sources, replay, kafka.topic_raw, columns)

    def run_once(restarts: int) -> ReplaySummary:
        return _run_once(settings, sources, stop, job, columns, console, checkpoint_topic, restarts, new_run)

    if not replay.exactly_once or any("://" in s for s in sources):
        return run_once(0)

    def wait(seconds: float) -> bool:
        if stop is not None:
            return stop.wait(seconds)
        time.sleep(seconds)
        return False

    say = log or (console.print if console is not None else (lambda _line: None))
    return run_with_restarts(run_once, RestartPolicy(replay.max_restarts), what="replay", log=say, wait=wait)


def _run_once(settings: Settings, sources: list[str], stop: StopFlag | None, job: str, columns: str | None,
              console: Console | None, checkpoint_topic: str, restarts: int, new_run: bool) -> ReplaySummary:
    replay, kafka = settings.replay, settings.kafka
    resume: ReplayCheckpoint | None = None
    if replay.exactly_once:
        ensure_checkpoint_topic(kafka, checkpoint_topic)
        producer = Producer(producer_config(kafka, replay, f"{replay.transactional_id}-{job}"))
        try:
            # Fences a previous incarnation and aborts its open transaction before we read the checkpoint.
            producer.init_transactions(60)
        except KafkaException as exc:
            error = StageKafkaError if restarts else BrokerError  # at start-up: fail fast and say why
            raise error(f"cannot start a transactional producer on {kafka.brokers}: {exc}") from None
        last = read_checkpoint(kafka, checkpoint_topic, job)
        if last is not None and last.done and not new_run:
            # The same command again after it finished would publish every bin a second time.
            producer.flush(10)
            return ReplaySummary.of_complete_job(last)
        if last is not None and last.done and console is not None:
            console.print(f"new run of job {job}: its last run was complete; every bin is published again",
                          highlight=False)
        if last is not None and not last.done and not any("://" in s for s in sources):
            resume = last
            if console is not None:
                console.print(
                    f"resuming job {job}: {last.ticks:,} ticks and {last.bins:,} bins were committed before",
                    highlight=False,
                )
    else:
        producer = Producer(producer_config(kafka, replay, None))
    engine = ReplayEngine(sources, replay, job, columns=columns, stop=stop, resume=resume)
    sink = KafkaSink(kafka, producer, replay.exactly_once, checkpoint_topic, job)
    return drive(engine, sink, replay.commit_interval_ms, replay.progress_interval_s, console)
