"""Event-time tumbling windows over 10 ms bins: the pure core of the aggregator (no I/O).

One `PartitionWindows` holds the state of one input partition (or of one offline
stream). Every decision (which window a bin joins, when a window closes, whether
a bin is late) is a function of the partition's bin sequence alone, plus the
calls the caller makes from outside it (`flush_idle`, `flush_all`, `advance_watermark`),
whose effect the checkpoint's watermark records. That is what
lets a restarted aggregator rebuild the exact state from the committed checkpoint.

Semantics (docs/aggregator.md):
* window of a bin = [start - start % W, +W) by the bin's start_ts_ms (epoch aligned);
* watermark = max(previous watermark, bin.start_ts_ms - grace), advanced before each
  bin is assigned; a window [s, e) is closed, and emitted once, when watermark >= e;
* a bin whose window is already closed is late (DLQ, or a revision with policy "revise");
* open = the bin with the smallest start (first in input order on ties), close = the
  bin with the largest start (last in input order on ties);
* a bin whose size (`window_ms`) does not divide the window is refused (`bad_window`);
* a bin is counted once: a second copy of a `bin_id` its window already holds is refused
  (`duplicate_bin`), and so is a bin that would push the bar's volume or notional beyond the
  contract's bounds (`out_of_range`); both go to the DLQ, and a rebuild refuses them again.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from streaming.kernel.bar_spec import BarSpec, make_bar_id, time_bars
from streaming.kernel.bounds import MAX_NOTIONAL_UNITS, MAX_VOLUME, PRICE_SCALE
from streaming.kernel.records import Bar, Bin

NO_WATERMARK = -(2**62)
# A bar's notional in dollars stays within the micro-dollar bound of the contract.
MAX_NOTIONAL_DOLLARS = MAX_NOTIONAL_UNITS / PRICE_SCALE
LatePolicy = Literal["dlq", "revise"]


@dataclass(frozen=True)
class WindowConfig:
    """How windows are cut and closed."""

    window_ms: int = 1_000
    grace_ms: int = 100
    late_policy: LatePolicy = "dlq"
    revise_horizon_ms: int = 60_000
    max_open_windows: int = 1_000_000

    @property
    def spec(self) -> BarSpec:
        """The spec of the bars these windows cut (time bars of `window_ms`)."""
        return time_bars(self.window_ms)


@dataclass(frozen=True)
class LateBin:
    """A bin the windows did not count, with its reason.

    "late" / "late_beyond_horizon": its window was already emitted. "duplicate_bin" (its bin_id
    is already counted in the bar), "out_of_range" (it would push the bar beyond the bounds) and
    "bad_window" (its size does not divide the window): then `detail` says why and `late_by_ms` is None.
    """

    bin: Bin
    offset: int
    late_by_ms: int | None
    watermark: int
    reason: str
    detail: str | None = None


@dataclass(frozen=True)
class AggregatorCheckpoint:
    """What a commit stores beside the offset, enough to rebuild the open windows.

    `closes` (revise policy only) maps the start of each closed window still kept for
    revisions to the first offset processed after it closed: bins from there on were
    late, which is how a rebuild recovers the revision numbers.
    """

    rebuild_from: int
    watermark: int | None
    closes: dict[int, int] = field(default_factory=dict)


class WindowAcc:
    """The running aggregate of one (symbol, window)."""

    __slots__ = (
        "api_send_ts_ms", "bin_count", "bin_ids", "close", "close_ts", "end", "first_offset", "high", "low",
        "max_lateness_ms", "notional", "open", "open_ts", "revision", "source_event_ts_ms", "start",
        "symbol", "trade_count", "volume",
    )

    def __init__(self, b: Bin, start: int, end: int, offset: int) -> None:
        self.symbol = b.symbol
        self.start = start
        self.end = end
        self.first_offset = offset
        self.open = b.open
        self.open_ts = b.start_ts_ms
        self.high = b.high
        self.low = b.low
        self.close = b.close
        self.close_ts = b.start_ts_ms
        self.volume = b.volume
        self.notional = b.notional
        self.trade_count = b.trade_count
        self.bin_count = 1
        self.max_lateness_ms = b.max_lateness_ms
        self.api_send_ts_ms = b.api_send_ts_ms
        self.source_event_ts_ms = b.source_event_ts_ms
        self.revision = 0
        # bin_id -> offset of the copy counted: a bin delivered twice is counted once.
        self.bin_ids: dict[str, int] = {b.bin_id: offset}

    def refusal(self, b: Bin) -> tuple[str, str] | None:
        """(reason, detail) when `b` must not be merged: a copy already counted, or beyond the bounds."""
        first = self.bin_ids.get(b.bin_id)
        if first is not None:
            return "duplicate_bin", f"{b.bin_id} already counted in its bar (offset/line {first})"
        if self.volume + b.volume > MAX_VOLUME:
            return "out_of_range", f"bar volume would exceed MAX_VOLUME ({MAX_VOLUME:,} shares)"
        if self.notional + b.notional > MAX_NOTIONAL_DOLLARS:
            bound = f"MAX_NOTIONAL_UNITS ({MAX_NOTIONAL_UNITS:,} micro-dollars)"
            return "out_of_range", f"bar notional would exceed {bound}"
        return None

    def merge(self, b: Bin, offset: int) -> None:
        """Fold one more bin in (input order is the tie-break for open and close); see `refusal` first."""
        self.bin_ids[b.bin_id] = offset
        ts = b.start_ts_ms
        if ts < self.open_ts:
            self.open = b.open
            self.open_ts = ts
            self.source_event_ts_ms = b.source_event_ts_ms
        if ts >= self.close_ts:
            self.close = b.close
            self.close_ts = ts
        if b.high > self.high:
            self.high = b.high
        if b.low < self.low:
            self.low = b.low
        self.volume += b.volume
        self.notional += b.notional
        self.trade_count += b.trade_count
        self.bin_count += 1
        if b.max_lateness_ms > self.max_lateness_ms:
            self.max_lateness_ms = b.max_lateness_ms
        sent = b.api_send_ts_ms
        if sent is not None and (self.api_send_ts_ms is None or sent < self.api_send_ts_ms):
            self.api_send_ts_ms = sent

    def to_bar(self, now_ms: int, spec: BarSpec) -> Bar:
        """The bar of this window as it stands (vwap = close when there is no volume)."""
        return Bar(
            bar_id=make_bar_id(self.symbol, self.start, spec),
            symbol=self.symbol,
            spec=spec.text,
            start_ts_ms=self.start,
            end_ts_ms=self.end,
            open=self.open,
            high=self.high,
            low=self.low,
            close=self.close,
            volume=self.volume,
            notional=self.notional,
            vwap=self.vwap(),
            trade_count=self.trade_count,
            bin_count=self.bin_count,
            max_lateness_ms=self.max_lateness_ms,
            api_send_ts_ms=self.api_send_ts_ms,
            source_event_ts_ms=self.source_event_ts_ms,
            ingest_ts_ms=now_ms,
            revision=self.revision,
        )

    def vwap(self) -> float:
        """notional / volume, kept inside [low, high] against float rounding; close when there is no volume."""
        if not self.volume:
            return self.close
        return min(max(self.notional / self.volume, self.low), self.high)


class PartitionWindows:
    """Open windows and watermark of one input partition; emitted bars and late bins queue up for `drain`.

    The time-bar implementation of `streaming.aggregate.kinds.BarWindows`.
    """

    def __init__(self, config: WindowConfig, watermark: int | None = None,
                 closes: dict[int, int] | None = None) -> None:
        self.config = config
        self.watermark = NO_WATERMARK if watermark is None else watermark
        self.open: dict[int, dict[str, WindowAcc]] = {}
        self.closed: dict[int, dict[str, WindowAcc]] = {}  # kept for revisions only
        self.closes: dict[int, int] = dict(closes or {})  # closed window start -> first offset after closing
        self.open_count = 0
        self.bars: list[Bar] = []
        self.late: list[LateBin] = []
        self.max_event_ts: int | None = None
        self._next_close_end = 2**62
        self._window = config.window_ms
        self._grace = config.grace_ms
        self.spec = config.spec

    # -- the hot path ---------------------------------------------------------------

    def add(self, b: Bin, offset: int, now_ms: int) -> None:
        """Advance the watermark by this bin's event time, close what it passes, then assign the bin."""
        ts = b.start_ts_ms
        if self.max_event_ts is None or ts > self.max_event_ts:
            self.max_event_ts = ts
        wm = ts - self._grace
        if wm > self.watermark:
            self.watermark = wm
            if wm >= self._next_close_end:
                self._close_until(wm, now_ms, offset)
        start = ts - ts % self._window
        end = start + self._window
        if self._window % b.window_ms:
            # Bins that do not tile the windows (made with a REPLAY_BIN_MS that does not divide
            # AGG_WINDOW_MS): some hold trades of two bars, so no bar of them would be right.
            detail = (f"{b.bin_id}: {b.window_ms} ms bins do not divide the {self._window} ms window "
                      "(REPLAY_BIN_MS must divide AGG_WINDOW_MS)")
            self.late.append(LateBin(b, offset, None, self.watermark, "bad_window", detail))
            return
        if end <= self.watermark:
            self._late(b, offset, start, now_ms)
            return
        refused = self._refusal(self.open, b, start)
        if refused is not None:
            self.late.append(LateBin(b, offset, None, self.watermark, *refused))
            return
        if self._accumulate(b, start, end, offset) and self.open_count > self.config.max_open_windows:
            self._close_oldest(now_ms, offset + 1)

    def rebuild(self, b: Bin, offset: int) -> None:
        """Re-add a bin read again after a restart, without emitting: skip it if its window was closed."""
        ts = b.start_ts_ms
        if self.max_event_ts is None or ts > self.max_event_ts:
            self.max_event_ts = ts
        start = ts - ts % self._window
        end = start + self._window
        if self._window % b.window_ms:
            return  # refused as it was first read (bad_window)
        if end <= self.watermark:
            if self.config.late_policy == "revise":
                self._rebuild_closed(b, offset, start, end)
            return
        if self._refusal(self.open, b, start) is None:  # refused before the restart: its DLQ record exists
            self._accumulate(b, start, end, offset)

    @staticmethod
    def _refusal(windows: dict[int, dict[str, WindowAcc]], b: Bin, start: int) -> tuple[str, str] | None:
        """Why the window of `b` in `windows` must not count it (a duplicate, beyond the bounds), or None."""
        bucket = windows.get(start)
        acc = bucket.get(b.symbol) if bucket is not None else None
        return acc.refusal(b) if acc is not None else None

    def _accumulate(self, b: Bin, start: int, end: int, offset: int) -> bool:
        """Add `b` to its open window; True when that opened a new (symbol, window)."""
        bucket = self.open.get(start)
        if bucket is None:
            bucket = self.open[start] = {}
            if end < self._next_close_end:
                self._next_close_end = end
        acc = bucket.get(b.symbol)
        if acc is None:
            bucket[b.symbol] = WindowAcc(b, start, end, offset)
            self.open_count += 1
            return True
        acc.merge(b, offset)
        return False

    # -- wall-clock driven flushes --------------------------------------------------------

    def flush_idle(self, now_ms: int, next_offset: int = 0) -> int:
        """Quiet partition: move the watermark to the end of the newest open window; returns bars emitted."""
        if not self.open:
            return 0
        before = len(self.bars)
        self.watermark = max(self.watermark, max(self.open) + self._window)
        self._close_until(self.watermark, now_ms, next_offset)
        return len(self.bars) - before

    def finish(self, now_ms: int, next_offset: int = 0) -> int:
        """The end of the input (a final watermark, a file's end): close every open window; returns bars emitted."""
        return self.flush_idle(now_ms, next_offset)

    flush_all = finish

    def oldest_open_end(self) -> int | None:
        """The end of the oldest open window, None when none is open."""
        return min(self.open) + self._window if self.open else None

    def advance_watermark(self, watermark: int, now_ms: int, next_offset: int = 0) -> int:
        """An event-time bound from outside this partition's bins: close what it passes; returns bars emitted."""
        if watermark <= self.watermark:
            return 0
        before = len(self.bars)
        self.watermark = watermark
        self._close_until(watermark, now_ms, next_offset)
        return len(self.bars) - before

    # -- checkpoints ----------------------------------------------------------------------

    def checkpoint(self, next_offset: int) -> AggregatorCheckpoint:
        """The rebuild point for a commit at `next_offset`: the oldest offset any kept window still needs."""
        rebuild_from = next_offset
        for buckets in (self.open, self.closed):
            for bucket in buckets.values():
                for acc in bucket.values():
                    if acc.first_offset < rebuild_from:
                        rebuild_from = acc.first_offset
        return AggregatorCheckpoint(rebuild_from, None if self.watermark == NO_WATERMARK else self.watermark,
                                    {s: self.closes[s] for s in self.closed if s in self.closes})

    def drain(self) -> tuple[list[Bar], list[LateBin]]:
        """Take the bars and late bins produced since the last drain (bars in emission order)."""
        bars, late = self.bars, self.late
        self.bars, self.late = [], []
        return bars, late

    # -- internals ------------------------------------------------------------------------

    def _close_until(self, watermark: int, now_ms: int, next_offset: int) -> None:
        window = self._window
        for start in sorted(self.open):
            if start + window > watermark:
                self._next_close_end = start + window
                break
            self._emit_window(start, now_ms, next_offset)
        else:
            self._next_close_end = 2**62
        self._expire_closed()

    def _emit_window(self, start: int, now_ms: int, next_offset: int) -> None:
        bucket = self.open.pop(start)
        self.open_count -= len(bucket)
        for symbol in sorted(bucket):
            self.bars.append(bucket[symbol].to_bar(now_ms, self.spec))
        if self.config.late_policy == "revise":
            self.closed[start] = bucket
            self.closes[start] = next_offset

    def _close_oldest(self, now_ms: int, next_offset: int) -> None:
        """Bounded state: close the oldest window(s) by advancing the watermark to their end."""
        while self.open_count > self.config.max_open_windows:
            oldest = min(self.open)
            self.watermark = max(self.watermark, oldest + self._window)
            self._close_until(self.watermark, now_ms, next_offset)

    def _expire_closed(self) -> None:
        if not self.closed:
            return
        horizon = self.watermark - self.config.revise_horizon_ms
        for start in [s for s in self.closed if s + self._window <= horizon]:
            del self.closed[start]
            self.closes.pop(start, None)

    def _late(self, b: Bin, offset: int, start: int, now_ms: int) -> None:
        late_by = self.watermark - b.start_ts_ms
        if self.config.late_policy == "revise":
            bucket = self.closed.get(start)
            if bucket is not None or start + self._window > self.watermark - self.config.revise_horizon_ms:
                self._revise(b, offset, start, bucket, now_ms)
                return
            self.late.append(LateBin(b, offset, late_by, self.watermark, "late_beyond_horizon"))
            return
        self.late.append(LateBin(b, offset, late_by, self.watermark, "late"))

    def _revise(self, b: Bin, offset: int, start: int, bucket: dict[str, WindowAcc] | None, now_ms: int) -> None:
        refused = self._refusal(self.closed, b, start)
        if refused is not None:  # a revision must not count a bin twice either
            self.late.append(LateBin(b, offset, None, self.watermark, *refused))
            return
        if bucket is None:
            bucket = self.closed[start] = {}
        acc = bucket.get(b.symbol)
        if acc is None:
            # No bar was emitted for this symbol's window yet: the late bin makes its first one.
            acc = bucket[b.symbol] = WindowAcc(b, start, start + self._window, offset)
        else:
            acc.merge(b, offset)
            acc.revision += 1
        self.bars.append(acc.to_bar(now_ms, self.spec))

    def _rebuild_closed(self, b: Bin, offset: int, start: int, end: int) -> None:
        """Revise policy: closed windows inside the horizon get their bins back, late ones as revisions."""
        if end <= self.watermark - self.config.revise_horizon_ms:
            return
        bucket = self.closed.setdefault(start, {})
        acc = bucket.get(b.symbol)
        if acc is None:
            bucket[b.symbol] = WindowAcc(b, start, end, offset)
            return
        if acc.refusal(b) is not None:
            return
        acc.merge(b, offset)
        closed_at = self.closes.get(start)
        if closed_at is None or offset >= closed_at:
            acc.revision += 1  # this bin came after the window closed: it made a revision
