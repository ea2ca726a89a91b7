"""Sections 3 and 4: bins/s through one aggregator process, and through the Quix Streams peer.

Both read the replay's pre-filled ticks.raw from the beginning in a fresh consumer group and
stop after the same number of input messages. Both rates are measured the same way, from
outside: from the first progress line that shows input processed to the final line
(start-up — imports, group join — is excluded from the rate and reported separately).
"""

from __future__ import annotations

import json
import math
import re
import uuid
from dataclasses import asdict, dataclass
from typing import Any

import orjson
from confluent_kafka import Consumer, TopicPartition

from streaming.kernel.settings import KafkaSettings
from streaming.kernel.topics import bootstrap_topics
from tick_tools.bench.harness import PYTHON, Bench, Figure, Line, ProcResult, run_measured
from tick_tools.bench.perf_tools import run_consumer_perf
from tick_tools.bench.replay_bench import BenchError, Topics, make_topics, synth_files

_PROGRESS = re.compile(r"^bins (?P<n>[\d,]+)")
_OURS_FINAL = re.compile(r"aggregate stopped[^:]*: bins (?P<n>[\d,]+) .*?bars (?P<bars>[\d,]+)")
_QUIX_FINAL = re.compile(r"quix done: bins (?P<n>[\d,]+) bars (?P<bars>[\d,]+)")
OHLCV = ("open", "high", "low", "close", "volume", "notional", "trade_count", "bin_count")


@dataclass(frozen=True)
class AggRun:
    """One measured aggregation run."""

    engine: str
    guarantee: str
    bins: int
    bars: int
    busy_s: float  # first progress with input processed -> final line
    wall_s: float
    peak_rss_mb: float
    output_topic: str

    @property
    def rate(self) -> float:
        return self.bins / self.busy_s if self.busy_s > 0 else 0.0


def _busy_rate_window(res: ProcResult, final: re.Pattern[str]) -> tuple[int, int, float]:
    """(total bins, bars, busy seconds) from a child's progress lines and final line."""
    first: tuple[float, int] | None = None
    done: Line | None = None
    total = bars = 0
    for line in res.lines:
        m = final.search(line.text)
        if m is not None:
            done, total, bars = line, int(m["n"].replace(",", "")), int(m["bars"].replace(",", ""))
            continue
        p = _PROGRESS.match(line.text.strip())
        if p is not None and first is None and int(p["n"].replace(",", "")) > 0:
            first = (line.t, int(p["n"].replace(",", "")))
    if done is None:
        raise BenchError(f"no final line (exit {res.rc}):\n{res.tail()}")
    if first is None or first[1] >= total:
        # No progress line while busy (a very short run): the whole wall time counts.
        return total, bars, done.t - res.started
    # Rate over the busy part: bins after the first progress line / time since it.
    return total, bars, (done.t - first[0]) * total / (total - first[1])


def output_topics(bench: Bench, raw: str, label: str) -> Topics:
    """Fresh output topics (bars, DLQ) for one run; the input is the shared pre-filled topic."""
    suffix = f"{label}.{uuid.uuid4().hex[:6]}"
    topics = Topics(raw, f"ticks.agg.1s.{suffix}", f"ticks.dlq.{suffix}")
    bootstrap_topics(KafkaSettings(brokers=bench.brokers, topic_raw=raw, topic_agg=topics.agg,  # type: ignore[call-arg]
                                   topic_dlq=topics.dlq))
    return topics


def ours_cmd(brokers: str, group: str, max_bins: int | None) -> list[str]:
    stop = ["--max-bins", str(max_bins)] if max_bins else ["--until-idle"]
    return [PYTHON, "-m", "streaming", "aggregate", "--brokers", brokers, "--group-id", group, *stop]


def run_ours(bench: Bench, raw: str, exactly_once: bool, max_bins: int | None, section: str = "aggregate",
             label: str = "agg") -> AggRun:
    """`python -m streaming aggregate` on `raw` from the beginning, in a fresh group."""
    topics = output_topics(bench, raw, label)
    group = f"bench-{label}-{uuid.uuid4().hex[:6]}"
    cmd = ours_cmd(bench.brokers, group, max_bins)
    env = {**topics.env(), "AGG_EXACTLY_ONCE": str(exactly_once).lower(), "AGG_PROGRESS_INTERVAL_S": "0.2"}
    bench.command(section, cmd, f"KAFKA_TOPIC_RAW=... KAFKA_TOPIC_AGG=... AGG_EXACTLY_ONCE={env['AGG_EXACTLY_ONCE']}")
    res = run_measured(cmd, env=bench.env(**env), timeout_s=1800)
    if res.rc != 0:
        raise BenchError(f"aggregate failed (exit {res.rc}):\n{res.tail()}")
    bins, bars, busy = _busy_rate_window(res, _OURS_FINAL)
    return AggRun("tickpipe", "exactly-once" if exactly_once else "at-least-once", bins, bars, busy, res.wall_s,
                  res.peak_rss_mb, topics.agg)


def quix_cmd(brokers: str, raw: str, out: str, group: str, count: int, guarantee: str, state_dir: str,
             grace_ms: int, variant: str = "agg") -> list[str]:
    return [PYTHON, "-m", "tick_tools.bench.quix_job", "--brokers", brokers, "--input", raw, "--output", out,
            "--group", group, "--count", str(count), "--guarantee", guarantee, "--state-dir", state_dir,
            "--grace-ms", str(grace_ms), "--variant", variant, "--progress-s", "0.2"]


def run_quix(bench: Bench, raw: str, count: int, guarantee: str, label: str = "quix", variant: str = "agg") -> AggRun:
    """The Quix Streams job on `raw`, stopping after `count` input messages."""
    topics = output_topics(bench, raw, label)
    group = f"bench-{label}-{uuid.uuid4().hex[:6]}"
    state = bench.run_dir / f"quix-state-{group}"
    cmd = quix_cmd(bench.brokers, raw, topics.agg, group, count, guarantee, str(state), 100, variant)
    bench.command("quix", cmd)
    res = run_measured(cmd, env=bench.env(), timeout_s=1800)
    if res.rc != 0:
        raise BenchError(f"quix job failed (exit {res.rc}):\n{res.tail()}")
    bins, bars, busy = _busy_rate_window(res, _QUIX_FINAL)
    summaries = [json.loads(x.text) for x in res.lines if x.stream == "out" and x.text.startswith("{")]
    inner: dict[str, Any] = summaries[-1] if summaries else {}
    run = AggRun(f"quixstreams ({variant})", guarantee, bins, bars, busy, res.wall_s, res.peak_rss_mb, topics.agg)
    bench.sections.setdefault("quix_inner", {})[f"{variant} {guarantee}"] = inner
    return run


def read_bars(brokers: str, topic: str) -> dict[str, dict[str, Any]]:
    """Every committed bar of `topic`, by bar_id (revision 0 only; the peer has no revisions)."""
    consumer = Consumer({"bootstrap.servers": brokers, "group.id": f"bench-reader-{uuid.uuid4().hex[:6]}",
                         "enable.auto.commit": False, "isolation.level": "read_committed"})
    bars: dict[str, dict[str, Any]] = {}
    try:
        md = consumer.list_topics(topic, timeout=10).topics[topic]
        ends: dict[int, int] = {}
        tps = []
        for p in md.partitions:
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
            if high > low:
                ends[p] = high
                tps.append(TopicPartition(topic, p, low))
        if not tps:
            return bars
        consumer.assign(tps)
        done: set[int] = set()
        idle = 0
        while len(done) < len(ends) and idle < 20:
            msgs = consumer.consume(10_000, timeout=0.5)
            idle = 0 if msgs else idle + 1
            for m in msgs:
                if m.error() is not None:
                    continue
                bar = orjson.loads(m.value())
                if bar.get("revision", 0) == 0:
                    bars[bar["bar_id"]] = bar
                if m.offset() >= ends[m.partition()] - 2:  # the last offset may be a transaction marker
                    done.add(m.partition())
            for p, end in ends.items():
                [pos] = consumer.position([TopicPartition(topic, p)])
                if pos.offset >= end:
                    done.add(p)
    finally:
        consumer.close()
    return bars


def compare_bars(ours: dict[str, dict[str, Any]], peer: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """OHLCV of the bars both emitted; counts of bars only one side emitted."""
    common = ours.keys() & peer.keys()
    mismatched: list[str] = []
    for bar_id in common:
        a, b = ours[bar_id], peer[bar_id]
        for name in OHLCV:
            x, y = a[name], b[name]
            if not math.isclose(float(x), float(y), rel_tol=1e-9, abs_tol=1e-9):
                mismatched.append(f"{bar_id}.{name}: ours {x} quix {y}")
                break
    return {"ours": len(ours), "quix": len(peer), "common": len(common), "mismatched": len(mismatched),
            "examples": mismatched[:5], "only_ours": len(ours.keys() - peer.keys()),
            "only_quix": len(peer.keys() - ours.keys())}


def _input(bench: Bench) -> tuple[Topics, int]:
    """The replay's filled topic (section 2) and how many bins it holds; made here if section 2 did not run."""
    if "replay" not in bench.shared:
        from tick_tools.bench.replay_bench import run_replay

        s = bench.sizes
        files = synth_files(bench, s.replay_symbols, s.replay_ticks_per_symbol)
        topics = make_topics(bench, "agg-input")
        bench.shared["replay"] = (topics, run_replay(bench, files, topics, "aggregate"))
    topics, run = bench.shared["replay"]
    return topics, run.bins


def run_aggregate_section(bench: Bench) -> None:
    """Section 3: exactly-once on and off on the same input; ratio to the consumer perf tests."""
    topics, available = _input(bench)
    n = min(bench.sizes.agg_max_bins, available)
    bench.log(f"[aggregate] consumer perf test on {topics.raw} ({n:,} records, read_committed)")
    same = run_consumer_perf(bench, topics.raw, n, f"bench-cperf-{uuid.uuid4().hex[:6]}", "aggregate", True)
    runs: dict[str, AggRun] = {}
    for eos in (True, False):
        run = run_ours(bench, topics.raw, eos, n, label="agg-eos" if eos else "agg-alo")
        runs[run.guarantee] = run
        bench.log(f"[aggregate] {run.guarantee}: {run.bins:,} bins -> {run.bars:,} bars, {run.rate:,.0f} bins/s "
                  f"(wall {run.wall_s:.1f}s, peak RSS {run.peak_rss_mb:.0f} MB)")
    bench.shared["ours_runs"] = runs
    limit = bench.sections.get("limit", {}).get("consumer", {}).get("records_per_s")
    bench.sections["aggregate"] = {
        "input_topic": topics.raw, "bins": n, "consumer_perf_same_topic": same.__dict__,
        "runs": {k: {**asdict(v), "rate": v.rate} for k, v in runs.items()},
    }
    for run in runs.values():
        ratio = run.rate / limit if limit else None
        bench.add(Figure("aggregate", f"aggregator bins/s, {run.guarantee}", run.rate, "bins/s", ratio,
                         "consumer perf test", ">= 50% of consumer perf test",
                         None if ratio is None else ratio >= 0.5,
                         "" if ratio is None or ratio >= 0.5
                         else f"at {ratio:.0%}, {(0.5 - ratio) * 100:.0f} points short"))
        bench.add(Figure("aggregate", f"aggregator {run.guarantee} vs consumer perf test on the same topic",
                         run.rate, "bins/s", run.rate / same.records_per_s,
                         "consumer perf test, ticks.raw, read_committed"))
    bench.add(Figure("aggregate", "consumer perf test on ticks.raw (read_committed)", same.records_per_s, "records/s",
                     note=f"fetch-only {same.fetch_records_per_s:,.0f} records/s"))


def run_quix_section(bench: Bench) -> None:
    """Section 4: the Quix Streams job and our aggregator on the same first N bins; ratio; the bars compared.

    The work per bin depends on the data (a dense stretch has many bins per bar), so the ratio is
    taken between runs over the identical input: our aggregator is run again with --max-bins N
    right beside each Quix run.
    """
    topics, available = _input(bench)
    n = min(bench.sizes.quix_max_bins, available)
    runs: dict[str, AggRun] = {}
    ours: dict[str, AggRun] = {}
    for guarantee in ("exactly-once", "at-least-once"):
        short = "eos" if guarantee == "exactly-once" else "alo"
        mine = run_ours(bench, topics.raw, guarantee == "exactly-once", n, section="quix", label=f"ours-{short}")
        ours[guarantee] = mine
        run = run_quix(bench, topics.raw, n, guarantee, label=f"quix-{short}")
        runs[guarantee] = run
        bench.log(f"[quix] {guarantee}: Quix {run.bins:,} bins -> {run.bars:,} bars, {run.rate:,.0f} bins/s "
                  f"(wall {run.wall_s:.1f}s, peak RSS {run.peak_rss_mb:.0f} MB); ours {mine.bins:,} bins -> "
                  f"{mine.bars:,} bars, {mine.rate:,.0f} bins/s (wall {mine.wall_s:.1f}s)")
    bench.log("[quix] comparing bars (tickpipe exactly-once vs Quix exactly-once, same input)")
    check = compare_bars(read_bars(bench.brokers, ours["exactly-once"].output_topic),
                         read_bars(bench.brokers, runs["exactly-once"].output_topic))
    bench.log(f"[quix] bars: {check}")
    bench.sections["quix"] = {"bins": n, "runs": {k: {**asdict(v), "rate": v.rate} for k, v in runs.items()},
                              "ours_same_input": {k: {**asdict(v), "rate": v.rate} for k, v in ours.items()},
                              "bar_check": check}
    for guarantee, peer in runs.items():
        mine = ours[guarantee]
        ratio = mine.rate / peer.rate if peer.rate else None
        bench.add(Figure("quix", f"Quix Streams bins/s, {guarantee}", peer.rate, "bins/s",
                         note=f"{peer.bins:,} bins -> {peer.bars:,} bars, peak RSS {peer.peak_rss_mb:.0f} MB"))
        bench.add(Figure("quix", f"tickpipe / Quix Streams, {guarantee} (same {n:,} bins)", mine.rate, "bins/s",
                         ratio, "Quix Streams", ">= 5x Quix Streams", None if ratio is None else ratio >= 5,
                         "" if ratio is None or ratio >= 5 else f"{ratio:.1f}x, {5 - ratio:.1f}x short"))
    same = check["mismatched"] == 0 and check["common"] > 0
    bench.add(Figure("quix", "same bars (OHLCV per bar_id on bars both emitted)", float(check["common"]), "bars",
                     goal="identical", met=same,
                     note=f"{check['mismatched']} mismatched; only ours {check['only_ours']}, only Quix "
                          f"{check['only_quix']} (with --max-bins our open windows are not flushed either; "
                          "Quix final() closes a window only on a later message of its partition)"))
