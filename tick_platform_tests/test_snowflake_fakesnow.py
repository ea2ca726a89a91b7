"""The Snowflake code path (dagster-snowflake SnowflakeResource) under fakesnow, and the SQL scripts."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import fakesnow
import polars as pl
import pytest
import snowflake.connector
from dagster import DagsterInstance

from streaming.config import KafkaSettings, load_settings
from tick_platform.backfill import materialize_facts
from tick_platform.warehouse_sql import VIEWS, snowflake_setup_script, snowflake_views_script
from tick_platform_tests.test_platform_support import (
    assert_facts_equal,
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
        "RAW.TICKS_RAW",
        "NUMBER(18,6)",
        "TIMESTAMP_NTZ",
    ):
        assert needle in setup, needle


@pytest.mark.kafka
def test_day_backfill_through_snowflake_resource_on_fakesnow(
    kafka: KafkaSettings, sample_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ticks = read_kibot(sample_path)
    produce_bars(kafka, bars_from_ticks(ticks))
    for name, value in {
        "SNOWFLAKE_TARGET": "snowflake",
        "SNOW_ACCOUNT": "fake",
        "SNOW_USER": "loader",
        "SNOW_PASSWORD": "pw",
    }.items():
        monkeypatch.setenv(name, value)
    settings = load_settings()
    assert settings.use_snowflake
    start, end = datetime(2010, 2, 17, 14, 30, tzinfo=UTC), datetime(2010, 2, 17, 20, 45, tzinfo=UTC)
    with fakesnow.patch():
        report = materialize_facts(
            start, end, settings, kafka=kafka, instance=DagsterInstance.ephemeral(), with_dimensions=False
        )
        conn = snowflake.connector.connect(
            account="fake", user="loader", password="pw", database="TICK_PLATFORM", schema="CORE"
        )
        cur = conn.cursor()
        frames = {}
        for table in ("FACT_TICKS_60S", "FACT_TICKS_300S"):
            cur.execute(f"SELECT * FROM CORE.{table} ORDER BY BAR_ID")
            names = [d[0] for d in cur.description]
            frames[table] = pl.DataFrame(
                [tuple(r) for r in cur.fetchall()], schema=names, orient="row", infer_schema_length=None
            )
        view_counts = {}
        for view in VIEWS:
            cur.execute(f"SELECT COUNT(*) FROM {view}")
            view_counts[view] = cur.fetchone()[0]  # type: ignore[index]
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
    assert all(n > 0 for n in view_counts.values()), view_counts
    assert again.success and after == (374, 374)  # re-run replaced, never duplicated
