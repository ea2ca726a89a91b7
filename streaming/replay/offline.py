"""Offline replay: bins to a JSON lines file and DLQ records to a side file, without Kafka."""

from __future__ import annotations

import time
from pathlib import Path
from typing import IO

from rich.console import Console

from streaming.cli_support import StopFlag
from streaming.config import Settings
from streaming.records import encode
from streaming.replay.checkpoint import Checkpoint, derive_job_id
from streaming.replay.driver import drive
from streaming.replay.encoding import bin_json_text
from streaming.replay.engine import ReplayEngine, Step
from streaming.replay.summary import ReplaySummary


class JsonlSink:
    """Bins as JSON lines to one file, DLQ records to another (or nowhere)."""

    def __init__(self, out_path: Path, dlq_path: Path | None) -> None:
        out_path.parent.mkdir(parents=True, exist_ok=True)
        self._out: IO[bytes] = out_path.open("wb")
        self._dlq: IO[bytes] | None = None
        if dlq_path is not None:
            dlq_path.parent.mkdir(parents=True, exist_ok=True)
            self._dlq = dlq_path.open("wb")

    def write(self, step: Step) -> None:
        """Append the step's bins and DLQ records."""
        if step.bins.height:
            self._out.write(bin_json_text(step.bins, int(time.time() * 1000)))
        if step.dlq and self._dlq is not None:
            self._dlq.write(b"".join(encode(record) + b"\n" for record in step.dlq))

    def commit(self, checkpoint: Checkpoint) -> None:
        """Flush both files (an offline run restarts from scratch, so the checkpoint is not kept)."""
        self._out.flush()
        if self._dlq is not None:
            self._dlq.flush()

    def close(self) -> None:
        """Close both files."""
        self._out.close()
        if self._dlq is not None:
            self._dlq.close()


def replay_to_jsonl(
    paths: list[str],
    out_path: str | Path,
    dlq_path: str | Path | None,
    settings: Settings,
    *,
    columns: str | None = None,
    stop: StopFlag | None = None,
    console: Console | None = None,
) -> ReplaySummary:
    """Replay `paths` into 10 ms bins written to `out_path` (JSON lines) and DLQ records to `dlq_path`."""
    job_id = derive_job_id(paths, settings.replay, str(out_path), columns)
    engine = ReplayEngine(paths, settings.replay, job_id, columns=columns, stop=stop)
    sink = JsonlSink(Path(out_path), Path(dlq_path) if dlq_path is not None else None)
    return drive(engine, sink, settings.replay.commit_interval_ms, settings.replay.progress_interval_s, console)
