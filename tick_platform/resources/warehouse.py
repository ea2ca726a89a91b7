"""The warehouse resources: one per target behind `WarehouseResource.connect()`.

`DuckDBWarehouse` (a file; the kernel's `DuckDBFile`, lock conflicts retried for a minute) and
`SnowflakeWarehouse` (dagster-snowflake's SnowflakeResource, credentials from SNOW_* at connect
time). `warehouse_resource(settings)` picks the one WAREHOUSE_TARGET names. Connections are
short-lived (one per step) because DuckDB allows one read-write process at a time.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

from dagster import ConfigurableResource

if TYPE_CHECKING:  # imported when used: dagster_snowflake costs ~10 s of import per run process
    from dagster_snowflake import SnowflakeResource

from streaming.kernel.errors import WarehouseError
from streaming.kernel.settings import Settings, load_settings
from streaming.kernel.warehouse.connection import WarehouseConnection
from streaming.kernel.warehouse.dialect import DUCKDB, SNOWFLAKE, Dialect
from streaming.kernel.warehouse.targets import DuckDBFile, SnowflakeLogin

__all__ = [
    "DuckDBWarehouse",
    "SnowflakeWarehouse",
    "WarehouseConnection",
    "WarehouseError",
    "WarehouseResource",
    "warehouse_resource",
]


class WarehouseResource(ConfigurableResource):  # type: ignore[type-arg]
    """Where the facts go; assets and checks ask for `warehouse: WarehouseResource`, a subclass is bound."""

    env_file: str | None = None

    @property
    def target(self) -> str:
        """The target's name (the `warehouse` metadata of a materialization)."""
        return self.dialect.name

    @property
    def dialect(self) -> Dialect:
        """The target's SQL dialect."""
        raise NotImplementedError(f"{type(self).__name__} names no dialect")

    def connect(self) -> AbstractContextManager[WarehouseConnection]:
        """A short-lived connection to the target (closed on exit)."""
        raise NotImplementedError(f"{type(self).__name__} cannot connect")

    def _settings(self) -> Settings:
        return load_settings(self.env_file)


class DuckDBWarehouse(WarehouseResource):
    """A DuckDB file (created with its folder if missing); a lock held elsewhere is retried for a minute."""

    duckdb_path: str = ""

    @property
    def dialect(self) -> Dialect:
        """DuckDB's dialect."""
        return DUCKDB

    @contextmanager
    def connect(self) -> Iterator[WarehouseConnection]:
        """A read-write connection to the file (WAREHOUSE_DUCKDB_PATH unless `duckdb_path` is given)."""
        path = Path(self.duckdb_path or self._settings().warehouse.duckdb_path)
        with DuckDBFile(path).connect() as conn:
            yield conn


class SnowflakeWarehouse(WarehouseResource):
    """A Snowflake account through dagster-snowflake, with password or key-pair auth from SNOW_*."""

    @property
    def dialect(self) -> Dialect:
        """Snowflake's dialect."""
        return SNOWFLAKE

    def snowflake_resource(self) -> SnowflakeResource:
        """dagster-snowflake's resource for the login SNOW_* describes."""
        from dagster_snowflake import SnowflakeResource

        login = SnowflakeLogin.from_settings(self._settings().snow)
        auth: dict[str, Any] = {}
        if login.private_key_path:
            auth["private_key_path"] = login.private_key_path
            if login.private_key_passphrase:
                auth["private_key_password"] = login.private_key_passphrase
        else:
            auth["password"] = login.password
        return SnowflakeResource(
            account=login.account,
            user=login.user,
            role=login.role,
            warehouse=login.warehouse,
            database=login.database,
            schema=login.schema,
            **auth,
        )

    @contextmanager
    def connect(self) -> Iterator[WarehouseConnection]:
        """A connection from dagster-snowflake (closed on exit)."""
        with self.snowflake_resource().get_connection() as conn:
            yield WarehouseConnection(conn, SNOWFLAKE)


# The resolved WAREHOUSE_TARGET -> its resource. A new target is one more entry (and a Dialect).
RESOURCES: Mapping[str, Callable[[Settings, str | None], WarehouseResource]] = MappingProxyType(
    {
        "duckdb": lambda s, env_file: DuckDBWarehouse(duckdb_path=str(s.warehouse.duckdb_path), env_file=env_file),
        "snowflake": lambda _s, env_file: SnowflakeWarehouse(env_file=env_file),
    }
)


def warehouse_resource(settings: Settings, env_file: str | None = None) -> WarehouseResource:
    """The resource of the target the settings name (WAREHOUSE_TARGET, `auto` resolved)."""
    target = settings.warehouse_target
    try:
        return RESOURCES[target](settings, env_file)
    except KeyError:
        raise WarehouseError(
            f"WAREHOUSE_TARGET: no warehouse resource for {target!r} (known: {', '.join(sorted(RESOURCES))})"
        ) from None
