"""Settings: .env, ENV_FILE, environment and CLI overrides, one-line errors."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from streaming.kernel.errors import ConfigError
from streaming.kernel.settings import PROJECT_ROOT, deprecated_names_in_use, load_settings


def test_defaults_match_the_design() -> None:
    settings = load_settings()
    assert settings.kafka.topic_raw == "ticks.raw"
    assert settings.kafka.topic_agg == "ticks.agg.1s"
    assert settings.kafka.topic_dlq == "ticks.dlq"
    assert settings.kafka.partitions == 6
    assert settings.kafka.retention_ms == 60 * 60 * 1000
    assert settings.kafka.dlq_retention_ms == 7 * 24 * 60 * 60 * 1000
    assert settings.replay.bin_ms == 10
    assert settings.agg.window_ms == 1000
    assert settings.warehouse_target == "duckdb"


def test_env_file_then_environment_then_cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    env = tmp_path / "custom.env"
    env.write_text("KAFKA_BROKERS=10.0.0.1:9092\nREPLAY_SPEED=5\nAGG_LATE_POLICY=revise\n")
    settings = load_settings(str(env))
    assert (settings.kafka.brokers, settings.replay.speed, settings.agg.late_policy) == (
        "10.0.0.1:9092", 5.0, "revise")
    monkeypatch.setenv("REPLAY_SPEED", "7")
    assert load_settings(str(env)).replay.speed == 7.0
    assert load_settings(str(env), replay={"speed": 9}).replay.speed == 9.0


def test_grace_defaults_to_replay_lateness(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REPLAY_MAX_LATE_MS", "250")
    assert load_settings().agg_grace_ms == 250
    monkeypatch.setenv("AGG_GRACE_MS", "40")
    assert load_settings().agg_grace_ms == 40


def test_snowflake_is_chosen_when_an_account_is_set(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SNOW_ACCOUNT", "xy12345")
    assert load_settings().warehouse_target == "snowflake"
    monkeypatch.setenv("WAREHOUSE_TARGET", "duckdb")
    assert load_settings().warehouse_target == "duckdb"


def test_the_old_snowflake_names_of_the_warehouse_settings_still_work(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """SNOWFLAKE_* (before issue 16) is a deprecated alias of each WAREHOUSE_* setting; the new name wins."""
    for name in ("WAREHOUSE_PARTITIONS_START", "WAREHOUSE_PARTITIONS_END"):
        monkeypatch.delenv(name, raising=False)
    old = tmp_path / "old.env"
    old.write_text("SNOWFLAKE_TARGET=snowflake\nSNOWFLAKE_DUCKDB_PATH=/srv/facts.duckdb\n"
                   "SNOWFLAKE_PARTITIONS_START=2010-02-17\nSNOWFLAKE_PARTITIONS_END=2010-02-19\n"
                   "SNOWFLAKE_CONSUMER_GROUP=old-facts\nSNOWFLAKE_FRESHNESS_SLA_S=45\n")
    assert deprecated_names_in_use(str(old)) == ["SNOWFLAKE_CONSUMER_GROUP", "SNOWFLAKE_DUCKDB_PATH",
        "SNOWFLAKE_FRESHNESS_SLA_S", "SNOWFLAKE_PARTITIONS_END", "SNOWFLAKE_PARTITIONS_START", "SNOWFLAKE_TARGET"]
    wh = load_settings(str(old)).warehouse
    assert (wh.target, str(wh.duckdb_path), wh.partitions_start, wh.partitions_end, wh.consumer_group,
            wh.freshness_sla_s) == ("snowflake", "/srv/facts.duckdb", "2010-02-17", "2010-02-19", "old-facts", 45)
    monkeypatch.setenv("WAREHOUSE_TARGET", "duckdb")
    monkeypatch.setenv("WAREHOUSE_CONSUMER_GROUP", "new-facts")
    wh = load_settings(str(old)).warehouse
    assert (wh.target, wh.consumer_group, wh.partitions_start) == ("duckdb", "new-facts", "2010-02-17")


@pytest.mark.parametrize(
    ("name", "value"),
    [("REPLAY_SPEED", "fast"), ("KAFKA_BROKERS", "nohostport"), ("AGG_LATE_POLICY", "ignore"),
     ("KAFKA_PARTITIONS", "0"), ("DASHBOARD_PORT", "99999"), ("WAREHOUSE_PARTITIONS_END", "2010-02-17"),
     ("WAREHOUSE_PARTITIONS_START", "17.02.2010")],
)
def test_bad_value_names_the_setting(monkeypatch: pytest.MonkeyPatch, name: str, value: str) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(ConfigError) as info:
        load_settings()
    assert str(info.value).startswith(name + ":")
    assert "\n" not in str(info.value)


def test_missing_env_file_is_one_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="ENV_FILE"):
        load_settings(str(tmp_path / "absent.env"))


def test_cli_prints_one_line_not_a_traceback() -> None:
    env = {**os.environ, "REPLAY_SPEED": "fast"}
    proc = subprocess.run(
        [sys.executable, "-m", "streaming", "topics", "bootstrap"],
        capture_output=True, text=True, env=env, cwd=PROJECT_ROOT, timeout=60,
    )
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "REPLAY_SPEED" in lines[0]
