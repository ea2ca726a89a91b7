"""The windows protocol of the aggregator, and which module cuts which bar kind (pure, no I/O).

The Kafka processor and the offline path drive a `BarWindows` per input partition and never
look inside it: they feed bins in input order (`add`, or `rebuild` after a restart), pass
event-time bounds from outside (`advance_watermark`, `flush_idle`, `finish` at the end of the
input), store `checkpoint` beside each committed offset and write what `drain` hands back.
Time bars (`windows.PartitionWindows`) are the one kind today; a tick, volume or dollar bar is
another module implementing the same protocol, registered in `windows_for`
(docs/architecture.md, "A bar kind").
"""

from __future__ import annotations

from typing import Protocol

from streaming.aggregate.windows import AggregatorCheckpoint, LateBin, PartitionWindows, WindowConfig
from streaming.kernel.bar_spec import BarSpec
from streaming.kernel.records import Bar, Bin


class BarWindows(Protocol):
    """The state of one input partition's bars: what a driver may call, and nothing more.

    Every decision must be a function of the partition's bin sequence and of the calls made
    here (whose effect the checkpoint records), so that `rebuild` over the bins from
    `checkpoint().rebuild_from` reaches the same state after a restart.
    """

    spec: BarSpec
    watermark: int
    max_event_ts: int | None
    open_count: int
    # What `drain` hands back next: the hot path tests them (cheaper than a call per bin).
    bars: list[Bar]
    late: list[LateBin]

    def add(self, b: Bin, offset: int, now_ms: int) -> None:
        """Count one bin read for the first time (may close bars and refuse bins: see `drain`)."""
        ...

    def rebuild(self, b: Bin, offset: int) -> None:
        """Count a bin read again after a restart, emitting nothing."""
        ...

    def advance_watermark(self, watermark: int, now_ms: int, next_offset: int = 0) -> int:
        """An event-time promise from outside the bins (a producer's watermark); returns bars emitted."""
        ...

    def flush_idle(self, now_ms: int, next_offset: int = 0) -> int:
        """A quiet, caught-up partition: close what is open; returns bars emitted."""
        ...

    def finish(self, now_ms: int, next_offset: int = 0) -> int:
        """The end of the input (a final watermark, the end of a file): close everything; returns bars emitted."""
        ...

    def oldest_open_end(self) -> int | None:
        """The event time at which the oldest open bar would close, None when none is open."""
        ...

    def checkpoint(self, next_offset: int) -> AggregatorCheckpoint:
        """What a commit at `next_offset` stores to rebuild this state."""
        ...

    def drain(self) -> tuple[list[Bar], list[LateBin]]:
        """Take the bars closed and the bins refused since the last drain."""
        ...


def windows_for(config: WindowConfig, watermark: int | None = None, closes: dict[int, int] | None = None) -> BarWindows:
    """Fresh (or checkpoint-restored) windows of the kind `config.spec` names."""
    if config.spec.kind == "time":
        return PartitionWindows(config, watermark, closes)
    raise ValueError(f"no windows module for bar kind {config.spec.kind!r}")  # pragma: no cover - one kind today
