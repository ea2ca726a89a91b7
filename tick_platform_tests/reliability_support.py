"""Helpers of the reliability suite: stage subprocesses to kill, exact topic reads, the clean run, the scorecard.

Every scenario compares what Kafka holds (read_committed, to the end offsets) with an
offline run of the same input, counts what is missing (lost) and what appears twice
(duplicated), and appends one row to the scorecard (tick_platform_tests/_output/reliability.jsonl),
which tick_platform_tests/reliability_report.py turns into docs/reliability.md.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any

import orjson
from confluent_kafka import Consumer, TopicPartition

from streaming.kernel.records import decode_watermark
from streaming.kernel.settings import PROJECT_ROOT, KafkaSettings, Settings, load_settings

SCORECARD = PROJECT_ROOT / "tick_platform_tests" / "_output" / "reliability.jsonl"
SYNTH_DAY = date(2010, 2, 17)

# Fields that depend on the wall clock of the run (ingestion and send stamps), not on the data.
WALL_CLOCK_FIELDS = frozenset({"ingest_ts_ms", "api_send_ts_ms"})


# ---- work folders ------------------------------------------------------------------------------


@contextlib.contextmanager
def work_dir(name: str) -> Iterator[Path]:
    """A private folder for a scenario's broker data, logs and files; removed after success, kept after a failure.

    Why not pytest's tmp_path: concurrent pytest sessions on one machine prune each other's numbered
    basetemp folders (only the newest three are kept), which deleted a running broker's data under it.
    """
    path = Path(tempfile.mkdtemp(prefix=f"tick-reliability-{name}-"))
    try:
        yield path
    except BaseException:
        print(f"reliability scenario {name}: logs and data kept in {path}", file=sys.stderr)
        raise
    shutil.rmtree(path, ignore_errors=True)


def keep_logs(work: Path, name: str) -> Path:
    """Copy a scenario's stage and broker logs to tick_platform_tests/_output/reliability-logs/ (for a failed run)."""
    target = SCORECARD.parent / "reliability-logs" / f"{name}-{time.strftime('%H%M%S')}"
    target.mkdir(parents=True, exist_ok=True)
    for log in [*work.glob("*.log"), *work.glob("kafka/node-*/logs/server.log")]:
        flat = "-".join(log.relative_to(work).parts)
        shutil.copy(log, target / flat)
    return target


# ---- subprocesses ------------------------------------------------------------------------------


def stage_env(kafka: KafkaSettings, **extra: str) -> dict[str, str]:
    """Environment of a `python -m streaming` subprocess on the scenario's broker and topics.

    KAFKA_*/AGG_*/REPLAY_* of the caller are dropped so nothing leaks in from the developer's shell.
    """
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KAFKA_", "AGG_", "REPLAY_"))}
    env.update({
        "KAFKA_BROKERS": kafka.brokers,
        "KAFKA_TOPIC_RAW": kafka.topic_raw,
        "KAFKA_TOPIC_AGG": kafka.topic_agg,
        "KAFKA_TOPIC_DLQ": kafka.topic_dlq,
        "AGG_PROGRESS_INTERVAL_S": "5",
        "REPLAY_PROGRESS_INTERVAL_S": "5",
    })
    env.update(extra)
    return env


@dataclass
class Stage:
    """One restartable `python -m streaming <command>` process with an appending log, like a supervisor runs it."""

    name: str
    args: list[str]
    env: dict[str, str]
    log: Path
    proc: subprocess.Popen[bytes] | None = None
    starts: int = 0

    def start(self) -> Stage:
        """Start a new incarnation (the previous one must have ended)."""
        assert self.proc is None or self.proc.poll() is not None, f"{self.name} is still running"
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with self.log.open("ab") as sink:
            sink.write(f"\n=== {self.name} start #{self.starts + 1} at {time.time():.3f}\n".encode())
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "streaming", *self.args], cwd=PROJECT_ROOT, env=self.env,
                stdout=sink, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            )
        self.starts += 1
        return self

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self, sig: int = signal.SIGKILL, timeout_s: float = 60.0) -> int | None:
        """Send `sig` to this incarnation and wait for it (SIGKILL after `timeout_s`); returns its exit code."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(30)
        return self.proc.returncode

    def poll(self) -> int | None:
        """The exit code if this incarnation ended, else None."""
        return None if self.proc is None else self.proc.poll()

    def tail(self, lines: int = 40) -> str:
        """The end of the log, for assertion messages and findings."""
        text = self.log.read_text(errors="replace") if self.log.exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    @property
    def in_process_restarts(self) -> int:
        """How often this stage restarted its Kafka clients by itself (streaming.restarts logs one line each),
        over all its incarnations."""
        return self.log.read_text(errors="replace").count(IN_PROCESS_RESTART) if self.log.exists() else 0


# The line streaming.restarts.run_with_restarts logs for each in-process restart of a stage's Kafka clients.
IN_PROCESS_RESTART = "restarting its Kafka clients from the last commit"


# How long the supervisor of a test's `streaming pipeline` waits for its children to stop on SIGTERM.
PATIENT_STOP_S = 300.0


def patient_pipeline(*args: str) -> list[str]:
    """The argv of `python -m tick_tools pipeline ARGS` whose supervisor waits up to PATIENT_STOP_S for each child.

    Why: the tests' "no SIGKILL needed" means "every child stopped cleanly by itself on SIGTERM"; with the
    product's stop budget (10 s for all children) it also meant "within 10 s", which a loaded machine
    breaks. The supervisor's wait is proc.wait(), which returns at the child's exit, so the test waits for
    that event and the longer budget is only the safety net against a hang.
    """
    # The defaults are replaced by position: the assert keeps a changed signature from silently
    # patching another parameter (and the test from falling back to the 10 s budget).
    code = ("import sys; from tick_tools.pipeline import supervisor; "
            "assert supervisor.Supervisor.__init__.__code__.co_varnames[:3] == ('self', 'console', 'stop_budget_s'); "
            f"supervisor.Supervisor.__init__.__defaults__ = (None, {PATIENT_STOP_S}); "
            "sys.argv = ['tick_tools', *sys.argv[1:]]; from tick_tools.cli import main; main()")
    return [sys.executable, "-c", code, "pipeline", *args]


def stop_all(*stages: Stage) -> None:
    """Leave no process behind: SIGTERM, then SIGKILL, whatever still runs."""
    for stage in stages:
        if stage.running:
            stage.kill(signal.SIGTERM, timeout_s=15)


# ---- reading topics ----------------------------------------------------------------------------


def read_committed(kafka: KafkaSettings, topic: str, timeout_s: float = 120.0) -> list[tuple[int, int, bytes | None]]:
    """Every committed message of `topic` as (partition, offset, value), read_committed up to the end offsets.

    Raises AssertionError if the end cannot be reached in time (e.g. a transaction left hanging),
    because a silently short read would hide lost messages.
    """
    consumer = Consumer({**kafka.client_base(), "group.id": f"reliability-reader-{time.time_ns()}",
                         "isolation.level": "read_committed", "enable.auto.commit": False,
                         "auto.offset.reset": "earliest", "fetch.max.bytes": 8_388_608,
                         "message.max.bytes": 2_000_000})
    try:
        md = consumer.list_topics(topic, timeout=30).topics[topic]
        ends = {p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=30)[1] for p in md.partitions}
        consumer.assign([TopicPartition(topic, p, 0) for p in ends])
        pending = {p for p, high in ends.items() if high > 0}
        out: list[tuple[int, int, bytes | None]] = []
        deadline = time.monotonic() + timeout_s
        while pending and time.monotonic() < deadline:
            for m in consumer.consume(num_messages=10_000, timeout=0.5):
                if m.error() is None:
                    out.append((m.partition(), m.offset(), m.value()))
            # Control records (transaction markers) are never delivered, so check positions too.
            for p in list(pending):
                [pos] = consumer.position([TopicPartition(topic, p)])
                if pos.offset >= ends[p]:
                    pending.discard(p)
        assert not pending, f"could not read {topic} to its end offsets: partitions {sorted(pending)}"
        return out
    finally:
        consumer.close()


def decode_rows(rows: Iterable[tuple[int, int, bytes | None]]) -> list[dict[str, Any]]:
    """JSON values as dicts (every message of the pipeline's own topics is JSON)."""
    return [orjson.loads(v) for _p, _o, v in rows if v is not None]


def data_of(record: dict[str, Any]) -> dict[str, Any]:
    """A bin or bar without the wall-clock stamps, i.e. what must equal the clean run."""
    return {k: v for k, v in record.items() if k not in WALL_CLOCK_FIELDS}


def same_data(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Equal data fields; floats equal to 1e-9 relative.

    Why a tolerance: notional is a float sum, and a paced replay may add a bin's ticks in another
    grouping than the offline run ((a+b)+c vs a+(b+c)), which changes the last bit only.
    """
    da, db = data_of(a), data_of(b)
    if da.keys() != db.keys():
        return False
    for key, va in da.items():
        vb = db[key]
        if isinstance(va, float) or isinstance(vb, float):
            if not (isinstance(va, int | float) and isinstance(vb, int | float)):
                return False
            if not math.isclose(va, vb, rel_tol=1e-9, abs_tol=1e-9):
                return False
        elif va != vb:
            return False
    return True


@dataclass(frozen=True)
class Comparison:
    """Kafka output against the clean run, keyed by id."""

    expected: int
    got: int
    lost: int
    duplicated: int
    mismatched: int
    examples: list[str]

    @property
    def exact(self) -> bool:
        return self.lost == 0 and self.duplicated == 0 and self.mismatched == 0 and self.got == self.expected


def _diff(want: dict[str, Any], got: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
    """Fields that differ, as (clean run, Kafka)."""
    a, b = data_of(want), data_of(got)
    return {k: (a.get(k), b.get(k)) for k in sorted(a.keys() | b.keys()) if not same_data({k: a.get(k)}, {k: b.get(k)})}


def compare(expected: dict[str, dict[str, Any]], got: list[dict[str, Any]], key: str) -> Comparison:
    """Lost = expected ids missing; duplicated = extra copies of an id; mismatched = same id, other data."""
    counts = Counter(r[key] for r in got)
    duplicated = sum(n - 1 for n in counts.values() if n > 1)
    lost_ids = [i for i in expected if i not in counts]
    by_id = {r[key]: r for r in got}
    wrong = [i for i, v in by_id.items() if i in expected and not same_data(expected[i], v)]
    extra = [i for i in by_id if i not in expected]
    examples = [f"lost {i}" for i in lost_ids[:3]]
    examples += [f"mismatched {i}: {_diff(expected[i], by_id[i])}" for i in wrong[:3]]
    examples += [f"unexpected {i}" for i in extra[:3]]
    examples += [f"duplicated {i} x{n}" for i, n in counts.items() if n > 1][:3]
    return Comparison(len(expected), len(got), len(lost_ids), duplicated, len(wrong) + len(extra), examples)


# ---- the clean run -----------------------------------------------------------------------------


def synth_files(out_dir: Path, symbols: int, ticks_per_symbol: int, seed: int) -> list[Path]:
    """Deterministic Kibot files, one per symbol (the project's own generator)."""
    from streaming.sources.synth import write_synth

    return [f.path for f in write_synth(symbols, ticks_per_symbol, seed, SYNTH_DAY, out_dir)]


def base_settings() -> Settings:
    """Settings from the (empty) test env file: the defaults every stage subprocess also uses."""
    return load_settings()


def offline_run(files: list[Path], work: Path) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, Any]]]:
    """The clean run: offline replay to bins, offline aggregate to bars; returns (bins by bin_id, bars by bar_id)."""
    from streaming.aggregate.offline import aggregate_file
    from streaming.aggregate.processor import window_config
    from streaming.replay.offline import replay_to_jsonl

    settings = base_settings()
    bins_path, bars_path = work / "clean_bins.jsonl", work / "clean_bars.jsonl"
    replay_to_jsonl([str(f) for f in files], bins_path, work / "clean_replay_dlq.jsonl", settings)
    aggregate_file(bins_path, bars_path, work / "clean_agg_dlq.jsonl", window_config(settings))
    bins = [orjson.loads(line) for line in bins_path.read_bytes().splitlines() if line.strip()]
    bars = [orjson.loads(line) for line in bars_path.read_bytes().splitlines() if line.strip()]
    return {b["bin_id"]: b for b in bins}, {b["bar_id"]: b for b in bars}


# What a 1 s bar must equal when computed straight from the ticks (the rest is bookkeeping of the
# pipeline: bin counts, lateness, stamps, revision).
TICK_FIELDS = ("bar_id", "symbol", "start_ts_ms", "end_ts_ms", "open", "high", "low", "close", "volume", "notional",
               "trade_count")


def bars_from_raw_ticks(files: list[Path]) -> dict[str, dict[str, Any]]:
    """1 s OHLCV of synth_files straight from the Kibot text: a polars group-by per second in file order.

    Independent of the code under test (no binning, no windows, no replay): the clean run says which
    bar ids and fields the pipeline should produce, this says that those values are right.
    """
    from tick_platform_tests.test_platform_support import bars_from_ticks, read_kibot

    bars: dict[str, dict[str, Any]] = {}
    for path in files:
        symbol = path.name.split("_", 1)[0]  # <SYM>_tickbidask.txt, as write_synth names them
        for bar in bars_from_ticks(read_kibot(path, symbol)):
            assert bar.bar_id not in bars, bar.bar_id
            bars[bar.bar_id] = {name: getattr(bar, name) for name in TICK_FIELDS}
    return bars


# ---- waiting -----------------------------------------------------------------------------------


def wait_until(predicate: Callable[[], bool], timeout_s: float, what: str, interval_s: float = 0.2) -> float:
    """Poll until `predicate` holds; returns the seconds it took (AssertionError naming `what` on timeout)."""
    started = time.monotonic()
    while not predicate():
        if time.monotonic() - started > timeout_s:
            raise AssertionError(f"timed out after {timeout_s:.0f}s waiting for {what}")
        time.sleep(interval_s)
    return time.monotonic() - started


def committed_offsets(kafka: KafkaSettings, group: str, topic: str, partitions: int) -> int:
    """Sum of a group's committed offsets on `topic` (without joining the group); -1 when unreachable."""
    consumer = Consumer({**kafka.client_base(), "group.id": group, "enable.auto.commit": False})
    try:
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        return sum(max(tp.offset, 0) for tp in consumer.committed(tps, timeout=10))
    except Exception:  # the broker is down: that is what some scenarios inject
        return -1
    finally:
        consumer.close()


def end_offsets(kafka: KafkaSettings, topic: str) -> dict[int, int]:
    """High watermark per partition of `topic` (control records included); {} when unreachable."""
    consumer = Consumer({**kafka.client_base(), "group.id": "reliability-ends", "enable.auto.commit": False})
    try:
        md = consumer.list_topics(topic, timeout=10).topics[topic]
        return {p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in md.partitions}
    except Exception:  # the broker is down
        return {}
    finally:
        consumer.close()


def committed_map(kafka: KafkaSettings, group: str, topic: str, partitions: int) -> dict[int, int]:
    """A group's committed offset per partition of `topic` (-1 where none); {} when unreachable."""
    consumer = Consumer({**kafka.client_base(), "group.id": group, "enable.auto.commit": False})
    try:
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        return {tp.partition: tp.offset for tp in consumer.committed(tps, timeout=10)}
    except Exception:  # the broker is down
        return {}
    finally:
        consumer.close()


def group_caught_up(kafka: KafkaSettings, group: str) -> bool:
    """Whether the aggregator group committed every partition of ticks.raw to its end.

    A transactional producer ends each partition with a commit marker that no consumer sees,
    so a committed offset of high - 1 is the end too.
    """
    ends = end_offsets(kafka, kafka.topic_raw)
    done = committed_map(kafka, group, kafka.topic_raw, kafka.partitions)
    if not ends or not done:
        return False
    return all(high == 0 or done.get(p, -1) >= high - 1 for p, high in ends.items())


def wait_quiet(kafka: KafkaSettings, group: str, quiet_s: float, timeout_s: float,
               tend: Callable[[], None] = lambda: None) -> None:
    """Wait until the group is caught up and ticks.agg.1s has not grown for `quiet_s` (the idle flush is out).

    Why not `aggregate --until-idle`: it compares the committed offset with the high watermark, which a
    transactional input never reaches (see docs/reliability.md, findings), so a daemon run is ended by SIGTERM.
    """
    deadline = time.monotonic() + timeout_s
    last: dict[int, int] = {}
    since = time.monotonic()
    while time.monotonic() < deadline:
        tend()
        now = end_offsets(kafka, kafka.topic_agg)
        if now != last or not group_caught_up(kafka, group):
            last, since = now, time.monotonic()
        elif time.monotonic() - since >= quiet_s:
            return
        time.sleep(0.5)
    raise AssertionError(f"the aggregator group {group} did not go quiet within {timeout_s:.0f}s")


# ---- resources ---------------------------------------------------------------------------------


def own_peak_rss_mb() -> float:
    """This process's resident-memory high-water mark (VmHWM), in MiB.

    Not getrusage(RUSAGE_SELF).ru_maxrss: Linux keeps the maximum across exec, so a child started by a
    large parent (pytest late in the whole suite: ~1 GB) reports the parent's size, not its own
    (finding 10). VmHWM belongs to the address space, which exec replaces.
    """
    for row in Path("/proc/self/status").read_text().splitlines():
        if row.startswith("VmHWM:"):
            return int(row.split()[1]) / 1024  # kB
    raise RuntimeError("no VmHWM in /proc/self/status (Linux only)")


def probe_aggregator() -> None:
    """`python -m tick_platform_tests.reliability_support`: one aggregator run until idle, then a JSON line of
    its counters, the largest number of open windows any partition held, and the peak RSS of the process.

    Why a probe and not `python -m streaming aggregate`: the peak RSS is the process's own. The open-window
    peak is the aggregator's gauge `open_windows_peak` (the most any partition held after an add returned:
    bounded state means never more than AGG_MAX_OPEN_WINDOWS); the run is the real Aggregator on the real
    topics.
    """
    from streaming.aggregate.processor import Aggregator

    counters = Aggregator(load_settings(), until_idle=True).run()
    rss_mb = own_peak_rss_mb()
    print(json.dumps({"bins_in": counters.bins_in, "bars_out": counters.bars_out, "late": counters.late,
                      "dlq": counters.dlq, "poison": counters.poison,
                      "max_open_windows_seen": counters.open_windows_peak, "peak_rss_mb": round(rss_mb, 1)}))


# ---- the scorecard -----------------------------------------------------------------------------


def record_score(scenario: str, injected: str, messages_in: int, messages_out: int, lost: int, duplicated: int,
                 recovery_s: float | None, path: Path = SCORECARD, *, harness_restarts: int | None = None,
                 **extra: Any) -> dict[str, Any]:
    """Append one scorecard row (the latest row per scenario wins in the report).

    `harness_restarts`: how often the test harness restarted a stage beyond the kills the scenario
    injected (a column of the scorecard); None for a scenario without stages to restart.
    """
    row: dict[str, Any] = {
        "scenario": scenario, "injected": injected, "messages_in": messages_in, "messages_out": messages_out,
        "lost": lost, "duplicated": duplicated, "harness_restarts": harness_restarts,
        "recovery_s": None if recovery_s is None else round(recovery_s, 1),
        "recorded_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        **extra,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as fh:
        fh.write(json.dumps(row, sort_keys=False) + "\n")
    return row


# ---- a supervised pipeline ---------------------------------------------------------------------

# The aggregator's idle timeout is 2 s: no new bar for this long after catching up means the last flush is out.
QUIET_S = 6.0
# Liveness: a stage without progress this long (broker reachable, work left) is restarted, and that is reported.
STALL_S = 60.0
WATCH_EVERY_S = 5.0


@dataclass
class Supervised:
    """The replay and the aggregator daemon of one scenario, restarted when they fail (each failure is kept).

    Like systemd's Restart=on-failure plus a liveness probe: a stage that exits with an error is started
    again, and so is one that makes no progress for STALL_S while the broker answers and work remains.
    Such a restart keeps the scenario running to its end so that its output can be compared, but it is
    never silent: `restarts` counts them, `failures` says why, and assert_exact fails the scenario on any
    (the product promises to ride through the injected faults in-process; a kill a scenario injects is
    restarted by the scenario itself and stated in its `injected` count instead).
    """

    replay: Stage
    aggregator: Stage
    kafka: KafkaSettings
    group: str
    quiet_s: float = QUIET_S
    files: list[Path] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    restarts: int = 0
    _progress: dict[str, tuple[int, float]] = field(default_factory=dict)
    _last_watch: float = 0.0

    def tend(self) -> None:
        """One supervisor pass: restart a stage that exited with an error (the daemon if it exited at all)."""
        code = self.replay.poll()
        if code is not None and code != 0:
            self.failures.append(f"replay exited {code}: {_last_error(self.replay)}")
            self.replay.start()
            self.restarts += 1
        code = self.aggregator.poll()
        if code is not None:
            self.failures.append(f"aggregate exited {code}: {_last_error(self.aggregator)}")
            self.aggregator.start()
            self.restarts += 1
        self._watch()

    def _watch(self) -> None:
        """The liveness probe: progress = ticks.raw end offsets (replay), committed input offsets (aggregator)."""
        now = time.monotonic()
        if now - self._last_watch < WATCH_EVERY_S:
            return
        self._last_watch = now
        for stage in (self.replay, self.aggregator):
            if not stage.running:
                self._progress.pop(stage.name, None)
                continue
            if stage is self.replay:
                ends = end_offsets(self.kafka, self.kafka.topic_raw)
                value, idle = (sum(ends.values()), False) if ends else (-1, False)
            else:
                value = committed_offsets(self.kafka, self.group, self.kafka.topic_raw, self.kafka.partitions)
                idle = value >= 0 and group_caught_up(self.kafka, self.group)
            seen = self._progress.get(stage.name)
            # Unreachable broker or nothing to do: no judgement, the clock starts again.
            if value < 0 or idle or seen is None or seen[0] != value:
                self._progress[stage.name] = (value, now)
            elif now - seen[1] >= STALL_S:
                self.failures.append(f"{stage.name} stalled: no progress for {now - seen[1]:.0f}s while the broker "
                                     "answered; killed and restarted")
                stage.kill(signal.SIGKILL)
                stage.start()
                self.restarts += 1
                self._progress.pop(stage.name, None)

    def tended(self, predicate: Callable[[], bool]) -> Callable[[], bool]:
        """`predicate`, checked after a supervisor pass (for wait_until while the stages run)."""

        def check() -> bool:
            self.tend()
            return predicate()

        return check

    def run_to_end(self, timeout_s: float) -> None:
        """Tend both stages until the replay finished and the aggregator is caught up and quiet; then SIGTERM it."""
        deadline = time.monotonic() + timeout_s
        while self.replay.poll() != 0:
            if time.monotonic() > deadline:
                raise AssertionError(f"the replay did not finish in {timeout_s:.0f}s\n{self.replay.tail()}")
            self.tend()
            time.sleep(0.2)
        wait_quiet(self.kafka, self.group, self.quiet_s, max(30.0, deadline - time.monotonic()), self.tend)
        code = self.aggregator.kill(signal.SIGTERM)
        if code != 0:
            self.failures.append(f"aggregate exited {code} on SIGTERM: {_last_error(self.aggregator)}")


def _last_error(stage: Stage) -> str:
    lines = [line for line in stage.tail(60).splitlines() if "error" in line.lower()]
    return lines[-1].strip() if lines else stage.tail(3).replace("\n", " | ")


@dataclass
class Run:
    """What a scenario produced, compared with the clean run, and what the harness had to do to get there.

    `failures` are the harness's interventions and stage errors (a restart after an exit or a stall, a
    non-zero exit on SIGTERM); `harness_restarts` counts the restarts among them; `starts` is the number of
    incarnations of each supervised stage (1 + the kills the scenario injected + the harness restarts);
    `in_process` counts the restarts each stage did by itself (fatal Kafka client errors, see
    streaming.restarts; a crash loop inside the process shows there, not in `starts`);
    `notes` are for the reader of the scorecard only (where the logs were kept); `ticks` compares the
    bars of ticks.agg.1s with bars_from_raw_ticks (None when the run had no input files).
    """

    bins: Comparison
    bars: Comparison
    dlq: int
    failures: list[str]
    harness_restarts: int = 0
    starts: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    ticks: Comparison | None = None
    in_process: dict[str, int] = field(default_factory=dict)


def start_pipeline(kafka: KafkaSettings, files: list[Path], work: Path, speed: float,
                   idle_timeout_ms: int | None = None, watermarks_ms: int | None = None) -> Supervised:
    """Replay `files` at `speed` and run one aggregator (stable instance id, so a restart fences its predecessor).

    `idle_timeout_ms` sets AGG_IDLE_TIMEOUT_MS (default: the aggregator's own, 2 s);
    `watermarks_ms` sets REPLAY_WATERMARK_INTERVAL_MS (default off).
    """
    job = f"rel-{uuid.uuid4().hex[:8]}"
    env = stage_env(kafka, AGG_GROUP_ID=f"agg-{job}", AGG_INSTANCE_ID=f"{job}-a")
    if idle_timeout_ms is not None:
        env["AGG_IDLE_TIMEOUT_MS"] = str(idle_timeout_ms)
    if watermarks_ms is not None:
        env["REPLAY_WATERMARK_INTERVAL_MS"] = str(watermarks_ms)
    replay = Stage("replay", ["replay", *map(str, files), "--speed", str(speed), "--job-id", job, "--quiet"],
                   env, work / "replay.log")
    aggregator = Stage("aggregate", ["aggregate"], env, work / "aggregate.log")
    aggregator.start()
    replay.start()
    # Quiet = longer than the idle timeout, so the final idle flush is out before the daemon is stopped.
    quiet_s = max(QUIET_S, (idle_timeout_ms or 2_000) / 1000 + 4)
    return Supervised(replay, aggregator, kafka, env["AGG_GROUP_ID"], quiet_s, list(files))


def check_against_clean_run(kafka: KafkaSettings, expected_bins: dict, expected_bars: dict,
                            pipeline: Supervised, members: Iterable[Stage] = ()) -> Run:
    """Read ticks.raw, ticks.agg.1s and ticks.dlq read_committed and compare with the offline run.

    The run also carries what the supervisor of `pipeline` did (its failures, restarts and the starts of
    each stage) and the in-process restarts each stage logged, so that assert_exact can hold the scenario
    to the restarts it injected. `members`: further stages the scenario ran itself (e.g. more aggregator
    instances); their starts and in-process restarts are held to the same rule.
    """
    # The replay's watermark records (REPLAY_WATERMARK_INTERVAL_MS) share ticks.raw with the bins.
    raw = [row for row in read_committed(kafka, kafka.topic_raw) if decode_watermark(row[2]) is None]
    bins = compare(expected_bins, decode_rows(raw), "bin_id")
    got_bars = decode_rows(read_committed(kafka, kafka.topic_agg))
    bars = compare(expected_bars, got_bars, "bar_id")
    # The same bars against an independent computation from the raw ticks (the clean run shares the
    # binning and window code with the stages, so it cannot see a defect they have in common).
    from_ticks = bars_from_raw_ticks(pipeline.files) if pipeline.files else None
    ticks = None if from_ticks is None else compare(
        from_ticks, [{name: r.get(name) for name in TICK_FIELDS} for r in got_bars], "bar_id")
    dlq = len(read_committed(kafka, kafka.topic_dlq))
    stages = [pipeline.replay, pipeline.aggregator, *members]
    starts = {stage.name: stage.starts for stage in stages}
    in_process = {stage.name: stage.in_process_restarts for stage in stages}
    return Run(bins, bars, dlq, list(pipeline.failures), pipeline.restarts, starts, ticks=ticks,
               in_process=in_process)


def assert_exact(run: Run, *, injected_restarts: dict[str, int],
                 in_process: Mapping[str, int | range] | None = None) -> None:
    """The acceptance: both topics equal the clean run, nothing dead-lettered (the input has no late ticks),
    and no stage needed the harness: it never restarted one, none exited with an error, and each stage was
    started exactly once plus the restarts the scenario injected (`injected_restarts`, by stage name).

    `in_process`: the in-process restarts (fatal Kafka client errors) the scenario's fault may cause, by
    stage: an exact number, or a range where the fault's timing decides (a broker away may or may not
    make a client fatal). A stage not named must not restart in-process at all.

    Why the restarts are asserted too: a stage that crash-loops and is revived by the harness, or that
    keeps restarting its own clients, can still produce exact output, but the product promises to ride
    through these faults: once, in-process.
    """
    assert run.bins.exact, run.bins
    assert run.bars.exact, run.bars
    assert run.ticks is not None and run.ticks.exact, f"bars against the raw ticks: {run.ticks}"
    assert run.dlq == 0, f"{run.dlq} records in ticks.dlq (late bins after the failure?)"
    assert run.harness_restarts == 0 and run.failures == [], (
        f"the harness had to step in {run.harness_restarts} time(s): {run.failures}")
    expected = {name: 1 + injected_restarts.get(name, 0) for name in run.starts}
    assert run.starts == expected, f"stage starts {run.starts}, expected {expected} (1 + the injected restarts)"
    allowed = dict(in_process or {})
    unknown = set(allowed) - set(run.in_process)
    assert not unknown, f"in-process restarts allowed for stages the run did not have: {sorted(unknown)}"
    for name, count in run.in_process.items():
        bound = allowed.get(name, 0)
        ok = count in bound if isinstance(bound, range) else count == bound
        assert ok, f"{name} restarted its Kafka clients in-process {count} time(s), allowed {bound}: {run.in_process}"


def score(scenario: str, injected: str, ticks: int, run: Run, recovery_s: float, **extra: Any) -> None:
    """One scorecard row: messages in = bins the replay should publish, out = bars in ticks.agg.1s."""
    record_score(scenario, injected, run.bins.expected, run.bars.got, run.bins.lost + run.bars.lost,
                 run.bins.duplicated + run.bars.duplicated, recovery_s, ticks=ticks, bars_expected=run.bars.expected,
                 mismatched=run.bins.mismatched + run.bars.mismatched, dlq=run.dlq,
                 harness_restarts=run.harness_restarts, stage_starts=run.starts, in_process_restarts=run.in_process,
                 mismatched_vs_ticks=None if run.ticks is None else run.ticks.mismatched + run.ticks.lost,
                 findings=run.failures + run.notes, **extra)


if __name__ == "__main__":
    probe_aggregator()
