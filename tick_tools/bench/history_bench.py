"""History at scale: the fact step over N trading days of M symbols, per day and per partition.

The input is what the aggregator writes: synthetic 1 s bars (the Bar contract) of `history_symbols`
symbols over the first NYSE regular sessions from 2024-02-26 (the 2024-03-10 DST change and Good
Friday inside), at the density of section 3's synthetic day (`history_bar_share` of the symbol-seconds
hold a bar: about 900,000 bars a day for 100 symbols), produced once into a fresh topic in
transactions and in event-time order per partition. Then, for each N of `history_days`, the first N
sessions are backfilled (`materialize_facts`: ranged runs of WAREHOUSE_BACKFILL_SESSIONS_PER_RUN
sessions, every run with its checks) into a fresh DuckDB file, with a fresh file-based DAGSTER_HOME
(SQLite, the default instance), in a child process. Reported: seconds per trading day and per
partition, and how much of it is the steps' own work (Kafka read, rollup, warehouse write, the
checks' re-read) against the rest (Dagster's planned and materialization events, run creation,
the checks' comparisons, freshness).
"""

from __future__ import annotations

import json
import zlib
from datetime import date, timedelta
from typing import Any

import numpy as np
import polars as pl
from confluent_kafka import Producer

from tick_tools.bench.harness import PYTHON, Bench, Figure, run_measured
from tick_tools.bench.replay_bench import BenchError

FIRST_DAY = "2024-02-26"
TXN_RECORDS = 50_000


def _sessions(days: int) -> list[tuple[str, int, int]]:
    """(day, open_ms, close_ms) of the first `days` NYSE regular sessions from FIRST_DAY."""
    from tick_tools.pipeline.demo_data import trading_sessions

    return [(s.day.isoformat(), s.open_ms, s.close_ms) for s in trading_sessions(date.fromisoformat(FIRST_DAY), days)]


def session_bars(open_ms: int, close_ms: int, symbols: list[str], share: float, seed: int) -> pl.DataFrame:
    """One session's 1 s bars of every symbol, sorted by start time (the aggregator's order), as Bar fields."""
    rng = np.random.default_rng(seed)
    seconds = np.arange(open_ms, close_ms, 1000, dtype=np.int64)
    frames = []
    for i, symbol in enumerate(symbols):
        starts = seconds[rng.random(len(seconds)) < share]
        n = len(starts)
        close = np.round(20 + i % 200 + np.cumsum(rng.normal(0, 0.01, n)), 4)
        open_ = np.round(close + rng.normal(0, 0.005, n), 4)
        high = np.round(np.maximum(open_, close) + rng.exponential(0.004, n), 4)
        low = np.round(np.minimum(open_, close) - rng.exponential(0.004, n), 4)
        volume = 100 * rng.integers(1, 20, n)
        vwap = np.round((low + high) / 2, 6)
        trades = rng.integers(1, 6, n)
        frames.append(pl.DataFrame({
            "symbol": symbol, "start_ts_ms": starts, "open": open_, "high": high, "low": low, "close": close,
            "volume": volume, "vwap": vwap, "trade_count": trades,
        }))
    bars = pl.concat(frames).sort("start_ts_ms", "symbol")
    return bars.select(
        pl.format("{}-{}-time-1s", "symbol", pl.col("start_ts_ms").cast(pl.String).str.zfill(13)).alias("bar_id"),
        "symbol", pl.lit("time-1s").alias("spec"), "start_ts_ms", (pl.col("start_ts_ms") + 1000).alias("end_ts_ms"),
        "open", "high", "low", "close", "volume", (pl.col("vwap") * pl.col("volume")).round(6).alias("notional"),
        "vwap", "trade_count", pl.col("trade_count").alias("bin_count"), pl.lit(0).alias("max_lateness_ms"),
        pl.lit(None, dtype=pl.Int64).alias("api_send_ts_ms"),
        (pl.col("start_ts_ms") + 990).alias("source_event_ts_ms"), (pl.col("start_ts_ms") + 1100).alias("ingest_ts_ms"),
        pl.lit(0).alias("revision"), pl.lit("aggregator").alias("source"),
    )


def produce_history(brokers: str, topic: str, partitions: int, sessions: list[tuple[str, int, int]],
                    symbols: list[str], share: float) -> int:
    """Produce every session's bars into `topic` in transactions, keyed and partitioned like the aggregator."""
    producer = Producer({"bootstrap.servers": brokers, "transactional.id": f"history-bench-{topic}",
                         "linger.ms": 20, "batch.size": 1_000_000, "compression.type": "lz4",
                         # errors only: a fresh broker's "coordinator load in progress" retries are not news
                         "log_level": 3})
    producer.init_transactions(30)
    part = {s: zlib.crc32(s.encode()) % partitions for s in symbols}
    keys = {s: s.encode() for s in symbols}
    total = 0
    for n, (_day, open_ms, close_ms) in enumerate(sessions):
        frame = session_bars(open_ms, close_ms, symbols, share, seed=n)
        lines = frame.write_ndjson().encode().splitlines()
        for start in range(0, len(lines), TXN_RECORDS):
            producer.begin_transaction()
            for sym, value in zip(frame["symbol"][start:start + TXN_RECORDS], lines[start:start + TXN_RECORDS],
                                  strict=True):
                while True:
                    try:
                        producer.produce(topic, key=keys[sym], value=value, partition=part[sym])
                        break
                    except BufferError:
                        producer.poll(0.05)
            producer.commit_transaction(60)
        total += len(lines)
    return total


def _backfill(bench: Bench, topic: str, sessions: list[tuple[str, int, int]], label: str,
              extra_env: dict[str, str] | None = None) -> dict[str, Any]:
    from tick_tools.pipeline.services import prepare_dagster_home

    run_dir = bench.run_dir / f"history-{label}"
    home = prepare_dagster_home(run_dir / "dagster_home")
    end_day = (date.fromisoformat(sessions[-1][0]) + timedelta(days=1)).isoformat()
    env = bench.env(KAFKA_TOPIC_AGG=topic, WAREHOUSE_TARGET="duckdb",
                    WAREHOUSE_DUCKDB_PATH=str(run_dir / "warehouse.duckdb"), DAGSTER_HOME=str(home),
                    WAREHOUSE_PARTITIONS_START=sessions[0][0], WAREHOUSE_PARTITIONS_END=end_day, **(extra_env or {}))
    cmd = [PYTHON, "-m", "tick_tools.bench.warehouse_job", str(sessions[0][1]), str(sessions[-1][2])]
    bench.command("history", cmd, "KAFKA_TOPIC_AGG=... WAREHOUSE_TARGET=duckdb DAGSTER_HOME=<fresh, SQLite>"
                  + "".join(f" {k}={v}" for k, v in (extra_env or {}).items()))
    res = run_measured(cmd, env=env, timeout_s=7200)
    line = next((x.text for x in reversed(res.lines) if x.stream == "out" and x.text.startswith("{")), None)
    if res.rc != 0 or line is None:
        raise BenchError(f"history backfill of {len(sessions)} sessions failed (exit {res.rc}):\n{res.tail()}")
    out: dict[str, Any] = json.loads(line)
    out.update(days=len(sessions), label=label, wall_s=res.wall_s, peak_rss_mb=res.peak_rss_mb)
    return out


def run_history_section(bench: Bench) -> None:
    """Backfill 5, 20 and 40 trading days (by default) of 100 symbols; seconds per day, flat in days."""
    from streaming.kernel.settings import KafkaSettings
    from streaming.kernel.topics import bootstrap_topics
    from streaming.sources.synth import synth_symbols

    sizes = bench.sizes
    days = sorted(sizes.history_days)
    sessions = _sessions(days[-1])
    symbols = synth_symbols(sizes.history_symbols)
    suffix = f"history-{bench.run_dir.name}"
    # A day's retention: the topic's records carry production times, and the section runs for an hour or more.
    kafka = KafkaSettings(brokers=bench.brokers, topic_raw=f"ticks.raw.{suffix}",  # type: ignore[call-arg]
                          topic_agg=f"ticks.agg.1s.{suffix}", topic_dlq=f"ticks.dlq.{suffix}",
                          retention_ms=86_400_000)
    bootstrap_topics(kafka)
    bench.log(f"[history] producing {len(sessions)} sessions x {len(symbols)} symbols of 1 s bars into "
              f"{kafka.topic_agg}")
    bars = produce_history(bench.brokers, kafka.topic_agg, kafka.partitions, sessions, symbols,
                           sizes.history_bar_share)
    bench.log(f"[history] {bars:,} bars ({bars / len(sessions):,.0f} a day)")
    rows = []
    for n in days:
        out = _backfill(bench, kafka.topic_agg, sessions[:n], f"{n}d")
        rows.append(out)
        bench.log(f"[history] {n} days: fact step {out['materialize_s']:.1f}s "
                  f"({out['materialize_s'] / n:.2f} s/day), steps' own work {out['work_s']:.1f}s")
    subset = _backfill(bench, kafka.topic_agg, sessions[:days[0]], f"{days[0]}d-subset",
                       {"DAGSTER_EMIT_PARTITION_SUBSET_IN_PLANNED_EVENTS": "1"})
    bench.sections["history"] = {"rows": rows, "planned_subset": subset, "bars": bars, "symbols": len(symbols),
                                 "bars_per_day": bars / len(sessions), "first_day": FIRST_DAY}
    for r in rows:
        per_day = r["materialize_s"] / r["days"]
        ok = bool(r["success"])
        bench.add(Figure("history", f"fact step per trading day, {r['days']} days x {len(symbols)} symbols", per_day,
                         "s/day", goal="<= 5 s/day", met=per_day <= 5.0 and ok,
                         note=f"{r['materialize_s']:.1f}s for {r['partitions']:,} partitions "
                              f"({1000 * r['materialize_s'] / max(r['partitions'], 1):.0f} ms each) in "
                              f"{r['runs']} runs; steps' own work {r['work_s'] / r['days']:.2f} s/day (read "
                              f"{r['read_s'] / r['days']:.2f}, checks' re-read {r['check_read_s'] / r['days']:.2f}), "
                              f"the rest (Dagster) {(r['materialize_s'] - r['work_s']) / r['days']:.2f} s/day; "
                              f"success {ok}, peak RSS {r['peak_rss_mb']:.0f} MB"))
    first, last = rows[0], rows[-1]
    growth = (last["materialize_s"] / last["days"]) / max(first["materialize_s"] / first["days"], 1e-9)
    bench.add(Figure("history", f"seconds per day, {last['days']} days vs {first['days']} days", growth, "x",
                     goal="flat (<= 1.25x)", met=growth <= 1.25))
    sub_day = subset["materialize_s"] / subset["days"]
    bench.add(Figure("history", f"fact step per day with DAGSTER_EMIT_PARTITION_SUBSET_IN_PLANNED_EVENTS=1, "
                     f"{subset['days']} days", sub_day, "s/day",
                     ratio=sub_day / max(first["materialize_s"] / first["days"], 1e-9), ratio_to="without",
                     note=f"the rest (Dagster) {(subset['materialize_s'] - subset['work_s']) / subset['days']:.2f} "
                          "s/day"))


def history_rows(section: dict[str, Any]) -> list[str]:
    """The Markdown table of the history section (report.py)."""
    lines = ["| days | partitions | runs | fact step | per day | per partition | read | checks' re-read | "
             "rollup + write | the rest (Dagster) | peak RSS |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in [*section["rows"], section["planned_subset"]]:
        d = r["days"]
        name = f"{d}" + (" (planned subset)" if r["label"].endswith("subset") else "")
        lines.append(f"| {name} | {r['partitions']:,} | {r['runs']} | {r['materialize_s']:.1f} s | "
                     f"{r['materialize_s'] / d:.2f} s | {1000 * r['materialize_s'] / r['partitions']:.0f} ms | "
                     f"{r['read_s'] / d:.2f} s/day | {r['check_read_s'] / d:.2f} s/day | "
                     f"{(r['work_s'] - r['read_s'] - r['check_read_s']) / d:.2f} s/day | "
                     f"{(r['materialize_s'] - r['work_s']) / d:.2f} s/day | {r['peak_rss_mb']:.0f} MB |")
    return lines

