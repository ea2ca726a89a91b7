"""The warehouse's tables and views, defined once and rendered for Snowflake or DuckDB.

`snowflake/00_setup.sql` and `snowflake/01_views.sql` are renderings of this module
(`python -m tick_platform.warehouse_sql` rewrites them; a test keeps them in sync),
and the DuckDB warehouse is created from the same definitions, so the two dialects
cannot drift apart.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path


class Dialect(StrEnum):
    """The SQL dialects the warehouse speaks."""

    SNOWFLAKE = "snowflake"
    DUCKDB = "duckdb"


# logical type -> (Snowflake, DuckDB); DuckDB has no NUMBER / TIMESTAMP_NTZ.
_TYPES: dict[str, tuple[str, str]] = {
    "text": ("VARCHAR", "VARCHAR"),
    "price": ("NUMBER(18,6)", "DECIMAL(18,6)"),
    "money": ("NUMBER(24,6)", "DECIMAL(24,6)"),
    "int": ("NUMBER(38,0)", "BIGINT"),
    "ts": ("TIMESTAMP_NTZ", "TIMESTAMP"),
    "date": ("DATE", "DATE"),
    "bool": ("BOOLEAN", "BOOLEAN"),
}


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
        return f"{self.schema}.{self.name}"

    @property
    def column_names(self) -> list[str]:
        return [c.name for c in self.columns]


SCHEMAS = ("RAW", "CORE", "MART")


def _fact_columns() -> tuple[Column, ...]:
    return (
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


FACT_60S = Table("CORE", "FACT_TICKS_60S", _fact_columns(), ("BAR_ID",))
FACT_300S = Table("CORE", "FACT_TICKS_300S", _fact_columns(), ("BAR_ID",))
FACT_1S = Table("CORE", "FACT_TICKS_1S", _fact_columns(), ("BAR_ID",))
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

TABLES: tuple[Table, ...] = (FACT_1S, FACT_60S, FACT_300S, DIM_SYMBOL, DIM_CALENDAR)

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
    idx = 0 if dialect is Dialect.SNOWFLAKE else 1
    cols = [f"    {c.name} {_TYPES[c.kind][idx]}{'' if c.nullable else ' NOT NULL'}" for c in table.columns]
    if table.primary_key:
        cols.append(f"    PRIMARY KEY ({', '.join(table.primary_key)})")
    body = ",\n".join(cols)
    return f"CREATE TABLE IF NOT EXISTS {table.qualified} (\n{body}\n)"


def render_view(name: str, dialect: Dialect, if_missing: bool = False) -> str:
    """One MART view (same SQL in both dialects): `CREATE OR REPLACE VIEW`, or with `if_missing`
    `CREATE VIEW IF NOT EXISTS`, which leaves an existing view (and its grants) alone."""
    create = "CREATE VIEW IF NOT EXISTS" if if_missing else "CREATE OR REPLACE VIEW"
    return f"{create} {name} AS{VIEWS[name]}"


def schema_statements(dialect: Dialect) -> list[str]:
    """Schemas and tables (no views), idempotent: what a loader runs on first use."""
    stmts = [f"CREATE SCHEMA IF NOT EXISTS {s}" for s in SCHEMAS]
    stmts += [render_table(t, dialect) for t in TABLES]
    return stmts


def view_statements(dialect: Dialect, if_missing: bool = False) -> list[str]:
    """The MART views: replaced (the setup script), or created only where missing (the loader)."""
    return [render_view(name, dialect, if_missing) for name in VIEWS]


_SNOWFLAKE_PREAMBLE = """\
-- Snowflake setup of the tick platform: role, XS warehouse, database, schemas, tables.
-- Rendered from tick_platform/warehouse_sql.py (`python -m tick_platform.warehouse_sql`);
-- edit that module, not this file. Run once as ACCOUNTADMIN (or a role with CREATE ROLE,
-- CREATE WAREHOUSE and CREATE DATABASE); the loader re-creates missing tables itself.
USE ROLE ACCOUNTADMIN;
CREATE ROLE IF NOT EXISTS ROLE_STREAMING_PIPELINE;
CREATE WAREHOUSE IF NOT EXISTS WH_STREAMING_XS
    WAREHOUSE_SIZE = XSMALL AUTO_SUSPEND = 60 AUTO_RESUME = TRUE INITIALLY_SUSPENDED = TRUE;
CREATE DATABASE IF NOT EXISTS TICK_PLATFORM;
GRANT USAGE ON WAREHOUSE WH_STREAMING_XS TO ROLE ROLE_STREAMING_PIPELINE;
GRANT USAGE, CREATE SCHEMA ON DATABASE TICK_PLATFORM TO ROLE ROLE_STREAMING_PIPELINE;
USE DATABASE TICK_PLATFORM;
"""

_SNOWFLAKE_GRANTS = """\
CREATE STAGE IF NOT EXISTS RAW.RAW_STAGE FILE_FORMAT = (TYPE = JSON);
GRANT ALL ON SCHEMA RAW TO ROLE ROLE_STREAMING_PIPELINE;
GRANT ALL ON SCHEMA CORE TO ROLE ROLE_STREAMING_PIPELINE;
GRANT ALL ON SCHEMA MART TO ROLE ROLE_STREAMING_PIPELINE;
GRANT ALL ON ALL TABLES IN SCHEMA RAW TO ROLE ROLE_STREAMING_PIPELINE;
GRANT ALL ON ALL TABLES IN SCHEMA CORE TO ROLE ROLE_STREAMING_PIPELINE;
GRANT READ, WRITE ON STAGE RAW.RAW_STAGE TO ROLE ROLE_STREAMING_PIPELINE;
"""


def snowflake_setup_script() -> str:
    """The text of snowflake/00_setup.sql."""
    body = ";\n\n".join(schema_statements(Dialect.SNOWFLAKE))
    return f"{_SNOWFLAKE_PREAMBLE}\n{body};\n\n{_SNOWFLAKE_GRANTS}"


def snowflake_views_script() -> str:
    """The text of snowflake/01_views.sql."""
    head = (
        "-- MART views of the tick platform (rendered from tick_platform/warehouse_sql.py).\n"
        "USE DATABASE TICK_PLATFORM;\n\n"
    )
    body = ";\n\n".join(view_statements(Dialect.SNOWFLAKE))
    grants = "\n\nGRANT SELECT ON ALL VIEWS IN SCHEMA MART TO ROLE ROLE_STREAMING_PIPELINE;\n"
    return f"{head}{body};{grants}"


SQL_DIR = Path(__file__).resolve().parent.parent / "snowflake"


def write_snowflake_scripts(folder: Path = SQL_DIR) -> list[Path]:
    """Rewrite snowflake/00_setup.sql and 01_views.sql from the definitions above."""
    folder.mkdir(parents=True, exist_ok=True)
    out = [folder / "00_setup.sql", folder / "01_views.sql"]
    out[0].write_text(snowflake_setup_script())
    out[1].write_text(snowflake_views_script())
    return out


if __name__ == "__main__":
    for path in write_snowflake_scripts():
        sys.stdout.write(f"wrote {path}\n")
