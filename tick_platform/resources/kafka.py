"""The Kafka resource: the same settings as the daemons (streaming.kernel.settings), SASL/SSL passed through."""

from __future__ import annotations

from typing import Any

from dagster import ConfigurableResource

from streaming.kernel.settings import KafkaSettings, Settings, load_settings


class KafkaResource(ConfigurableResource):  # type: ignore[type-arg]
    """Kafka as the facts see it: brokers and topics from `.env`, optionally overridden here.

    Secrets (SASL password) are never part of the Dagster config: they are read from
    the environment / env file when a client is built.
    """

    brokers: str | None = None
    topic_raw: str | None = None
    topic_agg: str | None = None
    topic_dlq: str | None = None
    idle_timeout_ms: int | None = None
    env_file: str | None = None

    def settings(self) -> Settings:
        """All settings, with this resource's overrides applied to the KAFKA_ section."""
        overrides: dict[str, Any] = {
            "brokers": self.brokers,
            "topic_raw": self.topic_raw,
            "topic_agg": self.topic_agg,
            "topic_dlq": self.topic_dlq,
        }
        return load_settings(self.env_file, kafka=overrides)

    def kafka(self) -> KafkaSettings:
        """KafkaSettings for clients (client_base() carries SASL/SSL)."""
        return self.settings().kafka

    def horizon_ms(self) -> int:
        """How long after a window revisions may still arrive (0 unless AGG_LATE_POLICY=revise)."""
        agg = self.settings().agg
        return agg.revise_horizon_ms if agg.late_policy == "revise" else 0

    def idle_ms(self) -> int:
        """The idle timeout after which a quiet partition no longer holds windows open."""
        return self.idle_timeout_ms if self.idle_timeout_ms is not None else self.settings().agg.idle_timeout_ms

    def lateness_ms(self) -> int:
        """How long after a window's end its bars can still appear (grace + idle timeout + horizon)."""
        settings = self.settings()
        return settings.agg_grace_ms + self.idle_ms() + self.horizon_ms()

    @classmethod
    def from_settings(cls, kafka: KafkaSettings, idle_timeout_ms: int | None = None,
                      env_file: str | None = None) -> KafkaResource:
        """A resource pointing at the brokers and topics of `kafka` (tests, the demo).

        `env_file` is where the clients' secrets are read from when a client is built (only its
        path is part of the run config, never a password).
        """
        return cls(
            brokers=kafka.brokers,
            topic_raw=kafka.topic_raw,
            topic_agg=kafka.topic_agg,
            topic_dlq=kafka.topic_dlq,
            idle_timeout_ms=idle_timeout_ms,
            env_file=env_file,
        )
