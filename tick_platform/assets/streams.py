"""ticks_raw and ticks_agg_1s: the Kafka topics as external assets, observed (offsets, lag, event time).

The bar stream's asset is named after its bar spec (`bar_asset_name`: ticks_agg_1s for
time-1s, ticks_agg_5s for time-5s), like its topic and its bar ids.
"""

from collections.abc import Iterator
from typing import Any

from dagster import (
    AssetsDefinition,
    AssetSpec,
    DataVersion,
    Failure,
    MetadataValue,
    ObserveResult,
    multi_observable_source_asset,
)

from streaming.kernel.bar_spec import DEFAULT_BAR_SPEC, BarSpec, bar_asset_name, bar_topic
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


def bar_stream_asset(spec: BarSpec) -> AssetSpec:
    """The external asset of one bar spec's stream (key `ticks_agg_1s` for time-1s)."""
    return AssetSpec(
        bar_asset_name(spec),
        deps=[TICKS_RAW.key],
        description=f"Kafka {bar_topic(spec)}: final {spec.label} bars ({spec.text}) keyed by symbol, "
                    "written by the aggregator.",
        group_name="streams",
        kinds={"kafka"},
    )


# The facts roll up the default spec's stream (1 s bars): its asset is the one they depend on.
TICKS_AGG_1S = bar_stream_asset(DEFAULT_BAR_SPEC)


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


def build_kafka_topics(bar_spec: BarSpec = DEFAULT_BAR_SPEC) -> AssetsDefinition:
    """The observation of ticks.raw and of `bar_spec`'s bar stream (the configured KAFKA_TOPIC_AGG)."""
    bars = bar_stream_asset(bar_spec)

    # Dagster's decorator is untyped (dagster 1.13); the function under it is fully typed.
    @multi_observable_source_asset(specs=[TICKS_RAW, bars], name="kafka_topics")  # type: ignore[untyped-decorator]
    def kafka_topics(kafka: KafkaResource) -> Iterator[ObserveResult]:
        """Observe both topics: end offsets, consumer lag (aggregator on ticks.raw, facts on the bars), event time."""
        settings = kafka.settings()
        observed = []
        try:
            with warehouse_access(settings.kafka, "kafka_topics observation"):
                for spec, topic, group in (
                    (TICKS_RAW, settings.kafka.topic_raw, settings.agg.group_id),
                    (bars, settings.kafka.topic_agg, settings.warehouse.consumer_group),
                ):
                    observed.append((spec, *observe_topic(settings.kafka, topic, group)))
        except KafkaAccessError as exc:  # one line, and the run is not retried: the same principal, the same answer
            raise Failure(description=str(exc), allow_retries=False) from None
        for spec, version, meta in observed:
            yield ObserveResult(asset_key=spec.key, data_version=version, metadata=meta)

    assert isinstance(kafka_topics, AssetsDefinition)
    return kafka_topics


kafka_topics = build_kafka_topics()
