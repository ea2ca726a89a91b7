"""`python -m tick_tools pipeline` and `python -m tick_tools demo`."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated

import typer

from streaming.cli_support import console, one_line_errors, settings_or_exit

EnvFile = Annotated[str | None, typer.Option("--env-file", help="Settings file (default .env, or ENV_FILE).")]
Data = Annotated[list[str] | None, typer.Option("--data", help="Tick file(s); default: a synthetic session.")]
Symbol = Annotated[str | None, typer.Option("--symbol", help="Symbol when the file name does not say it.")]
# The pipeline's one replay job promises its event-time progress this often (paced replays).
PIPELINE_WATERMARK_INTERVAL_MS = 10


def pipeline(
    data: Data = None,
    symbol: Symbol = None,
    realtime: Annotated[bool, typer.Option("--realtime", help="Speed 1 with live timestamps.")] = False,
    via_api: Annotated[bool, typer.Option("--via-api", help="Replay from the mock API instead of the files.")] = False,
    aggregators: Annotated[int, typer.Option("--aggregators", min=1, max=6)] = 1,
    dashboard: Annotated[bool, typer.Option("--dashboard/--no-dashboard")] = False,
    dagster: Annotated[bool, typer.Option("--dagster/--no-dagster")] = True,
    dagster_port: Annotated[int, typer.Option("--dagster-port")] = 3000,
    env_file: EnvFile = None,
) -> None:
    """Broker, mock API, aggregator(s), Dagster, replay (and dashboard) in one shell; Ctrl+C stops all."""
    from streaming.kernel.settings import is_configured
    from streaming.kernel.topics import bootstrap_topics
    from tick_tools.broker.runner import ensure_broker
    from tick_tools.pipeline.demo_data import ensure_demo_data
    from tick_tools.pipeline.partitions_env import END, START, partitions_env
    from tick_tools.pipeline.services import (
        aggregator_service,
        api_service,
        dagster_service,
        dashboard_service,
        prepare_dagster_home,
        replay_service,
    )
    from tick_tools.pipeline.supervisor import run_services

    settings = settings_or_exit(env_file)
    with one_line_errors():
        broker = settings.broker
        console.print(ensure_broker(broker.run_dir, broker.cache_dir, settings.kafka.brokers, broker.heap,
                                    broker.start_timeout_s, client=settings.kafka.client_base()))
        bootstrap_topics(settings.kafka)
        files = [str(Path(d)) for d in data] if data else ensure_demo_data()
        home = prepare_dagster_home(Path(os.environ.get("DAGSTER_HOME", ".dagster_home")).resolve())
        specs = [api_service(settings, files)]
        # One replay job writes ticks.raw in event-time order here: quiet partitions may follow the others.
        align = {} if is_configured("AGG_ALIGN_WATERMARKS", env_file) else {"AGG_ALIGN_WATERMARKS": "true"}
        specs += [aggregator_service(i, align) for i in range(aggregators)]
        if dagster:
            parts = partitions_env(files, realtime=realtime, symbol=symbol, env_file=env_file)
            if parts:
                console.print(f"fact partitions {parts.get(START)} .. {parts.get(END, 'open')} (the data's days; "
                              f"set {START}/{END} to choose)")
            specs.append(dagster_service(home, dagster_port, parts))
        if dashboard:
            specs.append(dashboard_service(settings))
        # The one replay job may also promise its event-time progress (docs/aggregator.md).
        marks = None if is_configured("REPLAY_WATERMARK_INTERVAL_MS", env_file) else PIPELINE_WATERMARK_INTERVAL_MS
        specs.append(replay_service(settings, files, via_api=via_api, realtime=realtime, symbol=symbol,
                                    watermarks_ms=marks))
        status = run_services(specs)
    raise typer.Exit(status)


def demo(
    data: Data = None,
    symbol: Symbol = None,
    reset: Annotated[bool, typer.Option("--reset/--no-reset", help="Start from empty topics.")] = True,
    force: Annotated[bool, typer.Option(
        "--force", help="Recreate the topics and delete the group even while live consumers use them.")] = False,
    env_file: EnvFile = None,
) -> None:
    """End to end on the embedded default: replay, bars, facts with checks, validation verdict."""
    from tick_tools.pipeline.demo import run_demo

    settings = settings_or_exit(env_file)
    with one_line_errors():
        ok = run_demo(settings, [str(Path(d)) for d in data] if data else None, symbol=symbol, reset=reset,
                     force=force)
    raise typer.Exit(0 if ok else 1)
