"""Runs an engine into a sink: write every step, commit a checkpoint every commit interval and at the end."""

from __future__ import annotations

import time
from typing import Protocol

from rich.console import Console

from streaming.replay.checkpoint import ReplayCheckpoint
from streaming.replay.engine import ReplayEngine, Step
from streaming.replay.summary import Progress, ReplaySummary


class Sink(Protocol):
    """Where steps go (JSON lines files, Kafka)."""

    def write(self, step: Step) -> None:
        """Write one step's bins and DLQ records."""

    def commit(self, checkpoint: ReplayCheckpoint) -> None:
        """Make everything written so far durable, together with the checkpoint."""

    def close(self) -> None:
        """Release the sink (after a last commit)."""


def drive(engine: ReplayEngine, sink: Sink, commit_interval_ms: int, progress_interval_s: float,
          console: Console | None) -> ReplaySummary:
    """Run the engine to its end or its stop flag; the last commit carries `done` when the input was finished."""
    progress = Progress(engine, progress_interval_s, console)
    last_commit = time.monotonic()
    try:
        for step in engine.steps():
            sink.write(step)
            progress.after_write(step)
            # A watermark is only worth its latency once committed (read_committed readers).
            if step.watermark_ms is not None or (time.monotonic() - last_commit) * 1000 >= commit_interval_ms:
                sink.commit(engine.checkpoint())
                last_commit = time.monotonic()
        sink.commit(engine.checkpoint())
    finally:
        sink.close()
    return progress.summary()
