"""`make demo`: the whole pipeline end to end on the embedded default, with a verdict.

broker up → topics (empty) → aggregator (subprocess) → replay at full speed →
aggregator drains and exits → facts backfilled with asset checks (DuckDB) →
independent validation of ticks → bins → bars from Kafka → summary.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import warnings
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Console
from rich.table import Table

from streaming.kernel.errors import TickPlatformError
from streaming.kernel.settings import PROJECT_ROOT, Settings
from streaming.kernel.topics import bootstrap_topics, refuse_if_in_use, reset_platform
from streaming.kernel.warehouse.targets import open_warehouse
from tick_tools.broker.runner import ensure_broker
from tick_tools.pipeline.demo_data import ensure_demo_data
from tick_tools.pipeline.partitions_env import END, START, partitions_env
from tick_tools.pipeline.services import prepare_dagster_home

if TYPE_CHECKING:
    from streaming.replay.summary import ReplaySummary
    from streaming.validate.report import ValidationReport
    from tick_platform.backfill import BackfillReport

CHECKPOINT_TOPIC = "ticks.replay.checkpoints"


class DemoError(TickPlatformError):
    """A demo step failed; the message says which and why."""


@dataclass(frozen=True)
class StepTime:
    """How long one demo step took."""

    name: str
    seconds: float


def _step(console: Console, text: str) -> float:
    console.print(f"[bold cyan]▶[/] {text}", highlight=False)
    return time.monotonic()


def _ensure_broker(settings: Settings, console: Console) -> None:
    broker = settings.broker
    console.print("  " + ensure_broker(broker.run_dir, broker.cache_dir, settings.kafka.brokers, broker.heap,
                                       broker.start_timeout_s, client=settings.kafka.client_base()))


def _start_aggregator(settings: Settings, log_path: Path) -> subprocess.Popen[bytes]:
    log_path.parent.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "KAFKA_BROKERS": settings.kafka.brokers, "PYTHONUNBUFFERED": "1"}
    with open(log_path, "wb") as log:
        return subprocess.Popen(
            [sys.executable, "-m", "streaming", "aggregate", "--until-idle"],
            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env, cwd=PROJECT_ROOT,
        )


# How a refused demo is forced, as the user typed it (make demo or the CLI).
FORCE_HINT = "pass --force (make demo ARGS=--force)"


def run_demo(settings: Settings, data: list[str] | None, *, symbol: str | None = None, reset: bool = True,
             force: bool = False, console: Console | None = None) -> bool:
    """Run the demo; print the summary; return the verdict (validation and checks all pass).

    It refuses (InUseError, before changing anything) while live consumers use the topics it would
    recreate or the aggregator's consumer group it would delete or join, unless `force`.
    """
    from streaming.replay.producer import run_replay
    from streaming.validate.run import validate_kafka

    console = console or Console(highlight=False)
    t_all = time.monotonic()
    os.environ.setdefault("DAGSTER_HOME", str(PROJECT_ROOT / ".dagster_home"))
    prepare_dagster_home(Path(os.environ["DAGSTER_HOME"]))

    t = _step(console, "Kafka broker (official jars from Maven Central, KRaft, 127.0.0.1)")
    _ensure_broker(settings, console)
    if reset:
        reset_platform(settings.kafka, [CHECKPOINT_TOPIC], [settings.agg.group_id], force=force,
                       force_hint=FORCE_HINT)
        console.print("  topics ticks.raw, ticks.agg.1s, ticks.dlq recreated empty")
    else:
        if not force:
            # The demo's aggregator would join a running one's group and take half its partitions.
            refuse_if_in_use(settings.kafka, [], [settings.agg.group_id],
                             f"start the demo's aggregator in consumer group {settings.agg.group_id}", FORCE_HINT)
        bootstrap_topics(settings.kafka)
    times = [StepTime("broker + topics", time.monotonic() - t)]

    t = _step(console, "tick data")
    files = data or ensure_demo_data()
    console.print(f"  {len(files)} file(s): {', '.join(Path(f).name for f in files[:4])}"
                  f"{' …' if len(files) > 4 else ''}")
    parts = partitions_env(files, realtime=False, symbol=symbol)
    if parts:
        # The summary's `make platform` hint compares with these; the backfill gets them via `settings`.
        os.environ.update(parts)
        settings = Settings(**{**settings.__dict__, "warehouse": settings.warehouse.model_copy(
            update={"partitions_start": parts[START], "partitions_end": parts.get(END)})})
        console.print(f"  fact partitions {parts[START]} .. {parts.get(END, 'open')} (the data's days)")
    times.append(StepTime("data", time.monotonic() - t))

    t = _step(console, "aggregator (consumer group on ticks.raw, exactly-once) + replay at full speed")
    log_path = PROJECT_ROOT / ".run" / "demo" / "aggregate.log"
    aggregator = _start_aggregator(settings, log_path)
    try:
        replay_settings = Settings(**{**settings.__dict__, "replay": settings.replay.model_copy(
            update={"speed": 0.0, "live": False, "loop": False, **({"symbol": symbol} if symbol else {})})})
        summary = run_replay(replay_settings, files, console=console)
        console.print(f"  {summary.line()}")
        times.append(StepTime("replay", time.monotonic() - t))
        t = time.monotonic()
        code = aggregator.wait(timeout=600)
    except BaseException:
        aggregator.terminate()
        aggregator.wait(timeout=30)
        raise
    tail = log_path.read_text(errors="replace").strip().splitlines()[-3:]
    if code != 0:
        raise DemoError(f"the aggregator exited with status {code}: " + " | ".join(tail))
    console.print("  " + (tail[-1] if tail else "aggregator done"))
    times.append(StepTime("aggregate drain", time.monotonic() - t))

    t = _step(console, "validation: independent recomputation ticks → bins → bars from Kafka")
    report = validate_kafka(settings.kafka, [Path(f) for f in files], symbol=symbol,
                            spread=settings.replay.spread, bin_ms=settings.replay.bin_ms,
                            window_ms=settings.agg.window_ms)
    times.append(StepTime("validate", time.monotonic() - t))

    t = _step(console, "Dagster: backfill fact_ticks_60s / fact_ticks_300s in one run, with asset checks")
    facts = _backfill(settings, summary, console)
    times.append(StepTime("facts", time.monotonic() - t))

    ok = _summary(console, settings, summary, report, facts, times, time.monotonic() - t_all)
    return ok


def _backfill(settings: Settings, replay: ReplaySummary, console: Console) -> BackfillReport:
    if replay.first_event_ts_ms is None or replay.last_event_ts_ms is None:
        raise DemoError("the replay produced no ticks; nothing to load")
    # The partitions that the replayed event times cover (the last tick's second included).
    start = datetime.fromtimestamp(replay.first_event_ts_ms / 1000, tz=UTC)
    end = datetime.fromtimestamp((replay.last_event_ts_ms + settings.agg.window_ms) / 1000, tz=UTC)
    with warnings.catch_warnings():
        # Dagster's beta/preview notices about its own APIs are not news to a demo user.
        warnings.filterwarnings("ignore", category=Warning, module=r"dagster\..*")
        from tick_platform.backfill import materialize_facts

        result = materialize_facts(start, end, settings, log_level="WARNING")
    console.print(f"  partitions {result.first_partition} … {result.last_partition} ({result.partitions}), "
                  f"{len(result.run_ids)} run(s) from {result.run_id[:8]}: {'success' if result.success else 'FAILED'}")
    return result


def _platform_command(settings: Settings) -> str:
    """`make platform` with the partition range the demo loaded (when it is not the configured one)."""
    loader = settings.warehouse
    if os.environ.get(START) != loader.partitions_start:
        return "make platform"
    end = f" {END}={loader.partitions_end}" if loader.partitions_end else ""
    return f"{START}={loader.partitions_start}{end} make platform"


def _summary(console: Console, settings: Settings, replay: ReplaySummary, report: ValidationReport,
             facts: BackfillReport,
             times: list[StepTime], total_s: float) -> bool:
    table = Table(title="tick platform demo", show_header=True, header_style="bold")
    table.add_column("what")
    table.add_column("value", justify="right")
    table.add_row("ticks replayed", f"{replay.ticks:,}")
    table.add_row("10 ms bins → ticks.raw", f"{replay.bins:,}")
    table.add_row("DLQ records (replay)", f"{replay.dlq:,}")
    totals = report.totals
    for key in ("ticks", "bins", "bars", "tick_volume", "bar_volume", "symbols", "dlq"):
        if key in totals:
            table.add_row(f"validated {key}", f"{totals[key]:,}")
    for name, rows in facts.rows.items():
        table.add_row(f"rows in {name}", f"{rows:,}")
    checks = facts.checks
    passed = sum(1 for c in checks if c.passed)
    table.add_row("asset checks passed", f"{passed}/{len(checks)}")
    for stats in report.pipeline_latencies():
        table.add_row(f"latency {stats.name} p50/p95/p99 ms",
                      f"{stats.p50:,.0f} / {stats.p95:,.0f} / {stats.p99:,.0f}")
    for step in times:
        table.add_row(f"time: {step.name}", f"{step.seconds:.1f} s")
    table.add_row("time: total", f"{total_s:.1f} s")
    console.print(table)
    failed = [c for c in checks if not c.passed]
    for check in failed:
        console.print(f"[red]check failed:[/] {check.asset} {check.name} {check.metadata}")
    for comp in report.comparisons:
        state = "[green]ok[/]" if comp.ok else "[red]MISMATCH[/]"
        console.print(f"  {comp.name}: {state}")
    ok = bool(report.ok) and bool(facts.success) and not failed
    verdict = "[bold green]PASS[/]" if ok else "[bold red]FAIL[/]"
    console.print(f"validation verdict: {verdict} (warehouse: {open_warehouse(settings).describe()})")
    console.print(
        f"next: [bold]{_platform_command(settings)}[/] → Dagster UI at http://127.0.0.1:3000 "
        "(assets, partitions, checks); "
        "[bold]make dashboard[/] → http://127.0.0.1:8501; [bold]make down[/] stops the broker."
    )
    return ok
