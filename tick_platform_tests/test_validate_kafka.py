"""`validate --kafka` against the real broker: read_committed, up to the end offsets, faults caught."""

from __future__ import annotations

import json
import math
import uuid
from pathlib import Path

import msgspec
import pytest
from confluent_kafka import Producer
from typer.testing import CliRunner

from streaming.cli import app
from streaming.kernel.records import Bar, Bin, encode
from streaming.kernel.settings import KafkaSettings
from streaming.validate.kafka_reader import read_topic
from streaming.validate.reference import reference_bars, reference_bins
from streaming.validate.run import validate_kafka
from streaming.validate.ticks import read_kibot

pytestmark = pytest.mark.kafka


def _produce(kafka: KafkaSettings, topic: str, records: list[Bin] | list[Bar], commit: bool = True) -> None:
    producer = Producer({**kafka.client_base(), "transactional.id": f"test-{uuid.uuid4().hex[:8]}",
                         "enable.idempotence": True, "acks": "all"})
    producer.init_transactions(30)
    producer.begin_transaction()
    for record in records:
        producer.produce(topic, key=record.symbol.encode(), value=encode(record))
    producer.flush(30)
    if commit:
        producer.commit_transaction(30)
    else:
        producer.abort_transaction(30)


def test_kafka_validation_reads_committed_data_only_and_catches_a_duplicate(
    kafka: KafkaSettings, sample_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bins = reference_bins(read_kibot(sample_path).ticks, 10, True, 1_790_000_000_000)
    bars = reference_bars(bins, 1000, 1_790_000_000_025)
    _produce(kafka, kafka.topic_raw, bins)
    _produce(kafka, kafka.topic_agg, bars)
    # An aborted transaction's bar must be invisible to a read_committed reader.
    ghost = msgspec.structs.replace(bars[0], bar_id="WDC-0000000000000", start_ts_ms=0, end_ts_ms=1000)
    _produce(kafka, kafka.topic_agg, [ghost], commit=False)

    contents = read_topic(kafka, kafka.topic_agg, timeout_s=60)
    assert contents.messages == len(bars) == 5049
    assert len(contents.timestamps) == contents.messages

    report = validate_kafka(kafka, [sample_path], timeout_s=60)
    assert report.ok, report.to_dict()
    assert report.totals["bars"] == 5049
    assert report.totals["bins"] == len(bins)
    stats = report.latency_of("bin_to_bar")
    assert stats is not None and (stats.p50, stats.max) == (25, 25)
    # Broker timestamp - ingest_ts_ms of each committed bar, from the topic as read above (nearest rank).
    hop = sorted(ts - bar.ingest_ts_ms for ts, bar in zip(contents.timestamps, bars, strict=True))
    assert len({bar.ingest_ts_ms for bar in bars}) == 1  # one stamp for all: the order of the pairs is moot
    to_kafka = report.latency_of("bar_to_kafka")
    assert to_kafka is not None
    assert (to_kafka.count, to_kafka.p50, to_kafka.max) == (5049, hop[math.ceil(len(hop) / 2) - 1], hop[-1])
    assert report.totals["dlq"] == 0
    # ingest_ts_ms of these bars is months before their broker timestamps, and event times are of 2010:
    # only the aggregator hop is a pipeline latency.
    assert [s.name for s in report.pipeline_latencies()] == ["bin_to_bar"]

    _produce(kafka, kafka.topic_agg, [bars[42]])
    for name, value in (("KAFKA_TOPIC_RAW", kafka.topic_raw), ("KAFKA_TOPIC_AGG", kafka.topic_agg),
                        ("KAFKA_TOPIC_DLQ", kafka.topic_dlq)):
        monkeypatch.setenv(name, value)
    result = CliRunner().invoke(app, ["validate", "--kafka", "--brokers", kafka.brokers, "--ticks", str(sample_path),
                                      "--json", str(tmp_path / "r.json")])
    assert result.exit_code == 1, result.output
    report_json = json.loads((tmp_path / "r.json").read_text())
    by_name = {c["name"]: c for c in report_json["comparisons"]}
    assert by_name["bars <- bins"]["duplicate_count"] == 1
    assert by_name["bars <- ticks"]["duplicate_count"] == 1
    assert by_name["bins <- ticks"]["ok"] is True


def test_unreachable_broker_is_one_line_error(monkeypatch: pytest.MonkeyPatch) -> None:
    result = CliRunner().invoke(app, ["validate", "--kafka", "--brokers", "127.0.0.1:1", "--timeout", "5"])
    assert result.exit_code == 1
    assert "cannot reach Kafka" in result.output
