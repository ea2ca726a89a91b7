"""Helpers of the aggregator tests: bins made directly, an independent reference, Kafka read/write.

The reference (`reference_bars`) is a straightforward group-by written apart from
streaming.aggregate.windows, so the tests compare two independent computations.
"""

from __future__ import annotations

import os
import random
import re
import subprocess
import sys
import time
import zlib
from collections import defaultdict
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition

from streaming.aggregate.offline import bars_of_bins
from streaming.aggregate.processor import window_config
from streaming.kernel.bar_spec import time_bars
from streaming.kernel.records import Bar, Bin, DlqRecord, bar_decoder, dlq_decoder, encode, make_bin_id
from streaming.kernel.settings import PROJECT_ROOT, KafkaSettings, Settings, load_settings

DATA_FIELDS = ("bar_id", "symbol", "spec", "start_ts_ms", "end_ts_ms", "open", "high", "low", "close", "volume",
               "notional", "vwap", "trade_count", "bin_count", "max_lateness_ms", "api_send_ts_ms",
               "source_event_ts_ms", "revision", "source")


def make_bin(symbol: str, start: int, prices: Sequence[float], sizes: Sequence[int], *,
             bin_ms: int = 10, lateness: int = 0, api_send: int | None = None) -> Bin:
    """A bin from the trades (price, size) it holds, in trade order."""
    return Bin(
        bin_id=make_bin_id(symbol, start), symbol=symbol, start_ts_ms=start, end_ts_ms=start + bin_ms,
        window_ms=bin_ms, open=prices[0], high=max(prices), low=min(prices), close=prices[-1],
        volume=sum(sizes), notional=sum(p * s for p, s in zip(prices, sizes, strict=True)),
        trade_count=len(prices), max_lateness_ms=lateness, api_send_ts_ms=api_send,
        source_event_ts_ms=start, ingest_ts_ms=1_700_000_000_000,
    )


def synthetic_bins(symbols: int, ticks: int, seed: int, late_every: int = 0,
                   t0: int = 1_266_417_001_000) -> list[Bin]:
    """Bins of `ticks` trades over `symbols` symbols in time order; every `late_every`-th bin is 3 s old."""
    rng = random.Random(seed)
    names = [f"S{i:03d}" for i in range(symbols)]
    price = {s: 20.0 + i for i, s in enumerate(names)}
    out: list[Bin] = []
    t = t0
    made = 0
    while made < ticks:
        t += rng.choice((10, 10, 20, 30, 50, 120))
        for s in rng.sample(names, k=max(1, symbols // 3)):
            n = rng.randint(1, 4)
            prices = []
            for _ in range(n):
                price[s] = round(max(1.0, price[s] + rng.choice((-0.01, 0.0, 0.01, 0.02, -0.02))), 2)
                prices.append(price[s])
            sizes = [rng.choice((100, 200, 300, 500, 1000)) for _ in range(n)]
            out.append(make_bin(s, t, prices, sizes, api_send=t + rng.randint(0, 5)))
            made += n
            if late_every and len(out) % late_every == 0:
                old = t - 3_000 - (t % 10)
                out.append(make_bin(s, old, [price[s]], [7]))
                made += 1
    return out


def reference_bars(bins: Iterable[Bin], window_ms: int, grace_ms: int) -> tuple[dict[str, dict[str, Any]], list[int]]:
    """bar_id -> data fields, and the input indexes not counted: the obvious group-by with a running watermark.

    Not counted: late bins, and second copies of a bin_id already counted (duplicate_bin).
    """
    watermark = None
    groups: dict[tuple[str, int], list[tuple[int, Bin]]] = {}
    late: list[int] = []
    counted: set[str] = set()
    for i, b in enumerate(bins):
        candidate = b.start_ts_ms - grace_ms
        watermark = candidate if watermark is None else max(watermark, candidate)
        start = (b.start_ts_ms // window_ms) * window_ms
        if start + window_ms <= watermark or b.bin_id in counted:
            late.append(i)
            continue
        counted.add(b.bin_id)
        groups.setdefault((b.symbol, start), []).append((i, b))
    bars: dict[str, dict[str, Any]] = {}
    for (symbol, start), items in groups.items():
        first = min(items, key=lambda t: (t[1].start_ts_ms, t[0]))[1]
        last = max(items, key=lambda t: (t[1].start_ts_ms, t[0]))[1]
        volume = sum(b.volume for _, b in items)
        notional = 0.0
        for _, b in items:
            notional += b.notional
        sends = [b.api_send_ts_ms for _, b in items if b.api_send_ts_ms is not None]
        bar_id = f"{symbol}-{start:013d}-{time_bars(window_ms).text}"
        bars[bar_id] = {
            "bar_id": bar_id, "symbol": symbol, "spec": time_bars(window_ms).text, "start_ts_ms": start,
            "end_ts_ms": start + window_ms,
            "open": first.open, "high": max(b.high for _, b in items), "low": min(b.low for _, b in items),
            "close": last.close, "volume": volume, "notional": notional,
            "vwap": min(max(notional / volume, min(b.low for _, b in items)), max(b.high for _, b in items))
            if volume else last.close,
            "trade_count": sum(b.trade_count for _, b in items), "bin_count": len(items),
            "max_lateness_ms": max(b.max_lateness_ms for _, b in items),
            "api_send_ts_ms": min(sends) if sends else None, "source_event_ts_ms": first.source_event_ts_ms,
            "revision": 0, "source": "aggregator",
        }
    return bars, late


def data_fields(bar: Bar) -> dict[str, Any]:
    """A bar without its emission time (the only field that differs between runs)."""
    return {name: getattr(bar, name) for name in DATA_FIELDS}


def partition_of(symbol: str, partitions: int) -> int:
    """Deterministic partition of a symbol (the tests pin it so the reference can split by partition)."""
    return zlib.crc32(symbol.encode()) % partitions


def produce_bins(kafka: KafkaSettings, bins: Iterable[Bin], extra: Iterable[tuple[int, bytes]] = ()) -> int:
    """Write bins (key = symbol, pinned partition) and raw poison values to ticks.raw; returns messages sent."""
    producer = Producer({**kafka.client_base(), "enable.idempotence": True, "acks": "all", "linger.ms": 20,
                         "queue.buffering.max.messages": 2_000_000})
    sent = 0
    for b in bins:
        producer.produce(kafka.topic_raw, encode(b), b.symbol, partition=partition_of(b.symbol, kafka.partitions))
        sent += 1
        if sent % 10_000 == 0:
            producer.poll(0)
    for partition, value in extra:
        producer.produce(kafka.topic_raw, value, b"poison", partition=partition)
        sent += 1
    assert producer.flush(60) == 0
    return sent


def high_watermarks(kafka: KafkaSettings, topic: str) -> dict[int, int]:
    """The true end of each partition (read_uncommitted: a read_committed query stops at an open transaction)."""
    probe = Consumer({**kafka.client_base(), "group.id": "hw-probe", "isolation.level": "read_uncommitted"})
    try:
        md = probe.list_topics(topic, timeout=10).topics[topic]
        return {p: _high(probe, TopicPartition(topic, p)) for p in md.partitions}
    finally:
        probe.close()


_NOT_SERVED_YET = {
    KafkaError.NOT_LEADER_FOR_PARTITION, KafkaError.LEADER_NOT_AVAILABLE, KafkaError.UNKNOWN_TOPIC_OR_PART,
}


def _high(probe: Consumer, tp: TopicPartition) -> int:
    # A topic created a moment ago has a leader in the metadata before that broker serves the
    # partition (NOT_LEADER_FOR_PARTITION): a retriable error, so ask again for a while.
    deadline = time.monotonic() + 30
    while True:
        try:
            return int(probe.get_watermark_offsets(tp, timeout=10)[1])
        except KafkaException as exc:
            if exc.args[0].code() not in _NOT_SERVED_YET or time.monotonic() > deadline:
                raise
            time.sleep(0.2)


def read_topic(kafka: KafkaSettings, topic: str, timeout_s: float = 90) -> list[tuple[int, int, bytes]]:
    """Every committed message of `topic` (read_committed) as (partition, offset, value), to the true end.

    A transaction left open by a killed process holds read_committed readers back until the broker
    aborts it (transaction timeout), so this waits for that instead of stopping at the open transaction.
    """
    consumer = Consumer({**kafka.client_base(), "group.id": f"reader-{time.time_ns()}",
                         "isolation.level": "read_committed", "enable.auto.commit": False,
                         "auto.offset.reset": "earliest"})
    try:
        ends = high_watermarks(kafka, topic)
        consumer.assign([TopicPartition(topic, p, 0) for p in ends])
        pending = {p for p, high in ends.items() if high > 0}
        out: list[tuple[int, int, bytes]] = []
        deadline = time.monotonic() + timeout_s
        while pending and time.monotonic() < deadline:
            for m in consumer.consume(num_messages=5_000, timeout=0.5):
                if m.error() is not None:
                    continue
                out.append((m.partition(), m.offset(), m.value()))
            for p in list(pending):
                [pos] = consumer.position([TopicPartition(topic, p)])
                if pos.offset >= ends[p]:
                    pending.discard(p)
        assert not pending, f"could not read {topic} to its end: partitions {sorted(pending)}"
        return out
    finally:
        consumer.close()


def read_bars(kafka: KafkaSettings) -> list[tuple[int, int, Bar]]:
    """Committed bars of ticks.agg.1s as (partition, offset, bar)."""
    return [(p, o, bar_decoder.decode(v)) for p, o, v in read_topic(kafka, kafka.topic_agg)]


def read_dlq(kafka: KafkaSettings) -> list[DlqRecord]:
    """Committed records of ticks.dlq."""
    return [dlq_decoder.decode(v) for _p, _o, v in read_topic(kafka, kafka.topic_dlq)]


def aggregator_env(kafka: KafkaSettings, group: str, **agg: str) -> dict[str, str]:
    """Environment for a `python -m streaming aggregate` subprocess on the test's topics."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KAFKA_", "AGG_", "REPLAY_"))}
    env.update({
        "KAFKA_BROKERS": kafka.brokers, "KAFKA_TOPIC_RAW": kafka.topic_raw, "KAFKA_TOPIC_AGG": kafka.topic_agg,
        "KAFKA_TOPIC_DLQ": kafka.topic_dlq, "AGG_GROUP_ID": group, "AGG_PROGRESS_INTERVAL_S": "5",
    })
    env.update({f"AGG_{k.upper()}": v for k, v in agg.items()})
    return env


def start_aggregator(env: dict[str, str], *args: str, log: Path | None = None) -> subprocess.Popen[bytes]:
    """Start `python -m streaming aggregate` in its own process (stdout/stderr to `log`)."""
    sink = log.open("ab") if log is not None else subprocess.DEVNULL
    return subprocess.Popen([sys.executable, "-m", "streaming", "aggregate", *args], cwd=PROJECT_ROOT, env=env,
                            stdout=sink, stderr=subprocess.STDOUT)


_OWNERSHIP = re.compile(r"(assigned|revoked) partitions \[([0-9, ]*)\]")


def owned(log: Path) -> set[int]:
    """The partitions an aggregator owns by its log: its last assignment, nothing after a revoke."""
    events = _OWNERSHIP.findall(log.read_text(errors="replace") if log.exists() else "")
    if not events or events[-1][0] == "revoked":
        return set()
    return {int(x) for x in events[-1][1].split(",") if x.strip()}


def settings_for(kafka: KafkaSettings, **agg: object) -> Settings:
    base = load_settings()
    return Settings(**{**base.__dict__, "kafka": kafka,
                       "agg": base.agg.model_copy(update={"group_id": f"agg-{kafka.topic_raw}", **agg})})


def per_partition_reference(bins: list[Bin], settings: Settings) -> tuple[dict[str, dict[str, Any]], int]:
    """The clean run: the offline window code over each partition's bin sequence."""
    by_partition: dict[int, list[Bin]] = defaultdict(list)
    for b in bins:
        by_partition[partition_of(b.symbol, settings.kafka.partitions)].append(b)
    bars: dict[str, dict[str, Any]] = {}
    late = 0
    for seq in by_partition.values():
        out, dlq = bars_of_bins(seq, window_config(settings))
        for bar in out:
            assert bar.bar_id not in bars
            bars[bar.bar_id] = data_fields(bar)
        late += len(dlq)
    return bars, late


def assert_partition_order(kafka: KafkaSettings, rows: list[tuple[int, int, Bar]]) -> None:
    """Each bar sits on its symbol's partition, and revision-0 bars come in start_ts_ms order per partition."""
    last: dict[int, int] = {}
    for partition, _offset, bar in sorted(rows, key=lambda r: (r[0], r[1])):
        assert partition == partition_of(bar.symbol, kafka.partitions)
        assert bar.start_ts_ms >= last.get(partition, 0)
        last[partition] = bar.start_ts_ms
