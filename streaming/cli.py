"""The daemons' CLI: `python -m streaming <command>` (typer): topics, synth, api, replay, aggregate, validate.

Each command is a thin wrapper: parse flags, load settings, call the stage. The tooling on top
(local broker, smoke, dashboard, pipeline, demo, bench) is `python -m tick_tools` (`tickpipe`),
which adds its commands to these; nothing here imports it, so a daemon never loads the tooling.
"""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from streaming.cli_support import cli_app, console, one_line_errors, out, settings_or_exit

app = cli_app("streaming", "Tick platform daemons: topics, synth, api, replay, aggregate, validate.")
topics_app = typer.Typer(help="Create, inspect and reset the platform's topics.", no_args_is_help=True)
app.add_typer(topics_app, name="topics")

EnvFile = Annotated[str | None, typer.Option("--env-file", help="Settings file (default .env, or ENV_FILE).")]
Brokers = Annotated[str | None, typer.Option("--brokers", help="Bootstrap servers (KAFKA_BROKERS).")]


@topics_app.command("bootstrap")
def topics_bootstrap(brokers: Brokers = None, env_file: EnvFile = None) -> None:
    """Create ticks.raw, ticks.agg.1s and ticks.dlq (idempotent)."""
    from streaming.kernel.kafka_access import check_access
    from streaming.kernel.topics import bootstrap_topics

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
    from streaming.kernel.topics import reset_platform, topic_specs
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
    from streaming.kernel.kafka_access import check_access
    from streaming.kernel.topics import describe_topics, group_lag, list_groups

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


def register_stage_commands(target: typer.Typer) -> None:
    """Add the daemons' commands to `target` (this CLI, and the tooling's CLI on top of it).

    Stage commands live beside their stage, so the CLI stays a table of contents.
    """
    from streaming.aggregate.command import aggregate
    from streaming.replay.command import replay
    from streaming.sources.command import api, synth
    from streaming.validate.command import validate

    if target is not app:
        target.add_typer(topics_app, name="topics")
    target.command("synth")(synth)
    target.command("api")(api)
    target.command("replay")(replay)
    target.command("aggregate")(aggregate)
    target.command("validate")(validate)


register_stage_commands(app)


def main() -> None:
    """Entry point of `python -m streaming`."""
    app()
