"""Can this stage's principal talk to Kafka at all? One quick probe before a stage builds its clients.

librdkafka does not fail on a refused password, a TLS mismatch or a plaintext client at a TLS
port: it logs the cause to stderr and reconnects forever, and the call that waited reports
only "Broker transport failure" or a time-out. The stages would then restart their clients
(streaming/restarts.py) for minutes. A stage calls `check_access` first (and before every
in-process restart): a security failure becomes one KafkaAccessError line that names the
settings to fix, never their values, and is not retried, because retrying cannot fix it.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient

from streaming.kernel.errors import KafkaAccessError
from streaming.kernel.settings import KafkaSettings, Stage

# What librdkafka says when a plaintext client reaches a TLS listener: the broker closes the
# connection while it waits for the first (ApiVersion) answer.
_PLAINTEXT_AT_TLS = ("APIVERSION_QUERY", "incorrect security.protocol")


class _Collector(logging.Handler):
    """Keeps librdkafka's log lines for the probe instead of printing them (they repeat, and are not one line)."""

    def __init__(self, into: list[str]) -> None:
        super().__init__(logging.DEBUG)
        self.into = into

    def emit(self, record: logging.LogRecord) -> None:
        self.into.append(record.getMessage())


def access_problem(kafka: KafkaSettings, stage: Stage | None, messages: list[str]) -> str | None:
    """The one-line cause among a client's error and log messages, naming the settings to fix; None if none is.

    Pure: the probe collects the messages, this decides what they mean. Secrets are never in
    them (librdkafka does not print passwords), and the line names settings, not values.
    """
    protocol = (kafka.client_base(stage).get("security.protocol") or "PLAINTEXT").upper()
    for text in messages:
        if "_AUTHENTICATION" in text or "SASL authentication error" in text:
            _user, _password, names = kafka.credentials(stage)
            return (f"Kafka at {kafka.brokers} refused the credentials of {names} "
                    f"({kafka.sasl_mechanism or 'SASL'} authentication failed): check the password")
        if "SSL handshake failed" in text:
            return (f"TLS to Kafka at {kafka.brokers} failed ({_cause(text)}): check KAFKA_SSL_CA_LOCATION "
                    "and KAFKA_SECURITY_PROTOCOL")
        if protocol in ("PLAINTEXT", "SASL_PLAINTEXT") and any(mark in text for mark in _PLAINTEXT_AT_TLS):
            return (f"Kafka at {kafka.brokers} closed the connection before the first answer: it expects TLS "
                    f"(or SASL), but KAFKA_SECURITY_PROTOCOL is {protocol}")
    return None


# The broker's authorizer refusals, as librdkafka names them, and what the missing ACL is about.
_DENIALS = {
    "TOPIC_AUTHORIZATION_FAILED": "a topic",
    "GROUP_AUTHORIZATION_FAILED": "its consumer group",
    "TRANSACTIONAL_ID_AUTHORIZATION_FAILED": "its transactional id",
    "CLUSTER_AUTHORIZATION_FAILED": "the cluster",
}


def denied_access(text: str) -> str | None:
    """If a Kafka error text is an authorization refusal, one line saying what to grant; else None."""
    for code, what in _DENIALS.items():
        if code in text:
            return (f"not authorized ({code}): this stage's principal has no ACL for {what}; grant it "
                    f"(docs/operations.md, ACLs per stage) — not retried. Kafka said: {text}")
    return None


def _cause(text: str) -> str:
    """The part of librdkafka's SSL message after the broker address, without the timing suffix."""
    cause = text.split("SSL handshake failed: ", 1)[-1]
    return cause.split(" (after ", 1)[0].strip()


def check_access(kafka: KafkaSettings, stage: Stage | None = None, timeout_s: float = 5.0) -> None:
    """Ask for metadata as `stage`'s principal; raise KafkaAccessError on a security failure.

    A broker that is merely not there (connection refused: down, restarting) or slow is not
    this probe's business: it returns at once, or after `timeout_s` without an answer, and the
    stage waits and retries as it always did. A refusal shows within the first handshake.
    """
    messages: list[str] = []
    logger = logging.Logger("streaming.kernel.kafka_access.probe")  # not registered: nothing else sees it
    logger.addHandler(_Collector(messages))

    def on_error(err: KafkaError) -> None:
        messages.append(f"{err.name()} {err.str()}")

    conf: dict[str, Any] = {
        **kafka.client_base(stage),
        "error_cb": on_error,
        "logger": logger,
        # Fail fast on the first refused attempt; the probe itself decides how long to wait.
        "reconnect.backoff.ms": 200,
        "reconnect.backoff.max.ms": 1_000,
    }
    try:
        admin = AdminClient(conf)
    except KafkaException as exc:  # e.g. ssl.ca.location names no readable file
        text = exc.args[0].str()
        _user, password, _names = kafka.credentials(stage)
        if password is not None:
            text = text.replace(password.get_secret_value(), "***")
        raise KafkaAccessError(f"the Kafka client settings were refused ({text}): check the KAFKA_* "
                               "security settings (KAFKA_SSL_CA_LOCATION, KAFKA_SECURITY_PROTOCOL, ...)") from None
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            admin.list_topics(timeout=1.0)
            return
        except KafkaException:
            pass  # the cause, if it is one we know, arrives through error_cb
        admin.poll(0.2)  # serves error_cb and the logger
        problem = access_problem(kafka, stage, messages)
        if problem is not None:
            raise KafkaAccessError(problem)
        if any("Connection refused" in m for m in messages):
            return  # nobody listens: the stage's own retries handle a broker that is away

