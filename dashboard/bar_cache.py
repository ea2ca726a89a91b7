"""The dashboard's in-memory bar cache: bounded per symbol, deduplicated by bar_id, revisions replace.

Pure and thread-safe; the background consumer adds, the Streamlit reruns read.
"""

from __future__ import annotations

import heapq
import threading
from collections import deque
from dataclasses import dataclass

from streaming.kernel.records import Bar

RECENT_RECEIPTS = 300


@dataclass(frozen=True)
class CachedBar:
    """A bar with when the dashboard received it and the broker's message timestamp."""

    bar: Bar
    received_ms: int
    kafka_ts_ms: int | None


@dataclass(frozen=True)
class CacheSnapshot:
    """What the badges need, copied under the lock."""

    bar_count: int
    symbol_count: int
    recent: tuple[CachedBar, ...]
    last_received_ms: int | None
    newest_kafka_ts_ms: int | None
    ignored_duplicates: int
    evicted: int


class BarCache:
    """The latest `max_bars_per_symbol` bars of each symbol, one per bar_id (highest revision wins)."""

    def __init__(self, max_bars_per_symbol: int, recent: int = RECENT_RECEIPTS) -> None:
        if max_bars_per_symbol < 1:
            raise ValueError("max_bars_per_symbol must be at least 1")
        self.max_bars_per_symbol = max_bars_per_symbol
        self._lock = threading.Lock()
        self._bars: dict[str, dict[str, CachedBar]] = {}
        # Per symbol, a min-heap of (start_ts_ms, bar_id) to evict the oldest in O(log n).
        self._order: dict[str, list[tuple[int, str]]] = {}
        self._recent: deque[CachedBar] = deque(maxlen=recent)
        self._last_received_ms: int | None = None
        self._newest_kafka_ts_ms: int | None = None
        self._duplicates = 0
        self._evicted = 0

    def add(self, bar: Bar, received_ms: int, kafka_ts_ms: int | None = None) -> bool:
        """Keep `bar` unless the same bar_id is cached with the same or a higher revision; True if kept."""
        entry = CachedBar(bar, received_ms, kafka_ts_ms)
        with self._lock:
            self._last_received_ms = received_ms
            if kafka_ts_ms is not None:
                self._newest_kafka_ts_ms = max(self._newest_kafka_ts_ms or kafka_ts_ms, kafka_ts_ms)
            bars = self._bars.setdefault(bar.symbol, {})
            order = self._order.setdefault(bar.symbol, [])
            known = bars.get(bar.bar_id)
            if known is not None:
                if known.bar.revision >= bar.revision:
                    self._duplicates += 1
                    return False
                bars[bar.bar_id] = entry
                self._recent.append(entry)
                return True
            bars[bar.bar_id] = entry
            heapq.heappush(order, (bar.start_ts_ms, bar.bar_id))
            self._recent.append(entry)
            kept = True
            while len(bars) > self.max_bars_per_symbol:
                _, oldest = heapq.heappop(order)
                del bars[oldest]
                self._evicted += 1
                kept = kept and oldest != bar.bar_id
            return kept

    def symbols(self) -> list[str]:
        """Cached symbols, sorted."""
        with self._lock:
            return sorted(s for s, bars in self._bars.items() if bars)

    def bars(self, symbol: str) -> list[Bar]:
        """Every cached bar of `symbol`, oldest first."""
        with self._lock:
            entries = list(self._bars.get(symbol, {}).values())
        return sorted((e.bar for e in entries), key=lambda b: b.start_ts_ms)

    def window(self, symbol: str, history_s: int) -> list[Bar]:
        """The bars of the last `history_s` seconds of event time, ending at the symbol's newest bar."""
        bars = self.bars(symbol)
        if not bars:
            return []
        since = bars[-1].end_ts_ms - history_s * 1000
        return [b for b in bars if b.start_ts_ms >= since]

    def snapshot(self) -> CacheSnapshot:
        """Counts and recent receipts for the badges."""
        with self._lock:
            return CacheSnapshot(
                bar_count=sum(len(b) for b in self._bars.values()),
                symbol_count=sum(1 for b in self._bars.values() if b),
                recent=tuple(self._recent),
                last_received_ms=self._last_received_ms,
                newest_kafka_ts_ms=self._newest_kafka_ts_ms,
                ignored_duplicates=self._duplicates,
                evicted=self._evicted,
            )
