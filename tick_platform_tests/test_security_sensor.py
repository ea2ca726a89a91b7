"""The streaming sensor and the kafka_topics observation as the warehouse principal, through the secured broker.

The module's own secured single-node broker (the `secure` fixture of test_security_broker:
SASL_SSL, SCRAM users, the stage ACLs of docs/operations.md). The Dagster side gets an env
file holding the warehouse principal only (no shared/admin user to fall back on), so every
client it builds is tick-warehouse: READ on ticks.agg.1s, DESCRIBE on ticks.raw and on the
aggregator's group, no READ of ticks.raw.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from dagster import (
    AssetObservation,
    AssetSelection,
    DagsterEventType,
    DagsterInstance,
    Definitions,
    SensorResult,
    build_sensor_context,
    define_asset_job,
)

from streaming.kernel.errors import KafkaAccessError
from streaming.kernel.settings import KafkaSettings, load_settings
from tick_platform.assets.streams import kafka_topics, observe_topic
from tick_platform.closure import SensorCursor
from tick_platform.resources import KafkaResource
from tick_platform.sensors import closed_windows_sensor
from tick_platform_tests.test_platform_support import (
    SAMPLE_FIRST_WINDOW_MS,
    bars_from_ticks,
    partition_of,
    produce_bars,
    read_kibot,
)
from tick_platform_tests.test_security_broker import SecureBroker, assert_no_secret, secure  # noqa: F401
from tick_tools.broker.security import STAGE_USERS

pytestmark = pytest.mark.kafka

FIRST_WINDOW_MS = SAMPLE_FIRST_WINDOW_MS
AGG_GROUP = "tick-aggregator"  # the aggregator's group the fixture's ACLs name
BUSY = {KafkaError.COORDINATOR_LOAD_IN_PROGRESS, KafkaError.NOT_COORDINATOR, KafkaError.COORDINATOR_NOT_AVAILABLE}
UNAVAILABLE = "not authorized to read {topic}: event time unavailable"


@dataclass(frozen=True)
class Streams:
    """What the admin produced and committed, to compare the warehouse's view with."""

    raw_ends: dict[str, int]
    raw_lag: dict[str, int]
    raw_newest_ms: int
    agg_ends: dict[str, int]
    agg_newest_ms: int
    env_file: Path  # the warehouse principal only
    topics: KafkaSettings  # brokers and topic names, no secret


def warehouse_env(secure: SecureBroker, path: Path, password: str | None = None) -> Path:  # noqa: F811
    """An env file with the broker's address, TLS/SASL settings and the warehouse principal only."""
    lines = [line for line in secure.env_file.read_text().splitlines()
             if line.startswith(("KAFKA_BROKERS=", "KAFKA_SECURITY_PROTOCOL=", "KAFKA_SASL_MECHANISM=",
                                 "KAFKA_SSL_CA_LOCATION=", "KAFKA_WAREHOUSE_SASL_"))]
    if password is not None:
        lines = [f"KAFKA_WAREHOUSE_SASL_PASSWORD={password}" if line.startswith("KAFKA_WAREHOUSE_SASL_PASSWORD=")
                 else line for line in lines]
    assert sum(line.startswith("KAFKA_WAREHOUSE_SASL_") for line in lines) == 2
    path.write_text("\n".join(lines) + "\n")
    path.chmod(0o600)
    return path


def commit_at_one(admin: KafkaSettings, wait_s: float = 60.0) -> None:
    """The aggregator's group committed at offset 1 of every ticks.raw partition (waits out a loading coordinator)."""
    group = Consumer({**admin.client_base(), "group.id": AGG_GROUP, "enable.auto.commit": False})
    deadline = time.monotonic() + wait_s
    try:
        while True:
            try:
                group.commit(offsets=[TopicPartition(admin.topic_raw, p, 1) for p in range(admin.partitions)],
                             asynchronous=False)
                return
            except KafkaException as exc:
                if exc.args[0].code() not in BUSY or time.monotonic() > deadline:
                    raise
                time.sleep(0.5)
    finally:
        group.close()


@pytest.fixture(scope="module")
def streams(secure: SecureBroker, sample_path: Path,  # noqa: F811
            tmp_path_factory: pytest.TempPathFactory) -> Streams:
    """As the admin: p+1 bins on ticks.raw partition p, the aggregator's group committed at 1, an hour of bars."""
    admin = secure.admin
    producer = Producer({**admin.client_base(), "enable.idempotence": True, "acks": "all"})
    raw_newest = 0
    for p in range(admin.partitions):
        for i in range(p + 1):
            start = FIRST_WINDOW_MS + 10 * (100 * p + i)
            raw_newest = max(raw_newest, start)
            producer.produce(admin.topic_raw, key=b"WDC", value=orjson.dumps({"start_ts_ms": start}), partition=p)
    assert producer.flush(30) == 0
    commit_at_one(admin)
    bars = bars_from_ticks(read_kibot(sample_path))
    hour = [b for b in bars if b.start_ts_ms < FIRST_WINDOW_MS + 60 * 60_000]
    produce_bars(admin, hour)
    wdc = partition_of("WDC", admin.partitions)
    topics = KafkaSettings.model_validate({}).model_copy(update={
        "brokers": admin.brokers, "topic_raw": admin.topic_raw, "topic_agg": admin.topic_agg,
        "topic_dlq": admin.topic_dlq})
    return Streams(
        raw_ends={str(p): p + 1 for p in range(admin.partitions)},
        raw_lag={str(p): p for p in range(admin.partitions)},
        raw_newest_ms=raw_newest,
        agg_ends={str(p): len(hour) if p == wdc else 0 for p in range(admin.partitions)},
        agg_newest_ms=hour[-1].start_ts_ms,
        env_file=warehouse_env(secure, tmp_path_factory.mktemp("wh") / "warehouse.env"),
        topics=topics,
    )


def values(metadata: Mapping[str, Any]) -> dict[str, Any]:
    return {k: getattr(v, "value", v) for k, v in metadata.items()}


def test_the_settings_are_the_warehouse_principal_only(secure: SecureBroker, streams: Streams) -> None:  # noqa: F811
    kafka = load_settings(str(streams.env_file)).kafka
    assert kafka.sasl_username is None and kafka.sasl_password is None  # no admin to fall back on
    assert kafka.client_base("warehouse")["sasl.username"] == STAGE_USERS["warehouse"]
    assert kafka.client_base()["security.protocol"] == "SASL_SSL"


def test_ticks_raw_observation_degrades_to_offsets_and_lag(secure: SecureBroker, streams: Streams) -> None:  # noqa: F811
    """No READ on ticks.raw: end offsets and the aggregator's lag as produced, event time -1 with the reason."""
    kafka = load_settings(str(streams.env_file), kafka={"topic_raw": streams.topics.topic_raw,
                                                        "topic_agg": streams.topics.topic_agg}).kafka
    version, meta = observe_topic(kafka, kafka.topic_raw, AGG_GROUP)
    shown = values(meta)
    assert shown["end_offsets"] == streams.raw_ends
    assert shown["messages_total"] == sum(streams.raw_ends.values()) == 21
    assert shown["consumer_lag_by_partition"] == streams.raw_lag
    assert shown["consumer_lag"] == sum(streams.raw_lag.values()) == 15
    assert shown["latest_event_ts_ms"] == -1
    assert shown["event_time"] == UNAVAILABLE.format(topic=kafka.topic_raw)
    assert version.value == ",".join(f"{p}:{o}" for p, o in sorted(streams.raw_ends.items()))
    # ticks.agg.1s, which the warehouse may read, keeps its event time.
    _version, agg = observe_topic(kafka, kafka.topic_agg, "tick-platform-facts")
    assert values(agg)["end_offsets"] == streams.agg_ends
    assert values(agg)["latest_event_ts_ms"] == streams.agg_newest_ms and "event_time" not in agg
    # A principal that may read ticks.raw (the admin, as the warehouse's fallback): the event time is there.
    reader = secure.admin.model_copy(update={"warehouse_sasl_username": None, "warehouse_sasl_password": None})
    _version, full = observe_topic(reader, reader.topic_raw, AGG_GROUP)
    assert values(full)["latest_event_ts_ms"] == streams.raw_newest_ms and "event_time" not in full
    assert values(full)["end_offsets"] == streams.raw_ends
    assert_no_secret(secure, str(shown), str(values(agg)))


def test_the_kafka_topics_observation_run_succeeds_as_the_warehouse(secure: SecureBroker,  # noqa: F811
                                                                   streams: Streams,
                                                                   capfd: pytest.CaptureFixture[str]) -> None:
    """The Dagster observation of both topics, in a run: succeeds, ticks_raw without event time."""
    resource = KafkaResource.from_settings(streams.topics, env_file=str(streams.env_file))
    defs = Definitions(assets=[kafka_topics], resources={"kafka": resource},
                       jobs=[define_asset_job("observe_kafka", selection=AssetSelection.assets(kafka_topics))])
    with DagsterInstance.ephemeral() as instance:
        result = defs.resolve_job_def("observe_kafka").execute_in_process(instance=instance, raise_on_error=False)
        logs = [str(entry) for entry in instance.all_logs(result.run_id)]
    assert result.success, [e.message for e in result.all_events if e.is_failure]
    observed = {e.asset_key.to_user_string(): values(e.event_specific_data.asset_observation.metadata)  # type: ignore[union-attr]
                for e in result.all_events if e.event_type == DagsterEventType.ASSET_OBSERVATION
                and e.asset_key is not None}
    assert observed["ticks_raw"]["end_offsets"] == streams.raw_ends
    assert observed["ticks_raw"]["consumer_lag"] == 15
    assert observed["ticks_raw"]["latest_event_ts_ms"] == -1
    assert observed["ticks_raw"]["event_time"] == UNAVAILABLE.format(topic=streams.topics.topic_raw)
    assert observed["ticks_agg_1s"]["end_offsets"] == streams.agg_ends
    assert observed["ticks_agg_1s"]["latest_event_ts_ms"] == streams.agg_newest_ms
    captured = capfd.readouterr()
    assert_no_secret(secure, str(observed), *logs, captured.out, captured.err)


def evaluate(resource: KafkaResource, cursor: str | None, instance: DagsterInstance) -> SensorResult:
    with build_sensor_context(cursor=cursor, resources={"kafka": resource}, instance=instance) as context:
        result = closed_windows_sensor(context)
    assert isinstance(result, SensorResult)
    return result


def test_the_streaming_sensor_ticks_as_the_warehouse(secure: SecureBroker, streams: Streams,  # noqa: F811
                                                     capfd: pytest.CaptureFixture[str],
                                                     caplog: pytest.LogCaptureFixture) -> None:
    """The sensor's tick: one ranged run for the hour's closed windows, the cursor, ticks.raw observed."""
    caplog.set_level(logging.DEBUG)
    patient = KafkaResource.from_settings(streams.topics, idle_timeout_ms=3_600_000, env_file=str(streams.env_file))
    with DagsterInstance.ephemeral() as instance:
        first = evaluate(patient, None, instance)
        again = evaluate(patient, first.cursor, instance)
    # The hour's bars end at 15:29:59; WDC is not idle, so its newest bar bounds: 14:30 .. 15:20 closed.
    (request,) = first.run_requests or []
    assert request.run_key == "2010-02-17-09:30...2010-02-17-10:20"
    span = request.partition_key_range
    assert span is not None and (span.start, span.end) == ("2010-02-17-09:30", "2010-02-17-10:20")
    assert first.cursor is not None
    state = SensorCursor.from_json(first.cursor)
    assert state.next_window_ms == FIRST_WINDOW_MS + 11 * 300_000
    assert {str(p): s.high for p, s in state.partitions.items()} == streams.agg_ends
    raw_version = ",".join(f"{p}:{o}" for p, o in sorted(streams.raw_ends.items()))
    assert state.raw_version == f"{raw_version}|lag=15"
    events = {e.asset_key.to_user_string(): values(e.metadata) for e in first.asset_events
              if isinstance(e, AssetObservation)}
    assert events["ticks_raw"]["end_offsets"] == streams.raw_ends
    assert events["ticks_raw"]["latest_event_ts_ms"] == -1
    assert events["ticks_raw"]["event_time"] == UNAVAILABLE.format(topic=streams.topics.topic_raw)
    assert events["ticks_agg_1s"]["end_offsets"] == streams.agg_ends
    assert events["ticks_agg_1s"]["latest_event_ts_ms"] == streams.agg_newest_ms
    # From its own cursor: nothing again, nothing re-observed.
    assert not again.run_requests and again.skip_reason is not None and not again.asset_events
    assert again.cursor == first.cursor
    captured = capfd.readouterr()
    assert_no_secret(secure, first.cursor, str(events), str(first.run_requests), str(again.skip_reason),
                     caplog.text, captured.out, captured.err)


def test_a_wrong_warehouse_password_fails_the_tick_in_one_line(secure: SecureBroker, streams: Streams,  # noqa: F811
                                                               tmp_path: Path) -> None:
    """Refused credentials: one KafkaAccessError line naming KAFKA_WAREHOUSE_SASL_PASSWORD, no value."""
    wrong = f"wrong-{os.urandom(8).hex()}"
    env = warehouse_env(secure, tmp_path / "wrong.env", password=wrong)
    resource = KafkaResource.from_settings(streams.topics, env_file=str(env))
    with DagsterInstance.ephemeral() as instance, pytest.raises(KafkaAccessError) as raised:
        evaluate(resource, None, instance)
    line = str(raised.value)
    assert len(line.splitlines()) == 1 and line.startswith("streaming sensor: ")
    assert "refused the credentials of KAFKA_WAREHOUSE_SASL_USERNAME / KAFKA_WAREHOUSE_SASL_PASSWORD" in line
    assert raised.value.__cause__ is None and raised.value.__suppress_context__
    assert wrong not in line
    assert_no_secret(secure, line)


def test_a_missing_acl_fails_the_tick_in_one_line(secure: SecureBroker, streams: Streams) -> None:  # noqa: F811
    """ticks.agg.1s pointed at a topic without the warehouse's ACL: the stages' not-authorized line."""
    denied = streams.topics.model_copy(update={"topic_agg": secure.denied_topic})
    resource = KafkaResource.from_settings(denied, env_file=str(streams.env_file))
    with DagsterInstance.ephemeral() as instance, pytest.raises(KafkaAccessError) as raised:
        evaluate(resource, None, instance)
    line = str(raised.value)
    assert len(line.splitlines()) == 1
    assert line.startswith("streaming sensor: not authorized (TOPIC_AUTHORIZATION_FAILED)")
    assert secure.denied_topic in line
    assert_no_secret(secure, line)
