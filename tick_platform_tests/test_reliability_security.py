"""Security basics: loopback by default, SASL/SSL settings reach every Kafka client, secrets never shown.

No broker needed: the Kafka clients are replaced by recorders that keep the configuration they
were built with, so the test sees exactly what librdkafka would get.
"""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import pytest

from streaming.kernel.settings import PROJECT_ROOT, ApiSettings, DashboardSettings, KafkaSettings, load_settings

PASSWORD = "pa55-Very-Secret-42"
SNOW_PASSWORD = "snow-Secret-99"
SECURITY_ENV = {
    "KAFKA_BROKERS": "kafka-1.example.com:9093,kafka-2.example.com:9093",
    "KAFKA_SECURITY_PROTOCOL": "SASL_SSL",
    "KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
    "KAFKA_SASL_USERNAME": "tick-platform",
    "KAFKA_SASL_PASSWORD": PASSWORD,
    "KAFKA_SSL_CA_LOCATION": "/etc/ssl/certs/ca.pem",
    "KAFKA_CLIENT_CONFIG": '{"ssl.endpoint.identification.algorithm": "https", "client.rack": "az1"}',
}
EXPECTED = {
    "bootstrap.servers": "kafka-1.example.com:9093,kafka-2.example.com:9093",
    "security.protocol": "SASL_SSL",
    "sasl.mechanism": "SCRAM-SHA-512",
    "sasl.username": "tick-platform",
    "sasl.password": PASSWORD,
    "ssl.ca.location": "/etc/ssl/certs/ca.pem",
    "ssl.endpoint.identification.algorithm": "https",
    "client.rack": "az1",
}


@pytest.fixture()
def secure_env(monkeypatch: pytest.MonkeyPatch) -> KafkaSettings:
    """SASL/SSL settings in the environment, as a user's .env would set them."""
    for name, value in SECURITY_ENV.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("SNOW_ACCOUNT", "xy12345")
    monkeypatch.setenv("SNOW_USER", "loader")
    monkeypatch.setenv("SNOW_PASSWORD", SNOW_PASSWORD)
    return load_settings().kafka


class Recorder:
    """Stands in for a confluent_kafka client class; keeps every configuration it is built with."""

    def __init__(self) -> None:
        self.configs: list[dict[str, Any]] = []

    def __call__(self, conf: dict[str, Any], *_args: Any, **_kwargs: Any) -> Recorder:
        self.configs.append(dict(conf))
        return self

    def __getattr__(self, _name: str) -> Any:
        return lambda *_a, **_k: None


def assert_passes_security(conf: dict[str, Any]) -> None:
    missing = {k: v for k, v in EXPECTED.items() if conf.get(k) != v}
    assert missing == {}, f"not passed through: {sorted(missing)}"


def test_client_base_passes_the_librdkafka_security_names_through(secure_env: KafkaSettings) -> None:
    assert_passes_security(secure_env.client_base())


def test_every_kafka_client_gets_the_security_settings(secure_env: KafkaSettings,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """Replay producer, aggregator consumer and producer, platform reader, validator, dashboard, admin."""
    import dashboard.feed
    import streaming.aggregate.processor
    import streaming.kernel.topics
    import streaming.validate.kafka_reader
    from dashboard.bar_cache import BarCache
    from streaming.aggregate.processor import Aggregator
    from streaming.replay.kafka_io import producer_config
    from tick_platform.bar_reader import consumer_config

    settings = load_settings()
    seen: dict[str, dict[str, Any]] = {
        "replay producer": producer_config(secure_env, settings.replay, "tick-replay-x"),
        "platform bar reader": consumer_config(secure_env),
    }
    for module, attrs in ((streaming.aggregate.processor, ("Consumer", "Producer")),
                          (streaming.validate.kafka_reader, ("Consumer",)), (dashboard.feed, ("Consumer",)),
                          (streaming.kernel.topics, ("AdminClient",))):
        for attr in attrs:
            monkeypatch.setattr(module, attr, Recorder())
    Aggregator(settings)
    seen["aggregator consumer"] = streaming.aggregate.processor.Consumer.configs[-1]  # type: ignore[attr-defined]
    seen["aggregator producer"] = streaming.aggregate.processor.Producer.configs[-1]  # type: ignore[attr-defined]
    streaming.validate.kafka_reader.reader_consumer(secure_env)
    seen["validator"] = streaming.validate.kafka_reader.Consumer.configs[-1]  # type: ignore[attr-defined]
    dashboard.feed.BarFeed(secure_env, BarCache(10))._consumer()
    seen["dashboard feed"] = dashboard.feed.Consumer.configs[-1]  # type: ignore[attr-defined]
    streaming.kernel.topics.admin_client(secure_env)
    seen["admin client"] = streaming.kernel.topics.AdminClient.configs[-1]  # type: ignore[attr-defined]
    for client, conf in seen.items():
        missing = sorted(k for k, v in EXPECTED.items() if conf.get(k) != v)
        assert missing == [], f"{client}: not passed through: {missing}"


def test_secrets_never_appear_in_repr_str_or_dumps(secure_env: KafkaSettings) -> None:
    settings = load_settings()
    shown = [repr(settings), str(settings), repr(settings.kafka), str(settings.kafka), repr(settings.snow),
             settings.kafka.model_dump_json(), settings.snow.model_dump_json(), str(settings.kafka.model_dump())]
    for text in shown:
        assert PASSWORD not in text
        assert SNOW_PASSWORD not in text
    assert settings.kafka.sasl_password is not None and settings.kafka.sasl_password.get_secret_value() == PASSWORD


def run_cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    import os

    full = {k: v for k, v in os.environ.items() if not k.startswith(("KAFKA_", "SNOW_"))}
    full.update(env)
    return subprocess.run([sys.executable, "-m", "tick_tools", *args], cwd=PROJECT_ROOT, env=full,
                          capture_output=True, text=True, timeout=120)


def test_a_bad_setting_beside_a_password_is_one_line_without_the_secret() -> None:
    """A config error names the setting in one line; the password of the same section is not printed."""
    done = run_cli("topics", "list", env={**SECURITY_ENV, "KAFKA_PARTITIONS": "lots"})
    output = done.stdout + done.stderr
    assert done.returncode == 2
    assert "KAFKA_PARTITIONS" in output and len(output.strip().splitlines()) == 1
    assert PASSWORD not in output


def test_malformed_client_config_json_is_a_one_line_config_error() -> None:
    """KAFKA_CLIENT_CONFIG that is not JSON: exit 2 with one line naming it, never a traceback or the value."""
    done = run_cli("topics", "list", env={**SECURITY_ENV,
                                          "KAFKA_CLIENT_CONFIG": '{"sasl.password": "' + PASSWORD + '",'})
    output = done.stdout + done.stderr
    assert PASSWORD not in output
    assert "Traceback" not in output, output[-2000:]
    assert done.returncode == 2 and "KAFKA_CLIENT_CONFIG" in output


def test_services_bind_loopback_by_default() -> None:
    """API, dashboard, the broker and the aggregator's metrics listen on 127.0.0.1 unless told otherwise."""
    from streaming.aggregate.command import _serve_metrics
    from streaming.aggregate.counters import Counters
    from tick_tools.broker.runner import plan_nodes

    settings = load_settings()
    assert ApiSettings().host == settings.api.host == "127.0.0.1"
    assert DashboardSettings().host == settings.dashboard.host == "127.0.0.1"
    assert all(node.host == "127.0.0.1" for node in plan_nodes(KafkaSettings.model_validate({}).brokers, 3))
    server = _serve_metrics(0, Counters)
    try:
        assert server.server_address[0] == "127.0.0.1"
    finally:
        server.shutdown()
        server.server_close()


STAGE_ENV = {f"KAFKA_{stage.upper()}_SASL_{part.upper()}": f"{stage}-{part}-{'x' if part == 'password' else 'u'}"
             for stage in ("replay", "agg", "warehouse", "dashboard", "validate") for part in ("username", "password")}


def test_each_stage_authenticates_as_its_own_principal(secure_env: KafkaSettings,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """KAFKA_<STAGE>_SASL_* reach that stage's clients only; admin tools keep KAFKA_SASL_*."""
    import dashboard.feed
    import streaming.aggregate.processor
    import streaming.kernel.topics
    import streaming.validate.kafka_reader
    from dashboard.bar_cache import BarCache
    from streaming.aggregate.processor import Aggregator
    from streaming.replay.kafka_io import producer_config
    from tick_platform.bar_reader import consumer_config

    for name, value in STAGE_ENV.items():
        monkeypatch.setenv(name, value)
    settings = load_settings()
    kafka = settings.kafka
    for module, attrs in ((streaming.aggregate.processor, ("Consumer", "Producer")),
                          (streaming.validate.kafka_reader, ("Consumer",)), (dashboard.feed, ("Consumer",)),
                          (streaming.kernel.topics, ("AdminClient",))):
        for attr in attrs:
            monkeypatch.setattr(module, attr, Recorder())
    Aggregator(settings)
    streaming.validate.kafka_reader.reader_consumer(kafka)
    dashboard.feed.BarFeed(kafka, BarCache(10))._consumer()
    streaming.kernel.topics.admin_client(kafka)
    seen = {
        "replay": producer_config(kafka, settings.replay, "tick-replay-x"),
        "agg": streaming.aggregate.processor.Consumer.configs[-1],  # type: ignore[attr-defined]
        "agg producer": streaming.aggregate.processor.Producer.configs[-1],  # type: ignore[attr-defined]
        "warehouse": consumer_config(kafka),
        "dashboard": dashboard.feed.Consumer.configs[-1],  # type: ignore[attr-defined]
        "validate": streaming.validate.kafka_reader.Consumer.configs[-1],  # type: ignore[attr-defined]
    }
    for client, conf in seen.items():
        stage = client.split()[0]
        assert (conf["sasl.username"], conf["sasl.password"]) == (f"{stage}-username-u", f"{stage}-password-x"), client
        assert conf["security.protocol"] == "SASL_SSL" and conf["ssl.ca.location"] == "/etc/ssl/certs/ca.pem"
    admin = streaming.kernel.topics.AdminClient.configs[-1]  # type: ignore[attr-defined]
    assert (admin["sasl.username"], admin["sasl.password"]) == ("tick-platform", PASSWORD)
    shown = repr(settings) + settings.kafka.model_dump_json()
    assert not [v for k, v in STAGE_ENV.items() if k.endswith("PASSWORD") and v in shown]


def test_a_stage_user_without_its_password_is_a_one_line_config_error() -> None:
    """KAFKA_AGG_SASL_USERNAME alone would log in with the shared password: refused, naming the missing one."""
    done = run_cli("topics", "list", env={**SECURITY_ENV, "KAFKA_AGG_SASL_USERNAME": "tick-aggregator"})
    output = done.stdout + done.stderr
    assert done.returncode == 2, output
    assert len(output.strip().splitlines()) == 1 and "KAFKA_AGG_SASL_PASSWORD is not set" in output
    assert PASSWORD not in output


def test_access_problems_name_the_settings_not_the_values(secure_env: KafkaSettings) -> None:
    """librdkafka's messages for a refused password, a bad CA and a plaintext client become one named cause."""
    from streaming.kernel.kafka_access import access_problem, denied_access

    refused = "_AUTHENTICATION sasl_ssl://h:9093/bootstrap: SASL authentication error: Authentication failed"
    line = access_problem(secure_env, "agg", [refused])
    assert line is not None and "KAFKA_SASL_USERNAME / KAFKA_SASL_PASSWORD" in line and PASSWORD not in line
    own = secure_env.model_copy(update={"agg_sasl_username": "a", "agg_sasl_password": secure_env.sasl_password})
    assert "KAFKA_AGG_SASL_PASSWORD" in (access_problem(own, "agg", [refused]) or "")
    bad_ca = "_SSL h:9093/bootstrap: SSL handshake failed: certificate verify failed (after 3ms in state SSL_HANDSHAKE)"
    assert "KAFKA_SSL_CA_LOCATION" in (access_problem(secure_env, None, [bad_ca]) or "")
    plain = secure_env.model_copy(update={"security_protocol": "PLAINTEXT"})
    closed = "h:9093/bootstrap: Disconnected: connection closed by peer (after 0ms in state APIVERSION_QUERY)"
    assert "KAFKA_SECURITY_PROTOCOL is PLAINTEXT" in (access_problem(plain, None, [closed]) or "")
    assert access_problem(secure_env, None, [closed, "1/1 brokers are down"]) is None  # TLS client: not this
    assert access_problem(plain, None, ["Connect to ipv4#127.0.0.1:9092 failed: Connection refused"]) is None
    assert "TOPIC_AUTHORIZATION_FAILED" in (denied_access("KafkaError{code=TOPIC_AUTHORIZATION_FAILED}") or "")
    assert denied_access("KafkaError{code=_TIMED_OUT}") is None


def test_an_authorization_refusal_is_not_restarted() -> None:
    """A stage error the authorizer caused ends the stage at once; a transient one is still restarted."""
    from streaming.kernel.errors import KafkaAccessError, StageKafkaError
    from streaming.restarts import RestartPolicy, run_with_restarts

    calls: list[int] = []

    def denied(restarts: int) -> None:
        calls.append(restarts)
        raise StageKafkaError("replay producer failed (KafkaError{code=TOPIC_AUTHORIZATION_FAILED,val=29})")

    with pytest.raises(KafkaAccessError, match="not authorized"):
        run_with_restarts(denied, RestartPolicy(3, (0.0,)), what="replay", log=lambda _l: None,
                          wait=lambda _s: False)
    assert calls == [0]

    def flaky(restarts: int) -> int:
        calls.append(restarts)
        if restarts < 2:
            raise StageKafkaError("KafkaError{code=_TIMED_OUT}")
        return restarts

    calls.clear()
    assert run_with_restarts(flaky, RestartPolicy(3, (0.0,)), what="x", log=lambda _l: None,
                             wait=lambda _s: False) == 2
    assert calls == [0, 1, 2]


def test_stage_acls_are_least_privilege() -> None:
    """Each principal gets exactly its stage's ACLs: the warehouse and dashboard read ticks.agg.1s only."""
    from confluent_kafka.admin import AclOperation, ResourceType

    from tick_tools.broker.security import STAGE_USERS, stage_acls, stage_names

    names = stage_names(KafkaSettings.model_validate({}), "tick-replay", "tick-aggregator", "tick-aggregator",
                        "tick-platform-facts", "ticks.replay.checkpoints")
    acls = stage_acls(names, STAGE_USERS)

    def topics(user: str, op: AclOperation) -> set[str]:
        return {a.name for a in acls if a.principal == f"User:{user}" and a.restype == ResourceType.TOPIC
                and a.operation == op}

    assert topics("tick-replay", AclOperation.WRITE) == {"ticks.raw", "ticks.dlq", "ticks.replay.checkpoints"}
    assert topics("tick-replay", AclOperation.READ) == {"ticks.replay.checkpoints"}
    assert topics("tick-aggregator", AclOperation.READ) == {"ticks.raw"}
    assert topics("tick-aggregator", AclOperation.WRITE) == {"ticks.agg.1s", "ticks.dlq"}
    for reader in ("tick-warehouse", "tick-dashboard"):
        assert topics(reader, AclOperation.READ) == {"ticks.agg.1s"}
        assert topics(reader, AclOperation.WRITE) == set()
        assert not [a for a in acls if a.principal == f"User:{reader}" and a.restype == ResourceType.TRANSACTIONAL_ID]
    assert [(a.restype, a.name) for a in acls if a.principal == "User:tick-dashboard"] == [
        (ResourceType.TOPIC, "ticks.agg.1s"), (ResourceType.GROUP, "tick-dashboard-")]
    assert not [a for a in acls if a.principal == "User:tick-replay" and a.restype == ResourceType.GROUP]
    # The warehouse observes ticks.raw and the aggregator's lag: DESCRIBE only, never READ of its data.
    assert [(a.restype, a.name) for a in acls if a.principal == "User:tick-warehouse"
            and a.operation == AclOperation.DESCRIBE] == [(ResourceType.TOPIC, "ticks.raw"),
                                                          (ResourceType.GROUP, "tick-aggregator")]
    assert all(a.permission_type.name == "ALLOW" and a.host == "*" for a in acls)
