"""The Snowflake code path (dagster-snowflake SnowflakeResource) under fakesnow, and the SQL scripts."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from unittest import mock

import fakesnow
import polars as pl
import pytest
import snowflake.connector
from dagster import DagsterEventType, DagsterInstance

from streaming.kernel.settings import KafkaSettings, load_settings
from tick_platform.backfill import materialize_facts
from tick_platform.resources import DuckDBWarehouse
from tick_platform.warehouse_sql import VIEWS, snowflake_setup_script, snowflake_views_script
from tick_platform_tests.reliability_support import record_score
from tick_platform_tests.test_platform_support import (
    assert_facts_equal,
    assert_marts,
    bars_from_ticks,
    expected_ohlcv,
    produce_bars,
    read_kibot,
)

SQL_DIR = Path(__file__).resolve().parent.parent / "snowflake"


def test_sql_scripts_are_the_rendered_definitions() -> None:
    assert (SQL_DIR / "00_setup.sql").read_text() == snowflake_setup_script()
    assert (SQL_DIR / "01_views.sql").read_text() == snowflake_views_script()
    setup = snowflake_setup_script()
    for needle in (
        "ROLE_STREAMING_PIPELINE",
        "WAREHOUSE_SIZE = XSMALL AUTO_SUSPEND = 60 AUTO_RESUME = TRUE",
        "RAW.RAW_STAGE",
        "CORE.FACT_TICKS_60S",
        "CORE.FACT_TICKS_300S",
        "CORE.FACT_TICKS_1S",
        "CORE.DIM_SYMBOL",
        "CORE.DIM_CALENDAR",
        "NUMBER(18,6)",
        "TIMESTAMP_NTZ",
    ):
        assert needle in setup, needle
    assert "RAW.TICKS_RAW" not in setup  # nothing writes raw bins to the warehouse


def test_the_loader_creates_missing_views_and_leaves_existing_ones(tmp_path: Path) -> None:
    """ensure_schema runs before every fact and dimension write: it must not re-create the views each time."""
    views = "SELECT table_schema || '.' || table_name AS NAME FROM information_schema.tables WHERE table_type = 'VIEW'"
    with DuckDBWarehouse(duckdb_path=str(tmp_path / "warehouse.duckdb")).connect() as conn:
        conn.ensure_schema()
        assert set(conn.query(views)["NAME"].to_list()) == set(VIEWS)
        conn.execute("CREATE OR REPLACE VIEW MART.V_SESSION_VWAP AS SELECT 1 AS MARKER")
        conn.execute("DROP VIEW MART.V_TOP_MOVERS_15M")
        conn.ensure_schema()
        assert set(conn.query(views)["NAME"].to_list()) == set(VIEWS)  # the missing one is back
        assert conn.query("SELECT * FROM MART.V_SESSION_VWAP").columns == ["MARKER"]  # the existing one left alone


DAY = (datetime(2010, 2, 17, 14, 30, tzinfo=UTC), datetime(2010, 2, 17, 20, 45, tzinfo=UTC))


@pytest.fixture()
def sample_on_snowflake(kafka: KafkaSettings, sample_path: Path, monkeypatch: pytest.MonkeyPatch) -> pl.DataFrame:
    """The sample's bars in ticks.agg.1s and settings that choose the Snowflake warehouse; returns the ticks."""
    ticks = read_kibot(sample_path)
    produce_bars(kafka, bars_from_ticks(ticks))
    for name, value in {"WAREHOUSE_TARGET": "snowflake", "SNOW_ACCOUNT": "fake", "SNOW_USER": "loader",
                        "SNOW_PASSWORD": "pw"}.items():
        monkeypatch.setenv(name, value)
    return ticks


def _fact_tables(cur: Any) -> dict[str, pl.DataFrame]:
    """CORE.FACT_TICKS_60S and _300S as frames, ordered by BAR_ID."""
    frames = {}
    for table in ("FACT_TICKS_60S", "FACT_TICKS_300S"):
        cur.execute(f"SELECT * FROM CORE.{table} ORDER BY BAR_ID")
        names = [d[0] for d in cur.description]
        frames[table] = pl.DataFrame([tuple(r) for r in cur.fetchall()], schema=names, orient="row",
                                     infer_schema_length=None)
    return frames


@pytest.mark.kafka
def test_day_backfill_through_snowflake_resource_on_fakesnow(
    kafka: KafkaSettings, sample_on_snowflake: pl.DataFrame
) -> None:
    ticks = sample_on_snowflake
    settings = load_settings()
    assert settings.warehouse_target == "snowflake"
    start, end = DAY
    with fakesnow.patch():
        report = materialize_facts(
            start, end, settings, kafka=kafka, instance=DagsterInstance.ephemeral(), with_dimensions=False
        )
        conn = snowflake.connector.connect(
            account="fake", user="loader", password="pw", database="TICK_PLATFORM", schema="CORE"
        )
        cur = conn.cursor()
        frames = _fact_tables(cur)
        # The Snowflake rendering of every MART view, held to the same independent figures as DuckDB's.
        assert_marts(cur.execute, expected_ohlcv(ticks, 60))
        again = materialize_facts(
            start, end, settings, kafka=kafka, instance=DagsterInstance.ephemeral(), with_dimensions=False
        )
        cur.execute("SELECT COUNT(*), COUNT(DISTINCT BAR_ID) FROM CORE.FACT_TICKS_60S")
        after = cur.fetchone()
        conn.close()
    assert report.success and report.checks_passed, [c for c in report.checks if not c.passed]
    assert report.rows == {"FACT_TICKS_60S": 374, "FACT_TICKS_300S": 75}
    assert report.metadata["warehouse"] == "snowflake"
    assert_facts_equal(frames["FACT_TICKS_60S"], expected_ohlcv(ticks, 60))
    assert_facts_equal(frames["FACT_TICKS_300S"], expected_ohlcv(ticks, 300))
    assert again.success and after == (374, 374)  # re-run replaced, never duplicated


@pytest.mark.kafka
def test_a_failing_snowflake_connection_is_retried_and_the_window_loads_exactly(
    kafka: KafkaSettings, sample_on_snowflake: pl.DataFrame
) -> None:
    """Snowflake unreachable for the first two connection attempts: the step is retried and loads the rows."""
    ticks = sample_on_snowflake
    settings = load_settings()
    start, end = DAY
    refused: list[dict[str, Any]] = []
    instance = DagsterInstance.ephemeral()
    with fakesnow.patch():
        fake_connect = snowflake.connector.connect

        def unreachable_at_first(**kwargs: Any) -> Any:
            if len(refused) < 2:
                refused.append({**kwargs, "at": time.monotonic()})
                raise snowflake.connector.errors.OperationalError(
                    msg="Could not connect to Snowflake backend after 2 attempt(s).", errno=250001
                )
            return fake_connect(**kwargs)

        with mock.patch.object(snowflake.connector, "connect", unreachable_at_first):
            report = materialize_facts(start, end, settings, kafka=kafka, instance=instance, with_dimensions=False)
        loaded_at = time.monotonic()
        conn = fake_connect(account="fake", user="loader", password="pw", database="TICK_PLATFORM", schema="CORE")
        facts = _fact_tables(conn.cursor())
        conn.close()
    retries = instance.all_logs(report.run_id, of_type=DagsterEventType.STEP_UP_FOR_RETRY)
    assert [r["account"] for r in refused] == ["fake", "fake"]
    assert len(retries) == 2
    assert report.success and report.checks_passed, [c for c in report.checks if not c.passed]
    expected = {"FACT_TICKS_60S": expected_ohlcv(ticks, 60), "FACT_TICKS_300S": expected_ohlcv(ticks, 300)}
    rows_in = sum(f.height for f in expected.values())
    rows_out = sum(f.height for f in facts.values())
    unique = sum(f["BAR_ID"].n_unique() for f in facts.values())
    record_score("warehouse unavailable (Snowflake)", "the first 2 Snowflake connections refused "
                 "(OperationalError 250001); the fact step retried by its RetryPolicy", rows_in, rows_out,
                 max(0, rows_in - unique), rows_out - unique, loaded_at - refused[-1]["at"], unit="fact rows",
                 step_retries=len(retries))
    for table, want in expected.items():
        assert report.rows[table] == want.height == facts[table].height
        assert_facts_equal(facts[table], want)
