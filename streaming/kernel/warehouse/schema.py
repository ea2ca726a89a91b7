"""The warehouse's tables, views and fact registry, defined once and rendered per dialect.

`tick_platform/warehouse_sql.py` renders `snowflake/00_setup.sql` and `01_views.sql` from these
definitions (a test keeps them in sync), the loader creates the DuckDB or Snowflake tables from
them, and the dashboard reads the fact tables the registry names. No polars, no driver here.
"""

from __future__ import annotations

from dataclasses import dataclass

from streaming.kernel.errors import WarehouseError
from streaming.kernel.warehouse.dialect import Dialect


@dataclass(frozen=True)
class Column:
    """One column: name, logical type, nullability."""

    name: str
    kind: str
    nullable: bool = True


@dataclass(frozen=True)
class Table:
    """One table with its primary key (informational on Snowflake, enforced by DuckDB)."""

    schema: str
    name: str
    columns: tuple[Column, ...]
    primary_key: tuple[str, ...] = ()

    @property
    def qualified(self) -> str:
        """SCHEMA.NAME."""
        return f"{self.schema}.{self.name}"

    @property
    def column_names(self) -> list[str]:
        """The column names in table order."""
        return [c.name for c in self.columns]


SCHEMAS = ("RAW", "CORE", "MART")

# The fact row, once: the warehouse DDL renders it, the rollups derive their polars schema from it
# (tick_platform/rollup.py), the store selects and inserts these columns in this order.
FACT_COLUMNS: tuple[Column, ...] = (
    Column("BAR_ID", "text", nullable=False),
    Column("SYMBOL", "text", nullable=False),
    Column("OPEN", "price", nullable=False),
    Column("HIGH", "price", nullable=False),
    Column("LOW", "price", nullable=False),
    Column("CLOSE", "price", nullable=False),
    Column("VOLUME", "int", nullable=False),
    Column("NOTIONAL", "money", nullable=False),
    Column("VWAP", "price", nullable=False),
    Column("SOURCE_COUNT", "int", nullable=False),
    Column("START_TS", "ts", nullable=False),
    Column("END_TS", "ts", nullable=False),
    Column("INGEST_TS", "ts"),
    Column("LOAD_TS", "ts", nullable=False),
)
# Stamped by the store when a row's content changes, not computed by the rollups.
LOAD_TS = "LOAD_TS"


def fact_table(name: str) -> Table:
    """A fact table of `CORE` with the one fact row and BAR_ID as its key."""
    return Table("CORE", name, FACT_COLUMNS, ("BAR_ID",))


@dataclass(frozen=True)
class FactSpec:
    """One fact resolution: everything its table, asset, checks and replace loop are generated from."""

    label: str  # "60s": names the checks (fact_60s_matches_bars, ...)
    table: Table
    window_s: int
    description: str
    asset_key: str  # the Dagster asset key (a plain name here: the kernel does not import Dagster)
    # The finer resolution whose rows these roll up exactly (checked, and the asset's upstream);
    # None: rolled up from the 1 s bars directly.
    rolled_from: str | None = None

    @property
    def window_ms(self) -> int:
        """The window in milliseconds."""
        return self.window_s * 1000


FACTS_60S = FactSpec(
    label="60s",
    table=fact_table("FACT_TICKS_60S"),
    window_s=60,
    description="1-minute OHLCV facts (CORE.FACT_TICKS_60S), rolled up from the window's 1 s bars.",
    asset_key="fact_ticks_60s",
)
FACTS_300S = FactSpec(
    label="300s",
    table=fact_table("FACT_TICKS_300S"),
    window_s=300,
    description="5-minute OHLCV facts (CORE.FACT_TICKS_300S), equal to the rollup of their 60 s rows.",
    asset_key="fact_ticks_300s",
    rolled_from="60s",
)
# The registry, finest first. A resolution is one more entry (its window must divide the 5-minute
# partition and be a multiple of the bar size: streaming/kernel/settings.py checks the latter).
FACT_SPECS: tuple[FactSpec, ...] = (FACTS_60S, FACTS_300S)


def fact_spec(label: str) -> FactSpec:
    """The registered resolution labelled `label` (e.g. "60s")."""
    for spec in FACT_SPECS:
        if spec.label == label:
            return spec
    raise WarehouseError(f"no fact resolution {label!r} (known: {', '.join(s.label for s in FACT_SPECS)})")


# Created with the others, written by nothing yet (the history issue decides its source).
FACT_1S = fact_table("FACT_TICKS_1S")
DIM_SYMBOL = Table(
    "CORE",
    "DIM_SYMBOL",
    (
        Column("SYMBOL", "text", nullable=False),
        Column("NAME", "text"),
        Column("EXCHANGE", "text"),
        Column("FIRST_SEEN_TS", "ts"),
        Column("LAST_SEEN_TS", "ts"),
        Column("SOURCE", "text", nullable=False),
        Column("LOAD_TS", "ts", nullable=False),
    ),
    ("SYMBOL",),
)
DIM_CALENDAR = Table(
    "CORE",
    "DIM_CALENDAR",
    (
        Column("MINUTE_TS", "ts", nullable=False),
        Column("MINUTE_ET", "ts", nullable=False),
        Column("TRADE_DATE", "date", nullable=False),
        Column("YEAR", "int", nullable=False),
        Column("WEEKDAY", "int", nullable=False),
        Column("MINUTE_OF_SESSION", "int", nullable=False),
        Column("WINDOW_300S_TS", "ts", nullable=False),
    ),
    ("MINUTE_TS",),
)

TABLES: tuple[Table, ...] = (FACT_1S, *(s.table for s in FACT_SPECS), DIM_SYMBOL, DIM_CALENDAR)

# MART views: plain ANSI SQL that Snowflake and DuckDB both accept. The session of a US
# trading day (14:30-21:00 UTC) never crosses a UTC midnight, so the UTC date is the session.
VIEWS: dict[str, str] = {
    "MART.V_SESSION_VWAP": """
SELECT SYMBOL,
       CAST(START_TS AS DATE) AS TRADE_DATE,
       MIN(START_TS) AS FIRST_MINUTE_TS,
       MAX(END_TS) AS LAST_MINUTE_END_TS,
       SUM(VOLUME) AS VOLUME,
       SUM(NOTIONAL) AS NOTIONAL,
       CAST(SUM(NOTIONAL) / NULLIF(SUM(VOLUME), 0) AS DOUBLE) AS SESSION_VWAP,
       COUNT(*) AS MINUTES
FROM CORE.FACT_TICKS_60S
GROUP BY SYMBOL, CAST(START_TS AS DATE)""",
    "MART.V_TOP_MOVERS_15M": """
WITH LAST_TS AS (
    SELECT SYMBOL, MAX(END_TS) AS AS_OF FROM CORE.FACT_TICKS_60S GROUP BY SYMBOL
),
RECENT AS (
    SELECT F.SYMBOL, F.START_TS, F.OPEN, F.CLOSE, F.VOLUME, L.AS_OF,
           ROW_NUMBER() OVER (PARTITION BY F.SYMBOL ORDER BY F.START_TS) AS RN_FIRST,
           ROW_NUMBER() OVER (PARTITION BY F.SYMBOL ORDER BY F.START_TS DESC) AS RN_LAST
    FROM CORE.FACT_TICKS_60S F
    JOIN LAST_TS L ON F.SYMBOL = L.SYMBOL
    WHERE F.START_TS >= L.AS_OF - INTERVAL '15 minutes'
)
SELECT SYMBOL,
       MAX(AS_OF) AS AS_OF,
       MAX(CASE WHEN RN_FIRST = 1 THEN OPEN END) AS OPEN_15M,
       MAX(CASE WHEN RN_LAST = 1 THEN CLOSE END) AS CLOSE_15M,
       SUM(VOLUME) AS VOLUME_15M,
       CAST(MAX(CASE WHEN RN_LAST = 1 THEN CLOSE END) / MAX(CASE WHEN RN_FIRST = 1 THEN OPEN END) - 1
            AS DOUBLE) AS CHANGE_PCT
FROM RECENT
GROUP BY SYMBOL""",
    "MART.V_VOLATILITY_BANDS": """
SELECT SYMBOL, START_TS, CLOSE, MA_20, MA_20 - 2 * SD_20 AS LOWER_BAND, MA_20 + 2 * SD_20 AS UPPER_BAND
FROM (
    SELECT SYMBOL, START_TS, CLOSE,
           CAST(AVG(CLOSE) OVER (PARTITION BY SYMBOL ORDER BY START_TS
                                 ROWS BETWEEN 19 PRECEDING AND CURRENT ROW) AS DOUBLE) AS MA_20,
           CAST(STDDEV_SAMP(CLOSE) OVER (PARTITION BY SYMBOL ORDER BY START_TS
                                         ROWS BETWEEN 19 PRECEDING AND CURRENT ROW) AS DOUBLE) AS SD_20
    FROM CORE.FACT_TICKS_60S
) BANDS""",
    "MART.V_PIPELINE_MINUTE_METRICS": """
SELECT DATE_TRUNC('minute', LOAD_TS) AS LOAD_MINUTE,
       COUNT(*) AS ROWS_LOADED,
       COUNT(DISTINCT SYMBOL) AS SYMBOLS,
       SUM(SOURCE_COUNT) AS BARS_1S,
       MIN(START_TS) AS MIN_WINDOW_TS,
       MAX(END_TS) AS MAX_WINDOW_END_TS
FROM CORE.FACT_TICKS_60S
GROUP BY DATE_TRUNC('minute', LOAD_TS)""",
}


def render_table(table: Table, dialect: Dialect) -> str:
    """`CREATE TABLE IF NOT EXISTS` for one table in one dialect."""
    cols = [
        f"    {dialect.identifier(c.name)} {dialect.column_type(c.kind)}{'' if c.nullable else ' NOT NULL'}"
        for c in table.columns
    ]
    if table.primary_key:
        cols.append(f"    PRIMARY KEY ({', '.join(table.primary_key)})")
    body = ",\n".join(cols)
    return f"CREATE TABLE IF NOT EXISTS {table.qualified} (\n{body}\n)"


def render_view(name: str, if_missing: bool = False) -> str:
    """One MART view (same SQL in both dialects): `CREATE OR REPLACE VIEW`, or with `if_missing`
    `CREATE VIEW IF NOT EXISTS`, which leaves an existing view (and its grants) alone."""
    create = "CREATE VIEW IF NOT EXISTS" if if_missing else "CREATE OR REPLACE VIEW"
    return f"{create} {name} AS{VIEWS[name]}"


def schema_statements(dialect: Dialect) -> list[str]:
    """Schemas and tables (no views), idempotent: what a loader runs on first use."""
    stmts = [f"CREATE SCHEMA IF NOT EXISTS {s}" for s in SCHEMAS]
    stmts += [render_table(t, dialect) for t in TABLES]
    return stmts


def view_statements(if_missing: bool = False) -> list[str]:
    """The MART views: replaced (the setup script), or created only where missing (the loader)."""
    return [render_view(name, if_missing) for name in VIEWS]
