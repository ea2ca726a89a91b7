"""`python -m tick_tools bench`: every benchmark side by side in one run, on one broker of its own.

The bench starts its own single-node Kafka on free ports in a run folder (never the user's
broker, never port 9092), runs the sections in order and always stops the broker at the end.
"""

from __future__ import annotations

import json
import shutil
import signal
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from streaming.cli_support import console, fail, one_line_errors
from streaming.kernel.outputs import write_atomic
from streaming.kernel.settings import PROJECT_ROOT
from tick_tools.bench.harness import Bench, Figure, Sizes, load_average

SECTIONS = ["limit", "replay", "aggregate", "quix", "latency", "memory", "warehouse", "sensor", "partitions",
            "history", "profile"]


def _section_runners() -> dict[str, Callable[[Bench], None]]:
    from tick_tools.bench.aggregate_bench import run_aggregate_section, run_quix_section
    from tick_tools.bench.history_bench import run_history_section
    from tick_tools.bench.latency import run_latency_section
    from tick_tools.bench.memory import run_memory_section
    from tick_tools.bench.partitions_bench import run_partitions_section
    from tick_tools.bench.perf_tools import run_limit
    from tick_tools.bench.profiling import run_profile_section
    from tick_tools.bench.replay_bench import run_replay_section
    from tick_tools.bench.sensor_bench import run_sensor_section
    from tick_tools.bench.warehouse_bench import run_warehouse_section

    return {
        "limit": run_limit,
        "replay": run_replay_section,
        "aggregate": run_aggregate_section,
        "quix": run_quix_section,
        "latency": run_latency_section,
        "memory": run_memory_section,
        "warehouse": run_warehouse_section,
        "sensor": run_sensor_section,
        "partitions": run_partitions_section,
        "history": run_history_section,
        "profile": run_profile_section,
    }


def _parse_only(only: str | None) -> list[str]:
    if not only:
        return list(SECTIONS)
    chosen = [s.strip() for s in only.split(",") if s.strip()]
    unknown = [s for s in chosen if s not in SECTIONS]
    if unknown:
        fail(f"--only: unknown section(s) {', '.join(unknown)}; choose from {', '.join(SECTIONS)}", code=2)
    # Aggregation and the peer read the replay's topic: run the replay first when they are chosen.
    if "warehouse" in chosen and "aggregate" not in chosen:
        chosen.append("aggregate")  # the backfill reads the aggregator's output
    if {"aggregate", "quix"} & set(chosen) and "replay" not in chosen:
        chosen.insert(0, "replay")
    return [s for s in SECTIONS if s in chosen]


def bench(
    quick: Annotated[bool, typer.Option("--quick", help="CI-sized run (a few minutes).")] = False,
    only: Annotated[str | None, typer.Option("--only", help=f"Comma-separated sections: {','.join(SECTIONS)}.")] = None,
    out: Annotated[Path, typer.Option("--out", help="The Markdown report.")] = Path("docs/benchmarks.md"),
    results: Annotated[Path, typer.Option("--results", help="Machine-readable results.")] = Path(
        "bench-results/results.json"),
    keep: Annotated[bool, typer.Option("--keep", help="Keep the run folder (data, broker logs) afterwards.")] = False,
    set_: Annotated[list[str] | None, typer.Option(
        "--set", help="Override a size, e.g. --set memory_lengths=1000000,5000000 (see Sizes in bench/harness.py).",
    )] = None,
) -> None:
    """Benchmarks side by side in one run: Kafka's perf tests, replay, aggregator, Quix Streams, latency, memory."""
    from tick_tools.bench.report import write_report

    chosen = _parse_only(only)
    overrides = list(set_ or [])
    try:
        sizes = (Sizes.quick() if quick else Sizes.full()).override(set_ or [])
    except ValueError as exc:
        fail(str(exc), code=2)
    run_root = PROJECT_ROOT / ".run"
    run_root.mkdir(exist_ok=True)
    run_dir = Path(tempfile.mkdtemp(prefix="bench-", dir=run_root))
    env_file = run_dir / "empty.env"
    env_file.write_text("")  # the developer's .env must not change what is measured
    started = time.time()
    load_start = load_average()
    # SIGTERM (CI timeouts, Ctrl+C from make) must still stop the broker and the stage in flight.
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        with one_line_errors():
            bench_run = _run_sections(quick, sizes, run_dir, env_file, chosen)
            results.parent.mkdir(parents=True, exist_ok=True)
            payload = bench_run.as_json()
            payload["started_utc"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started))
            payload["duration_s"] = round(time.time() - started, 1)
            payload["load_start"], payload["load_end"] = load_start, load_average()
            payload["overrides"] = overrides
            write_report(bench_run, out, payload, chosen)
            write_atomic(results, json.dumps(payload, indent=2, default=str).encode())
            console.print(f"bench: wrote {out} and {results} in {payload['duration_s']:.0f}s", highlight=False)
    finally:
        if not keep:
            shutil.rmtree(run_dir, ignore_errors=True)


def _interrupt(_signum: int, _frame: object) -> None:
    raise KeyboardInterrupt


def _run_sections(quick: bool, sizes: Sizes, run_dir: Path, env_file: Path, chosen: list[str]) -> Bench:
    """Start the bench's own broker, run the chosen sections in order, always stop the broker."""
    from tick_tools.broker.runner import LocalCluster, fetch_jars, free_port_base

    libs = fetch_jars(PROJECT_ROOT / ".cache" / "kafka")
    cluster = LocalCluster(run_dir / "broker", PROJECT_ROOT / ".cache" / "kafka",
                           f"127.0.0.1:{free_port_base(1)}", 1, "1g")
    bench_run = Bench(quick, sizes, run_dir, cluster.bootstrap, libs,
                      env_file, log=lambda line: console.print(line, highlight=False, markup=False))
    try:
        console.print(f"bench: starting Kafka at {cluster.bootstrap} (run folder {run_dir})", highlight=False)
        cluster.up(120)
        runners = _section_runners()
        for name in chosen:
            t0 = time.monotonic()
            try:
                runners[name](bench_run)
            except Exception as exc:  # one failed section must not lose the others' numbers
                console.print(f"[red]section {name} failed:[/] {escape(str(exc))}", highlight=False)
                bench_run.sections.setdefault("errors", {})[name] = "".join(
                    traceback.format_exception_only(type(exc), exc)).strip()
                bench_run.add(Figure(name, f"{name}: not measured", None, "", note=str(exc).splitlines()[0]))
            bench_run.sections.setdefault("timings_s", {})[name] = round(time.monotonic() - t0, 1)
            bench_run.sections.setdefault("load_after", {})[name] = round(load_average(), 1)
    finally:
        cluster.down()
    return bench_run
