"""The warehouse targets behind one interface: `Warehouse.connect()` yields a `WarehouseConnection`.

`DuckDBFile` is a DuckDB file (lock conflicts retried for a while), `SnowflakeAccount` a Snowflake
account (password or key-pair auth from SNOW_*). `open_warehouse(settings)` picks the one that
WAREHOUSE_TARGET names; the Dagster location's resources (tick_platform/resources/warehouse.py)
and the dashboard's health page both start from here. Drivers are imported when connecting.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from streaming.kernel.errors import WarehouseError, WarehouseLockedError
from streaming.kernel.settings import Settings, SnowSettings
from streaming.kernel.warehouse.connection import WarehouseConnection
from streaming.kernel.warehouse.dialect import DUCKDB, SNOWFLAKE, Dialect

LOCK_RETRY_S = 60.0
_LOCK_POLL_S = 0.5


class Warehouse(ABC):
    """One warehouse target: its dialect, a short-lived connection, and a line naming it."""

    dialect: Dialect

    @abstractmethod
    def connect(self) -> AbstractContextManager[WarehouseConnection]:
        """A short-lived connection (closed on exit)."""

    @abstractmethod
    def describe(self) -> str:
        """Where the facts are, for logs and pages (no secrets)."""


class DuckDBFile(Warehouse):
    """A DuckDB file. DuckDB allows one read-write process at a time, so a held lock is retried."""

    dialect = DUCKDB

    def __init__(self, path: Path, read_only: bool = False, lock_retry_s: float = LOCK_RETRY_S) -> None:
        self.path = path
        self.read_only = read_only
        self.lock_retry_s = lock_retry_s

    def describe(self) -> str:
        """`duckdb <path>` (read-only when so opened)."""
        return f"DuckDB file {self.path}{' (read-only)' if self.read_only else ''}"

    @contextmanager
    def connect(self) -> Iterator[WarehouseConnection]:
        """Open the file (created with its folder if missing, unless read-only); lock conflicts are retried."""
        import duckdb

        if self.read_only and not self.path.is_file():
            raise WarehouseError(f"no warehouse file at {self.path} yet")
        if not self.read_only:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        deadline = time.monotonic() + self.lock_retry_s
        while True:
            try:
                con = duckdb.connect(str(self.path), read_only=self.read_only)
                break
            except duckdb.Error as exc:  # duckdb.IOException: the file is locked by another process
                first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                if "lock" not in str(exc).lower():
                    raise WarehouseError(f"cannot open the DuckDB warehouse {self.path}: {first}") from exc
                if time.monotonic() >= deadline:
                    raise WarehouseLockedError(
                        f"cannot open the DuckDB warehouse {self.path}: locked by a writer ({first})"
                    ) from exc
                time.sleep(_LOCK_POLL_S)
        try:
            yield WarehouseConnection(con, DUCKDB)
        finally:
            con.close()


@dataclass(frozen=True)
class SnowflakeLogin:
    """Where and as whom to connect to Snowflake, checked once (the secrets never in its repr)."""

    account: str
    user: str
    role: str
    warehouse: str
    database: str
    schema: str
    # Kept out of repr, so a logged or raised login never shows a secret.
    password: str | None = field(default=None, repr=False)
    private_key_path: str | None = None
    private_key_passphrase: str | None = field(default=None, repr=False)

    @classmethod
    def from_settings(cls, snow: SnowSettings) -> SnowflakeLogin:
        """The login SNOW_* describes; key-pair auth wins over a password; neither is an error."""
        if not snow.account or not snow.user:
            raise WarehouseError("SNOW_ACCOUNT and SNOW_USER are required for the Snowflake warehouse")
        if not snow.private_key_path and not snow.password:
            raise WarehouseError("set SNOW_PASSWORD or SNOW_PRIVATE_KEY_PATH for the Snowflake warehouse")
        key = snow.private_key_path or None
        return cls(
            account=snow.account,
            user=snow.user,
            role=snow.role,
            warehouse=snow.warehouse,
            database=snow.database,
            schema=snow.schema_,
            password=None if key or snow.password is None else snow.password.get_secret_value(),
            private_key_path=key,
            private_key_passphrase=(
                snow.private_key_passphrase.get_secret_value() if key and snow.private_key_passphrase else None
            ),
        )

    def connector_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of `snowflake.connector.connect`."""
        kwargs: dict[str, Any] = {
            "account": self.account,
            "user": self.user,
            "role": self.role,
            "warehouse": self.warehouse,
            "database": self.database,
            "schema": self.schema,
        }
        if self.private_key_path:
            kwargs["private_key_file"] = self.private_key_path
            if self.private_key_passphrase:
                kwargs["private_key_file_pwd"] = self.private_key_passphrase
        else:
            kwargs["password"] = self.password
        return kwargs


class SnowflakeAccount(Warehouse):
    """A Snowflake account through snowflake-connector-python (fakesnow patches it in tests)."""

    dialect = SNOWFLAKE

    def __init__(self, login: SnowflakeLogin) -> None:
        self.login = login

    def describe(self) -> str:
        """`Snowflake <account>/<database>`."""
        return f"Snowflake {self.login.account}/{self.login.database}"

    @contextmanager
    def connect(self) -> Iterator[WarehouseConnection]:
        """A connection closed on exit; a refused connection is a WarehouseError."""
        import snowflake.connector

        try:
            raw = snowflake.connector.connect(**self.login.connector_kwargs())
        except snowflake.connector.errors.Error as exc:
            raise WarehouseError(f"cannot reach {self.describe()}: {exc}") from exc
        try:
            yield WarehouseConnection(raw, SNOWFLAKE)
        finally:
            raw.close()


# WAREHOUSE_TARGET (resolved: `auto` is already duckdb or snowflake) -> how to open it for reading
# or writing. A new target is one more entry here and a Dialect.
TARGETS: Mapping[str, Callable[[Settings, bool], Warehouse]] = MappingProxyType(
    {
        "duckdb": lambda s, read_only: DuckDBFile(
            s.warehouse.duckdb_path, read_only=read_only, lock_retry_s=0.0 if read_only else LOCK_RETRY_S
        ),
        "snowflake": lambda s, _read_only: SnowflakeAccount(SnowflakeLogin.from_settings(s.snow)),
    }
)


def open_warehouse(settings: Settings, read_only: bool = False) -> Warehouse:
    """The warehouse the settings name (WAREHOUSE_TARGET); readers pass `read_only` (no lock wait)."""
    target = settings.warehouse_target
    try:
        factory = TARGETS[target]
    except KeyError:
        raise WarehouseError(
            f"WAREHOUSE_TARGET: no warehouse target {target!r} (known: {', '.join(sorted(TARGETS))})"
        ) from None
    return factory(settings, read_only)
