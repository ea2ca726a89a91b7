"""The replay loop without I/O of its own: tick chunks in, paced, binned; steps of bins and DLQ records out.

A sink (JSON lines file or Kafka) writes each step and commits `checkpoint()` now and then;
starting an engine from a checkpoint skips what was committed and rebuilds the open bins.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import polars as pl

from streaming.cli_support import StopFlag
from streaming.kernel.errors import SourceError
from streaming.kernel.records import DlqRecord, clip_payload
from streaming.kernel.settings import ReplaySettings
from streaming.replay.binning import NO_TIME, Binner
from streaming.replay.checkpoint import ReplayCheckpoint
from streaming.replay.pacing import Schedule, live_shift_ms, live_wall0_ms, loop_period_ms
from streaming.sources.files import DEFAULT_CHUNK_ROWS, plan_parts, source_format, tick_stream
from streaming.sources.frames import SKIP_REASONS, TickChunk
from streaming.sources.http_source import with_replay_speed
from streaming.sources.read_ahead import read_ahead

# A paced replay wakes at least this often to close bins on the schedule's clock and to see a stop.
MAX_NAP_S = 0.05


@dataclass(frozen=True)
class Step:
    """One unit of output: closed bins (sorted by end, symbol) and DLQ records, plus what it consumed."""

    bins: pl.DataFrame
    dlq: list[DlqRecord] = field(default_factory=list)
    ticks: int = 0
    skipped: int = 0
    event_ts_ms: int | None = None
    due_ms: float | None = None
    # With watermark records on: no bin starting before this follows (the sink writes it to every partition).
    watermark_ms: int | None = None
    # With watermark_ms: the end of the input, nothing at all follows from this job (a final watermark).
    final: bool = False


def _is_url(source: str) -> bool:
    return "://" in source


class ReplayEngine:
    """Turns the sources into steps, following the settings (speed, live, loop, spread, lateness)."""

    def __init__(
        self,
        sources: Sequence[str],
        settings: ReplaySettings,
        job_id: str,
        *,
        columns: str | None = None,
        stop: StopFlag | None = None,
        resume: ReplayCheckpoint | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.sources = list(sources)
        if not self.sources:
            raise SourceError("no tick source given")
        # The mock API paces itself: it is asked for the replay's speed (unless the URL sets one).
        # `sources` stay as given, so the job id and the checkpoint do not depend on the speed.
        self.read_sources = [
            with_replay_speed(s, settings.speed).url if _is_url(s) else s for s in self.sources
        ]
        for source in self.sources:
            if not _is_url(source):
                source_format(Path(source))  # a missing or unreadable file fails here, before any output
        self.settings = settings
        self.job_id = job_id
        self.columns = columns
        self.stop = stop
        self.clock = clock
        self.binner = Binner(settings.bin_ms, settings.max_late_ms)
        # The merged streams (a file in symbol blocks gives one per symbol); positions are per stream.
        self.parts = plan_parts(self.read_sources, settings.symbol, columns)
        count = len(self.parts)
        self.resume_at = [1] * count
        self.rejects_next = [1] * count
        self.round = 0
        self.period_ms = 0
        self.shift_ms: int | None = None
        self.ticks = self.bins = self.dlq = self.skipped = 0
        self.dlq_by_reason: dict[str, int] = {}
        self.first_event_ts: int | None = None
        self.finished = False
        self.resumed = resume is not None
        self._rebuild_from: list[int] | None = None
        self._schedule: Schedule | None = None
        self._orig_first: int | None = None
        self._orig_max = NO_TIME
        if resume is not None:
            self._restore(resume)
        # Ticks are paced here only for files; an API source paces itself.
        self.paced = settings.speed > 0 and not all(_is_url(s) for s in self.sources)
        self.watermarks = self.paced and settings.watermark_interval_ms > 0
        self._watermark_s = settings.watermark_interval_ms / 1000
        self._watermark_sent = NO_TIME

    def _restore(self, ckpt: ReplayCheckpoint) -> None:
        if len(ckpt.resume_at) != len(self.parts):
            raise SourceError(
                f"the checkpoint of {self.job_id} counts {len(ckpt.resume_at)} stream(s), the sources now give "
                f"{len(self.parts)}: the files changed since; start a new run"
            )
        self.round, self.period_ms, self.shift_ms = ckpt.round, ckpt.period_ms, ckpt.shift_ms
        self.resume_at = list(ckpt.resume_at)
        self.rejects_next = list(ckpt.rejects_next)
        self._rebuild_from = list(ckpt.rebuild_from)
        self.ticks, self.bins, self.dlq, self.skipped = ckpt.ticks, ckpt.bins, ckpt.dlq, ckpt.skipped
        self.first_event_ts = ckpt.first_event_ts
        self.binner.restore(ckpt.watermark, ckpt.max_event_ts)

    # ---- the loop -------------------------------------------------------------------------------

    def steps(self) -> Iterator[Step]:
        """Steps until the input ends (then every open bin is flushed) or the stop flag is set."""
        while True:
            saw_ticks = False
            chunks = tick_stream(
                self.read_sources,
                self.settings.symbol,
                self.settings.chunk_rows or DEFAULT_CHUNK_ROWS,
                spread=self.settings.spread,
                columns=self.columns,
                parts=self.parts,
            )
            # Paced: parse ahead in a thread, so the schedule's clock keeps closing bins meanwhile.
            for chunk in read_ahead(chunks) if self.paced else chunks:
                if self._stopped():
                    return
                dlq, skipped = self._rejects(chunk)
                ticks = self._prepare(chunk.ticks)
                saw_ticks = saw_ticks or ticks.height > 0
                if self.paced and ticks.height:
                    if dlq or skipped:
                        yield self._counted(Step(self.binner.advance(NO_TIME), dlq, 0, skipped))
                    for step in self._paced(ticks):
                        yield step
                        if self._stopped():
                            return
                else:
                    yield self._process(ticks, dlq, skipped, None)
            if self._stopped():
                return
            self._rebuild_from = None
            if not (self.settings.loop and (saw_ticks or self._orig_first is not None)):
                break
            # Next round: the same ticks again, shifted past the last one; close this round first.
            if self.period_ms == 0 and self._orig_first is not None:
                self.period_ms = loop_period_ms(self._orig_first, self._orig_max)
            yield self._counted(self._final(self.binner.flush(), last=False))
            self.round += 1
            self.resume_at = [1] * len(self.parts)
        yield self._counted(self._final(self.binner.flush(), last=True))
        self.finished = True

    def _final(self, bins: pl.DataFrame, last: bool) -> Step:
        """The step of a flush: every bin is out, so the watermark moves past the last one.

        At the end of the input it is a final watermark: a promise that nothing at all follows
        from this job, so every open bar closes whatever its size (the producer knows nothing of
        bar sizes; a later live replay starts after now). Between two rounds of a loop it stops
        at the last bin's end: the next round follows.
        """
        end = int(bins["end_ts_ms"].max()) if bins.height else self.binner.watermark  # type: ignore[arg-type]
        if last and self.watermarks:
            # Sent even when it does not move the watermark: "nothing follows" is news of its own.
            self._watermark_sent = max(self._watermark_sent, end)
            return Step(bins, watermark_ms=self._watermark_sent, final=True)
        return Step(bins, watermark_ms=self._promise(end))

    def _watermark_due(self) -> int | None:
        """The promise of the binner's watermark (bins ending after it are still open), when due to be sent."""
        return self._promise(self.binner.watermark - self.settings.bin_ms + 1)

    def _promise(self, watermark_ms: int) -> int | None:
        """`watermark_ms` when watermark records are on and it moves past the last one sent (then it is sent)."""
        if not self.watermarks or watermark_ms <= self._watermark_sent:
            return None
        self._watermark_sent = watermark_ms
        return watermark_ms

    def _stopped(self) -> bool:
        return bool(self.stop) if self.stop is not None else False

    def _now_ms(self) -> int:
        return int(self.clock() * 1000)

    def _counted(self, step: Step) -> Step:
        self.bins += step.bins.height
        self.dlq += len(step.dlq)
        for record in step.dlq:
            self.dlq_by_reason[record.reason] = self.dlq_by_reason.get(record.reason, 0) + 1
        self.ticks += step.ticks
        self.skipped += step.skipped
        return step

    # ---- input ----------------------------------------------------------------------------------

    def _rejects(self, chunk: TickChunk) -> tuple[list[DlqRecord], int]:
        """DLQ records for bad rows and the count of skipped rows not yet counted before a restart."""
        rejects = chunk.rejects
        if rejects.height == 0 or self.round > 0:
            return [], 0
        floor = np.asarray(self.rejects_next)[rejects["src"].to_numpy()]
        rejects = rejects.filter(pl.Series(rejects["line"].to_numpy() >= floor))
        if rejects.height == 0:
            return [], 0
        for src, line in rejects.group_by("src").agg(pl.col("line").max()).iter_rows():
            self.rejects_next[src] = max(self.rejects_next[src], line + 1)
        skip = rejects["reason"].is_in(list(SKIP_REASONS))
        now = self._now_ms()
        records = [
            DlqRecord(
                stage="replay",
                reason=reason,
                detail=detail,
                source=file,
                position={"line": line},
                payload=clip_payload(payload),
                dlq_ts_ms=now,
            )
            for file, line, reason, detail, payload in rejects.filter(~skip)
            .select("file", "line", "reason", "detail", "payload")
            .iter_rows()
        ]
        return records, int(skip.sum())

    def _prepare(self, ticks: pl.DataFrame) -> pl.DataFrame:
        """Round and live shifts, `orig_ts_ms`; after a restart, drop committed ticks and rebuild open bins."""
        if ticks.height == 0:
            return ticks
        first_orig, max_orig = int(ticks["ts_ms"][0]), int(ticks["order_ts"][-1])
        if self._orig_first is None:
            self._orig_first = first_orig
        self._orig_max = max(self._orig_max, max_orig)
        if self.settings.live and self.shift_ms is None:
            self.shift_ms = live_shift_ms(first_orig, self._now_ms())
        offset = (self.shift_ms or 0) + self.round * self.period_ms
        ticks = ticks.with_columns(
            orig_ts_ms=pl.col("ts_ms"),
            ts_ms=pl.col("ts_ms") + offset,
            order_ts=pl.col("order_ts") + offset,
        )
        if self._rebuild_from is not None:
            srcs = ticks["src"].to_numpy()
            lines = ticks["seq"].to_numpy()
            keep = lines >= np.asarray(self._rebuild_from)[srcs]
            fresh = lines >= np.asarray(self.resume_at)[srcs]
            rebuild = ticks.filter(pl.Series(keep & ~fresh))
            if rebuild.height:
                self.binner.adopt(rebuild.with_columns(api_send_ts_ms=pl.col("api_send_ts_ms").fill_null(self._now_ms())))
            ticks = ticks.filter(pl.Series(fresh))
        return ticks

    # ---- binning --------------------------------------------------------------------------------

    def _process(self, ticks: pl.DataFrame, dlq: list[DlqRecord], skipped: int, due: float | None) -> Step:
        if ticks.height == 0:
            return self._counted(Step(self.binner.advance(NO_TIME), dlq, 0, skipped))
        stamp = int(due) if due is not None else self._now_ms()
        ticks = ticks.with_columns(api_send_ts_ms=pl.col("api_send_ts_ms").fill_null(stamp))
        if self.first_event_ts is None:
            self.first_event_ts = int(ticks["ts_ms"][0])
        result = self.binner.push(ticks)
        records = list(dlq)
        now = self._now_ms()
        for row in result.late.iter_rows(named=True):
            detail = f"bin already closed: watermark {row['watermark_ms']} >= bin end"
            records.append(_tick_record(row, "late", detail, now, late_by_ms=row["late_by_ms"]))
        for row in result.over.iter_rows(named=True):
            records.append(_tick_record(row, "out_of_range", row["over"], now))
        for src, seq in ticks.group_by("src").agg(pl.col("seq").max()).iter_rows():
            self.resume_at[src] = max(self.resume_at[src], seq + 1)
        return self._counted(Step(result.bins, records, ticks.height, skipped, int(ticks["ts_ms"][-1]), due))

    def _paced(self, ticks: pl.DataFrame) -> Iterator[Step]:
        """Release ticks when the schedule says so; meanwhile close bins on the schedule's clock."""
        order = ticks["order_ts"].to_numpy()
        if self._schedule is None:
            wall0 = self.clock() * 1000
            if self.settings.live:
                wall0 = live_wall0_ms(wall0, int(order[0]))
            self._schedule = Schedule(self.settings.speed, wall0, int(order[0]))
        due = self._schedule.due_ms(order)
        done, total = 0, ticks.height
        while done < total:
            now = self.clock() * 1000
            upto = int(np.searchsorted(due, now, side="right"))
            if upto > done:
                yield self._process(ticks.slice(done, upto - done), [], 0, float(due[done]))
                done = upto
                continue
            # Nothing due yet: the schedule's clock (never past the next tick) may close bins.
            reached = min(self._schedule.event_now(now), float(order[done]))
            closed = self.binner.advance(int(reached) - self.settings.max_late_ms)
            watermark = self._watermark_due()
            if closed.height or watermark is not None:
                yield self._counted(Step(closed, watermark_ms=watermark))
            nap = min(MAX_NAP_S, max(0.0, (due[done] - self.clock() * 1000) / 1000))
            if self.watermarks:
                nap = min(nap, self._watermark_s)
            if self.stop is not None:
                if self.stop.wait(nap):
                    return
            else:
                time.sleep(nap)
        return

    # ---- position -------------------------------------------------------------------------------

    def checkpoint(self) -> ReplayCheckpoint:
        """The resume position after everything yielded so far."""
        rebuild_from = list(self.resume_at)
        open_ticks = self.binner.open_ticks
        if open_ticks.height:
            for src, seq in open_ticks.group_by("src").agg(pl.col("seq").min()).iter_rows():
                rebuild_from[src] = min(rebuild_from[src], seq)
        return ReplayCheckpoint(
            job_id=self.job_id,
            sources=self.sources,
            round=self.round,
            period_ms=self.period_ms,
            shift_ms=self.shift_ms,
            resume_at=list(self.resume_at),
            rebuild_from=rebuild_from,
            rejects_next=list(self.rejects_next),
            watermark=self.binner.watermark,
            max_event_ts=self.binner.max_event_ts,
            ticks=self.ticks,
            bins=self.bins,
            dlq=self.dlq,
            skipped=self.skipped,
            done=self.finished,
            committed_ts_ms=self._now_ms(),
            first_event_ts=self.first_event_ts,
        )


def _tick_record(row: dict[str, Any], reason: str, detail: str, now_ms: int,
                 late_by_ms: int | None = None) -> DlqRecord:
    """The DLQ record of a tick the binner refused (late, or beyond a bin's sum bounds), at its line."""
    return DlqRecord(
        stage="replay",
        reason=reason,
        detail=detail,
        source=row["file"],
        position={"line": row["line"]},
        payload=orjson.dumps({k: row[k] for k in ("symbol", "ts_ms", "price", "bid", "ask", "size")}).decode(),
        dlq_ts_ms=now_ms,
        late_by_ms=late_by_ms,
        event_ts_ms=row["ts_ms"],
        symbol=row["symbol"],
    )
