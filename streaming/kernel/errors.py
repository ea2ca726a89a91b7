"""The few named errors of the platform; the CLI turns each into one clear line."""

from __future__ import annotations


class TickPlatformError(Exception):
    """Base of every error the platform raises on purpose."""


class ConfigError(TickPlatformError):
    """A setting has a bad value; the message names the setting."""


class SourceError(TickPlatformError):
    """A tick source cannot be opened or has an unreadable format as a whole."""


class BrokerError(TickPlatformError):
    """The local Kafka broker could not be fetched, started, reached or stopped."""


class InUseError(TickPlatformError):
    """Topics or consumer groups would be deleted while live consumers use them; the message says who."""


class StageKafkaError(BrokerError):
    """A stage's Kafka client failed mid-stream (fenced, fatal, timed out); a restart resumes from its last commit."""


class KafkaAccessError(BrokerError):
    """Kafka refused this principal (credentials, TLS, protocol): retrying cannot help, so nothing retries it."""


class WarehouseError(TickPlatformError):
    """The warehouse could not be reached, refused a statement, or was described inconsistently."""


class WarehouseLockedError(WarehouseError):
    """The DuckDB warehouse file is held by a writer in another process (past the retries)."""
