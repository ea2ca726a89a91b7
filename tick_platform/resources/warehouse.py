"""The warehouse resource: DuckDB (dagster-duckdb) by default, Snowflake (dagster-snowflake) when configured.

Connections are short-lived (one per step) because DuckDB allows one read-write process
at a time; a lock held by someone else is retried for a while before failing.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import polars as pl
from dagster import ConfigurableResource
from dagster_duckdb import DuckDBResource

if TYPE_CHECKING:  # imported when used: dagster_snowflake costs ~10 s of import per run process
    from dagster_snowflake import SnowflakeResource

from streaming.kernel.errors import TickPlatformError
from streaming.kernel.settings import Settings, load_settings
from tick_platform.warehouse_sql import Dialect, schema_statements, view_statements

_LOCK_RETRY_S = 60.0


class WarehouseError(TickPlatformError):
    """The warehouse could not be reached or refused a statement."""


@dataclass
class WarehouseConnection:
    """A DB-API connection plus its dialect; SQL uses `{p}` where a parameter goes."""

    raw: Any
    dialect: Dialect

    @property
    def p(self) -> str:
        """The parameter placeholder of this dialect."""
        return "%s" if self.dialect is Dialect.SNOWFLAKE else "?"

    def sql(self, text: str) -> str:
        """`text` with `{p}` replaced by the dialect's placeholder."""
        return text.replace("{p}", self.p)

    @contextmanager
    def _cursor(self) -> Iterator[Any]:
        # A DuckDB cursor is a separate connection (own transaction, own registrations): use the connection.
        if self.dialect is Dialect.DUCKDB:
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
        """Insert a frame's rows (columns named like the table's); DuckDB reads it as Arrow, zero-copy."""
        if frame.is_empty():
            return
        cols = ", ".join(frame.columns)
        if self.dialect is Dialect.DUCKDB:
            self.raw.register("_tick_frame", frame.to_arrow())
            try:
                self.execute(f"INSERT INTO {qualified} ({cols}) SELECT {cols} FROM _tick_frame")
            finally:
                self.raw.unregister("_tick_frame")
            return
        placeholders = ", ".join(["{p}"] * frame.width)
        rows = [tuple(r) for r in frame.iter_rows()]
        for i in range(0, len(rows), chunk):
            self.executemany(f"INSERT INTO {qualified} ({cols}) VALUES ({placeholders})", rows[i : i + chunk])

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """BEGIN ... COMMIT, ROLLBACK on any error (no DDL inside: it commits on Snowflake)."""
        self.execute("BEGIN TRANSACTION" if self.dialect is Dialect.DUCKDB else "BEGIN")
        try:
            yield
        except BaseException:
            self.execute("ROLLBACK")
            raise
        self.execute("COMMIT")

    def ensure_schema(self) -> None:
        """Create the schemas, tables and views if missing (idempotent; existing views are not re-created)."""
        for stmt in schema_statements(self.dialect):
            self.execute(stmt)
        for stmt in view_statements(self.dialect, if_missing=True):
            self.execute(stmt)


class WarehouseResource(ConfigurableResource):  # type: ignore[type-arg]
    """Where the facts go: `duckdb` (a file) or `snowflake` (credentials from SNOW_* at connect time)."""

    target: Literal["duckdb", "snowflake"] = "duckdb"
    duckdb_path: str = ""
    env_file: str | None = None

    @property
    def dialect(self) -> Dialect:
        return Dialect.SNOWFLAKE if self.target == "snowflake" else Dialect.DUCKDB

    def _settings(self) -> Settings:
        return load_settings(self.env_file)

    def snowflake_resource(self) -> SnowflakeResource:
        """dagster-snowflake's resource with password or key-pair auth from SNOW_*."""
        from dagster_snowflake import SnowflakeResource

        snow = self._settings().snow
        if not snow.account or not snow.user:
            raise WarehouseError("SNOW_ACCOUNT and SNOW_USER are required for the Snowflake warehouse")
        auth: dict[str, Any] = {}
        if snow.private_key_path:
            auth["private_key_path"] = snow.private_key_path
            if snow.private_key_passphrase:
                auth["private_key_password"] = snow.private_key_passphrase.get_secret_value()
        elif snow.password:
            auth["password"] = snow.password.get_secret_value()
        else:
            raise WarehouseError("set SNOW_PASSWORD or SNOW_PRIVATE_KEY_PATH for the Snowflake warehouse")
        return SnowflakeResource(
            account=snow.account,
            user=snow.user,
            role=snow.role,
            warehouse=snow.warehouse,
            database=snow.database,
            schema=snow.schema_,
            **auth,
        )

    def duckdb_resource(self) -> DuckDBResource:
        """dagster-duckdb's resource on the warehouse file (its folder created if missing)."""
        path = Path(self.duckdb_path or self._settings().loader.duckdb_path)
        path.parent.mkdir(parents=True, exist_ok=True)
        return DuckDBResource(database=str(path))

    @contextmanager
    def connect(self) -> Iterator[WarehouseConnection]:
        """A short-lived connection; DuckDB lock conflicts are retried for up to a minute."""
        if self.dialect is Dialect.SNOWFLAKE:
            with self.snowflake_resource().get_connection() as conn:
                yield WarehouseConnection(conn, Dialect.SNOWFLAKE)
            return
        resource = self.duckdb_resource()
        deadline = time.monotonic() + _LOCK_RETRY_S
        while True:
            try:
                ctx = resource.get_connection()
                conn = ctx.__enter__()
                break
            except Exception as exc:  # duckdb.IOException: the file is locked by another process
                if "lock" not in str(exc).lower() or time.monotonic() > deadline:
                    raise WarehouseError(f"cannot open the DuckDB warehouse {resource.database}: {exc}") from exc
                time.sleep(0.5)
        try:
            yield WarehouseConnection(conn, Dialect.DUCKDB)
        except BaseException as exc:
            # dagster-duckdb closes only on a clean exit: a failed step (its traceback kept by
            # Dagster) would hold the file open, and a read-only connection of the same process is refused.
            conn.close()
            ctx.__exit__(type(exc), exc, exc.__traceback__)
            raise
        ctx.__exit__(None, None, None)

    @classmethod
    def from_settings(cls, settings: Settings, env_file: str | None = None) -> WarehouseResource:
        """The warehouse that Settings.use_snowflake chooses."""
        return cls(
            target="snowflake" if settings.use_snowflake else "duckdb",
            duckdb_path=str(settings.loader.duckdb_path),
            env_file=env_file,
        )
