"""Section 7: the replayed day's 5-minute partitions backfilled into DuckDB (tick_platform.backfill).

The aggregator's exactly-once output of section 3 is the input: `materialize_facts` runs the fact
assets for every partition covering its bars in one Dagster run (in a child process, against a
fresh DuckDB file). Reported: fact rows/s and seconds per trading day (6.5 h) of data.
"""

from __future__ import annotations

import json
import warnings
from datetime import date, timedelta
from pathlib import Path

from streaming.kernel.settings import PROJECT_ROOT
from tick_tools.bench.aggregate_bench import read_bars
from tick_tools.bench.harness import PYTHON, Bench, Figure, run_measured
from tick_tools.bench.replay_bench import SYNTH_DATE, BenchError

SESSION_S = 6.5 * 3600


def _next_day(day: str) -> str:
    return (date.fromisoformat(day) + timedelta(days=1)).isoformat()


def backfill_available() -> str | None:
    """None when tick_platform exposes the backfill function, else why not."""
    if not (PROJECT_ROOT / "tick_platform" / "backfill.py").is_file():
        return "tick_platform/backfill.py does not exist yet"
    try:
        with warnings.catch_warnings():  # Dagster's preview warnings are not the bench's output
            warnings.simplefilter("ignore")
            from tick_platform.backfill import materialize_facts  # noqa: F401
    except Exception as exc:  # an import error of a module still being built
        return f"tick_platform.backfill does not import: {exc}"
    return None


def run_warehouse_section(bench: Bench) -> None:
    """Backfill the event-time span of section 3's bars; rows/s and seconds per day."""
    why = backfill_available()
    runs = bench.shared.get("ours_runs")
    if why is None and not runs:
        why = "needs the aggregate section's output (run with --only aggregate,warehouse)"
    if why is not None or runs is None:
        why = why or "no aggregator output"
        bench.sections["warehouse"] = {"measured": False, "reason": why}
        bench.add(Figure("warehouse", "backfill into DuckDB", None, "", note=f"not measured: {why}"))
        return
    topic = runs["exactly-once"].output_topic
    bars = read_bars(bench.brokers, topic)
    if not bars:
        raise BenchError(f"no bars in {topic} to backfill")
    start = min(b["start_ts_ms"] for b in bars.values())
    # The first WAREHOUSE_HOURS of the day (the per-day figure is scaled): a whole day takes minutes.
    end = min(max(b["end_ts_ms"] for b in bars.values()), start + int(bench.sizes.warehouse_hours * 3_600_000))
    bars = {k: b for k, b in bars.items() if b["start_ts_ms"] < end}
    db = bench.run_dir / "warehouse.duckdb"
    env = bench.env(KAFKA_TOPIC_AGG=topic, WAREHOUSE_TARGET="duckdb", WAREHOUSE_DUCKDB_PATH=str(db),
                    WAREHOUSE_PARTITIONS_START=SYNTH_DATE, WAREHOUSE_PARTITIONS_END=_next_day(SYNTH_DATE))
    env.pop("DAGSTER_HOME", None)  # an ephemeral instance: the bench leaves no runs in the user's home
    cmd = [PYTHON, "-m", "tick_tools.bench.warehouse_job", str(start), str(end)]
    bench.command("warehouse", cmd,
                  f"KAFKA_TOPIC_AGG=... WAREHOUSE_TARGET=duckdb WAREHOUSE_DUCKDB_PATH={Path(db).name}")
    bench.log(f"[warehouse] backfilling {len(bars):,} bars ({(end - start) / 3.6e6:.1f} h of data) into DuckDB")
    res = run_measured(cmd, env=env, timeout_s=1800)
    line = next((x.text for x in reversed(res.lines) if x.stream == "out" and x.text.startswith("{")), None)
    if res.rc != 0 or line is None:
        raise BenchError(f"backfill failed (exit {res.rc}):\n{res.tail()}")
    out = json.loads(line)
    rows = sum(int(v) for v in out["rows"].values())
    seconds = float(out["materialize_s"])
    span_s = (end - start) / 1000
    per_day = seconds * SESSION_S / span_s if span_s else None
    bench.sections["warehouse"] = {"measured": True, "bars": len(bars), "span_s": span_s, "wall_s": res.wall_s,
                                   "peak_rss_mb": res.peak_rss_mb, **out}
    bench.log(f"[warehouse] {rows:,} fact rows in {seconds:.1f}s ({out['partitions']} partitions)")
    bench.add(Figure("warehouse", "backfill fact rows/s (DuckDB)", rows / seconds if seconds else None, "rows/s",
                     note=f"{rows:,} rows (60 s + 300 s facts) from {len(bars):,} bars, {out['partitions']} "
                          f"partitions in one run; success {out['success']}, checks failed: "
                          f"{', '.join(out.get('checks_failed') or []) or 'none'}"
                          " (freshness rightly fails when only the first hours of a longer stream are loaded)"))
    bench.add(Figure("warehouse", "backfill seconds per trading day of data", per_day, "s/day",
                     note=f"{seconds:.1f}s for {span_s / 3600:.2f} h of data, scaled to 6.5 h; "
                          f"process wall incl. Dagster import {res.wall_s:.1f}s"))
