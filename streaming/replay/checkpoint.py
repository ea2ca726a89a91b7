"""The replay's resume position, committed with each transaction (docs/processing_strategy.md)."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path

import msgspec

from streaming.kernel.settings import ReplaySettings

CHECKPOINT_TOPIC = "ticks.replay.checkpoints"


class ReplayCheckpoint(msgspec.Struct, frozen=True, kw_only=True):
    """Where a replay stands after a committed transaction.

    Positions are per stream (index into the engine's `parts`: a source, or one symbol of a
    file in symbol blocks). Ticks are counted by `seq`, their 1-based number in the stream's
    replay order (after spreading): `resume_at` is the next tick not yet binned, `rebuild_from`
    the first tick still in an open bin. `rejects_next` is the line after the last rejected or
    skipped line already dead-lettered or counted.
    """

    job_id: str
    sources: list[str]
    round: int = 0
    period_ms: int = 0
    shift_ms: int | None = None
    resume_at: list[int]
    rebuild_from: list[int]
    rejects_next: list[int]
    watermark: int
    max_event_ts: int
    ticks: int = 0
    bins: int = 0
    dlq: int = 0
    skipped: int = 0
    done: bool = False
    committed_ts_ms: int = 0
    # The first tick's event time (None in checkpoints written before it was kept).
    first_event_ts: int | None = None


checkpoint_decoder = msgspec.json.Decoder(ReplayCheckpoint)


def derive_job_id(sources: Sequence[str], replay: ReplaySettings, topic_raw: str, columns: str | None = None) -> str:
    """A stable id for "this replay of these sources with these settings" (speed excluded: it changes no bin)."""
    normalized = [s if "://" in s else str(Path(s).resolve()) for s in sources]
    basis = msgspec.json.encode(
        {
            "sources": normalized,
            "symbol": replay.symbol,
            "spread": replay.spread,
            "bin_ms": replay.bin_ms,
            "max_late_ms": replay.max_late_ms,
            "live": replay.live,
            "loop": replay.loop,
            "topic": topic_raw,
            "columns": columns,
        }
    )
    return "replay-" + hashlib.sha256(basis).hexdigest()[:16]
