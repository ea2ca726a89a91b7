"""The Snowflake setup scripts, rendered from the warehouse schema of streaming/kernel/warehouse/schema.py.

`snowflake/00_setup.sql` and `snowflake/01_views.sql` are renderings of that schema in the
Snowflake dialect (`python -m tick_platform.warehouse_sql` rewrites them; a test keeps them in
sync), and the DuckDB warehouse is created from the same definitions, so the two targets cannot
drift apart. The table names are re-exported here for the assets that write them.
"""

from __future__ import annotations

import sys
from pathlib import Path

from streaming.kernel.warehouse.dialect import SNOWFLAKE
from streaming.kernel.warehouse.schema import (
    DIM_CALENDAR,
    DIM_SYMBOL,
    FACT_1S,
    FACTS_60S,
    FACTS_300S,
    TABLES,
    VIEWS,
    Table,
    schema_statements,
    view_statements,
)

FACT_60S = FACTS_60S.table
FACT_300S = FACTS_300S.table

__all__ = [
    "DIM_CALENDAR",
    "DIM_SYMBOL",
    "FACT_1S",
    "FACT_60S",
    "FACT_300S",
    "TABLES",
    "VIEWS",
    "Table",
    "snowflake_setup_script",
    "snowflake_views_script",
    "write_snowflake_scripts",
]


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
    body = ";\n\n".join(schema_statements(SNOWFLAKE))
    return f"{_SNOWFLAKE_PREAMBLE}\n{body};\n\n{_SNOWFLAKE_GRANTS}"


def snowflake_views_script() -> str:
    """The text of snowflake/01_views.sql."""
    head = (
        "-- MART views of the tick platform (rendered from tick_platform/warehouse_sql.py).\n"
        "USE DATABASE TICK_PLATFORM;\n\n"
    )
    body = ";\n\n".join(view_statements())
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
