"""Data for the pipeline-health page: topics, consumer-group lag, DLQ, the latest fact partition.

Kafka and the configured warehouse (through streaming/kernel/warehouse) are read here;
the summaries are plain functions of what was read.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime

import msgspec
from confluent_kafka import Consumer, KafkaError, TopicPartition

from streaming.kernel.errors import WarehouseError, WarehouseLockedError
from streaming.kernel.records import DlqRecord, dlq_decoder
from streaming.kernel.settings import KafkaSettings
from streaming.kernel.topics import TopicInfo, group_lag, list_groups
from streaming.kernel.warehouse.schema import FACT_SPECS
from streaming.kernel.warehouse.targets import Warehouse

FACT_TABLES = tuple(spec.table.qualified for spec in FACT_SPECS)
PARTITION_S = 300
INTERNAL_GROUPS = ("tick-platform-inspector",)


@dataclass(frozen=True)
class TopicRow:
    """One topic as the health table shows it."""

    topic: str
    partitions: int
    end_offsets: str
    messages: int
    retention_ms: str


@dataclass(frozen=True)
class LagRow:
    """The lag of one consumer group on one topic."""

    group: str
    role: str
    topic: str
    total_lag: int | None
    per_partition: str


@dataclass(frozen=True)
class FactStatus:
    """The newest rows of one fact table, or why they could not be read."""

    table: str
    rows: int | None
    latest_start: datetime | None
    latest_partition: datetime | None
    last_load: datetime | None
    note: str


def topic_rows(infos: list[TopicInfo]) -> list[TopicRow]:
    """Partitions, end offsets and message counts per topic."""
    return [
        TopicRow(i.name, len(i.partitions), " ".join(str(p.high) for p in i.partitions), i.messages, i.retention_ms)
        for i in infos
    ]


def lag_row(group: str, role: str, topic: str, lag: dict[int, int | None]) -> LagRow:
    """Total and per-partition lag; None in total when the group has committed nothing there."""
    known = [v for v in lag.values() if v is not None]
    cells = " ".join("-" if v is None else str(v) for _, v in sorted(lag.items()))
    return LagRow(group, role, topic, sum(known) if known else None, cells)


def group_lags(kafka: KafkaSettings, agg_group: str, facts_group: str) -> list[LagRow]:
    """The aggregator on the bins topic, the fact loader and every other committed reader on the bars topic."""
    rows = [lag_row(agg_group, "aggregator", kafka.topic_raw, group_lag(kafka, agg_group, kafka.topic_raw))]
    rows.append(lag_row(facts_group, "fact loader", kafka.topic_agg, group_lag(kafka, facts_group, kafka.topic_agg)))
    for group in list_groups(kafka):
        if group in (agg_group, facts_group) or group in INTERNAL_GROUPS:
            continue
        for topic in (kafka.topic_raw, kafka.topic_agg):
            lag = group_lag(kafka, group, topic)
            if any(v is not None for v in lag.values()):
                rows.append(lag_row(group, "reader", topic, lag))
    return rows


def latest_dlq(kafka: KafkaSettings, limit: int = 20, timeout_s: float = 10.0) -> tuple[int, list[DlqRecord]]:
    """How many records the DLQ holds and the newest `limit` of them (newest first)."""
    consumer = Consumer({**kafka.client_base(), "group.id": f"tick-dashboard-dlq-{uuid.uuid4().hex[:8]}",
                         "enable.auto.commit": False, "isolation.level": "read_committed",
                         "enable.partition.eof": True})
    try:
        md = consumer.list_topics(kafka.topic_dlq, timeout=timeout_s)
        tmd = md.topics.get(kafka.topic_dlq)
        if tmd is None or tmd.error is not None:
            return 0, []
        total = 0
        starts: list[TopicPartition] = []
        for pid in sorted(tmd.partitions):
            low, high = consumer.get_watermark_offsets(TopicPartition(kafka.topic_dlq, pid), timeout=timeout_s)
            total += high - low
            if high > low:
                starts.append(TopicPartition(kafka.topic_dlq, pid, max(low, high - limit)))
        records: list[DlqRecord] = []
        if starts:
            consumer.assign(starts)
            pending = {tp.partition for tp in starts}
            while pending:
                batch = consumer.consume(500, timeout=timeout_s)
                if not batch:
                    break
                for msg in batch:
                    err = msg.error()
                    if err is not None:
                        if err.code() == KafkaError._PARTITION_EOF:
                            pending.discard(msg.partition())
                        continue
                    try:
                        records.append(dlq_decoder.decode(msg.value() or b""))
                    except msgspec.DecodeError:
                        continue
        return total, newest_first(records, limit)
    finally:
        consumer.close()


def newest_first(records: list[DlqRecord], limit: int) -> list[DlqRecord]:
    """The newest `limit` records by dlq_ts_ms."""
    return sorted(records, key=lambda r: r.dlq_ts_ms, reverse=True)[:limit]


def partition_start(ts: datetime, partition_s: int = PARTITION_S) -> datetime:
    """The start of the fact partition (5 minutes by default) holding `ts`; naive times are UTC."""
    aware = ts if ts.tzinfo else ts.replace(tzinfo=UTC)
    epoch = int(aware.timestamp())
    floored = datetime.fromtimestamp(epoch - epoch % partition_s, UTC)
    return floored.astimezone(ts.tzinfo) if ts.tzinfo else floored.replace(tzinfo=None)


def warehouse_status(warehouse: Warehouse) -> list[FactStatus]:
    """The newest rows of every registered fact table in the configured warehouse (DuckDB opened read-only).

    A missing file, a lock held by a writer or an unreachable account is a note, not an error.
    """
    tables = [spec.table for spec in FACT_SPECS]
    try:
        with warehouse.connect() as conn:
            found = []
            for table in tables:
                if not conn.table_exists(table):
                    found.append(FactStatus(table.qualified, None, None, None, None, "table not created yet"))
                    continue
                stats = conn.query(f"SELECT COUNT(*) AS N, MAX(START_TS) AS LATEST, MAX(LOAD_TS) AS LOADED "
                                   f"FROM {table.qualified}")
                rows, latest, load = int(stats["N"][0]), stats["LATEST"][0], stats["LOADED"][0]
                found.append(FactStatus(table.qualified, rows, latest, partition_start(latest) if latest else None,
                                        load, "ok" if rows else "empty"))
            return found
    except WarehouseLockedError:
        note = "the warehouse is locked by a writer (a materialization is running); try again shortly"
    except WarehouseError as exc:
        note = str(exc).splitlines()[0]
    return [FactStatus(t.qualified, None, None, None, None, note) for t in tables]
