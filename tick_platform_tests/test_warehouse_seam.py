"""The warehouse seam: dialects as data, one class per target, the fact registry driving the store."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import polars as pl
import pytest

from streaming.kernel.errors import WarehouseError
from streaming.kernel.settings import load_settings
from streaming.kernel.warehouse.dialect import DUCKDB, SNOWFLAKE, Dialect, dialect_named
from streaming.kernel.warehouse.schema import FACT_SPECS, FACTS_60S, FACTS_300S, render_table
from streaming.kernel.warehouse.targets import DuckDBFile, SnowflakeAccount, open_warehouse
from tick_platform.fact_store import RetainedWindowError, RetentionGuard, read_rows, replace_window
from tick_platform.resources import DuckDBWarehouse, SnowflakeWarehouse, warehouse_resource
from tick_platform.rollup import bars_frame, rollup_bars
from tick_platform_tests.test_platform_support import bars_from_ticks, read_kibot


def test_a_dialect_without_every_type_fails_when_defined_not_later() -> None:
    with pytest.raises(WarehouseError, match="no column type for money, bool"):
        Dialect(
            name="thirddb",
            types={k: DUCKDB.types[k] for k in ("text", "price", "int", "ts", "date")},
            placeholder="?",
            begin="BEGIN",
        )
    with pytest.raises(WarehouseError, match="no SQL dialect 'thirddb'"):
        dialect_named("thirddb")
    assert dialect_named("snowflake") is SNOWFLAKE


def test_tables_render_from_the_dialect_types_only() -> None:
    duck, snow = render_table(FACTS_60S.table, DUCKDB), render_table(FACTS_60S.table, SNOWFLAKE)
    assert "    OPEN DECIMAL(18,6) NOT NULL" in duck and "    OPEN NUMBER(18,6) NOT NULL" in snow
    assert "    INGEST_TS TIMESTAMP,\n" in duck and "    INGEST_TS TIMESTAMP_NTZ,\n" in snow
    odd = Dialect(name="odd", types={k: f"T_{k.upper()}" for k in DUCKDB.types}, placeholder="$1", begin="BEGIN")
    assert "    VOLUME T_INT NOT NULL" in render_table(FACTS_300S.table, odd)
    assert odd.sql("WHERE A = {p} AND B = {p}") == "WHERE A = $1 AND B = $1"
    with pytest.raises(WarehouseError, match="not an unquoted identifier"):
        DUCKDB.identifier("bad name")


def test_the_settings_name_one_target_for_writers_and_readers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WAREHOUSE_DUCKDB_PATH", str(tmp_path / "w.duckdb"))
    settings = load_settings()
    reader, writer = open_warehouse(settings, read_only=True), warehouse_resource(settings)
    assert isinstance(reader, DuckDBFile) and reader.read_only and reader.path == tmp_path / "w.duckdb"
    assert isinstance(writer, DuckDBWarehouse) and writer.target == "duckdb"
    with pytest.raises(WarehouseError, match="no warehouse file at"):  # a reader never creates the file
        reader.connect().__enter__()
    for name, value in {
        "WAREHOUSE_TARGET": "snowflake",
        "SNOW_ACCOUNT": "acct",
        "SNOW_USER": "u",
        "SNOW_PASSWORD": "pw",
    }.items():
        monkeypatch.setenv(name, value)
    settings = load_settings()
    snow = open_warehouse(settings, read_only=True)
    assert isinstance(snow, SnowflakeAccount) and snow.dialect is SNOWFLAKE
    assert snow.login.connector_kwargs()["password"] == "pw" and "private_key_file" not in snow.login.connector_kwargs()
    assert isinstance(warehouse_resource(settings), SnowflakeWarehouse)
    assert "pw" not in repr(snow.login) and "pw" not in snow.describe()
    monkeypatch.delenv("SNOW_PASSWORD")
    with pytest.raises(WarehouseError, match="SNOW_PASSWORD or SNOW_PRIVATE_KEY_PATH"):
        open_warehouse(load_settings())


def test_replace_by_registry_reads_each_table_once_and_guards_in_the_same_read(
    tmp_path: Path, sample_path: Path
) -> None:
    bars = bars_frame(bars_from_ticks(read_kibot(sample_path)))
    start_ms = int(bars["start_ts_ms"].min() // 300_000 * 300_000)
    end_ms = start_ms + 300_000
    rows = {
        spec: rollup_bars(bars, spec.window_s).filter(pl.col("START_TS").dt.epoch("ms") < end_ms) for spec in FACT_SPECS
    }
    wh = DuckDBFile(tmp_path / "w.duckdb")
    with wh.connect() as conn:
        first = replace_window(conn, start_ms, end_ms, rows, now=datetime(2026, 1, 1))
        assert first == {"FACT_TICKS_60S": rows[FACTS_60S].height, "FACT_TICKS_300S": rows[FACTS_300S].height}
        assert first["FACT_TICKS_300S"] > 0 and first["FACT_TICKS_60S"] >= first["FACT_TICKS_300S"]
        before = {s.label: read_rows(conn, s.table, start_ms, end_ms) for s in FACT_SPECS}
        guard = RetentionGuard([3], "ticks.agg.1s")
        # The same rows again from a truncated read: harmless, written (LOAD_TS kept).
        replace_window(conn, start_ms, end_ms, rows, now=datetime(2026, 1, 2), guard=guard)
        assert all(read_rows(conn, s.table, start_ms, end_ms).equals(before[s.label]) for s in FACT_SPECS)
        # Fewer bars from a truncated read would change rows: refused, nothing written.
        empty = {spec: frame.clear() for spec, frame in rows.items()}
        n = before["60s"].height
        with pytest.raises(RetainedWindowError, match=f"would change {n} of its {n} 60 s rows"):
            replace_window(conn, start_ms, end_ms, empty, now=datetime(2026, 1, 3), guard=guard)
        assert all(read_rows(conn, s.table, start_ms, end_ms).equals(before[s.label]) for s in FACT_SPECS)
        # Without the guard (a complete read) the window is replaced, here by no rows.
        assert replace_window(conn, start_ms, end_ms, empty) == {"FACT_TICKS_60S": 0, "FACT_TICKS_300S": 0}
