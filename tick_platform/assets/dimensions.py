"""dim_symbol and dim_calendar: seeding assets of the warehouse's dimensions."""

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import polars as pl
from dagster import AssetExecutionContext, AutomationCondition, Config, MaterializeResult, MetadataValue, asset

from streaming.kernel.settings import PROJECT_ROOT
from tick_platform.assets.facts import FACT_60S_KEY, WAREHOUSE_POOL, WAREHOUSE_RETRY
from tick_platform.calendar import SessionHours, session_minutes
from tick_platform.resources import WarehouseConnection, WarehouseResource
from tick_platform.warehouse_sql import DIM_CALENDAR, DIM_SYMBOL, FACT_60S, Table

DEFAULT_REFERENCE = PROJECT_ROOT / "data" / "reference" / "symbols.csv"


class SymbolReferenceConfig(Config):
    """Optional reference data: a CSV with SYMBOL[,NAME][,EXCHANGE] columns."""

    reference_csv: str = str(DEFAULT_REFERENCE)


def replace_table(conn: WarehouseConnection, table: Table, frame: pl.DataFrame) -> None:
    """Replace a whole dimension table in one transaction."""
    conn.ensure_schema()
    with conn.transaction():
        conn.execute(f"DELETE FROM {table.qualified}")
        conn.insert_frame(table.qualified, frame.select(table.column_names))


def merge_symbols(seen: pl.DataFrame, reference: pl.DataFrame | None, now: datetime) -> pl.DataFrame:
    """Symbols seen in the facts, enriched with (and completed by) the reference rows."""
    ref = reference if reference is not None else pl.DataFrame(schema={"SYMBOL": pl.String()})
    for col in ("NAME", "EXCHANGE"):
        if col not in ref.columns:
            ref = ref.with_columns(pl.lit(None, dtype=pl.String()).alias(col))
    ref = ref.select(pl.col("SYMBOL").cast(pl.String).str.strip_chars().str.to_uppercase(), "NAME", "EXCHANGE").unique(
        "SYMBOL"
    )
    seen = seen.select(
        pl.col("SYMBOL").cast(pl.String),
        pl.col("FIRST_SEEN_TS").cast(pl.Datetime("us")),
        pl.col("LAST_SEEN_TS").cast(pl.Datetime("us")),
    )
    joined = seen.join(ref, on="SYMBOL", how="full", coalesce=True)
    return (
        joined.with_columns(
            pl.when(pl.col("FIRST_SEEN_TS").is_null())
            .then(pl.lit("reference"))
            .when(pl.col("NAME").is_null() & pl.col("EXCHANGE").is_null())
            .then(pl.lit("seen"))
            .otherwise(pl.lit("seen+reference"))
            .alias("SOURCE"),
            pl.lit(now).cast(pl.Datetime("us")).alias("LOAD_TS"),
        )
        .select(DIM_SYMBOL.column_names)
        .sort("SYMBOL")
    )


# Refreshed by the `dimensions_automation` sensor after new fact partitions land. Without the
# "no dependency missing" clause: most 5-minute fact partitions are always missing (nights, weekends).
REFRESH_AFTER_FACTS = AutomationCondition.eager().without(~AutomationCondition.any_deps_missing())


@asset(deps=[FACT_60S_KEY], group_name="dimensions", pool=WAREHOUSE_POOL, kinds={"sql"},
       automation_condition=REFRESH_AFTER_FACTS, retry_policy=WAREHOUSE_RETRY)
def dim_symbol(
    context: AssetExecutionContext, config: SymbolReferenceConfig, warehouse: WarehouseResource
) -> MaterializeResult[Any]:
    """CORE.DIM_SYMBOL: every symbol seen in the facts, plus the reference CSV where given."""
    path = Path(config.reference_csv)
    reference = pl.read_csv(path, infer_schema=False) if path.is_file() else None
    now = datetime.now(tz=UTC).replace(tzinfo=None)
    with warehouse.connect() as conn:
        conn.ensure_schema()
        seen = conn.query(
            "SELECT SYMBOL, MIN(START_TS) AS FIRST_SEEN_TS, MAX(END_TS) AS LAST_SEEN_TS "
            f"FROM {FACT_60S.qualified} GROUP BY SYMBOL"
        )
        if seen.is_empty():
            seen = pl.DataFrame(
                schema={"SYMBOL": pl.String(), "FIRST_SEEN_TS": pl.Datetime("us"), "LAST_SEEN_TS": pl.Datetime("us")}
            )
        frame = merge_symbols(seen, reference, now)
        replace_table(conn, DIM_SYMBOL, frame)
    context.log.info(f"dim_symbol: {frame.height} symbols (reference {'used' if reference is not None else 'absent'})")
    return MaterializeResult(
        metadata={
            "rows": MetadataValue.int(frame.height),
            "symbols": MetadataValue.json(frame["SYMBOL"].to_list()[:100]),
            "reference_csv": MetadataValue.text(str(path) if reference is not None else "(none)"),
        }
    )


@asset(deps=[FACT_60S_KEY], group_name="dimensions", pool=WAREHOUSE_POOL, kinds={"sql"},
       automation_condition=REFRESH_AFTER_FACTS, retry_policy=WAREHOUSE_RETRY)
def dim_calendar(context: AssetExecutionContext, warehouse: WarehouseResource) -> MaterializeResult[Any]:
    """CORE.DIM_CALENDAR: the trading minutes of the current year and every year in the facts.

    From the same calendar as the facts' partitions: the session hours and exchange the latest fact
    run recorded (NYSE regular hours before any), holidays and early closes from exchange_calendars.
    """
    hours, exchange = _facts_calendar(context)
    with warehouse.connect() as conn:
        conn.ensure_schema()
        seen = conn.query(f"SELECT DISTINCT EXTRACT(YEAR FROM START_TS) AS Y FROM {FACT_60S.qualified}")
        years = (
            sorted({datetime.now(tz=UTC).year, *(int(y) for y in seen["Y"].to_list() if y is not None)})
            if seen.height
            else [datetime.now(tz=UTC).year]
        )
        frame = session_minutes(years, hours, exchange)
        replace_table(conn, DIM_CALENDAR, frame)
    context.log.info(f"dim_calendar: {frame.height} trading minutes of {exchange} ({hours} hours) for {years}")
    return MaterializeResult(
        metadata={
            "rows": MetadataValue.int(frame.height),
            "years": MetadataValue.json(years),
            "session_hours": MetadataValue.text(hours),
            "exchange": MetadataValue.text(exchange),
        }
    )


def _facts_calendar(context: AssetExecutionContext) -> tuple[SessionHours, str]:
    """The session hours and exchange of the latest fact materialization (defaults before any)."""
    event = context.instance.get_latest_materialization_event(FACT_60S_KEY)
    meta = event.asset_materialization.metadata if event and event.asset_materialization else {}
    extended = "session_hours" in meta and meta["session_hours"].value == "extended"
    hours: SessionHours = "extended" if extended else "regular"
    return hours, str(meta["exchange"].value) if "exchange" in meta else "XNYS"
