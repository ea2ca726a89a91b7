"""The aggregator's counters, its progress line and their Prometheus text form."""

from __future__ import annotations

import time
from dataclasses import dataclass, field, fields

GAUGES = frozenset({"open_windows", "open_windows_peak"})


@dataclass
class Counters:
    """What one aggregator process has done so far."""

    bins_in: int = 0
    bars_out: int = 0
    late: int = 0
    duplicates: int = 0  # second copies of a bin_id, refused (duplicate_bin)
    out_of_range: int = 0  # bins beyond the contract's bounds, alone or summed into their bar
    dlq: int = 0
    poison: int = 0
    revisions: int = 0
    rebuilt: int = 0
    idle_flushes: int = 0
    aligned_closes: int = 0
    commits: int = 0
    aborts: int = 0
    assignments: int = 0
    stale_batches: int = 0  # batches dropped because a rebalance/rewind ran while they were fetched
    restarts: int = 0  # in-process restarts of the Kafka clients after a fatal error
    watermarks_in: int = 0  # watermark records of the replay read (REPLAY_WATERMARK_INTERVAL_MS)
    watermark_closes: int = 0  # of those, how many closed windows
    watermark_lag_ms: int = 0  # newest event time seen minus watermark, on the last emitting partition
    close_latency_ms: int = 0  # wall clock at emission minus the bar's end (meaningful for live replays)
    # Gauges of the state (AGG_MAX_OPEN_WINDOWS bounds each partition's): open (symbol, window)
    # pairs over all assigned partitions after the last batch, and the most any one partition
    # held after an add returned.
    open_windows: int = 0
    open_windows_peak: int = 0
    started: float = field(default_factory=time.monotonic)
    first_bin_at: float | None = None  # the rate counts from here: start-up and group join are not work
    last_bin_at: float | None = None

    def rate(self) -> float:
        """Bins per second from the first bin to the last one."""
        if self.first_bin_at is None or self.last_bin_at is None or self.last_bin_at <= self.first_bin_at:
            return 0.0
        return self.bins_in / (self.last_bin_at - self.first_bin_at)

    def line(self) -> str:
        """One progress line."""
        return (
            f"bins {self.bins_in:,} ({self.rate():,.0f}/s)  bars {self.bars_out:,}  late {self.late:,}  "
            f"dlq {self.dlq:,}  poison {self.poison:,}  rebuilt {self.rebuilt:,}  commits {self.commits:,}  "
            f"wm lag {self.watermark_lag_ms} ms  close latency {self._latency()}  "
            f"assignments {self.assignments}  aborts {self.aborts}  idle flushes {self.idle_flushes}"
            + (f"  aligned closes {self.aligned_closes}" if self.aligned_closes else "")
            + (f"  watermark closes {self.watermark_closes:,}" if self.watermarks_in else "")
            + (f"  restarts {self.restarts}" if self.restarts else "")
            + (f"  duplicates {self.duplicates:,}" if self.duplicates else "")
            + (f"  out of range {self.out_of_range:,}" if self.out_of_range else "")
        )

    def _latency(self) -> str:
        # Against the wall clock only a live replay's bars have a meaningful close latency.
        return f"{self.close_latency_ms} ms" if abs(self.close_latency_ms) < 3_600_000 else "- (historical)"

    def prometheus(self) -> str:
        """The counters in Prometheus text exposition format."""
        lines: list[str] = []
        for f in fields(self):
            if f.name in ("started", "first_bin_at", "last_bin_at"):
                continue
            kind = "gauge" if f.name.endswith("_ms") or f.name in GAUGES else "counter"
            name = f"tick_aggregator_{f.name}" + ("_total" if kind == "counter" else "")
            lines += [f"# TYPE {name} {kind}", f"{name} {getattr(self, f.name)}"]
        return "\n".join(lines) + "\n"
