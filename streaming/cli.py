"""The one CLI of the daemons: `python -m streaming <command>` (typer).

Each command is a thin wrapper: parse flags, load settings, call the stage.
"""

from __future__ import annotations

import time
from typing import Annotated

import typer
from rich.table import Table

from streaming.cli_support import console, one_line_errors, out, settings_or_exit
from streaming.config import Settings

app = typer.Typer(
    name="streaming",
    help="Tick platform daemons: local broker, topics, replay, aggregate, validate, pipeline.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
broker_app = typer.Typer(help="The local Apache Kafka broker (official jars from Maven Central).", no_args_is_help=True)
topics_app = typer.Typer(help="Create, inspect and reset the platform's topics.", no_args_is_help=True)
app.add_typer(broker_app, name="broker")
app.add_typer(topics_app, name="topics")

EnvFile = Annotated[str | None, typer.Option("--env-file", help="Settings file (default .env, or ENV_FILE).")]
Brokers = Annotated[str | None, typer.Option("--brokers", help="Bootstrap servers (KAFKA_BROKERS).")]


def _cluster(settings: Settings, nodes: int = 1, secure: bool | None = None):  # type: ignore[no-untyped-def]
    from streaming.broker.runner import LocalCluster

    return LocalCluster(
        settings.broker.run_dir, settings.broker.cache_dir, settings.kafka.brokers, nodes, settings.broker.heap,
        secure=secure,
    )


def _grant_stage_acls(settings: Settings, cluster) -> None:  # type: ignore[no-untyped-def]
    """ACLs per stage principal on a secured broker, and where the clients' settings were written."""
    from streaming.broker.security import stage_names
    from streaming.replay.checkpoint import CHECKPOINT_TOPIC

    names = stage_names(settings.kafka, settings.replay.transactional_id, settings.agg.group_id,
                        settings.agg.transactional_id_prefix, settings.loader.consumer_group, CHECKPOINT_TOPIC)
    count = cluster.grant_stage_acls(names)
    # The snippet holds the passwords: print where it is, never what it says.
    out.print(f"SASL_SSL with SCRAM-SHA-512, {count} ACLs for the stage principals; client settings "
              f"(secrets, mode 0600) in {cluster.client_env_file}: append them to .env "
              f"(cat {cluster.client_env_file} >> .env) or run with ENV_FILE={cluster.client_env_file}",
              highlight=False, soft_wrap=True)


@broker_app.command("up")
def broker_up(
    nodes: Annotated[int, typer.Option("--nodes", min=1, max=5, help="1, or 3 for a replicated cluster.")] = 1,
    brokers: Brokers = None,
    secure: Annotated[bool, typer.Option(
        "--secure", help="SASL_SSL (SCRAM-SHA-512, TLS, ACLs per stage); writes client.env for the clients.")] = False,
    env_file: EnvFile = None,
) -> None:
    """Fetch the jars (once), format KRaft storage and start the broker; returns when it answers."""
    settings = settings_or_exit(env_file, kafka={"brokers": brokers})
    with one_line_errors():
        cluster = _cluster(settings, nodes, secure=True if secure else None)
        if len(cluster.nodes) != nodes and cluster.running():
            console.print(
                f"a {len(cluster.nodes)}-node cluster is running in {cluster.run_dir}; "
                "`broker down` (or `broker reset`) it first"
            )
            raise typer.Exit(1)
        if cluster.running() and len(cluster.running()) == len(cluster.nodes):
            out.print(f"broker already running at {cluster.bootstrap} (run folder {cluster.run_dir}); nothing to do")
            if cluster.secure:
                _grant_stage_acls(settings, cluster)
            return
        started = time.monotonic()
        cluster.up(settings.broker.start_timeout_s)
        out.print(
            f"broker up: {len(cluster.nodes)} node(s) at {cluster.bootstrap} "
            f"in {time.monotonic() - started:.1f}s (logs: {cluster.run_dir})"
        )
        if cluster.secure:
            _grant_stage_acls(settings, cluster)
        elif nodes > 1:
            out.print(f"use KAFKA_BROKERS={cluster.bootstrap}")


@broker_app.command("down")
def broker_down(env_file: EnvFile = None) -> None:
    """Stop exactly the broker process(es) `up` started and wait for them to exit."""
    settings = settings_or_exit(env_file)
    with one_line_errors():
        stopped = _cluster(settings).down()
        out.print(f"broker down ({stopped} node(s) stopped)" if stopped else "broker was not running")


@broker_app.command("status")
def broker_status(env_file: EnvFile = None) -> None:
    """Which nodes run, with pid and address; exit 1 when none does."""
    settings = settings_or_exit(env_file)
    cluster = _cluster(settings)
    table = Table("node", "address", "controller", "pid", "state")
    for node in cluster.nodes:
        pid = cluster.pid_of(node)
        table.add_row(str(node.node_id), node.address, str(node.controller_port), str(pid or "-"),
                      "[green]running[/]" if pid else "[red]stopped[/]")
    out.print(table)
    if not cluster.running():
        raise typer.Exit(1)


@broker_app.command("reset")
def broker_reset(
    force: Annotated[bool, typer.Option(
        "--force", help="Do it even while live consumers read from the broker.")] = False,
    env_file: EnvFile = None,
) -> None:
    """Stop the broker and delete its data and logs (the cached jars stay).

    Refuses, changing nothing, while a consumer group with active members reads any of its topics:
    the reset deletes every topic and group under them.
    """
    settings = settings_or_exit(env_file)
    with one_line_errors():
        cluster = _cluster(settings)
        if cluster.running() and not force:
            _refuse_reset_under_consumers(settings, cluster.bootstrap)
        cluster.reset()
        out.print(f"broker reset: {cluster.run_dir} removed")


def _refuse_reset_under_consumers(settings: Settings, bootstrap: str) -> None:
    """InUseError when live consumers read any topic of the broker at `bootstrap` (one that answers)."""
    from streaming.broker.runner import broker_answers
    from streaming.broker.topics import admin_client, refuse_if_in_use

    if not broker_answers(bootstrap):
        return  # nothing consumes from a broker that does not answer: resetting it is the cure
    kafka = settings.kafka.model_copy(update={"brokers": bootstrap})
    topics = sorted(t for t in admin_client(kafka).list_topics(timeout=10).topics if not t.startswith("__"))
    refuse_if_in_use(kafka, topics, [], "reset the broker (every topic and consumer group is deleted)",
                     "pass --force (make reset ARGS=--force)")


@topics_app.command("bootstrap")
def topics_bootstrap(brokers: Brokers = None, env_file: EnvFile = None) -> None:
    """Create ticks.raw, ticks.agg.1s and ticks.dlq (idempotent)."""
    from streaming.broker.topics import bootstrap_topics
    from streaming.kafka_access import check_access

    settings = settings_or_exit(env_file, kafka={"brokers": brokers})
    with one_line_errors():
        check_access(settings.kafka)
        for name, state in bootstrap_topics(settings.kafka).items():
            out.print(f"{name}: {state}")


@topics_app.command("reset")
def topics_reset(
    force: Annotated[bool, typer.Option(
        "--force", help="Do it even while live consumers read the topics or are in the group.")] = False,
    brokers: Brokers = None,
    env_file: EnvFile = None,
) -> None:
    """Recreate ticks.raw, ticks.agg.1s, ticks.dlq and the replay checkpoints empty; delete the aggregator's group.

    Refuses, changing nothing, while a consumer group with active members reads one of them or
    is the aggregator's group (one line: which group, how many members, their client ids).
    """
    from streaming.broker.topics import reset_platform, topic_specs
    from streaming.replay.checkpoint import CHECKPOINT_TOPIC

    settings = settings_or_exit(env_file, kafka={"brokers": brokers})
    with one_line_errors():
        deleted, groups = reset_platform(settings.kafka, [CHECKPOINT_TOPIC], [settings.agg.group_id], force=force,
                                         force_hint="pass --force")
        out.print(f"topics reset: {', '.join(deleted) or 'none existed'} deleted; "
                  f"{', '.join(s.name for s in topic_specs(settings.kafka))} created empty")
        for group, state in groups.items():
            out.print(f"consumer group {group}: {state}")


@topics_app.command("list")
def topics_list(brokers: Brokers = None, env_file: EnvFile = None) -> None:
    """Topics with partitions, replication, end offsets and consumer-group lag."""
    from streaming.broker.topics import describe_topics, group_lag, list_groups
    from streaming.kafka_access import check_access

    settings = settings_or_exit(env_file, kafka={"brokers": brokers})
    with one_line_errors():
        check_access(settings.kafka)
        try:
            infos = describe_topics(settings.kafka)
        except Exception as exc:
            console.print(f"[red]cannot reach Kafka at {settings.kafka.brokers}:[/] {exc}")
            raise typer.Exit(1) from None
        table = Table("topic", "partitions", "replication", "in-sync", "retention.ms", "end offsets", "messages")
        for info in infos:
            table.add_row(
                info.name, str(len(info.partitions)),
                str(min(p.replicas for p in info.partitions)), str(min(p.isr for p in info.partitions)),
                info.retention_ms, " ".join(str(p.high) for p in info.partitions), str(info.messages),
            )
        out.print(table)
        groups = [g for g in list_groups(settings.kafka) if g != "tick-platform-inspector"]
        if groups:
            lag_table = Table("group", "topic", "lag per partition", "total lag")
            topics = {info.name for info in infos}
            for group in groups:
                for topic in sorted(topics):
                    lag = group_lag(settings.kafka, group, topic)
                    if any(v is not None for v in lag.values()):
                        total = sum(v for v in lag.values() if v is not None)
                        cells = " ".join("-" if v is None else str(v) for v in lag.values())
                        lag_table.add_row(group, topic, cells, str(total))
            out.print(lag_table)


@app.command("smoke")
def smoke(brokers: Brokers = None, env_file: EnvFile = None) -> None:
    """Bootstrap the topics, produce one message (idempotent, acks=all) and read it back."""
    from streaming.broker.smoke import round_trip
    from streaming.kafka_access import check_access

    settings = settings_or_exit(env_file, kafka={"brokers": brokers})
    with one_line_errors():
        check_access(settings.kafka)
        message = round_trip(settings.kafka)
        out.print(f"smoke ok: {message}")


@app.command("dashboard")
def dashboard(env_file: EnvFile = None) -> None:
    """The Streamlit live view on DASHBOARD_HOST:DASHBOARD_PORT (replaces this process)."""
    import os

    from streaming.pipeline.services import dashboard_service

    settings = settings_or_exit(env_file)
    if env_file:
        os.environ["DASHBOARD_ENV_FILE"] = env_file
    spec = dashboard_service(settings)
    out.print(f"dashboard on http://{settings.dashboard.host}:{settings.dashboard.port}")
    os.execvp(spec.cmd[0], spec.cmd)


def _register_stage_commands() -> None:
    """Stage commands live beside their stage, so the CLI stays a table of contents."""
    from streaming.aggregate.command import aggregate
    from streaming.bench.command import bench
    from streaming.pipeline.command import demo, pipeline
    from streaming.replay.command import replay
    from streaming.sources.command import api, synth
    from streaming.validate.command import validate

    app.command("synth")(synth)
    app.command("api")(api)
    app.command("replay")(replay)
    app.command("aggregate")(aggregate)
    app.command("validate")(validate)
    app.command("pipeline")(pipeline)
    app.command("demo")(demo)
    app.command("bench")(bench)


_register_stage_commands()


def main() -> None:
    """Entry point of `python -m streaming`."""
    app()
