"""Helpers of the dashboard tests (no tests here): fill the bar topic through the real pipeline."""

from __future__ import annotations

import uuid
from pathlib import Path

from streaming.aggregate.processor import Aggregator
from streaming.kernel.records import Bar
from streaming.kernel.settings import KafkaSettings, Settings, load_settings
from streaming.replay.producer import run_replay
from streaming.validate.kafka_reader import read_topic
from streaming.validate.records_io import bars_from_values


def pipeline_settings(kafka: KafkaSettings, agg_group: str | None = None) -> Settings:
    """Settings of a replay + aggregator run on this test's topics, with ids unique to the run."""
    run = uuid.uuid4().hex[:8]
    return load_settings(
        None,
        kafka={"brokers": kafka.brokers, "topic_raw": kafka.topic_raw, "topic_agg": kafka.topic_agg,
               "topic_dlq": kafka.topic_dlq},
        replay={"transactional_id": f"test-replay-{run}", "speed": 0},
        agg={"group_id": agg_group or f"test-agg-{run}", "transactional_id_prefix": f"test-agg-{run}",
             "idle_timeout_ms": 500},
    )


def fill_with_real_pipeline(kafka: KafkaSettings, sample: Path, agg_group: str | None = None) -> list[Bar]:
    """Replay the sample at full speed and aggregate it; returns the bars as read back from the topic."""
    settings = pipeline_settings(kafka, agg_group)
    run_replay(settings, [str(sample)])
    Aggregator(settings, until_idle=True).run()
    return read_bars(kafka)


def read_bars(kafka: KafkaSettings) -> list[Bar]:
    """Every committed bar of the topic."""
    contents = read_topic(kafka, kafka.topic_agg, timeout_s=60)
    frame = bars_from_values(contents.values, contents.timestamps).frame
    return [Bar(**{k: v for k, v in row.items() if k in Bar.__struct_fields__}) for row in frame.iter_rows(named=True)]


def dashboard_env(kafka: KafkaSettings, **extra: str) -> dict[str, str]:
    """Environment variables pointing the dashboard at this test's topics."""
    return {"KAFKA_BROKERS": kafka.brokers, "KAFKA_TOPIC_RAW": kafka.topic_raw, "KAFKA_TOPIC_AGG": kafka.topic_agg,
            "KAFKA_TOPIC_DLQ": kafka.topic_dlq, **extra}
