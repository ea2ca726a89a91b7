"""Section 2, replay: a synthetic day (>= 5M ticks, >= 100 symbols) file -> ticks.raw at max speed.

The replay runs as `python -m streaming replay ... --speed 0` in a child process, the way a user
runs it; its own summary line gives ticks and bins, the harness adds wall time and peak RSS.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import asdict, dataclass
from datetime import date
from pathlib import Path

from streaming.kernel.errors import TickPlatformError
from streaming.kernel.settings import KafkaSettings
from streaming.kernel.topics import bootstrap_topics
from tick_tools.bench.harness import PYTHON, Bench, Figure, run_measured

SYNTH_DATE = "2024-03-08"
SEED = 8
_SUMMARY = re.compile(r"replay (?:done|stopped[^:]*): ticks=(?P<ticks>\d+) bins=(?P<bins>\d+) dlq=(?P<dlq>\d+)"
                      r".*? in (?P<elapsed>[\d.]+)s")


class BenchError(TickPlatformError):
    """A stage under measurement failed."""


@dataclass(frozen=True)
class Topics:
    """One isolated set of the platform's topics on the bench broker."""

    raw: str
    agg: str
    dlq: str

    def env(self) -> dict[str, str]:
        return {"KAFKA_TOPIC_RAW": self.raw, "KAFKA_TOPIC_AGG": self.agg, "KAFKA_TOPIC_DLQ": self.dlq}


def make_topics(bench: Bench, label: str) -> Topics:
    """Fresh ticks.raw / ticks.agg.1s / ticks.dlq for one measurement (6 partitions like the defaults)."""
    suffix = f"{label}.{uuid.uuid4().hex[:6]}"
    topics = Topics(f"ticks.raw.{suffix}", f"ticks.agg.1s.{suffix}", f"ticks.dlq.{suffix}")
    bootstrap_topics(KafkaSettings(brokers=bench.brokers, topic_raw=topics.raw,  # type: ignore[call-arg]
                                   topic_agg=topics.agg,
                                   topic_dlq=topics.dlq))
    return topics


def synth_files(bench: Bench, symbols: int, ticks_per_symbol: int, seed: int = SEED) -> list[Path]:
    """The generator's files for this size (made once per run, then reused by every section)."""
    out_dir = bench.run_dir / "data" / f"synth-{symbols}x{ticks_per_symbol}-{seed}"
    done = out_dir / ".complete"
    if not done.is_file():
        cmd = [PYTHON, "-m", "streaming", "synth", "--symbols", str(symbols), "--ticks-per-symbol",
               str(ticks_per_symbol), "--seed", str(seed), "--date", SYNTH_DATE, "--out-dir", str(out_dir)]
        res = run_measured(cmd, env=bench.env(), timeout_s=1800)
        if res.rc != 0 and "not built yet" in res.text():
            # The synth command is not wired yet: call the generator's Python API directly.
            from streaming.sources.synth import write_synth

            write_synth(symbols, ticks_per_symbol, seed, date.fromisoformat(SYNTH_DATE), out_dir)
        elif res.rc != 0:
            raise BenchError(f"synth failed (exit {res.rc}):\n{res.tail()}")
        else:
            bench.command("data", cmd)
        done.write_text("ok")
    return sorted(p for p in out_dir.iterdir() if p.name.endswith(".txt"))


@dataclass(frozen=True)
class ReplayRun:
    """One measured replay."""

    ticks: int
    bins: int
    dlq: int
    elapsed_s: float  # the replay's own clock (reading to the last commit)
    wall_s: float  # process start to exit (imports, producer set-up included)
    peak_rss_mb: float

    @property
    def ticks_per_s(self) -> float:
        return self.ticks / self.elapsed_s if self.elapsed_s else 0.0

    @property
    def bins_per_s(self) -> float:
        return self.bins / self.elapsed_s if self.elapsed_s else 0.0


def replay_cmd(files: list[Path], brokers: str, extra: list[str] | None = None, speed: float = 0) -> list[str]:
    return [PYTHON, "-m", "streaming", "replay", *map(str, files), "--brokers", brokers, "--speed", f"{speed:g}",
            "--quiet", *(extra or [])]


def run_replay(bench: Bench, files: list[Path], topics: Topics, section: str,
               extra: list[str] | None = None, env: dict[str, str] | None = None,
               timeout_s: float = 1800, speed: float = 0) -> ReplayRun:
    """Replay `files` into `topics.raw` in a child process; parse its summary line."""
    cmd = replay_cmd(files, bench.brokers, extra, speed)
    shown = [*cmd[:4], f"<{len(files)} files>", *cmd[4 + len(files):]] if len(files) > 3 else cmd
    bench.command(section, shown, "KAFKA_TOPIC_RAW=... KAFKA_TOPIC_DLQ=...")
    res = run_measured(cmd, env=bench.env(**topics.env(), **(env or {})), timeout_s=timeout_s)
    m = _SUMMARY.search(res.text())
    if res.rc != 0 or m is None:
        raise BenchError(f"replay failed (exit {res.rc}):\n{res.tail()}")
    return ReplayRun(int(m["ticks"]), int(m["bins"]), int(m["dlq"]), float(m["elapsed"]), res.wall_s,
                     res.peak_rss_mb)


def run_replay_section(bench: Bench) -> None:
    """Section 2; leaves the filled topics in `bench.shared["replay"]` for sections 3 and 4."""
    s = bench.sizes
    files = synth_files(bench, s.replay_symbols, s.replay_ticks_per_symbol)
    topics = make_topics(bench, "replay")
    bench.log(f"[replay] {s.replay_symbols} symbols x {s.replay_ticks_per_symbol:,} ticks -> {topics.raw}")
    run = run_replay(bench, files, topics, "replay")
    bench.log(f"[replay] {run.ticks:,} ticks, {run.bins:,} bins in {run.elapsed_s:.1f}s: "
              f"{run.ticks_per_s:,.0f} ticks/s, {run.bins_per_s:,.0f} bins/s, peak RSS {run.peak_rss_mb:.0f} MB")
    bench.sections["replay"] = {**asdict(run), "ticks_per_s": run.ticks_per_s, "bins_per_s": run.bins_per_s,
                                "symbols": s.replay_symbols, "topic": topics.raw}
    limit = bench.sections.get("limit", {})
    prod = limit.get("producer", {}).get("records_per_s")
    tuned = limit.get("producer_bin_payload_lz4", {}).get("records_per_s")
    ratio = run.bins_per_s / prod if prod else None
    bench.add(Figure("replay", "replay ticks parsed", run.ticks_per_s, "ticks/s",
                     note=f"{run.ticks:,} ticks of {s.replay_symbols} symbols; wall incl. start-up "
                          f"{run.ticks / run.wall_s:,.0f} ticks/s"))
    bench.add(Figure("replay", "replay bins published (exactly-once)", run.bins_per_s, "bins/s", ratio,
                     "producer perf test", ">= 50% of producer perf test",
                     None if ratio is None else ratio >= 0.5,
                     "" if ratio is None or ratio >= 0.5 else f"{(0.5 - ratio) * 100:.0f} points short"))
    if tuned:
        bench.add(Figure("replay", "replay bins vs perf test with the same payloads and settings",
                         run.bins_per_s, "bins/s", run.bins_per_s / tuned, "perf test, bin payloads, lz4"))
    bench.shared["replay"] = (topics, run)
