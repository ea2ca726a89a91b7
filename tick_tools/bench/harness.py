"""What every benchmark section shares: measured subprocesses, the run context and the figures.

Every stage is measured as a child process (the way a user runs it), so wall time and peak
RSS belong to that stage alone and a crash of a stage cannot take the harness down.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import psutil

from streaming.kernel.settings import PROJECT_ROOT

PYTHON = sys.executable


@dataclass(frozen=True)
class Line:
    """One output line of a child with the monotonic time the harness read it."""

    t: float
    stream: str
    text: str


@dataclass
class ProcResult:
    """How one measured child process went."""

    cmd: list[str]
    rc: int
    wall_s: float
    peak_rss_mb: float
    lines: list[Line]
    started: float
    timed_out: bool = False

    def text(self, stream: str | None = None) -> str:
        """The child's output (one stream or both), in the order it was read."""
        return "\n".join(x.text for x in self.lines if stream is None or x.stream == stream)

    def tail(self, n: int = 12) -> str:
        """The last lines, for error messages."""
        return "\n".join(x.text for x in self.lines[-n:])


def _peak_rss_mb(proc: psutil.Process) -> float:
    """The kernel's high-water mark of resident memory (VmHWM), else the current RSS, in MB."""
    try:
        with open(f"/proc/{proc.pid}/status") as fh:
            for row in fh:
                if row.startswith("VmHWM:"):
                    return int(row.split()[1]) / 1024
    except OSError:
        pass
    try:
        return float(proc.memory_info().rss) / 2**20
    except psutil.Error:
        return 0.0


def _tree_peak(proc: psutil.Process) -> float:
    """Peak RSS of the process plus its children (a stage that forks counts whole)."""
    total = _peak_rss_mb(proc)
    try:
        children = proc.children(recursive=True)
    except psutil.Error:
        children = []
    for child in children:
        total += _peak_rss_mb(child)
    return total


def run_measured(
    cmd: Sequence[str],
    *,
    env: dict[str, str] | None = None,
    timeout_s: float = 600.0,
    poll_s: float = 0.1,
    on_line: Callable[[Line], None] | None = None,
    cwd: Path | None = None,
) -> ProcResult:
    """Run `cmd`, polling its peak RSS, collecting its output lines with read times; never leaves it behind."""
    lines: list[Line] = []
    lock = threading.Lock()
    started = time.monotonic()
    proc = psutil.Popen(
        list(cmd), stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
        env=env, cwd=str(cwd or PROJECT_ROOT), text=True, errors="replace", bufsize=1,
    )

    def pump(stream: Any, name: str) -> None:
        for raw in stream:
            item = Line(time.monotonic(), name, raw.rstrip("\n"))
            with lock:
                lines.append(item)
            if on_line is not None:
                on_line(item)

    threads = [threading.Thread(target=pump, args=(proc.stdout, "out"), daemon=True),
               threading.Thread(target=pump, args=(proc.stderr, "err"), daemon=True)]
    for th in threads:
        th.start()
    peak = 0.0
    timed_out = False
    try:
        while proc.poll() is None:
            peak = max(peak, _tree_peak(proc))
            if time.monotonic() - started > timeout_s:
                timed_out = True
                break
            time.sleep(poll_s)
    finally:
        if proc.poll() is None:
            # SIGTERM first so the stage can abort its transaction; then make sure it is gone.
            proc.terminate()
            try:
                proc.wait(15)
            except psutil.TimeoutExpired:
                proc.kill()
                proc.wait(15)
    wall = time.monotonic() - started
    for th in threads:
        th.join(5)
    return ProcResult(list(cmd), proc.returncode, wall, peak, lines, started, timed_out)


@dataclass
class Figure:
    """One reported number, with what it is compared against and the goal."""

    section: str
    name: str
    value: float | None
    unit: str
    ratio: float | None = None
    ratio_to: str = ""
    goal: str = ""
    met: bool | None = None
    note: str = ""

    def verdict(self) -> str:
        """"met", "missed (...)" or "" when there is no goal."""
        if self.met is None:
            return ""
        return "met" if self.met else f"missed{f' ({self.note})' if self.note else ''}"


@dataclass
class Sizes:
    """How big each section runs (quick: CI-sized)."""

    perf_records: int
    replay_symbols: int
    replay_ticks_per_symbol: int
    agg_max_bins: int
    quix_max_bins: int
    latency_s: float
    latency_fast_s: float
    memory_lengths: list[int]
    memory_symbols: list[int]
    memory_symbols_ticks: int
    profile_ticks: int
    warehouse_hours: float
    sensor_windows: int  # closed 5-minute windows timed in live mode (each costs 5 minutes)
    # History: trading days backfilled per point, symbols, share of symbol-seconds holding a 1 s bar
    # (0.4 is section 3's synthetic day: 50,000 ticks per symbol give about 9,000 bars per symbol).
    history_days: list[int] = field(default_factory=lambda: [5, 20, 40])
    history_symbols: int = 100
    history_bar_share: float = 0.4

    def override(self, assignments: Sequence[str]) -> Sizes:
        """Apply `name=value` overrides (lists comma-separated), e.g. memory_lengths=1000000,5000000."""
        for item in assignments:
            name, sep, raw = item.partition("=")
            name = name.strip().replace("-", "_")
            if not sep or name not in self.__dataclass_fields__:
                names = ", ".join(self.__dataclass_fields__)
                raise ValueError(f"--set {item!r}: expected NAME=VALUE with NAME one of {names}")
            current = getattr(self, name)
            if isinstance(current, list):
                setattr(self, name, [int(v) for v in raw.split(",") if v.strip()])
            else:
                setattr(self, name, int(float(raw)) if isinstance(current, int) else float(raw))
        return self

    @classmethod
    def quick(cls) -> Sizes:
        return cls(300_000, 100, 2_000, 200_000, 40_000, 20.0, 15.0,
                   [100_000, 200_000, 400_000], [10, 100, 1_000], 30_000, 100_000, 0.25, 0, [1, 2], 10, 0.1)

    @classmethod
    def full(cls) -> Sizes:
        return cls(2_000_000, 100, 50_000, 2_000_000, 500_000, 75.0, 45.0,
                   [1_000_000, 5_000_000, 20_000_000], [10, 100, 1_000], 1_000_000, 1_000_000, 1.0, 4)


@dataclass
class Bench:
    """One benchmark run: where it works, which broker, what it measured so far."""

    quick: bool
    sizes: Sizes
    run_dir: Path
    brokers: str
    libs: Path
    env_file: Path
    figures: list[Figure] = field(default_factory=list)
    sections: dict[str, dict[str, Any]] = field(default_factory=dict)
    commands: dict[str, list[str]] = field(default_factory=dict)
    shared: dict[str, Any] = field(default_factory=dict)  # objects sections hand on (not reported)
    log: Callable[[str], None] = print

    def env(self, **extra: str) -> dict[str, str]:
        """The child environment: no developer .env, this run's broker, plus `extra`."""
        env = {k: v for k, v in os.environ.items()
               if k.split("_", 1)[0] not in {"KAFKA", "REPLAY", "AGG", "BROKER"}}
        env["ENV_FILE"] = str(self.env_file)
        env["KAFKA_BROKERS"] = self.brokers
        env["PYTHONUNBUFFERED"] = "1"
        env.update(extra)
        return env

    def add(self, figure: Figure) -> Figure:
        self.figures.append(figure)
        return figure

    def command(self, section: str, cmd: Sequence[str], env_note: str = "") -> None:
        """Record the exact command a section ran (shown in docs/benchmarks.md)."""
        shown = " ".join(_short(c) for c in cmd)
        self.commands.setdefault(section, []).append(f"{env_note} {shown}".strip())

    def as_json(self) -> dict[str, Any]:
        return {"quick": self.quick, "sizes": asdict(self.sizes), "figures": [asdict(f) for f in self.figures],
                "sections": self.sections, "commands": self.commands}


def _short(arg: str) -> str:
    """Paths inside the run folder and the project shown relative, so commands read like a user's."""
    arg = arg.replace(PYTHON, "python")
    text = arg.replace(str(PROJECT_ROOT) + "/", "")
    return f"'{text}'" if any(c in text for c in " *") else text


def load_average() -> float:
    """1-minute load average (the machine is shared; reported beside each section)."""
    return os.getloadavg()[0]


class Background:
    """A stage running beside a measurement (e.g. the aggregator during a paced replay); output to a file."""

    def __init__(self, cmd: Sequence[str], env: dict[str, str], log_path: Path) -> None:
        self.cmd = list(cmd)
        self.log_path = log_path
        self._log = open(log_path, "w")  # noqa: SIM115 - closed in stop()
        self.proc = psutil.Popen(self.cmd, stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                 env=env, cwd=str(PROJECT_ROOT))
        self.peak_rss_mb = 0.0

    def sample(self) -> None:
        """Update the peak RSS (call now and then)."""
        if self.proc.poll() is None:
            self.peak_rss_mb = max(self.peak_rss_mb, _tree_peak(self.proc))

    def stop(self, timeout_s: float = 30.0) -> int:
        """SIGTERM (the stage commits or aborts its transaction), then SIGKILL if it does not exit."""
        self.sample()
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout_s)
            except psutil.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(15)
        self._log.close()
        return int(self.proc.returncode or 0)

    def output(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.is_file() else ""
