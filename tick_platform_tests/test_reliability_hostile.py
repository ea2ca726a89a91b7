"""Reliability: hostile input where the other suites do not put it.

* Malformed messages in ticks.agg.1s (truncated JSON, non-UTF-8, wrong types, 900 KB, empty,
  not an object, a bin instead of a bar) between real bars: every reader of that topic (the
  platform's bar reader, the dashboard feed, the validator) skips and counts them and still
  returns every real bar.
* Mock tick API query parameters out of range: HTTP 422 with a message naming the parameter.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import pytest
from confluent_kafka import Producer

from streaming.kernel.bar_spec import DEFAULT_BAR_SPEC, make_bar_id
from streaming.kernel.records import Bar, encode
from streaming.kernel.settings import KafkaSettings
from tick_platform_tests.reliability_support import record_score, wait_until

T = TypeVar("T")
T0 = 1_266_417_000_000  # 2010-02-17 14:30:00 UTC
SYMBOLS = ("AAA", "BBB", "CCC", "DDD")
SECONDS = 40


def clean_bars() -> list[Bar]:
    """Bars of four symbols over 40 seconds, in start order (what the aggregator would write)."""
    bars = []
    for second in range(SECONDS):
        for i, symbol in enumerate(SYMBOLS):
            price = 10.0 + i + second / 100
            start = T0 + second * 1000
            bars.append(Bar(
                bar_id=make_bar_id(symbol, start, DEFAULT_BAR_SPEC), symbol=symbol, spec="time-1s",
                start_ts_ms=start, end_ts_ms=start + 1000,
                open=price, high=price + 0.02, low=price - 0.01, close=price + 0.01, volume=300,
                notional=price * 300, vwap=price, trade_count=3, bin_count=2, max_lateness_ms=100,
                api_send_ts_ms=start, source_event_ts_ms=start, ingest_ts_ms=start + 1500,
            ))
    return bars


def poison_values() -> dict[str, bytes | None]:
    """One of each kind of hostile message, by name."""
    good = encode(clean_bars()[0])
    return {
        "truncated": good[: len(good) // 2],
        "non_utf8": b'{"bar_id": "\xff\xfe\xfd", "symbol": "\xc3\x28"}',
        "wrong_types": good.replace(b'"volume":300', b'"volume":"lots"'),
        "missing_fields": b'{"bar_id": "AAA-0000000000000", "symbol": "AAA"}',
        "huge_900kb": b'{"bar_id": "' + b"x" * 900_000 + b'"}',
        "empty": None,
        "not_an_object": b"[1, 2, 3]",
        "plain_text": b"hello, I am not JSON",
        "a_bin_not_a_bar": b'{"bin_id": "AAA-1266417000000", "symbol": "AAA", "window_ms": 10}',
    }


def partition_of(symbol: str, partitions: int) -> int:
    """Pinned partition per symbol (as the aggregator keeps one symbol on one partition)."""
    return zlib.crc32(symbol.encode()) % partitions


def produce_with_poison(kafka: KafkaSettings) -> tuple[list[Bar], int]:
    """Write the clean bars with every kind of poison on every partition, mid-stream; returns (bars, poison sent)."""
    producer = Producer({**kafka.client_base(), "acks": "all", "message.max.bytes": 2_000_000})
    bars = clean_bars()
    half = len(bars) // 2
    poison = 0
    for index, bar in enumerate(bars):
        producer.produce(kafka.topic_agg, encode(bar), bar.symbol, partition=partition_of(bar.symbol, kafka.partitions))
        if index == half:
            # Between two real bars of every partition: the readers must step over them.
            for p in range(kafka.partitions):
                for value in poison_values().values():
                    producer.produce(kafka.topic_agg, value, b"hostile", partition=p)
                    poison += 1
    assert producer.flush(60) == 0
    return bars, poison


def bar_ids(bars: list[Bar]) -> list[str]:
    return sorted(b.bar_id for b in bars)


def score_reader(reader: str, bars: list[Bar], poison: int, read: list[Bar], rejected: int,
                 error: str | None = None) -> None:
    """One scorecard row per reader of ticks.agg.1s (recovery time does not apply: nothing is restarted)."""
    ids = bar_ids(read)
    record_score(f"poison in ticks.agg.1s: {reader}", f"{poison} malformed messages ({', '.join(poison_values())}) "
                 f"among {len(bars)} bars", len(bars) + poison, len(read), len(set(bar_ids(bars)) - set(ids)),
                 len(ids) - len(set(ids)), None, rejected=rejected, error=error)


def crash_of(call: Callable[[], T]) -> tuple[T | None, str | None]:
    """The call's result, or the exception that escaped it as text (a crash is the finding, recorded first)."""
    try:
        return call(), None
    except Exception as exc:
        return None, f"{type(exc).__name__}: {exc}"[:300]


@pytest.mark.kafka
def test_platform_bar_reader_skips_malformed_bars(kafka: KafkaSettings) -> None:
    """The facts' reader (binary search over offsets + window scan) steps over every malformed message."""
    from tick_platform.bar_reader import read_window

    bars, poison = produce_with_poison(kafka)
    window, error = crash_of(lambda: read_window(kafka, T0, T0 + SECONDS * 1000))
    score_reader("platform bar_reader", bars, poison, window.bars if window else [], window.skipped if window else 0,
                 error)
    assert window is not None, error
    assert bar_ids(window.bars) == bar_ids(bars)
    # Poison that lies before a partition's first bar of the window is outside the offset range and never read.
    assert 0 < window.skipped <= poison


@pytest.mark.kafka
def test_dashboard_feed_rejects_malformed_bars_and_keeps_reading(kafka: KafkaSettings) -> None:
    """The dashboard's feed thread counts malformed messages as rejected and caches every real bar."""
    from dashboard.bar_cache import BarCache
    from dashboard.feed import BarFeed

    bars, poison = produce_with_poison(kafka)
    feed = BarFeed(kafka, BarCache(max_bars_per_symbol=1_000)).start()
    try:
        def read_all() -> bool:
            status = feed.status()
            return status.messages + status.rejected >= len(bars) + poison or not feed._thread.is_alive()

        wait_until(read_all, 60, "the dashboard feed to read the whole topic")
        status = feed.status()
        cached = [b for s in SYMBOLS for b in feed.cache.bars(s)]
        died = None if feed._thread.is_alive() else "the feed thread died"
        score_reader("dashboard feed", bars, poison, cached, status.rejected, died)
        assert feed._thread.is_alive(), "the feed thread died on a malformed message"
        assert (status.messages, status.rejected) == (len(bars), poison)
        assert bar_ids(cached) == bar_ids(bars)
    finally:
        feed.stop()


@pytest.mark.kafka
def test_validator_reports_malformed_bars_without_crashing(kafka: KafkaSettings) -> None:
    """`validate --kafka` fails the verdict with a count of unreadable bars instead of stopping."""
    from streaming.validate.run import validate_kafka

    bars, poison = produce_with_poison(kafka)
    report, error = crash_of(lambda: validate_kafka(kafka, timeout_s=60))
    read = report.totals.get("bar_messages", 0) if report else 0
    record_score("poison in ticks.agg.1s: validator", f"{poison} malformed messages among {len(bars)} bars",
                 len(bars) + poison, read, len(bars) - read, 0, None, error=error,
                 problems=report.problems if report else [])
    assert report is not None, error
    assert read == len(bars)
    assert not report.ok
    # Every malformed bar is counted, the empty (null) values too, as the other readers do.
    assert any(f"{poison} bars do not satisfy the contract" in p for p in report.problems), report.problems


@pytest.mark.kafka
def test_aggregator_dead_letters_invalid_utf8_inside_a_json_string(kafka: KafkaSettings) -> None:
    """A bin whose JSON strings hold invalid UTF-8 goes to ticks.dlq (reason not_utf8); the stage goes on.

    (Invalid bytes outside strings fail JSON parsing; inside strings msgspec raises UnicodeDecodeError,
    which is not a msgspec.DecodeError.)
    """
    from streaming.aggregate.processor import Aggregator
    from streaming.kernel.records import Bin, dlq_decoder
    from streaming.kernel.settings import Settings, load_settings
    from tick_platform_tests.reliability_support import decode_rows, read_committed

    base = load_settings()
    settings = Settings(**{**base.__dict__, "kafka": kafka, "agg": base.agg.model_copy(
        update={"group_id": f"agg-{kafka.topic_raw}", "idle_timeout_ms": 500, "instance_id": "hostile"})})
    good = [Bin(bin_id=f"AAA-{T0 + i * 10:013d}", symbol="AAA", start_ts_ms=T0 + i * 10, end_ts_ms=T0 + i * 10 + 10,
                window_ms=10, open=1.0, high=1.0, low=1.0, close=1.0, volume=1, notional=1.0, trade_count=1,
                max_lateness_ms=0, api_send_ts_ms=None, source_event_ts_ms=T0 + i * 10, ingest_ts_ms=T0)
            for i in range(300)]
    poison = [b'{"bin_id": "\xff\xfe\xfd", "symbol": "\xc3\x28"}', b'{"symbol": "A\xffB"}']
    producer = Producer({**kafka.client_base(), "acks": "all"})
    for i, b in enumerate(good):
        producer.produce(kafka.topic_raw, encode(b), b.symbol, partition=0)
        if i == 150:
            for value in poison:
                producer.produce(kafka.topic_raw, value, b"hostile", partition=0)
    assert producer.flush(30) == 0
    counters, error = crash_of(lambda: Aggregator(settings, until_idle=True).run())
    bars = decode_rows(read_committed(kafka, kafka.topic_agg, timeout_s=30))
    dlq = [dlq_decoder.decode(v) for _p, _o, v in read_committed(kafka, kafka.topic_dlq, timeout_s=30) if v]
    aggregated = sum(b["bin_count"] for b in bars)
    record_score("non-UTF-8 inside JSON strings in ticks.raw", "2 bins with invalid UTF-8 inside JSON strings "
                 f"among {len(good)} bins", len(good) + len(poison), len(bars), len(good) - aggregated, 0,
                 None, dead_lettered=len(dlq), error=error)
    assert counters is not None, error
    assert sorted(r.reason for r in dlq) == ["not_utf8", "not_utf8"]
    assert counters.bins_in == len(good)
    assert len(bars) == 3  # 300 bins of 10 ms = 3 seconds


@pytest.fixture()
def api_client(tmp_path: Path):  # type: ignore[no-untyped-def]
    """The mock tick API over one small Kibot file, in-process."""
    from fastapi.testclient import TestClient

    from streaming.sources.api import create_app

    path = tmp_path / "WDC_tickbidask.txt"
    path.write_text("".join(f"02/17/2010,09:30:{s:02d},10.0{s % 10},10.0,10.1,{100 + s}\n" for s in range(30)))
    with TestClient(create_app([str(path)])) as client:
        yield client


HOSTILE_QUERIES = {
    "negative speed": "speed=-1",
    "speed too large": "speed=1e12",
    "speed not a number": "speed=fast",
    "speed NaN": "speed=nan",
    "start not a time": "start=yesterday",
    "end not a time": "end=2010-13-45T99:99",
    "start after end": "start=2010-02-17T10:00:00&end=2010-02-17T09:00:00",
    "symbol with junk": "symbols=WDC;DROP%20TABLE",
    "unknown symbol": "symbols=ZZZZ",
    "loop not a bool": "loop=maybe",
    "live not a bool": "live=2",
}


def test_api_rejects_out_of_range_query_parameters_with_422(api_client) -> None:  # type: ignore[no-untyped-def]
    """Every hostile query gets a 422 naming the problem; a valid one still streams ticks."""
    answers = {name: api_client.get(f"/ticks?{query}") for name, query in HOSTILE_QUERIES.items()}
    wrong = {name: r.status_code for name, r in answers.items() if r.status_code != 422}
    ok = api_client.get("/ticks?speed=0&symbols=WDC")
    record_score("mock API hostile query parameters", f"{len(HOSTILE_QUERIES)} out-of-range/invalid queries "
                 "(messages out = answered 422)", len(HOSTILE_QUERIES), len(HOSTILE_QUERIES) - len(wrong), len(wrong),
                 0, None, not_422=wrong)
    assert wrong == {}
    assert all(r.json().get("detail") for r in answers.values())
    assert ok.status_code == 200
    assert len(ok.text.splitlines()) == 30
