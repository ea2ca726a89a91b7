"""SQL dialects as data: everything that differs between warehouse targets, in one record per target.

Code renders SQL from a `Dialect`'s fields and never asks which dialect it holds, so a third
target is one more `Dialect` value; one that lacks a logical column type fails when it is defined,
never by silently borrowing another dialect's types.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Literal

from streaming.kernel.errors import WarehouseError

# The logical column types of the schema (streaming/kernel/warehouse/schema.py).
LOGICAL_TYPES = ("text", "price", "money", "int", "ts", "date", "bool")

BulkInsert = Literal["arrow_scan", "executemany"]


@dataclass(frozen=True)
class Dialect:
    """One SQL dialect: types, parameter style, transactions, bulk insert and identifier rules."""

    name: str
    types: Mapping[str, str]  # logical type -> column type; must cover LOGICAL_TYPES
    placeholder: str  # the DB-API parameter marker
    begin: str
    commit: str = "COMMIT"
    rollback: str = "ROLLBACK"
    # arrow_scan: the driver registers an Arrow table and INSERT ... SELECT reads it (zero-copy);
    # executemany: chunks of parameter rows.
    bulk_insert: BulkInsert = "executemany"
    # A DuckDB cursor is a separate connection (own transaction, own registrations), so statements
    # must run on the connection itself; DB-API drivers in general want a cursor per statement.
    cursor_per_statement: bool = True
    # Unquoted identifiers the dialect folds to upper case (Snowflake) or keeps (DuckDB): the schema
    # uses upper-case names that both read the same, so names must match this rule.
    identifier_pattern: str = r"^[A-Z_][A-Z0-9_]*$"
    max_identifier_length: int = 255
    _compiled: re.Pattern[str] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        missing = [t for t in LOGICAL_TYPES if t not in self.types]
        if missing:
            raise WarehouseError(f"dialect {self.name}: no column type for {', '.join(missing)}")
        object.__setattr__(self, "types", MappingProxyType(dict(self.types)))
        object.__setattr__(self, "_compiled", re.compile(self.identifier_pattern))

    def column_type(self, logical: str) -> str:
        """The column type of a logical type; an unknown one is an error, never a default."""
        try:
            return self.types[logical]
        except KeyError:
            raise WarehouseError(f"dialect {self.name}: unknown logical type {logical!r}") from None

    def identifier(self, name: str) -> str:
        """`name` if it is a safe unquoted identifier of this dialect, else WarehouseError."""
        if len(name) > self.max_identifier_length or not self._compiled.match(name):
            raise WarehouseError(
                f"dialect {self.name}: {name!r} is not an unquoted identifier "
                f"({self.identifier_pattern}, at most {self.max_identifier_length} characters)"
            )
        return name

    def sql(self, text: str) -> str:
        """`text` with every `{p}` replaced by this dialect's parameter placeholder."""
        return text.replace("{p}", self.placeholder)


SNOWFLAKE = Dialect(
    name="snowflake",
    types={
        "text": "VARCHAR",
        "price": "NUMBER(18,6)",
        "money": "NUMBER(24,6)",
        "int": "NUMBER(38,0)",
        "ts": "TIMESTAMP_NTZ",
        "date": "DATE",
        "bool": "BOOLEAN",
    },
    placeholder="%s",
    begin="BEGIN",
    bulk_insert="executemany",
    cursor_per_statement=True,
)

DUCKDB = Dialect(
    name="duckdb",
    # DuckDB has no NUMBER / TIMESTAMP_NTZ.
    types={
        "text": "VARCHAR",
        "price": "DECIMAL(18,6)",
        "money": "DECIMAL(24,6)",
        "int": "BIGINT",
        "ts": "TIMESTAMP",
        "date": "DATE",
        "bool": "BOOLEAN",
    },
    placeholder="?",
    begin="BEGIN TRANSACTION",
    bulk_insert="arrow_scan",
    cursor_per_statement=False,
)

DIALECTS: Mapping[str, Dialect] = MappingProxyType({d.name: d for d in (DUCKDB, SNOWFLAKE)})


def dialect_named(name: str) -> Dialect:
    """The dialect called `name`; an unknown name is an error naming the known ones."""
    try:
        return DIALECTS[name]
    except KeyError:
        raise WarehouseError(f"no SQL dialect {name!r} (known: {', '.join(sorted(DIALECTS))})") from None
