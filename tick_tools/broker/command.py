"""`tickpipe broker ...`: the local Apache Kafka broker (official jars from Maven Central)."""

from __future__ import annotations

import time
from typing import Annotated

import typer
from rich.table import Table

from streaming.cli import Brokers, EnvFile
from streaming.cli_support import console, one_line_errors, out, settings_or_exit
from streaming.kernel.settings import Settings
from tick_tools.broker.runner import LocalCluster

broker_app = typer.Typer(help="The local Apache Kafka broker (official jars from Maven Central).", no_args_is_help=True)


def _cluster(settings: Settings, nodes: int = 1, secure: bool | None = None) -> LocalCluster:
    return LocalCluster(
        settings.broker.run_dir, settings.broker.cache_dir, settings.kafka.brokers, nodes, settings.broker.heap,
        secure=secure,
    )


def _grant_stage_acls(settings: Settings, cluster: LocalCluster) -> None:
    """ACLs per stage principal on a secured broker, and where the clients' settings were written."""
    from streaming.replay.checkpoint import CHECKPOINT_TOPIC
    from tick_tools.broker.security import stage_names

    names = stage_names(settings.kafka, settings.replay.transactional_id, settings.agg.group_id,
                        settings.agg.transactional_id_prefix, settings.warehouse.consumer_group, CHECKPOINT_TOPIC)
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
    from streaming.kernel.topics import admin_client, refuse_if_in_use
    from tick_tools.broker.runner import broker_answers

    if not broker_answers(bootstrap):
        return  # nothing consumes from a broker that does not answer: resetting it is the cure
    kafka = settings.kafka.model_copy(update={"brokers": bootstrap})
    topics = sorted(t for t in admin_client(kafka).list_topics(timeout=10).topics if not t.startswith("__"))
    refuse_if_in_use(kafka, topics, [], "reset the broker (every topic and consumer group is deleted)",
                     "pass --force (make reset ARGS=--force)")


