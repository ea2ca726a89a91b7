"""Offline replay: bins to a JSON lines file and DLQ records to a side file, without Kafka."""

from __future__ import annotations

import time
from pathlib import Path

from rich.console import Console

from streaming.cli_support import StopFlag
from streaming.kernel.outputs import AtomicFile
from streaming.kernel.records import encode
from streaming.kernel.settings import Settings
from streaming.replay.checkpoint import ReplayCheckpoint, derive_job_id
from streaming.replay.driver import drive
from streaming.replay.encoding import bin_json_text
from streaming.replay.engine import ReplayEngine, Step
from streaming.replay.summary import ReplaySummary


class JsonlSink:
    """Bins as JSON lines to one file, DLQ records to another (or nowhere), both written atomically.

    Both files appear at their names only when the input was replayed to its end: a run that
    fails or is stopped (Ctrl+C, SIGTERM) removes its temporary files and leaves any previous
    output as it was, since an offline run restarts from scratch and a part would look complete.
    """

    def __init__(self, out_path: Path, dlq_path: Path | None) -> None:
        self._out = AtomicFile(out_path)
        self._dlq: AtomicFile | None = None
        self._done = False
        if dlq_path is not None:
            try:
                self._dlq = AtomicFile(dlq_path)
            except BaseException:
                self._out.discard()
                raise

    def write(self, step: Step) -> None:
        """Append the step's bins and DLQ records."""
        if step.bins.height:
            self._out.write(bin_json_text(step.bins, int(time.time() * 1000)))
        if step.dlq and self._dlq is not None:
            self._dlq.write(b"".join(encode(record) + b"\n" for record in step.dlq))

    def commit(self, checkpoint: ReplayCheckpoint) -> None:
        """Flush both files and note whether the input is finished (the checkpoint itself is not kept)."""
        self._out.flush()
        if self._dlq is not None:
            self._dlq.flush()
        self._done = checkpoint.done

    def close(self) -> None:
        """Rename both files into place when the last commit finished the input, else remove them."""
        files = [f for f in (self._dlq, self._out) if f is not None]
        if not self._done:
            for f in files:
                f.discard()
            return
        try:
            # The DLQ first: a bins file at its name then always has its DLQ beside it.
            for f in files:
                f.commit()
        except BaseException:
            for f in files:
                f.discard()
            raise


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
