"""Reading and replacing fact rows in the warehouse (dialect-neutral SQL over WarehouseConnection).

The replace loop runs over the fact registry (`FactSpec` -> its rows): a new resolution is one
more entry in `streaming/kernel/warehouse/schema.py`, not another parameter here.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

import polars as pl

from streaming.kernel.errors import TickPlatformError
from streaming.kernel.warehouse.connection import WarehouseConnection
from streaming.kernel.warehouse.schema import LOAD_TS, FactSpec, Table
from tick_platform.rollup import FACT_COLUMNS, FACT_SCHEMA, dedupe_by_bar_id, stamp_load_ts
from tick_platform.validation import compare_rows

ALL_COLUMNS = [*FACT_COLUMNS, LOAD_TS]
_FLOATS = ["OPEN", "HIGH", "LOW", "CLOSE", "NOTIONAL", "VWAP"]


class RetainedWindowError(TickPlatformError):
    """Re-reading a window would change its fact rows, but the topic no longer holds all its bars."""


@dataclass(frozen=True)
class RetentionGuard:
    """The window was read from truncated partitions: refuse to change rows the warehouse already holds.

    On a truncated partition the bars before its low offset are gone, and a window before them
    reads fewer bars or none at all. Replacing its rows would wipe good facts, silently. The same
    rows written again are harmless, and so are rows for a window the warehouse does not hold yet
    (a live window on a partition that was quiet for longer than the retention).
    """

    truncated: list[int]
    topic: str


def naive_utc(ms: int) -> datetime:
    """A naive UTC datetime (TIMESTAMP / TIMESTAMP_NTZ) for epoch ms."""
    return datetime.fromtimestamp(ms / 1000, tz=UTC).replace(tzinfo=None)


def normalize(rows: pl.DataFrame) -> pl.DataFrame:
    """Warehouse rows with the rollup's dtypes (DECIMAL -> float, ms timestamps), sorted by BAR_ID."""
    schema = {**FACT_SCHEMA, LOAD_TS: pl.Datetime("ms")}
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
        return pl.DataFrame(schema={**FACT_SCHEMA, LOAD_TS: pl.Datetime("ms")})
    return normalize(frame)


def _refuse_retention_loss(
    guard: RetentionGuard, spec: FactSpec, old: pl.DataFrame, new: pl.DataFrame, start_ms: int, end_ms: int
) -> None:
    if old.is_empty():
        return
    changed = compare_rows(old, new)
    if changed:
        raise RetainedWindowError(
            f"{guard.topic} no longer holds every bar of [{naive_utc(start_ms):%Y-%m-%d %H:%M}, "
            f"{naive_utc(end_ms):%Y-%m-%d %H:%M}) UTC: retention deleted the oldest offsets of partition(s) "
            f"{guard.truncated}; re-reading it would change {len(changed)} of its {old.height} "
            f"{spec.window_s} s rows, so the warehouse rows are kept (raise KAFKA_RETENTION_MS, or re-replay "
            "the source files to rebuild it)"
        )


def replace_window(
    conn: WarehouseConnection,
    start_ms: int,
    end_ms: int,
    rows: Mapping[FactSpec, pl.DataFrame],
    now: datetime | None = None,
    guard: RetentionGuard | None = None,
) -> dict[str, int]:
    """Replace every given fact table's rows of `[start_ms, end_ms)` in ONE transaction.

    Each table's current rows are read once: to keep the LOAD_TS of unchanged rows (so a
    re-materialization leaves the tables identical) and, with a `guard`, to refuse a replace that
    would change rows retention no longer backs (RetainedWindowError, nothing written).
    Returns the number of rows written per table name.
    """
    stamp = now or datetime.now(tz=UTC).replace(tzinfo=None)
    conn.ensure_schema()  # DDL before BEGIN: it would commit an open Snowflake transaction
    batches: list[tuple[Table, pl.DataFrame]] = []
    for spec, frame in rows.items():  # the registry's order: finest first, so its message comes first
        old = read_rows(conn, spec.table, start_ms, end_ms)
        new = dedupe_by_bar_id(frame)
        if guard is not None:
            _refuse_retention_loss(guard, spec, old, new, start_ms, end_ms)
        batches.append((spec.table, stamp_load_ts(new, old, stamp)))
    written: dict[str, int] = {}
    with conn.transaction():
        for table, batch in batches:
            conn.execute(
                f"DELETE FROM {table.qualified} WHERE START_TS >= {{p}} AND START_TS < {{p}}",
                [naive_utc(start_ms), naive_utc(end_ms)],
            )
            conn.insert_frame(table.qualified, batch.select(ALL_COLUMNS))
            written[table.name] = batch.height
    return written
