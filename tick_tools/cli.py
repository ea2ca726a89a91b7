"""The whole CLI, `tickpipe` / `python -m tick_tools <command>` (typer).

The daemons' commands (topics, synth, api, replay, aggregate, validate) come from
`streaming.cli`; this module adds the tooling on top: the local broker, the local PostgreSQL, smoke,
dashboard, pipeline, demo and bench.
"""

from __future__ import annotations

from streaming.cli import Brokers, EnvFile, register_stage_commands
from streaming.cli_support import cli_app, one_line_errors, out, settings_or_exit
from tick_tools.bench.command import bench
from tick_tools.broker.command import broker_app
from tick_tools.pipeline.command import demo, pipeline
from tick_tools.postgres.command import postgres_app

app = cli_app("tickpipe", "Tick platform: local broker and PostgreSQL, topics, replay, aggregate, validate, pipeline, "
              "demo, bench.")
app.add_typer(broker_app, name="broker")
app.add_typer(postgres_app, name="postgres")
register_stage_commands(app)
app.command("pipeline")(pipeline)
app.command("demo")(demo)
app.command("bench")(bench)


@app.command("smoke")
def smoke(brokers: Brokers = None, env_file: EnvFile = None) -> None:
    """Bootstrap the topics, produce one message (idempotent, acks=all) and read it back."""
    from streaming.kernel.kafka_access import check_access
    from tick_tools.broker.smoke import round_trip

    settings = settings_or_exit(env_file, kafka={"brokers": brokers})
    with one_line_errors():
        check_access(settings.kafka)
        message = round_trip(settings.kafka)
        out.print(f"smoke ok: {message}")


@app.command("dashboard")
def dashboard(env_file: EnvFile = None) -> None:
    """The Streamlit live view on DASHBOARD_HOST:DASHBOARD_PORT (replaces this process)."""
    import os

    from tick_tools.pipeline.services import dashboard_service

    settings = settings_or_exit(env_file)
    if env_file:
        os.environ["DASHBOARD_ENV_FILE"] = env_file
    spec = dashboard_service(settings)
    out.print(f"dashboard on http://{settings.dashboard.host}:{settings.dashboard.port}")
    os.execvp(spec.cmd[0], spec.cmd)


def main() -> None:
    """Entry point of `python -m tick_tools` and `tickpipe`."""
    app()
