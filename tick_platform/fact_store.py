"""Reading and replacing fact rows in the warehouse (dialect-neutral SQL over WarehouseConnection)."""

from __future__ import annotations

from datetime import UTC, datetime

import polars as pl

from streaming.kernel.errors import TickPlatformError
from tick_platform.resources.warehouse import WarehouseConnection
from tick_platform.rollup import FACT_COLUMNS, FACT_SCHEMA, dedupe_by_bar_id, stamp_load_ts
from tick_platform.validation import compare_rows
from tick_platform.warehouse_sql import FACT_60S, FACT_300S, Table

ALL_COLUMNS = [*FACT_COLUMNS, "LOAD_TS"]
_FLOATS = ["OPEN", "HIGH", "LOW", "CLOSE", "NOTIONAL", "VWAP"]


class RetainedWindowError(TickPlatformError):
    """Re-reading a window would change its fact rows, but the topic no longer holds all its bars."""


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


def refuse_retention_loss(
    conn: WarehouseConnection, start_ms: int, end_ms: int, rows_60s: pl.DataFrame, truncated: list[int], topic: str
) -> None:
    """Refuse to replace a window whose bars retention may have deleted, if that would change its rows.

    On a truncated partition the bars before its low offset are gone, and a window before them
    reads fewer bars or none at all. Replacing its rows would wipe good facts, silently. The same
    rows written again are harmless, and so are rows for a window the warehouse does not hold yet
    (a live window on a partition that was quiet for longer than the retention).
    """
    old = read_rows(conn, FACT_60S, start_ms, end_ms)
    if old.is_empty():
        return
    changed = compare_rows(old, dedupe_by_bar_id(rows_60s))
    if changed:
        raise RetainedWindowError(
            f"{topic} no longer holds every bar of [{naive_utc(start_ms):%Y-%m-%d %H:%M}, "
            f"{naive_utc(end_ms):%Y-%m-%d %H:%M}) UTC: retention deleted the oldest offsets of partition(s) "
            f"{truncated}; re-reading it would change {len(changed)} of its {old.height} 60 s rows, so the "
            "warehouse rows are kept (raise KAFKA_RETENTION_MS, or re-replay the source files to rebuild it)"
        )
