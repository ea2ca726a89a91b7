"""ticks_raw and ticks_agg_1s: the Kafka topics as external assets, observed (offsets, lag, event time)."""

from collections.abc import Iterator
from typing import Any

from dagster import AssetSpec, DataVersion, Failure, MetadataValue, ObserveResult, multi_observable_source_asset

from streaming.kernel.errors import KafkaAccessError
from streaming.kernel.settings import KafkaSettings
from streaming.kernel.topics import group_lag
from tick_platform.bar_reader import (
    ReadNotAuthorized,
    newest_event_ms,
    open_consumer,
    partitions_of,
    warehouse_access,
    watermarks,
)
from tick_platform.resources import KafkaResource

TICKS_RAW = AssetSpec(
    "ticks_raw",
    description="Kafka ticks.raw: 10 ms bins keyed by symbol, written by the replay.",
    group_name="streams",
    kinds={"kafka"},
)
TICKS_AGG_1S = AssetSpec(
    "ticks_agg_1s",
    deps=[TICKS_RAW.key],
    description="Kafka ticks.agg.1s: final 1 s bars keyed by symbol, written by the aggregator.",
    group_name="streams",
    kinds={"kafka"},
)


def event_time_unavailable(topic: str) -> str:
    """The observation's note when its principal may not read `topic`'s records."""
    return f"not authorized to read {topic}: event time unavailable"


def observe_topic(kafka: KafkaSettings, topic: str, group: str) -> tuple[DataVersion, dict[str, Any]]:
    """End offsets, the group's lag and the newest event time of one topic, as the warehouse principal.

    Offsets and lag need DESCRIBE only (topic and group). The event time needs the last
    records: where the broker refuses them (ticks.raw under least privilege, DESCRIBE without
    READ), the observation keeps its offsets and lag, `latest_event_ts_ms` is -1 and
    `event_time` says why. Any other failure still raises.
    """
    ends: dict[str, int] = {}
    with open_consumer(kafka) as consumer:
        for p in partitions_of(consumer, topic):
            ends[str(p)] = watermarks(consumer, topic, p)[1]
    lag = group_lag(kafka, group, topic, "warehouse")
    note: str | None = None
    try:
        newest = newest_event_ms(kafka, topic)
    except ReadNotAuthorized:
        newest, note = None, event_time_unavailable(topic)
    total_lag = sum(v for v in lag.values() if v is not None)
    meta: dict[str, Any] = {
        "topic": MetadataValue.text(topic),
        "end_offsets": MetadataValue.json(ends),
        "messages_total": MetadataValue.int(sum(ends.values())),
        "consumer_group": MetadataValue.text(group),
        "consumer_lag": MetadataValue.int(total_lag),
        "consumer_lag_by_partition": MetadataValue.json({str(k): v for k, v in lag.items()}),
        "latest_event_ts_ms": MetadataValue.int(newest if newest is not None else -1),
    }
    if note is not None:
        meta["event_time"] = MetadataValue.text(note)
    return DataVersion(",".join(f"{p}:{o}" for p, o in sorted(ends.items()))), meta


# Dagster's decorator is untyped (dagster 1.13); the function under it is fully typed.
@multi_observable_source_asset(specs=[TICKS_RAW, TICKS_AGG_1S], name="kafka_topics")  # type: ignore[untyped-decorator]
def kafka_topics(kafka: KafkaResource) -> Iterator[ObserveResult]:
    """Observe both topics: end offsets, consumer lag (aggregator on ticks.raw, facts on ticks.agg.1s), event time."""
    settings = kafka.settings()
    observed = []
    try:
        with warehouse_access(settings.kafka, "kafka_topics observation"):
            for spec, topic, group in (
                (TICKS_RAW, settings.kafka.topic_raw, settings.agg.group_id),
                (TICKS_AGG_1S, settings.kafka.topic_agg, settings.warehouse.consumer_group),
            ):
                observed.append((spec, *observe_topic(settings.kafka, topic, group)))
    except KafkaAccessError as exc:  # one line, and the run is not retried: the same principal, the same answer
        raise Failure(description=str(exc), allow_retries=False) from None
    for spec, version, meta in observed:
        yield ObserveResult(asset_key=spec.key, data_version=version, metadata=meta)
