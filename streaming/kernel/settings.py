"""Settings of every service, read from `.env` (or ENV_FILE) and the environment.

One pydantic-settings class per prefix, so the names match the seed's `.env`:
KAFKA_*, BROKER_*, REPLAY_*, AGG_*, API_*, SNOW_*, WAREHOUSE_*, DASHBOARD_*
(WAREHOUSE_* also reads the deprecated SNOWFLAKE_* names it replaced).
CLI flags override by passing keyword arguments to `load_settings`.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import AliasChoices, Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict, SettingsError

from streaming.kernel.bar_spec import DEFAULT_BAR_SPEC, BarSpec, bar_topic, time_bars
from streaming.kernel.bounds import SYMBOL_RULE, is_symbol
from streaming.kernel.errors import ConfigError
from streaming.kernel.warehouse.schema import FACT_SPECS

PROJECT_ROOT = Path(__file__).resolve().parents[2]
# The warehouse's fact windows (the registry's resolutions): every bar must lie inside one of each.
FACT_WINDOWS_MS = tuple(spec.window_ms for spec in FACT_SPECS)
# The aggregator's names for the default spec (time-1s); another spec gets `<name>-<spec>` unless set.
DEFAULT_AGG_GROUP_ID = "tick-aggregator"
DEFAULT_AGG_TRANSACTIONAL_ID_PREFIX = "tick-aggregator"

# The stages that may each authenticate as their own Kafka principal (KAFKA_<STAGE>_SASL_*).
Stage = Literal["replay", "agg", "warehouse", "dashboard", "validate"]
STAGES: tuple[Stage, ...] = ("replay", "agg", "warehouse", "dashboard", "validate")


def stage_env_name(stage: Stage, part: Literal["username", "password"]) -> str:
    """The environment name of a stage's SASL username or password, e.g. KAFKA_AGG_SASL_PASSWORD."""
    return f"KAFKA_{stage.upper()}_SASL_{part.upper()}"


def _env_file() -> str | None:
    """The env file to read: ENV_FILE if set, else `.env` in the working directory."""
    chosen = os.environ.get("ENV_FILE")
    if chosen:
        if not Path(chosen).is_file():
            raise ConfigError(f"ENV_FILE: no such file: {chosen}")
        return chosen
    return ".env" if Path(".env").is_file() else None


def _cfg(prefix: str) -> SettingsConfigDict:
    return SettingsConfigDict(env_prefix=prefix, extra="ignore", case_sensitive=False)


class KafkaSettings(BaseSettings):
    """Where the broker is and how the topics are named and shaped."""

    model_config = _cfg("KAFKA_")

    brokers: str = "127.0.0.1:9092"
    topic_raw: str = "ticks.raw"
    # The bar topic. Left unset, load_settings names it after the bar spec (AGG_WINDOW_MS):
    # ticks.agg.1s for 1 s bars, ticks.agg.5s for 5 s bars.
    topic_agg: str = bar_topic(DEFAULT_BAR_SPEC)
    topic_dlq: str = "ticks.dlq"
    partitions: int = Field(6, ge=1, le=1000)
    dlq_partitions: int = Field(1, ge=1, le=1000)
    replication_factor: int = Field(1, ge=1, le=5)
    min_insync_replicas: int = Field(1, ge=1, le=5)
    retention_ms: int = Field(3_600_000, ge=60_000)
    dlq_retention_ms: int = Field(7 * 24 * 3_600_000, ge=60_000)
    # librdkafka names, passed through to every client (SASL/SSL for real clusters).
    security_protocol: str | None = None
    sasl_mechanism: str | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    ssl_ca_location: str | None = None
    client_config: dict[str, str] = Field(default_factory=dict)
    # One principal per stage (least privilege: docs/operations.md, "ACLs per stage"):
    # KAFKA_<STAGE>_SASL_USERNAME / _PASSWORD, each falling back to KAFKA_SASL_USERNAME / _PASSWORD.
    replay_sasl_username: str | None = None
    replay_sasl_password: SecretStr | None = None
    agg_sasl_username: str | None = None
    agg_sasl_password: SecretStr | None = None
    warehouse_sasl_username: str | None = None
    warehouse_sasl_password: SecretStr | None = None
    dashboard_sasl_username: str | None = None
    dashboard_sasl_password: SecretStr | None = None
    validate_sasl_username: str | None = None
    validate_sasl_password: SecretStr | None = None

    @field_validator("brokers")
    @classmethod
    def _brokers_have_ports(cls, value: str) -> str:
        for entry in value.split(","):
            host, _, port = entry.strip().rpartition(":")
            if not host or not port.isdigit():
                raise ValueError(f"expected host:port[,host:port...], got {value!r}")
        return value

    @model_validator(mode="after")
    def _stage_credentials_in_pairs(self) -> KafkaSettings:
        # A stage user without its password would silently authenticate with the shared password
        # (or none): refuse it here, naming the missing setting.
        for stage in STAGES:
            user = getattr(self, f"{stage}_sasl_username")
            password = getattr(self, f"{stage}_sasl_password")
            if bool(user) != bool(password):
                given, missing = ("username", "password") if user else ("password", "username")
                raise ValueError(f"{stage_env_name(stage, missing)} is not set but "  # type: ignore[arg-type]
                                 f"{stage_env_name(stage, given)} is")  # type: ignore[arg-type]
        return self

    def credentials(self, stage: Stage | None = None) -> tuple[str | None, SecretStr | None, str]:
        """(username, password, the settings they came from) of `stage`'s principal.

        A stage's own KAFKA_<STAGE>_SASL_* pair wins; otherwise the shared KAFKA_SASL_* pair.
        The third element names the settings for error messages, never their values.
        """
        if stage is not None and getattr(self, f"{stage}_sasl_username"):
            return (getattr(self, f"{stage}_sasl_username"), getattr(self, f"{stage}_sasl_password"),
                    f"{stage_env_name(stage, 'username')} / {stage_env_name(stage, 'password')}")
        return self.sasl_username, self.sasl_password, "KAFKA_SASL_USERNAME / KAFKA_SASL_PASSWORD"

    def client_base(self, stage: Stage | None = None) -> dict[str, Any]:
        """librdkafka settings every producer, consumer and admin client starts from.

        `stage` picks that stage's principal (KAFKA_<STAGE>_SASL_*); None is the shared one
        (admin tools: topics, smoke).
        """
        conf: dict[str, Any] = {"bootstrap.servers": self.brokers}
        if self.security_protocol:
            conf["security.protocol"] = self.security_protocol
        if self.sasl_mechanism:
            conf["sasl.mechanism"] = self.sasl_mechanism
        username, password, _names = self.credentials(stage)
        if username:
            conf["sasl.username"] = username
        if password:
            conf["sasl.password"] = password.get_secret_value()
        if self.ssl_ca_location:
            conf["ssl.ca.location"] = self.ssl_ca_location
        conf.update(self.client_config)
        return conf


class BrokerSettings(BaseSettings):
    """The local broker that `python -m tick_tools broker up` runs."""

    model_config = _cfg("BROKER_")

    run_dir: Path = PROJECT_ROOT / ".run" / "broker"
    cache_dir: Path = PROJECT_ROOT / ".cache" / "kafka"
    heap: str = Field("1g", pattern=r"^\d+[mMgG]$")
    start_timeout_s: float = Field(90.0, gt=0)


class ReplaySettings(BaseSettings):
    """The replay producer: tick files or the mock API into 10 ms bins."""

    model_config = _cfg("REPLAY_")

    source: str | None = None
    symbol: str | None = None
    speed: float = Field(0.0, ge=0)
    live: bool = False
    loop: bool = False
    spread: bool = True
    bin_ms: int = Field(10, ge=1, le=60_000)
    max_late_ms: int = Field(100, ge=0)
    exactly_once: bool = True
    transactional_id: str = "tick-replay"
    commit_interval_ms: int = Field(100, ge=1)
    chunk_rows: int = Field(200_000, ge=1_000)
    progress_interval_s: float = Field(2.0, gt=0)
    # In-process resumes from the last checkpoint after a failed transaction (exactly-once, files only).
    max_restarts: int = Field(5, ge=0)
    # Paced replays: write a watermark record to every ticks.raw partition this often (0 = never),
    # so the aggregator closes a quiet partition's windows on the replay's clock (docs/aggregator.md).
    watermark_interval_ms: int = Field(0, ge=0)

    @field_validator("symbol")
    @classmethod
    def _symbol_in_pattern(cls, value: str | None) -> str | None:
        # The symbol lands in JSON, a Kafka key and ids: only the one documented pattern is safe there.
        if value is not None and not is_symbol(value):
            raise ValueError(f"not a symbol ({SYMBOL_RULE})")
        return value


class AggSettings(BaseSettings):
    """The bar aggregator (time bars of AGG_WINDOW_MS, 1 s by default)."""

    model_config = _cfg("AGG_")

    window_ms: int = Field(1_000, ge=10)
    grace_ms: int | None = Field(None, ge=0)
    idle_timeout_ms: int = Field(2_000, ge=1)
    late_policy: Literal["dlq", "revise"] = "dlq"
    revise_horizon_ms: int = Field(60_000, ge=0)
    # Left unset, both are suffixed with the bar spec for any spec but time-1s (load_settings), so
    # a 5 s aggregator never joins the 1 s aggregator's group nor fences its transactions.
    group_id: str = DEFAULT_AGG_GROUP_ID
    transactional_id_prefix: str = DEFAULT_AGG_TRANSACTIONAL_ID_PREFIX
    # Stable per-process suffix of transactional.id (and static group.instance.id); default host-pid.
    instance_id: str | None = Field(None, pattern=r"^[A-Za-z0-9._-]{1,100}$")
    exactly_once: bool = True
    commit_interval_ms: int = Field(100, ge=1)
    # ticks.raw written by ONE replay job in event-time order (the pipeline's case): a caught-up,
    # quiet partition may then close windows by the newest event time of all assigned partitions.
    align_watermarks: bool = False
    max_open_windows: int = Field(1_000_000, ge=1)
    progress_interval_s: float = Field(2.0, gt=0)
    # In-process restarts of the Kafka clients after a fatal error (fenced, timed out), from the commits.
    max_restarts: int = Field(5, ge=0)

    @property
    def spec(self) -> BarSpec:
        """The spec of the bars this aggregator cuts (time bars of AGG_WINDOW_MS)."""
        return time_bars(self.window_ms)


class ApiSettings(BaseSettings):
    """The mock tick API."""

    model_config = _cfg("API_")

    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65535)
    data: str | None = None
    queue_max: int = Field(1_000, ge=1)


class SnowSettings(BaseSettings):
    """Snowflake account credentials (secrets only from env/.env)."""

    model_config = _cfg("SNOW_")

    account: str | None = None
    user: str | None = None
    password: SecretStr | None = None
    private_key_path: str | None = None
    private_key_passphrase: SecretStr | None = None
    role: str = "ROLE_STREAMING_PIPELINE"
    warehouse: str = "WH_STREAMING_XS"
    database: str = "TICK_PLATFORM"
    schema_: str = Field("CORE", alias="SNOW_SCHEMA")


def _renamed(name: str) -> Any:
    """A WAREHOUSE_<NAME> field that still accepts its old SNOWFLAKE_<NAME> (deprecated; docs/platform.md)."""
    return AliasChoices(f"WAREHOUSE_{name}", f"SNOWFLAKE_{name}")


class WarehouseSettings(BaseSettings):
    """The warehouse side (WAREHOUSE_*): which target, where DuckDB lives, partitions, the facts' group.

    Each setting still reads its pre-issue-16 name SNOWFLAKE_<NAME> when WAREHOUSE_<NAME> is not set,
    so existing .env files keep working (a deprecated alias; WAREHOUSE_<NAME> wins when both are set).
    """

    # Fields are named by validation aliases (the two accepted environment names); keyword
    # arguments (CLI overrides, tests) use the field names.
    model_config = SettingsConfigDict(env_prefix="WAREHOUSE_", extra="ignore", case_sensitive=False,
                                      populate_by_name=True)

    target: Literal["auto", "duckdb", "snowflake"] = Field("auto", validation_alias=_renamed("TARGET"))
    duckdb_path: Path = Field(PROJECT_ROOT / "data" / "warehouse.duckdb", validation_alias=_renamed("DUCKDB_PATH"))
    # Partitions are the 5-minute windows of the exchange's sessions (78 per NYSE regular day).
    # The default starts at a recent date, so an unset range is under a year of partitions;
    # `make demo` and `make pipeline` start it where the replayed data starts.
    partitions_start: str = Field("2026-01-01", pattern=r"^\d{4}-\d{2}-\d{2}$",
                                  validation_alias=_renamed("PARTITIONS_START"))
    partitions_end: str | None = Field(None, pattern=r"^\d{4}-\d{2}-\d{2}$",  # exclusive; None = open
                                       validation_alias=_renamed("PARTITIONS_END"))
    # Which hours hold fact partitions: the exchange's regular session, or extended hours
    # (04:00-20:00 New York for NYSE), or `always` (every UTC day around the clock: 24/7 markets,
    # replays shifted to now). Bars outside them are counted by the facts' checks.
    session_hours: Literal["regular", "extended", "always"] = Field(
        "regular", validation_alias=_renamed("SESSION_HOURS"))
    exchange: str = Field("XNYS", pattern=r"^[A-Z0-9]{2,8}$",  # an exchange_calendars code
                          validation_alias=_renamed("EXCHANGE"))
    # A backfill is one ranged run per this many sessions (a week by default): a run holds its
    # chunk's bars in memory, and a failure stops at a chunk boundary, the earlier runs kept.
    backfill_sessions_per_run: int = Field(5, ge=1)
    consumer_group: str = Field("tick-platform-facts", validation_alias=_renamed("CONSUMER_GROUP"))
    freshness_sla_s: int = Field(30, ge=1, validation_alias=_renamed("FRESHNESS_SLA_S"))

    @field_validator("partitions_end", mode="before")
    @classmethod
    def _empty_is_open(cls, value: object) -> object:
        return None if value == "" else value

    @model_validator(mode="after")
    def _end_after_start(self) -> WarehouseSettings:
        if self.partitions_end is not None and self.partitions_end <= self.partitions_start:
            raise ValueError(f"WAREHOUSE_PARTITIONS_END: {self.partitions_end} is not after "
                             f"WAREHOUSE_PARTITIONS_START ({self.partitions_start})")
        return self


class DashboardSettings(BaseSettings):
    """The Streamlit live view."""

    model_config = _cfg("DASHBOARD_")

    host: str = "127.0.0.1"
    port: int = Field(8501, ge=1, le=65535)
    history_s: int = Field(300, ge=60, le=900)
    max_bars_per_symbol: int = Field(900, ge=60)
    refresh_ms: int = Field(1_000, ge=200)
    latency_sla_ms: int = Field(750, ge=1)
    freshness_sla_s: int = Field(5, ge=1)


@dataclass(frozen=True)
class Settings:
    """All settings of one process."""

    kafka: KafkaSettings
    broker: BrokerSettings
    replay: ReplaySettings
    agg: AggSettings
    api: ApiSettings
    snow: SnowSettings
    warehouse: WarehouseSettings
    dashboard: DashboardSettings

    @property
    def agg_grace_ms(self) -> int:
        """AGG_GRACE_MS, defaulting to the replay's allowed lateness."""
        return self.agg.grace_ms if self.agg.grace_ms is not None else self.replay.max_late_ms

    @property
    def warehouse_target(self) -> Literal["duckdb", "snowflake"]:
        """WAREHOUSE_TARGET with `auto` resolved: Snowflake when SNOW_ACCOUNT is set, else DuckDB."""
        if self.warehouse.target == "auto":
            return "snowflake" if self.snow.account else "duckdb"
        return self.warehouse.target


_SECTIONS: dict[str, type[BaseSettings]] = {
    "kafka": KafkaSettings,
    "broker": BrokerSettings,
    "replay": ReplaySettings,
    "agg": AggSettings,
    "api": ApiSettings,
    "snow": SnowSettings,
    "warehouse": WarehouseSettings,
    "dashboard": DashboardSettings,
}


def _one_line(section: type[BaseSettings], exc: ValidationError) -> str:
    prefix = str(section.model_config.get("env_prefix", ""))
    err = exc.errors()[0]
    if not err.get("loc"):  # a check across fields: its message names them
        return str(err["msg"]).removeprefix("Value error, ")
    name = str(err["loc"][0])
    env_name = name if name.upper().startswith(prefix.upper()) else f"{prefix}{name}"
    value = err.get("input")
    shown = "" if isinstance(value, dict) else f" (got {value!r})"
    message = str(err["msg"]).removeprefix("Value error, ")  # a field validator's own sentence
    return f"{env_name.upper().rstrip('_')}: {message}{shown}"


def load_settings(env_file: str | None = None, **overrides: dict[str, Any]) -> Settings:
    """Read every section from the env file and environment; `overrides` maps a section to CLI values.

    Raises ConfigError with one line naming the bad setting.
    """
    chosen = env_file if env_file is not None else _env_file()
    if chosen is not None and not Path(chosen).is_file():
        raise ConfigError(f"ENV_FILE: no such file: {chosen}")
    built: dict[str, Any] = {}
    for key, section in _SECTIONS.items():
        values = {k: v for k, v in (overrides.get(key) or {}).items() if v is not None}
        try:
            built[key] = section(_env_file=chosen, **values)  # type: ignore[call-arg]
        except ValidationError as exc:
            raise ConfigError(_one_line(section, exc)) from None
        except SettingsError as exc:  # e.g. a JSON-valued setting that is not JSON
            text = str(exc).splitlines()[0]
            field = text.split('"')[1] if text.count('"') >= 2 else "?"
            prefix = str(section.model_config.get("env_prefix", ""))
            raise ConfigError(f"{prefix}{field}".upper() + f": not valid JSON ({text})") from None
    _check_windows(built["replay"], built["agg"])
    built["kafka"], built["agg"] = _names_of_spec(built["kafka"], built["agg"])
    _warn_deprecated_names(chosen)
    return Settings(**built)


_log = logging.getLogger(__name__)
# The WAREHOUSE_* settings read under their pre-issue-16 SNOWFLAKE_* names (WarehouseSettings).
DEPRECATED_NAMES = {
    f"SNOWFLAKE_{name}": f"WAREHOUSE_{name}"
    for name in (
        "TARGET", "DUCKDB_PATH", "PARTITIONS_START", "PARTITIONS_END", "SESSION_HOURS", "EXCHANGE",
        "CONSUMER_GROUP", "FRESHNESS_SLA_S",
    )
}


def deprecated_names_in_use(env_file: str | None) -> list[str]:
    """The deprecated SNOWFLAKE_* warehouse names set in the environment or `env_file`, sorted."""
    names = {k.upper() for k in os.environ}
    if env_file is not None and Path(env_file).is_file():
        from dotenv import dotenv_values

        names |= {k.upper() for k in dotenv_values(env_file)}
    return sorted(n for n in DEPRECATED_NAMES if n in names)


def _warn_deprecated_names(env_file: str | None) -> None:
    # Still read (AliasChoices), so nothing breaks; the log line says what to rename.
    old = deprecated_names_in_use(env_file)
    if old:
        _log.warning("deprecated setting name(s) %s: rename to %s (read as before until then)",
                     ", ".join(old), ", ".join(DEPRECATED_NAMES[n] for n in old))


def _names_of_spec(kafka: KafkaSettings, agg: AggSettings) -> tuple[KafkaSettings, AggSettings]:
    """The bar topic, group and transactional id of AGG_WINDOW_MS's spec where they were left unset.

    Set in the environment, the env file or a CLI flag, a name wins as given (pydantic records
    every value it was handed in `model_fields_set`, defaults are not among them).
    """
    spec = agg.spec
    if "topic_agg" not in kafka.model_fields_set:
        kafka = kafka.model_copy(update={"topic_agg": bar_topic(spec)})
    if spec != DEFAULT_BAR_SPEC:
        suffixed = {name: f"{getattr(agg, name)}-{spec.text}" for name in ("group_id", "transactional_id_prefix")
                    if name not in agg.model_fields_set}
        agg = agg.model_copy(update=suffixed)
    return kafka, agg


def _check_windows(replay: ReplaySettings, agg: AggSettings) -> None:
    """Bins must tile bars and bars must tile the fact windows, or a bin or bar straddles two windows.

    Checked after CLI overrides are applied (they come in as `overrides`), so `--bin-ms` and
    `--window-ms` are held to the same rule as the env file.
    """
    if agg.window_ms % replay.bin_ms:
        raise ConfigError(f"REPLAY_BIN_MS ({replay.bin_ms}) must divide AGG_WINDOW_MS ({agg.window_ms}): "
                          "a bin would straddle two bars")
    for fact_ms in FACT_WINDOWS_MS:
        if fact_ms % agg.window_ms:
            raise ConfigError(f"AGG_WINDOW_MS ({agg.window_ms}) must divide the fact windows "
                              f"{' and '.join(f'{ms:,} ms' for ms in FACT_WINDOWS_MS)}: "
                              f"a bar would straddle two facts (REPLAY_BIN_MS is {replay.bin_ms})")


def is_configured(name: str, env_file: str | None = None) -> bool:
    """Whether the user set `name` (environment or env file) rather than leaving its default."""
    if name in os.environ or name.lower() in os.environ:
        return True
    chosen = env_file if env_file is not None else _env_file()
    if chosen is None or not Path(chosen).is_file():
        return False
    from dotenv import dotenv_values

    return any(k.upper() == name.upper() for k in dotenv_values(chosen))
