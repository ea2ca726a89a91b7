"""Reading and replacing fact rows in the warehouse (dialect-neutral SQL over WarehouseConnection)."""

from __future__ import annotations

from datetime import UTC, datetime

import polars as pl

from tick_platform.resources.warehouse import WarehouseConnection
from tick_platform.rollup import FACT_COLUMNS, FACT_SCHEMA, dedupe_by_bar_id, stamp_load_ts
from tick_platform.warehouse_sql import FACT_60S, FACT_300S, Table

ALL_COLUMNS = [*FACT_COLUMNS, "LOAD_TS"]
_FLOATS = ["OPEN", "HIGH", "LOW", "CLOSE", "NOTIONAL", "VWAP"]


def naive_utc(ms: int) -> datetime:
    """A naive UTC datetime (TIMESTAMP / TIMESTAMP_NTZ) for epoch ms."""
    return datetime.fromtimestamp(ms / 1000, tz=UTC).replace(tzinfo=None)


def normalize(rows: pl.DataFrame) -> pl.DataFrame:
    """Warehouse rows with the rollup's dtypes (DECIMAL -> float, ms timestamps), sorted by BAR_ID."""
    schema = {**FACT_SCHEMA, "LOAD_TS": pl.Datetime("ms")}
    if rows.is_empty():
        return pl.DataFrame(schema={c: schema[c] for c in rows.columns if c in schema})
    cast = {c: schema[c] for c in rows.columns if c in schema}
    out = rows.with_columns(pl.col(c).cast(pl.Float64) for c in _FLOATS if c in rows.columns)
    out = out.cast(cast)  # type: ignore[arg-type]
    return out.sort("BAR_ID") if "BAR_ID" in out.columns else out


def read_rows(conn: WarehouseConnection, table: Table, start_ms: int, end_ms: int) -> pl.DataFrame:
    """The table's rows with START_TS in `[start_ms, end_ms)`."""
    cols = ", ".join(ALL_COLUMNS)
    frame = conn.query(
        f"SELECT {cols} FROM {table.qualified} WHERE START_TS >= {{p}} AND START_TS < {{p}} ORDER BY BAR_ID",
        [naive_utc(start_ms), naive_utc(end_ms)],
    )
    if frame.is_empty():
        return pl.DataFrame(schema={**FACT_SCHEMA, "LOAD_TS": pl.Datetime("ms")})
    return normalize(frame)


def replace_window(
    conn: WarehouseConnection,
    start_ms: int,
    end_ms: int,
    rows_60s: pl.DataFrame,
    rows_300s: pl.DataFrame,
    now: datetime | None = None,
) -> dict[str, int]:
    """Replace both fact tables' rows of `[start_ms, end_ms)` in ONE transaction.

    Unchanged rows keep their LOAD_TS, so a re-materialization leaves the tables identical.
    Returns the number of rows written per table.
    """
    stamp = now or datetime.now(tz=UTC).replace(tzinfo=None)
    conn.ensure_schema()  # DDL before BEGIN: it would commit an open Snowflake transaction
    written: dict[str, int] = {}
    batches: list[tuple[Table, pl.DataFrame]] = []
    for table, rows in ((FACT_60S, rows_60s), (FACT_300S, rows_300s)):
        old = read_rows(conn, table, start_ms, end_ms)
        batches.append((table, stamp_load_ts(dedupe_by_bar_id(rows), old, stamp)))
    with conn.transaction():
        for table, rows in batches:
            conn.execute(
                f"DELETE FROM {table.qualified} WHERE START_TS >= {{p}} AND START_TS < {{p}}",
                [naive_utc(start_ms), naive_utc(end_ms)],
            )
            conn.insert_frame(table.qualified, rows.select(ALL_COLUMNS))
            written[table.name] = rows.height
    return written
