"""What a replay did (ReplaySummary) and the progress line long replays print."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import UTC, datetime

import numpy as np
from rich.console import Console

from streaming.replay.checkpoint import ReplayCheckpoint
from streaming.replay.engine import ReplayEngine, Step

LAG_SAMPLES = 200_000


@dataclass(frozen=True)
class ReplaySummary:
    """Counts and rates of one replay run (counts include the part done before a resume)."""

    job_id: str
    ticks: int
    bins: int
    dlq: int
    skipped: int
    elapsed_s: float
    dlq_by_reason: dict[str, int] = field(default_factory=dict)
    finished: bool = True
    resumed: bool = False
    first_event_ts_ms: int | None = None
    last_event_ts_ms: int | None = None
    lag_p50_ms: float | None = None
    lag_p99_ms: float | None = None
    run_ticks: int = 0
    run_bins: int = 0
    # The job's checkpoint said it was complete: this run published nothing (counts are the first run's).
    already_complete: bool = False
    completed_ts_ms: int | None = None

    @classmethod
    def of_complete_job(cls, checkpoint: ReplayCheckpoint) -> ReplaySummary:
        """The summary of a rerun refused because `checkpoint` says the job is complete."""
        return cls(
            job_id=checkpoint.job_id, ticks=checkpoint.ticks, bins=checkpoint.bins, dlq=checkpoint.dlq,
            skipped=checkpoint.skipped, elapsed_s=0.0, first_event_ts_ms=checkpoint.first_event_ts,
            last_event_ts_ms=checkpoint.max_event_ts if checkpoint.ticks else None,
            already_complete=True, completed_ts_ms=checkpoint.committed_ts_ms,
        )

    @property
    def ticks_per_s(self) -> float:
        """Ticks of this run per second of wall time."""
        return self.run_ticks / self.elapsed_s if self.elapsed_s > 0 else 0.0

    @property
    def bins_per_s(self) -> float:
        """Bins of this run per second of wall time."""
        return self.run_bins / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def line(self) -> str:
        """The one-line final summary."""
        if self.already_complete:
            when = _event_time(self.completed_ts_ms) if self.completed_ts_ms else "earlier"
            return (
                f"replay already complete: job {self.job_id} published ticks={self.ticks} bins={self.bins} "
                f"dlq={self.dlq} skipped={self.skipped} (finished {when}); nothing published now "
                "(--new-run replays it again, publishing every bin a second time)"
            )
        reasons = ", ".join(f"{k}={v}" for k, v in sorted(self.dlq_by_reason.items()))
        state = "done" if self.finished else "stopped (resumable)"
        lag = ""
        if self.lag_p50_ms is not None and self.lag_p99_ms is not None:
            lag = f", publish lag p50 {self.lag_p50_ms:.1f} ms p99 {self.lag_p99_ms:.1f} ms"
        return (
            f"replay {state}: ticks={self.ticks} bins={self.bins} dlq={self.dlq}"
            f"{f' ({reasons})' if reasons else ''} skipped={self.skipped} in {self.elapsed_s:.2f}s "
            f"({self.ticks_per_s:,.0f} ticks/s, {self.bins_per_s:,.0f} bins/s){lag}"
            f"{' [resumed]' if self.resumed else ''}"
        )


def _event_time(ts_ms: int | None) -> str:
    if ts_ms is None:
        return "-"
    return datetime.fromtimestamp(ts_ms / 1000, tz=UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] + "Z"


class Progress:
    """Counts steps as they are written; prints a line every `interval_s` (only for long replays)."""

    def __init__(self, engine: ReplayEngine, interval_s: float, console: Console | None) -> None:
        self.engine = engine
        self.interval_s = interval_s
        self.console = console
        self.started = time.monotonic()
        self._last_print = self.started
        self._last_ticks = engine.ticks
        self._start_ticks = engine.ticks
        self._start_bins = engine.bins
        self.event_ts: int | None = None
        self.lags: list[float] = []

    def after_write(self, step: Step) -> None:
        """Record a written step (publish lag of paced replays) and maybe print."""
        if step.event_ts_ms is not None:
            self.event_ts = step.event_ts_ms
        if step.due_ms is not None and len(self.lags) < LAG_SAMPLES:
            self.lags.append(time.time() * 1000 - step.due_ms)
        now = time.monotonic()
        if self.console is not None and now - self._last_print >= self.interval_s:
            rate = (self.engine.ticks - self._last_ticks) / (now - self._last_print)
            self.console.print(
                f"[cyan]replay[/] ticks {self.engine.ticks:,} ({rate:,.0f}/s)  bins {self.engine.bins:,}  "
                f"dlq {self.engine.dlq:,}  skipped {self.engine.skipped:,}  event time {_event_time(self.event_ts)}",
                highlight=False,
            )
            self._last_print, self._last_ticks = now, self.engine.ticks

    def summary(self) -> ReplaySummary:
        """The run's summary from the engine's counters."""
        engine = self.engine
        lags = np.asarray(self.lags) if self.lags else None
        return ReplaySummary(
            job_id=engine.job_id,
            ticks=engine.ticks,
            bins=engine.bins,
            dlq=engine.dlq,
            skipped=engine.skipped,
            elapsed_s=time.monotonic() - self.started,
            dlq_by_reason=dict(engine.dlq_by_reason),
            finished=engine.finished,
            resumed=engine.resumed,
            first_event_ts_ms=engine.first_event_ts,
            last_event_ts_ms=self.event_ts,
            lag_p50_ms=float(np.percentile(lags, 50)) if lags is not None else None,
            lag_p99_ms=float(np.percentile(lags, 99)) if lags is not None else None,
            run_ticks=engine.ticks - self._start_ticks,
            run_bins=engine.bins - self._start_bins,
        )
