"""Pure dashboard logic: the bar cache, badges and their SLAs, the chart summary, health summaries."""

from __future__ import annotations

import threading
from datetime import UTC, datetime

import pytest

from dashboard.badges import all_badges
from dashboard.bar_cache import BarCache
from dashboard.chart import bar_figure, summarize
from dashboard.health import lag_row, newest_first, partition_start
from dashboard.live import price_text
from streaming.kernel.records import Bar, DlqRecord

T0 = 1_266_417_001_000  # 2010-02-17 09:30:01 New York


def bar(symbol: str, second: int, close: float = 10.0, revision: int = 0, ingest: int = 0,
        api: int | None = None, volume: int = 100) -> Bar:
    start = T0 + second * 1000
    return Bar(
        bar_id=f"{symbol}-{start:013d}-time-1s", symbol=symbol, spec="time-1s",
        start_ts_ms=start, end_ts_ms=start + 1000, open=close - 0.5,
        high=close + 1.0, low=close - 1.0, close=close, volume=volume, notional=close * volume, vwap=close,
        trade_count=3, bin_count=2, max_lateness_ms=100, api_send_ts_ms=api, source_event_ts_ms=start,
        ingest_ts_ms=ingest or start + 1200, revision=revision,
    )


def test_cache_dedups_by_bar_id_and_a_higher_revision_replaces() -> None:
    cache = BarCache(10)
    assert cache.add(bar("A", 0, close=1.0), 1)
    assert not cache.add(bar("A", 0, close=2.0), 2)
    assert cache.add(bar("A", 0, close=3.0, revision=1), 3)
    assert not cache.add(bar("A", 0, close=4.0, revision=0), 4)
    assert [b.close for b in cache.bars("A")] == [3.0]
    snap = cache.snapshot()
    assert (snap.bar_count, snap.ignored_duplicates, snap.last_received_ms) == (1, 2, 4)


def test_cache_is_bounded_per_symbol_and_evicts_the_oldest_event_time() -> None:
    cache = BarCache(5)
    for second in [3, 1, 4, 0, 9, 2, 6, 5, 8, 7]:
        cache.add(bar("A", second), second)
    cache.add(bar("B", 0), 99)
    assert [b.start_ts_ms - T0 for b in cache.bars("A")] == [5000, 6000, 7000, 8000, 9000]
    assert cache.symbols() == ["A", "B"]
    snap = cache.snapshot()
    assert (snap.bar_count, snap.symbol_count, snap.evicted) == (6, 2, 5)
    # A bar older than everything in a full cache does not stay.
    assert not cache.add(bar("A", 0, revision=3), 100)


def test_window_is_relative_to_the_newest_bar_not_the_wall_clock() -> None:
    cache = BarCache(1000)
    for second in range(0, 400, 2):
        cache.add(bar("A", second), 1)
    window = cache.window("A", 60)
    # Newest bar ends at second 399; the window keeps starts >= 339.
    assert [b.start_ts_ms - T0 for b in window][:2] == [340_000, 342_000]
    assert window[-1].start_ts_ms - T0 == 398_000
    assert len(window) == 30
    assert cache.window("missing", 60) == []


def test_cache_survives_concurrent_writers() -> None:
    cache = BarCache(50)

    def write(symbol: str) -> None:
        for second in range(500):
            cache.add(bar(symbol, second), second)

    threads = [threading.Thread(target=write, args=(s,)) for s in "ABCD"]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert cache.snapshot().bar_count == 200
    assert all(len(cache.bars(s)) == 50 and cache.bars(s)[0].start_ts_ms == T0 + 450_000 for s in "ABCD")


def _badges(cache: BarCache, now: int, sla_ms: int = 750, sla_s: int = 5) -> dict[str, tuple[str, str]]:
    return {b.key: (b.value, b.status) for b in all_badges(cache.snapshot(), now, sla_ms, sla_s)}


def test_badges_turn_to_warning_past_their_sla() -> None:
    now = 1_800_000_000_000
    cache = BarCache(100)
    for i in range(20):
        end = now - 10_000 + i * 100
        b = bar("A", 0)
        live = Bar(**{**{f: getattr(b, f) for f in b.__struct_fields__}, "bar_id": f"A-{end - 1000:013d}-time-1s",
                      "start_ts_ms": end - 1000, "end_ts_ms": end, "ingest_ts_ms": end + 200 + i * 10,
                      "api_send_ts_ms": end - 300})
        cache.add(live, end + 400, kafka_ts_ms=end + 250)
    badges = _badges(cache, now)
    # ingest - end = 200 + 10 i, i = 0..19: nearest-rank p50 = 290, p95 = 380.
    assert badges["end_to_end"] == ("p50 290 ms · p95 380 ms", "ok")
    # receive - api_send = 700 + 0 for every bar.
    assert badges["api_to_view"] == ("p50 700 ms · p95 700 ms", "ok")
    assert badges["kafka_lag"] == ("p50 150 ms · p95 150 ms", "ok")
    # Newest broker timestamp: now - 10000 + 1900 + 250 -> 7.85 s old, SLA 5 s.
    assert badges["freshness"] == ("7.8 s old", "warn")
    assert badges["cached"] == ("20 bars · 1 symbol", "ok")
    assert badges["last_update"][1] == "warn"
    tight = _badges(cache, now - 9_000, sla_ms=300, sla_s=60)
    assert tight["end_to_end"][1] == "warn"
    assert tight["api_to_view"][1] == "warn"
    assert tight["kafka_lag"][1] == "ok"
    assert tight["freshness"][1] == "ok"


def test_badges_for_an_empty_cache_and_a_historical_replay() -> None:
    empty = _badges(BarCache(10), 0)
    assert {status for _, status in empty.values()} == {"na"}
    assert empty["cached"][0] == "0 bars · 0 symbols"
    cache = BarCache(10)
    cache.add(bar("A", 0, ingest=1_800_000_000_000), 1_800_000_000_100, kafka_ts_ms=1_800_000_000_050)
    badges = _badges(cache, 1_800_000_001_000)
    assert badges["end_to_end"] == ("n/a (replay of 2010-02-17)", "na")
    assert badges["kafka_lag"] == ("p50 50 ms · p95 50 ms", "ok")
    assert badges["api_to_view"] == ("n/a (no API source)", "na")


def test_summary_and_figure_follow_the_bars() -> None:
    bars = [bar("A", s, close=10.0 + s, volume=100 * (s + 1)) for s in range(3)]
    summary = summarize(bars)
    assert summary is not None
    assert (summary.last_close, summary.volume, summary.trades, summary.bars) == (12.0, 600, 9, 3)
    assert summary.vwap == pytest.approx((10 * 100 + 11 * 200 + 12 * 300) / 600)
    assert summarize([]) is None
    fig = bar_figure("A", bars)
    kinds = [t.type for t in fig.data]
    assert kinds == ["candlestick", "scatter", "bar"]
    assert list(fig.data[0].close) == [10.0, 11.0, 12.0]
    assert list(fig.data[2].y) == [100, 200, 300]
    assert list(fig.data[1].y) == pytest.approx([10.0, (1000 + 2200) / 300, summary.vwap])
    # New York wall clock on the axis: 09:30:01 EST.
    assert fig.data[0].x[0] == datetime(2010, 2, 17, 9, 30, 1)


def test_price_text_keeps_two_to_four_decimals() -> None:
    assert [price_text(v) for v in (42.52, 42.9384, 43.0, 1234.5)] == ["42.52", "42.9384", "43.00", "1,234.50"]


def test_health_summaries() -> None:
    assert lag_row("g", "aggregator", "t", {1: 5, 0: 2, 2: None}) == lag_row("g", "aggregator", "t",
                                                                             {0: 2, 1: 5, 2: None})
    row = lag_row("g", "aggregator", "t", {0: 2, 1: 5, 2: None})
    assert (row.total_lag, row.per_partition) == (7, "2 5 -")
    assert lag_row("g", "r", "t", {0: None}).total_lag is None
    assert partition_start(datetime(2010, 2, 17, 14, 34, 59)) == datetime(2010, 2, 17, 14, 30)
    assert partition_start(datetime(2010, 2, 17, 14, 35, tzinfo=UTC)) == datetime(2010, 2, 17, 14, 35, tzinfo=UTC)
    records = [DlqRecord(stage="replay", reason=f"r{i}", detail="", source="s", position={}, payload="",
                         dlq_ts_ms=ts) for i, ts in enumerate([5, 9, 1])]
    assert [r.reason for r in newest_first(records, 2)] == ["r1", "r0"]
