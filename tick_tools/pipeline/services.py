"""The services of the one-shell pipeline, as commands the supervisor runs."""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path
from typing import Literal, cast

import yaml

from streaming.kernel.errors import ConfigError
from streaming.kernel.settings import PROJECT_ROOT, Settings
from tick_tools.pipeline.supervisor import ServiceSpec

DAGSTER_YAML_TEMPLATE = PROJECT_ROOT / "tick_platform" / "dagster_home" / "dagster.yaml"
DAGSTER_POSTGRES_YAML_TEMPLATE = PROJECT_ROOT / "tick_platform" / "dagster_home" / "dagster.postgres.yaml"
InstanceStorage = Literal["sqlite", "postgres"]
DAGSTER_TEMPLATES: dict[InstanceStorage, Path] = {
    "sqlite": DAGSTER_YAML_TEMPLATE,
    "postgres": DAGSTER_POSTGRES_YAML_TEMPLATE,
}


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "streaming", *args]


def _bin(name: str) -> str:
    """A console script of this venv (dagster, streamlit), falling back to PATH."""
    local = Path(sys.executable).with_name(name)
    return str(local) if local.exists() else name


def instance_storage(storage: str | None = None) -> InstanceStorage:
    """`storage`, else DAGSTER_STORAGE, else sqlite; ConfigError for anything but sqlite or postgres."""
    chosen = (storage or os.environ.get("DAGSTER_STORAGE") or "sqlite").strip().lower()
    if chosen not in DAGSTER_TEMPLATES:
        raise ConfigError(f"DAGSTER_STORAGE: choose sqlite or postgres (got {chosen!r})")
    return chosen


def _storage_of(config_file: Path) -> InstanceStorage | None:
    """Which of the two storages a dagster.yaml configures (None: another one, e.g. a user's own)."""
    try:
        config = yaml.safe_load(config_file.read_text()) or {}
    except yaml.YAMLError:
        return None
    storage = config.get("storage") if isinstance(config, dict) else None
    if storage is None:
        return "sqlite"  # Dagster's default: SQLite files under DAGSTER_HOME
    if isinstance(storage, dict) and set(storage) <= {"sqlite", "postgres"} and len(storage) == 1:
        return cast(InstanceStorage, next(iter(storage)))
    return None


def prepare_dagster_home(home: Path, storage: str | None = None) -> Path:
    """DAGSTER_HOME inside the project, with the platform's instance settings (run queue, pools).

    `storage` (default DAGSTER_STORAGE, else sqlite) picks the template: SQLite files under `home`,
    or PostgreSQL (dagster.postgres.yaml, the connection from DAGSTER_PG_*). An unedited copy of a
    template is replaced by the chosen one; an edited dagster.yaml is kept, unless it configures
    the other storage (ConfigError: the runs would silently go to the other place).
    """
    chosen = instance_storage(storage)
    home.mkdir(parents=True, exist_ok=True)
    target = home / "dagster.yaml"
    template = DAGSTER_TEMPLATES[chosen]
    if not target.is_file():
        shutil.copyfile(template, target)
        return home
    current = target.read_bytes()
    if current == template.read_bytes():
        return home
    if any(current == other.read_bytes() for other in DAGSTER_TEMPLATES.values()):
        shutil.copyfile(template, target)  # the other shipped template, never edited: switch
        return home
    found = _storage_of(target)
    if found is not None and found != chosen:
        raise ConfigError(f"DAGSTER_STORAGE: {target} (edited) configures {found} storage, not {chosen}; "
                          f"change its `storage` section or delete it to get the {chosen} template")
    return home


def api_service(settings: Settings, data: list[str]) -> ServiceSpec:
    """The mock tick API serving the replayed files."""
    host, port = settings.api.host, settings.api.port
    return ServiceSpec(
        "api", _cli("api", *data, "--host", host, "--port", str(port)),
        health_url=f"http://{host}:{port}/health",
    )


def aggregator_service(instance: int = 0, env: dict[str, str] | None = None) -> ServiceSpec:
    """One aggregator process of the consumer group."""
    return ServiceSpec(f"aggregate{instance or ''}", _cli("aggregate"), env=env or {}, ready_after_s=2.0)


def replay_service(settings: Settings, data: list[str], *, via_api: bool, realtime: bool,
                   symbol: str | None, watermarks_ms: int | None = None) -> ServiceSpec:
    """The replay producer, from the files directly (resumable) or from the mock API.

    `watermarks_ms`: watermark records to ticks.raw at this interval (paced file replays only).
    """
    args: list[str] = []
    if via_api:
        query = f"speed={1 if realtime else 0}&live={'true' if realtime else 'false'}"
        args.append(f"http://{settings.api.host}:{settings.api.port}/ticks?{query}")
    else:
        args += data
        args += ["--speed", "1" if realtime else str(settings.replay.speed)]
        if realtime:
            args.append("--live")
        if watermarks_ms is not None:
            args += ["--watermark-interval-ms", str(watermarks_ms)]
    if symbol:
        args += ["--symbol", symbol]
    if realtime:
        # A live replay shifts its times to now: starting the pipeline again is a new session, not a
        # duplicate of the last one (an unfinished run still resumes).
        args.append("--new-run")
    return ServiceSpec("replay", _cli("replay", *args), ready_after_s=0.5, oneshot=True)


def dagster_service(home: Path, port: int = 3000, env: dict[str, str] | None = None) -> ServiceSpec:
    """Dagster webserver and daemon (`dagster dev`): the schedule and sensor load the facts."""
    return ServiceSpec(
        "dagster",
        [_bin("dagster"), "dev", "-w", str(PROJECT_ROOT / "workspace.yaml"), "-h", "127.0.0.1", "-p", str(port)],
        env={"DAGSTER_HOME": str(home), **(env or {})},
        health_url=f"http://127.0.0.1:{port}/server_info",
        start_timeout_s=240.0,
    )


def dashboard_service(settings: Settings) -> ServiceSpec:
    """The Streamlit live view."""
    host, port = settings.dashboard.host, settings.dashboard.port
    return ServiceSpec(
        "dashboard",
        [_bin("streamlit"), "run", str(PROJECT_ROOT / "dashboard" / "app.py"), "--server.address", host,
         "--server.port", str(port), "--server.headless", "true", "--browser.gatherUsageStats", "false"],
        health_url=f"http://{host}:{port}/_stcore/health",
        start_timeout_s=120.0,
    )
