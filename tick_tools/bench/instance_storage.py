"""What Dagster's bookkeeping costs a backfill on each instance storage: SQLite files vs PostgreSQL.

`python -m tick_tools.bench.instance_storage [--sessions 2] [--repeat 3]` starts its own broker and
PostgreSQL (free loopback ports, a temporary folder, both stopped at the end), produces one symbol's
1 s bars for `sessions` NYSE sessions (2010-02-17 on), and times `materialize_facts` over them
(78 partitions a session, one ranged run) on: an in-memory instance (the baseline: no storage),
a SQLite DAGSTER_HOME, PostgreSQL, PostgreSQL with DAGSTER_EVENT_BATCH_SIZE=50, PostgreSQL with
DAGSTER_EMIT_PARTITION_SUBSET_IN_PLANNED_EVENTS=1, PostgreSQL and SQLite with both. Each timing
starts from an empty instance and an empty DuckDB file; the variants take turns, so a busy machine
slows them alike. The bookkeeping is a variant's wall time less the in-memory one (the same reads
and writes otherwise); an in-memory run with both settings shows what they save without storage.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import random
import shutil
import statistics
import tempfile
import time
import uuid
import warnings
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated

import typer

from streaming.kernel.bar_spec import DEFAULT_BAR_SPEC, make_bar_id
from streaming.kernel.records import Bar, encode
from streaming.kernel.settings import PROJECT_ROOT, KafkaSettings, Settings, load_settings
from tick_tools.broker.runner import LocalCluster, free_port_base
from tick_tools.postgres.runner import LocalPostgres, free_port

FIRST_DAY = datetime(2010, 2, 17, tzinfo=UTC)  # a Wednesday; the next sessions follow on the calendar
OPEN_UTC, CLOSE_UTC = timedelta(hours=14, minutes=30), timedelta(hours=21)  # 09:30-16:00 New York (winter)


@dataclass(frozen=True)
class Variant:
    """One way of storing the instance, with the environment it runs under."""

    name: str
    storage: str  # memory | sqlite | postgres
    env: dict[str, str]


VARIANTS = (
    Variant("in-memory (baseline)", "memory", {}),
    Variant("SQLite DAGSTER_HOME", "sqlite", {}),
    Variant("PostgreSQL", "postgres", {}),
    Variant("PostgreSQL, DAGSTER_EVENT_BATCH_SIZE=50", "postgres", {"DAGSTER_EVENT_BATCH_SIZE": "50"}),
    Variant("PostgreSQL, DAGSTER_EMIT_PARTITION_SUBSET_IN_PLANNED_EVENTS=1", "postgres",
            {"DAGSTER_EMIT_PARTITION_SUBSET_IN_PLANNED_EVENTS": "1"}),
    Variant("PostgreSQL, both", "postgres", {"DAGSTER_EVENT_BATCH_SIZE": "50",
                                             "DAGSTER_EMIT_PARTITION_SUBSET_IN_PLANNED_EVENTS": "1"}),
    Variant("SQLite, both", "sqlite", {"DAGSTER_EVENT_BATCH_SIZE": "50",
                                       "DAGSTER_EMIT_PARTITION_SUBSET_IN_PLANNED_EVENTS": "1"}),
    Variant("in-memory, both", "memory", {"DAGSTER_EVENT_BATCH_SIZE": "50",
                                          "DAGSTER_EMIT_PARTITION_SUBSET_IN_PLANNED_EVENTS": "1"}),
)
FACT_ASSETS = ("fact_ticks_60s", "fact_ticks_300s")
_TUNING = ("DAGSTER_EVENT_BATCH_SIZE", "DAGSTER_EMIT_PARTITION_SUBSET_IN_PLANNED_EVENTS")


def session_days(count: int) -> list[datetime]:
    """The first `count` NYSE sessions from FIRST_DAY, as UTC midnights."""
    from tick_tools.pipeline.demo_data import trading_days

    return [datetime(d.year, d.month, d.day, tzinfo=UTC) for d in trading_days(FIRST_DAY.date(), count)]


def synthetic_bars(days: list[datetime], symbol: str = "WDC") -> list[Bar]:
    """One bar a second through each session: a seeded random walk (the bench needs volume, not realism)."""
    rng = random.Random(14)
    price = 20.0
    bars = []
    for day in days:
        start = int((day + OPEN_UTC).timestamp() * 1000)
        for k in range(int((CLOSE_UTC - OPEN_UTC).total_seconds())):
            t = start + 1000 * k
            step = rng.gauss(0, 0.01)
            open_, close = price, max(0.01, price + step)
            price = close
            volume = rng.randint(1, 500)
            bars.append(Bar(
                bar_id=make_bar_id(symbol, t, DEFAULT_BAR_SPEC), symbol=symbol, spec=DEFAULT_BAR_SPEC.text,
                start_ts_ms=t, end_ts_ms=t + 1000, open=open_, high=max(open_, close), low=min(open_, close),
                close=close, volume=volume, notional=close * volume, vwap=close, trade_count=1, bin_count=1,
                max_lateness_ms=0, api_send_ts_ms=None, source_event_ts_ms=t, ingest_ts_ms=t + 5,
            ))
    return bars


def _produce(kafka: KafkaSettings, bars: list[Bar]) -> None:
    from confluent_kafka import Producer

    from streaming.kernel.topics import bootstrap_topics

    bootstrap_topics(kafka)
    producer = Producer({**kafka.client_base(), "enable.idempotence": True, "acks": "all", "linger.ms": 5})
    for i, bar in enumerate(bars):
        # The aggregator's partitioner (crc32(symbol) % partitions): the readers expect each symbol there.
        producer.produce(kafka.topic_agg, key=bar.symbol.encode(), value=encode(bar),
                         partition=zlib.crc32(bar.symbol.encode()) % kafka.partitions)
        if i % 10_000 == 9_999:
            producer.flush()
    producer.flush(30)


@contextlib.contextmanager
def _environ(values: dict[str, str]) -> Iterator[None]:
    """os.environ with `values` set (and the tuning variables the variant does not set removed)."""
    saved = {k: os.environ.get(k) for k in (*values, *_TUNING)}
    for name in _TUNING:
        os.environ.pop(name, None)
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _instance(variant: Variant, folder: Path, server: LocalPostgres) -> tuple[object, dict[str, str]]:
    """A fresh, empty instance of the variant's storage and the environment it needs."""
    from dagster import DagsterInstance

    from tick_tools.pipeline.services import prepare_dagster_home

    if variant.storage == "memory":
        return DagsterInstance.ephemeral(), {}
    home = prepare_dagster_home(folder / f"home-{uuid.uuid4().hex[:8]}", storage=variant.storage)
    env: dict[str, str] = {}
    if variant.storage == "postgres":
        database = f"bench_{uuid.uuid4().hex[:10]}"
        server.create_database(database)
        env = server.connection(database).env()
    with _environ(env):
        return DagsterInstance.from_config(str(home)), env


def _one(variant: Variant, folder: Path, server: LocalPostgres, kafka: KafkaSettings, settings: Settings,
         start: datetime, end: datetime) -> dict[str, float | int | bool]:
    from dagster import AssetKey, DagsterInstance

    from tick_platform.backfill import materialize_facts

    db = folder / f"warehouse-{uuid.uuid4().hex[:8]}.duckdb"
    run_settings = dataclasses.replace(settings, warehouse=settings.warehouse.model_copy(update={"duckdb_path": db}))
    instance, env = _instance(variant, folder, server)
    assert isinstance(instance, DagsterInstance)
    with instance, _environ({**env, **variant.env}):
        t0 = time.perf_counter()
        report = materialize_facts(start, end, run_settings, kafka=kafka, instance=instance, with_dimensions=False,
                                   log_level="WARNING")
        wall = time.perf_counter() - t0
        events = sum(len(instance.all_logs(run_id)) for run_id in report.run_ids)
        # Every variant must still record each partition of each fact as materialized.
        recorded = min(len(instance.get_materialized_partitions(AssetKey(a))) for a in FACT_ASSETS)
    db.unlink(missing_ok=True)
    return {"wall_s": wall, "events": events, "partitions": report.partitions, "success": report.success,
            "runs": len(report.run_ids), "recorded": recorded}


def main(
    sessions: Annotated[int, typer.Option("--sessions", min=1, max=10, help="NYSE sessions (78 partitions each).")] = 2,
    repeat: Annotated[int, typer.Option("--repeat", min=1, max=10, help="Timings per variant (median).")] = 3,
    out: Annotated[Path | None, typer.Option("--out", help="Write the results as JSON here.")] = None,
) -> None:
    """Time one backfill on each instance storage; print a table (and JSON with --out)."""
    warnings.simplefilter("ignore")  # Dagster's preview/beta warnings are not the bench's output
    folder = Path(tempfile.mkdtemp(prefix="tick-instance-bench-"))
    folder.chmod(0o755)  # under root the PostgreSQL server runs as `nobody`
    empty_env = folder / "empty.env"
    empty_env.write_text("")
    days = session_days(sessions)
    start, end = days[0] + OPEN_UTC, days[-1] + CLOSE_UTC
    base = free_port_base(1)
    cluster = LocalCluster(folder / "broker", PROJECT_ROOT / ".cache" / "kafka", f"127.0.0.1:{base}", 1, "768m")
    server = LocalPostgres(folder / "postgres", port=free_port())
    results: dict[str, list[dict[str, float | int | bool]]] = {v.name: [] for v in VARIANTS}
    try:
        cluster.up(timeout_s=120)
        server.up()
        settings = load_settings(str(empty_env), warehouse={
            "target": "duckdb", "partitions_start": days[0].date().isoformat(),
            "partitions_end": (days[-1] + timedelta(days=1)).date().isoformat()})
        suffix = uuid.uuid4().hex[:8]
        kafka = settings.kafka.model_copy(update={
            "brokers": cluster.bootstrap, "topic_raw": f"ticks.raw.{suffix}", "topic_agg": f"ticks.agg.1s.{suffix}",
            "topic_dlq": f"ticks.dlq.{suffix}"})
        bars = synthetic_bars(days)
        _produce(kafka, bars)
        print(f"{len(bars):,} bars over {sessions} session(s), {start:%Y-%m-%d %H:%M} to {end:%Y-%m-%d %H:%M} UTC",
              flush=True)
        _one(VARIANTS[0], folder, server, kafka, settings, start, end)  # warm-up: imports, first DuckDB file
        for i in range(repeat):
            for variant in VARIANTS:
                result = _one(variant, folder, server, kafka, settings, start, end)
                results[variant.name].append(result)
                print(f"  [{i + 1}/{repeat}] {variant.name}: {result['wall_s']:.2f} s, {result['events']} events",
                      flush=True)
    finally:
        server.down()
        cluster.down()
        shutil.rmtree(folder, ignore_errors=True)
    baseline = statistics.median(float(r["wall_s"]) for r in results[VARIANTS[0].name])
    partitions = int(results[VARIANTS[0].name][0]["partitions"])
    print(f"\n{partitions} partitions in {int(results[VARIANTS[0].name][0]['runs'])} run(s); median of {repeat}, "
          f"load average {os.getloadavg()[0]:.1f}")
    print("| instance storage | wall s (median) | min-max s | over the in-memory baseline, s | per partition ms "
          "| events stored | partitions recorded |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    summary = {}
    for variant in VARIANTS:
        walls = [float(r["wall_s"]) for r in results[variant.name]]
        wall = statistics.median(walls)
        extra = wall - baseline
        summary[variant.name] = {"wall_s": wall, "min_s": min(walls), "max_s": max(walls), "bookkeeping_s": extra,
                                 "events": results[variant.name][0]["events"],
                                 "success": all(r["success"] for r in results[variant.name])}
        booked = "-" if variant is VARIANTS[0] else f"{extra:+.2f}"
        per = "-" if variant is VARIANTS[0] else f"{1000 * extra / partitions:+.1f}"
        recorded = min(int(r["recorded"]) for r in results[variant.name])
        summary[variant.name]["recorded"] = recorded
        print(f"| {variant.name} | {wall:.2f} | {min(walls):.2f}-{max(walls):.2f} | {booked} | {per} | "
              f"{results[variant.name][0]['events']} | {recorded} |")
    if out is not None:
        out.write_text(json.dumps({"sessions": sessions, "partitions": partitions, "repeat": repeat,
                                   "measured": datetime.now(UTC).isoformat(timespec="seconds"),
                                   "variants": summary}, indent=2))


if __name__ == "__main__":
    typer.run(main)
