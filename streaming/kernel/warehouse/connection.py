"""`WarehouseConnection`: dialect-neutral SQL over one DB-API connection.

SQL is written once with `{p}` where a parameter goes; the connection renders it with its
dialect's placeholder and runs transactions and bulk inserts the way its dialect says.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import polars as pl

from streaming.kernel.warehouse.dialect import Dialect
from streaming.kernel.warehouse.schema import Table, schema_statements, view_statements

_FRAME_NAME = "_tick_frame"


@dataclass
class WarehouseConnection:
    """A DB-API connection plus its dialect; SQL uses `{p}` where a parameter goes."""

    raw: Any
    dialect: Dialect

    def sql(self, text: str) -> str:
        """`text` with `{p}` replaced by the dialect's placeholder."""
        return self.dialect.sql(text)

    @contextmanager
    def _cursor(self) -> Iterator[Any]:
        if not self.dialect.cursor_per_statement:
            yield self.raw
            return
        cur = self.raw.cursor()
        try:
            yield cur
        finally:
            cur.close()

    def execute(self, text: str, params: Sequence[Any] | None = None) -> None:
        """Run one statement."""
        with self._cursor() as cur:
            cur.execute(self.sql(text), list(params) if params else None)

    def executemany(self, text: str, rows: Sequence[Sequence[Any]]) -> None:
        """Run one statement for many parameter rows."""
        if rows:
            with self._cursor() as cur:
                cur.executemany(self.sql(text), [list(r) for r in rows])

    def query(self, text: str, params: Sequence[Any] | None = None) -> pl.DataFrame:
        """Rows of a query as a polars frame with upper-case column names."""
        with self._cursor() as cur:
            cur.execute(self.sql(text), list(params) if params else None)
            names = [str(d[0]).upper() for d in cur.description]
            rows = cur.fetchall()
        if not rows:
            return pl.DataFrame(schema=dict.fromkeys(names, pl.Null()))
        return pl.DataFrame([tuple(r) for r in rows], schema=names, orient="row", infer_schema_length=None)

    def insert_frame(self, qualified: str, frame: pl.DataFrame, chunk: int = 5_000) -> None:
        """Insert a frame's rows (columns named like the table's) by the dialect's bulk insert method."""
        if frame.is_empty():
            return
        cols = ", ".join(frame.columns)
        if self.dialect.bulk_insert == "arrow_scan":
            self.raw.register(_FRAME_NAME, frame.to_arrow())
            try:
                self.execute(f"INSERT INTO {qualified} ({cols}) SELECT {cols} FROM {_FRAME_NAME}")
            finally:
                self.raw.unregister(_FRAME_NAME)
            return
        placeholders = ", ".join(["{p}"] * frame.width)
        rows = [tuple(r) for r in frame.iter_rows()]
        for i in range(0, len(rows), chunk):
            self.executemany(f"INSERT INTO {qualified} ({cols}) VALUES ({placeholders})", rows[i : i + chunk])

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """The dialect's BEGIN ... COMMIT, ROLLBACK on any error (no DDL inside: it commits on Snowflake)."""
        self.execute(self.dialect.begin)
        try:
            yield
        except BaseException:
            self.execute(self.dialect.rollback)
            raise
        self.execute(self.dialect.commit)

    def table_exists(self, table: Table) -> bool:
        """Whether `table` exists (information_schema, which every target has)."""
        found = self.query(
            "SELECT COUNT(*) AS N FROM information_schema.tables WHERE UPPER(table_schema) = {p} "
            "AND UPPER(table_name) = {p}",
            [table.schema, table.name],
        )
        return bool(found.height) and int(found["N"][0]) > 0

    def ensure_schema(self) -> None:
        """Create the schemas, tables and views if missing (idempotent; existing views are not re-created)."""
        for stmt in schema_statements(self.dialect):
            self.execute(stmt)
        for stmt in view_statements(if_missing=True):
            self.execute(stmt)
