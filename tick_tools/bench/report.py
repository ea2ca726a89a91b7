"""docs/benchmarks.md from one bench run: machine, versions, commands, every figure with ratio and goal."""

from __future__ import annotations

import os
import platform
import re
import shutil
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

import psutil

from streaming.kernel.outputs import write_atomic
from tick_tools.bench.harness import Bench, Figure
from tick_tools.bench.history_bench import history_rows
from tick_tools.broker.runner import kafka_version

# What would close a missed goal, by figure section (written where the table says "missed").
CLOSERS = {
    "history": "Half the time is Dagster's events per partition (78 a day, 0.45-0.55 s each on SQLite): fewer "
               "partitions per day of history (session partitions for a history asset beside the live 5-minute "
               "ones); the other half is two Kafka reads of every bar in Python: land the 1 s bars once in "
               "CORE.FACT_TICKS_1S and roll the history up in SQL.",
    "replay": "The replay is bound by Python-side binning and JSON encoding per bin (see the profile): "
              "encode bins in one vectorised pass per step (polars -> JSON lines in Rust), produce with "
              "`produce_batch`, and run one replay process per group of symbols (scale-out by files).",
    "aggregate": "The aggregator decodes, windows and encodes each bin in Python (see the profile): decode "
                 "batches with msgspec `decode_lines`/array-of-structs, keep window state in arrays per "
                 "symbol, and scale out with more aggregator processes in the group (one per partition).",
    "quix": "",
    "latency": "At speed 1 a window closes only when a later bin passes its end + grace: of the same "
               "partition, or with AGG_ALIGN_WATERMARKS (one ordered producer) of any partition once the "
               "window's own is caught up and quiet; else after the idle timeout (AGG_IDLE_TIMEOUT_MS, 2 s). "
               "Alignment halves the median with many symbols but cannot help a single sparse symbol, where "
               "only the wall clock says time moved: a processing-time close for live replays (end + grace "
               "+ the producer's measured publish delay) would; the producer's own p99 (batching, 100 ms "
               "transactions, stalls) bounds the tail, so shorten REPLAY_/AGG_COMMIT_INTERVAL_MS too.",
    "sensor": "Most of it is Dagster starting a run: the queue (dequeue every 2 s), a new process that "
              "imports Dagster and loads the code location, then ~5 s of work. Launching fact runs in a "
              "warm worker (or materializing from a long-running loader process the sensor signals), and "
              "closing windows sooner (see latency), would bring it well under 30 s.",
    "memory": "Peak RSS should not grow with stream length: look for per-run buffers that keep every "
              "bin (lag samples, DLQ lists, closed windows kept for revisions) and bound them.",
}


def _cmd(args: list[str]) -> str:
    try:
        proc = subprocess.run(args, capture_output=True, text=True, timeout=20)
        return (proc.stdout + proc.stderr).strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def machine() -> dict[str, Any]:
    """The machine and software the numbers were measured on."""
    cpu = ""
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        m = re.search(r"model name\s*:\s*(.+)", cpuinfo.read_text())
        cpu = m.group(1).strip() if m else ""
    java = _cmd(["java", "-version"]).splitlines()
    import confluent_kafka

    def version(dist: str) -> str:
        try:
            return metadata.version(dist)
        except metadata.PackageNotFoundError:
            return "not installed"

    return {
        "nproc": os.cpu_count(), "ram_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "cpu": cpu or platform.processor(),
        "os": f"{platform.system()} {platform.release()}", "python": platform.python_version(),
        "java": java[0] if java else "not found", "kafka": kafka_version(),
        "librdkafka": confluent_kafka.libversion()[0], "confluent_kafka": version("confluent-kafka"),
        "quixstreams": version("quixstreams"), "polars": version("polars"), "msgspec": version("msgspec"),
        "pyinstrument": version("pyinstrument"), "disk_free_gb": round(shutil.disk_usage("/").free / 2**30, 1),
    }


def _num(value: float | None, unit: str) -> str:
    if value is None:
        return "—"
    if unit in {"ms", "MB", "s/day", "s profiled"} or abs(value) < 100:
        return f"{value:,.1f}"
    return f"{value:,.0f}"


def _ratio(f: Figure) -> str:
    if f.ratio is None:
        return ""
    text = f"{f.ratio:.1f}x" if f.ratio >= 2 or "Quix" in f.ratio_to else f"{f.ratio:.0%}"
    return f"{text} of {f.ratio_to}" if f.ratio_to else text


def _verdict(f: Figure) -> str:
    if f.met is None:
        return ""
    return "**met**" if f.met else "**missed**"


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def figures_table(figures: list[Figure]) -> list[str]:
    rows = ["| section | figure | value | unit | ratio | goal | verdict | notes |",
            "|---|---|---:|---|---|---|---|---|"]
    for f in figures:
        rows.append(f"| {f.section} | {_cell(f.name)} | {_num(f.value, f.unit)} | {f.unit} | {_cell(_ratio(f))} | "
                    f"{_cell(f.goal)} | {_verdict(f)} | {_cell(f.note)} |")
    return rows


def _pct_row(name: str, p: dict[str, Any]) -> str:
    if not p.get("n"):
        return f"| {name} | 0 | — | — | — | — |"
    return f"| {name} | {p['n']} | {p['p50']:.0f} | {p['p95']:.0f} | {p['p99']:.0f} | {p['max']:.0f} |"


def _latency(sec: dict[str, Any]) -> list[str]:
    out = []
    for res in sec.values():
        out += [f"#### Speed {res['speed']:g}, {res.get('data', '')}: {res['data_seconds']:.0f} s of data, "
                f"{res['ticks']:,} ticks, {res['bins']:,} bins, {res['bars']:,} bars; live-shift delta "
                f"{res['live_shift_delta_ms']:.0f} ms", ""]
        for basis, title in (("event", "against the records' event times (bar end_ts_ms, bin end_ts_ms)"),
                             ("schedule", "against the replay's schedule (the live-shift delta removed)")):
            out += [f"Measured {title}:", "", *_latency_rows(res[basis])]
    return out


def _latency_rows(res: dict[str, Any]) -> list[str]:
    return ["| measure (ms) | n | p50 | p95 | p99 | max |", "|---|---:|---:|---:|---:|---:|",
            _pct_row("bar visible - (bar end + grace)", res["bar_latency_beyond_grace_ms"]),
            _pct_row("bar emitted (ingest_ts) - (bar end + grace)", res["bar_emission_beyond_grace_ms"]),
            _pct_row("bar visible - bar emitted (transaction commit)", res["bar_commit_visibility_ms"]),
            _pct_row("producer publish delay: bin ingest_ts - bin end", res["producer_publish_delay_ms"]),
            _pct_row("producer delay beyond REPLAY_MAX_LATE_MS (100 ms)", res["producer_delay_beyond_lateness_ms"]),
            _pct_row("bin visible (read_committed) - bin end", res["bin_visible_after_end_ms"]), ""]


def _memory(sec: dict[str, Any]) -> list[str]:
    out = ["| series | symbols | ticks | bins | replay peak RSS (MB) | aggregator peak RSS (MB) | replay ticks/s |",
           "|---|---:|---:|---:|---:|---:|---:|"]
    for series, points in (("length", sec.get("by_length", [])), ("symbols", sec.get("by_symbols", []))):
        for p in points:
            out.append(f"| {series} | {p['symbols']:,} | {p['ticks']:,} | {p['bins']:,} | "
                       f"{p['replay_peak_rss_mb']:.0f} | {p['aggregator_peak_rss_mb']:.0f} | "
                       f"{p['replay_ticks_per_s']:,.0f} |")
    return [*out, ""]


def _profile(sec: dict[str, Any]) -> list[str]:
    from tick_tools.bench.profiling import top_frames_markdown

    out = []
    for stage, prof in sec.items():
        out += [f"#### {stage}: {prof['total_s']:.1f} s sampled", "",
                "Time charged to the project function it runs under (library and native time included):", "",
                "| # | our function | s | share |", "|---:|---|---:|---:|",
                *top_frames_markdown(prof, "by_our_function"), "",
                "Self time per frame (where the CPU actually is):", "",
                "| # | frame | self s | share |", "|---:|---|---:|---:|", *top_frames_markdown(prof), ""]
    return out


def write_report(bench: Bench, out: Path, payload: dict[str, Any], chosen: list[str]) -> None:
    """Write docs/benchmarks.md (and put the machine block into `payload`)."""
    info = machine()
    payload["machine"] = info
    s = bench.sections
    mode = "quick (CI-sized)" if bench.quick else "full"
    lines = [
        "# Benchmarks",
        "",
        f"Generated by `python -m tick_tools bench{' --quick' if bench.quick else ''}"
        f"{''.join(' --set ' + o for o in payload.get('overrides', []))}"
        f"{' --only ' + ','.join(chosen) if len(chosen) < 8 else ''}` (`make bench`) on "
        f"{payload.get('started_utc', '')}, {mode} run, {payload.get('duration_s', 0):.0f} s. "
        "Everything below was measured side by side in this one run, on one single-node Kafka the bench "
        "started for itself (free loopback ports, its own run folder, stopped at the end). "
        "Machine-readable: `bench-results/results.json`. No test asserts any of these numbers.",
        "",
        "## Machine",
        "",
        "| | |", "|---|---|",
        f"| CPU | {info['cpu']} ({info['nproc']} cores) |",
        f"| RAM | {info['ram_gb']} GB |",
        f"| OS | {info['os']} |",
        f"| Python | {info['python']} |",
        f"| Java | {info['java']} |",
        f"| Kafka (broker and perf tools, Maven jars) | {info['kafka']} |",
        f"| librdkafka / confluent-kafka | {info['librdkafka']} / {info['confluent_kafka']} |",
        f"| quixstreams | {info['quixstreams']} |",
        f"| polars / msgspec / pyinstrument | {info['polars']} / {info['msgspec']} / {info['pyinstrument']} |",
        f"| load average (1 min) at start / end | {payload.get('load_start', 0):.1f} / "
        f"{payload.get('load_end', 0):.1f} |",
        "",
        "The machine is shared (other work ran at the same time; the load average above and per section "
        "in results.json says how much), so absolute numbers are noisy; the ratios compare runs made "
        "minutes apart on the same broker and are the figures to read.",
        "",
        "## Sizes",
        "",
        "| | |", "|---|---|",
        *[f"| {k} | {', '.join(f'{x:,}' for x in v) if isinstance(v, list) else f'{v:,}'} |"
          for k, v in payload.get("sizes", {}).items()],
        "",
        *([f"Overridden with `--set {' --set '.join(payload['overrides'])}` (the issue's full sizes did not "
           "fit the time available on this shared machine)."] if payload.get("overrides") else []),
        "",
        "## Results",
        "",
        *figures_table(bench.figures),
        "",
    ]
    if "limit" in s:
        lim = s["limit"]
        lines += ["## 1. The limit", "",
                  f"Record size {lim['record_size_bytes']} B = one encoded `Bin` (streaming/kernel/records.py). "
                  "The first producer run is the plain perf test (acks=all, idempotent, default batching, "
                  "random payload); the second sends real bin JSON lines with the replay producer's own settings "
                  "(linger.ms=5, batch.size=1 MB, lz4) — the ceiling for exactly what the replay sends.", ""]
    if "replay" in s:
        r = s["replay"]
        lines += ["## 2. Replay", "",
                  f"{r['ticks']:,} ticks of {r['symbols']} symbols (the project's synthetic generator, one "
                  f"Kibot file per symbol) -> {r['bins']:,} bins in {r['elapsed_s']:.1f} s by the replay's own "
                  f"clock ({r['wall_s']:.1f} s process wall), exactly-once (transactions + checkpoints), "
                  f"peak RSS {r['peak_rss_mb']:.0f} MB.", ""]
    if "aggregate" in s:
        a = s["aggregate"]
        lines += ["## 3. Aggregation", "",
                  f"One `python -m streaming aggregate` process over {a['bins']:,} bins of the replay's topic, "
                  "fresh consumer group, `--max-bins`. Rate = bins after the first progress line / time from it "
                  "to the final line (start-up and group join excluded for both engines alike).", ""]
        for g, run in a["runs"].items():
            lines.append(f"* {g}: {run['bins']:,} bins -> {run['bars']:,} bars, {run['rate']:,.0f} bins/s, "
                         f"wall {run['wall_s']:.1f} s, peak RSS {run['peak_rss_mb']:.0f} MB")
        lines.append("")
    if "quix" in s:
        q = s["quix"]
        c = q["bar_check"]
        lines += ["## 4. The peer: Quix Streams", "",
                  "`tick_tools/bench/quix_job.py`: `app.dataframe(ticks.raw)` with a timestamp extractor "
                  "(`start_ts_ms`), `tumbling_window(1000, grace_ms=100).agg(open=First, high=Max, low=Min, "
                  "close=Last, volume/notional/trade_count=Sum, bin_count=Count).final(closing_strategy="
                  "\"partition\")` (per-partition event time, like our watermark), key = symbol, bars to an "
                  "output topic stamped with wall-clock time. RocksDB state with changelog topics (Quix's "
                  f"defaults). Each run stops after {q['bins']:,} input bins.", ""]
        for g, run in q["runs"].items():
            mine = q.get("ours_same_input", {}).get(g)
            lines.append(f"* {g}: Quix {run['bins']:,} bins -> {run['bars']:,} bars, {run['rate']:,.0f} bins/s, "
                         f"wall {run['wall_s']:.1f} s, peak RSS {run['peak_rss_mb']:.0f} MB"
                         + (f"; ours on the same bins {mine['rate']:,.0f} bins/s, wall {mine['wall_s']:.1f} s, "
                            f"peak RSS {mine['peak_rss_mb']:.0f} MB" if mine else ""))
        lines += ["",
                  f"Same bars? Compared OHLCV, volume, notional, trade and bin counts per `bar_id` on the "
                  f"{c['common']:,} bars both emitted: **{c['mismatched']} mismatched**. "
                  f"{c['only_ours']:,} bars only ours, {c['only_quix']:,} only Quix's: both stop after the same "
                  "input count, and Quix `final()` closes a window only when a later message of the "
                  "partition arrives (no idle timeout), so the very last window per partition is never emitted.",
                  *(["", "Examples: " + "; ".join(c["examples"])] if c["examples"] else []), ""]
    if "latency" in s:
        lines += ["## 5. Latency (real sample, live replay)", "",
                  "The first seconds of `../shared/data/WDC_tickbidask_first_20000.txt` replayed with "
                  "`--live` (event times shifted to now) into fresh topics while one exactly-once aggregator "
                  "runs; a read_committed consumer stamps each bin and bar on arrival. Grace = 100 ms "
                  "(AGG_GRACE_MS = REPLAY_MAX_LATE_MS). One symbol: bars are few, so p99 is close to the max. "
                  "Live mode shifts event times by whole seconds (1 s windows keep their ticks), so live event "
                  "times trail the replay's schedule by a constant delta in [0, 1 s) — the sub-second part of "
                  "the start time; it is estimated as the smallest (bin ingest - bin end - 100 ms) of the run "
                  "(no bin can be published before the schedule passes its end + REPLAY_MAX_LATE_MS), so the "
                  "schedule-relative rows are a slight lower bound, and each run is shown both with it "
                  "(plain event-time definition) and without "
                  "it (what the pipeline itself adds). The third run replays the first seconds of the "
                  "synthetic day (100 symbols), where every partition sees bins every few milliseconds.",
                  "", *_latency(s["latency"])]
    if "memory" in s:
        lines += ["## 6. Memory", "", "Peak RSS = the kernel's high-water mark (VmHWM) of the child process.", "",
                  *_memory(s["memory"])]
    if "warehouse" in s:
        w = s["warehouse"]
        lines += ["## 7. Warehouse", ""]
        if w.get("measured"):
            lines += [f"`tick_platform.backfill.materialize_facts` over {w['partitions']} five-minute partitions "
                      f"(the first {w['span_s'] / 3600:.2f} h of event time, {w['bars']:,} bars from section 3's "
                      "exactly-once "
                      f"output) in one Dagster run into a fresh DuckDB file: {w['materialize_s']:.1f} s "
                      f"(+{w['import_s']:.1f} s importing Dagster), rows {w['rows']}, checks passed "
                      f"{w['checks_passed']}.", ""]
        else:
            lines += [f"Not measured: {w.get('reason')}.", ""]
    if "sensor" in s:
        sen = s["sensor"]
        lines += ["## 7b. Live: window close -> rows visible through the sensor", ""]
        if sen.get("measured"):
            each = ", ".join(f"{k} {v:.1f} s" for k, v in zip(sen["windows"], sen["latency_s"], strict=False))
            lines += ["`python -m tick_tools pipeline --realtime` on the demo session (8 symbols, speed 1, live "
                      "timestamps: API, aggregator, `dagster dev`, replay) with its own DAGSTER_HOME and DuckDB "
                      "file; for each whole 5-minute window after start-up, the time of its first "
                      "materialization (GraphQL `assetMaterializations`; rows are committed before the event is "
                      f"written) minus the window's end: {each}. The time goes to: the closure rule (every "
                      "partition of ticks.agg.1s shows a bar past the window end or is idle), the sensor "
                      "interval (5 s), the run queue, the start of the run's process (Dagster import and code "
                      "load: the largest part on this machine) and the run itself (~5 s).", ""]
        else:
            lines += ["Not measured in this run (`--set sensor_windows=N`, 5 minutes per window).", ""]
    if "partitions" in s:
        lines += ["## 7c. Fact partitions at history scale", "",
                  "NYSE regular-session partitions (the default) for 1 and 5 years, against the former "
                  "around-the-clock 5-minute partitions; Dagster's lookups on the session set walk it, the "
                  "calendar's binary searches (what the sensor, the schedule, the asset's windows and "
                  "backfill ranges use) do not:", "",
                  "| years | sessions | partitions | around the clock | Dagster get_partition_keys | "
                  "has_partition_key | time_window | range of 100 | calendar is_window | sensor request |",
                  "|---|---|---|---|---|---|---|---|---|---|"]
        for r in s["partitions"]["rows"]:
            lines.append(f"| {r['years']} | {r['sessions']:,} | {r['partitions']:,} | "
                         f"{r['partitions_around_the_clock']:,} | {r['dagster_get_partition_keys_s']:.2f} s | "
                         f"{r['dagster_has_partition_key_ms']:.1f} ms | {r['dagster_time_window_ms']:.1f} ms | "
                         f"{r['dagster_range_100_ms']:.1f} ms | {r['calendar_is_window_us']:.1f} us | "
                         f"{r['sensor_request_ms']:.1f} ms |")
        lines.append("")
    if "history" in s:
        h = s["history"]
        lines += ["## 7d. History: the fact step over many trading days", "",
                  f"{h['symbols']} symbols, {h['bars_per_day']:,.0f} synthetic 1 s bars a day (section 3's density), "
                  f"NYSE regular sessions from {h['first_day']} (the 2024-03-10 DST change and Good Friday inside), "
                  "produced once into one topic in transactions; each point backfills its first N sessions "
                  "(`materialize_facts`, ranged runs of WAREHOUSE_BACKFILL_SESSIONS_PER_RUN sessions, every run "
                  "with its checks) into a fresh DuckDB file and a fresh file-based DAGSTER_HOME (SQLite). "
                  "Read, re-read, rollup and write are the steps' own timings (materialization and check "
                  "metadata); the rest (Dagster) is everything else: planned and materialization events (one per "
                  "partition per asset), run creation, the checks' comparisons, freshness.", "",
                  *history_rows(h), ""]
    if "profile" in s:
        lines += ["## 8. Where the time goes (pyinstrument)", "", *_profile(s["profile"])]
    errors = s.get("errors", {})
    missed = [f for f in bench.figures if f.met is False]
    lines += ["## Missed goals and what would close them", ""]
    if not missed and not errors:
        lines += ["Every goal measured in this run was met.", ""]
    done: set[str] = set()
    for f in missed:
        closer = CLOSERS.get(f.section, "")
        lines.append(f"* **{f.name}**: {_num(f.value, f.unit)} {f.unit} vs goal {f.goal}"
                     f"{' — ' + f.note if f.note and f.section != 'latency' else ''}."
                     + (f" {closer}" if closer and f.section not in done else ""))
        done.add(f.section)
    for name, err in errors.items():
        lines.append(f"* section **{name}** failed in this run: `{_cell(err.splitlines()[-1])[:300]}`")
    lines += ["", "## Commands", "",
              "Exactly what ran (paths relative to the project; `<N files>` = the synthetic per-symbol files):", ""]
    for section, cmds in bench.commands.items():
        lines += [f"**{section}**", "", "```", *cmds, "```", ""]
    write_atomic(out, ("\n".join(lines).rstrip() + "\n").encode())
