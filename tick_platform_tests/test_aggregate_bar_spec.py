"""Acceptance (issue 16, point 2): 5 s bars beside 1 s bars, told apart by their contract.

An aggregator with AGG_WINDOW_MS=5000 runs beside the 1 s aggregator on the same ticks.raw
(the real WDC sample), with its own consumer group, topic and transactional id, all named
after its spec by the settings. Both streams must equal an independent polars recomputation
from the raw ticks, carry their spec, and share no bar_id. The end of a replay's input is a
final watermark that closes 5 s bars as it closes 1 s bars.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import polars as pl
import pytest
from confluent_kafka import Producer

from streaming.aggregate.counters import Counters
from streaming.aggregate.kinds import windows_for
from streaming.aggregate.processor import Aggregator
from streaming.aggregate.windows import WindowConfig
from streaming.kernel.records import WATERMARK_KEY, Bar, Watermark, bar_decoder, encode
from streaming.kernel.settings import PROJECT_ROOT, KafkaSettings, Settings, load_settings
from streaming.kernel.topics import bootstrap_topics
from streaming.replay.offline import replay_to_jsonl
from streaming.replay.producer import run_replay
from streaming.sources import read_ticks
from tick_platform_tests.test_aggregate_helpers import make_bin, produce_bins, read_dlq, read_topic, settings_for

SAMPLE_SECONDS = 5_049
SAMPLE_SHARES = 3_582_490


def expected_bars(sample: Path, window_ms: int, spec: str) -> dict[str, dict[str, float | int]]:
    """bar_id -> OHLCV of each `window_ms` window, straight from the raw ticks (file order = trade order).

    The id and the spec text are written out here, not taken from the kernel: the contract
    says `<SYMBOL>-<start 13 digits>-<spec>`.
    """
    ticks = pl.concat(list(read_ticks(sample))).with_row_index("seq")
    per_window = (
        ticks.with_columns(start=(pl.col("ts_ms") // window_ms) * window_ms)
        .sort("seq")
        .group_by("symbol", "start", maintain_order=True)
        .agg(
            open=pl.col("price").first(), high=pl.col("price").max(), low=pl.col("price").min(),
            close=pl.col("price").last(), volume=pl.col("size").sum(),
            notional=(pl.col("price") * pl.col("size")).sum(), trade_count=pl.len(),
        )
    )
    assert per_window["volume"].sum() == SAMPLE_SHARES
    return {
        f"{row['symbol']}-{row['start']:013d}-{spec}": {**row, "vwap": row["notional"] / row["volume"]}
        for row in per_window.iter_rows(named=True)
    }


def assert_bars_match(bars: list[Bar], expected: dict[str, dict[str, float | int]], window_ms: int,
                      spec: str) -> None:
    """One bar per expected id, each equal to its recomputation and carrying `spec`."""
    ids = Counter(b.bar_id for b in bars)
    assert [i for i, n in ids.items() if n > 1] == []
    assert set(ids) == set(expected)
    for bar in bars:
        want = expected[bar.bar_id]
        assert (bar.spec, bar.start_ts_ms, bar.end_ts_ms, bar.revision) == (
            spec, want["start"], int(want["start"]) + window_ms, 0)
        assert (bar.open, bar.high, bar.low, bar.close) == (want["open"], want["high"], want["low"], want["close"])
        assert (bar.volume, bar.trade_count) == (want["volume"], want["trade_count"])
        assert bar.notional == pytest.approx(want["notional"], rel=1e-9)
        assert bar.vwap == pytest.approx(want["vwap"], rel=1e-9)


def five_second_settings(kafka: KafkaSettings, **agg: object) -> Settings:
    """AGG_WINDOW_MS=5000 on the test's ticks.raw; topic, group and transactional id left to the spec."""
    return load_settings(
        None,
        kafka={"brokers": kafka.brokers, "topic_raw": kafka.topic_raw, "topic_dlq": kafka.topic_dlq},
        agg={"window_ms": 5000, **agg},
    )


@pytest.mark.kafka
def test_five_second_bars_run_beside_one_second_bars_on_the_sample(sample_path: Path, kafka: KafkaSettings) -> None:
    one = settings_for(kafka, idle_timeout_ms=1_000, instance_id="one")
    five = five_second_settings(kafka, idle_timeout_ms=1_000, instance_id="five")
    # Named after the spec, apart from the 1 s aggregator's names.
    assert (five.kafka.topic_agg, five.agg.group_id, five.agg.transactional_id_prefix) == (
        "ticks.agg.5s", "tick-aggregator-time-5s", "tick-aggregator-time-5s")
    assert (one.kafka.topic_agg, one.agg.transactional_id_prefix) == (kafka.topic_agg, "tick-aggregator")
    assert one.agg.group_id not in (five.agg.group_id, "tick-aggregator-time-5s")
    bootstrap_topics(five.kafka)  # ticks.agg.5s (the session broker is this test run's own)
    five_kafka = five.kafka
    before = len(read_topic(five_kafka, five_kafka.topic_agg, timeout_s=30))

    run_replay(one, [str(sample_path)])
    # Both aggregators at once on the same input, each in its own group.
    results: dict[str, Counters] = {}
    errors: list[BaseException] = []

    def run(name: str, settings: Settings) -> None:
        try:
            results[name] = Aggregator(settings, until_idle=True).run()
        except BaseException as exc:  # handed to the test thread
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(n, s)) for n, s in (("one", one), ("five", five))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []

    ones = [bar_decoder.decode(v) for _p, _o, v in read_topic(kafka, kafka.topic_agg)]
    fives = [bar_decoder.decode(v) for _p, _o, v in read_topic(five_kafka, five_kafka.topic_agg)][before:]
    assert_bars_match(ones, expected_bars(sample_path, 1000, "time-1s"), 1000, "time-1s")
    expected_five = expected_bars(sample_path, 5000, "time-5s")
    assert_bars_match(fives, expected_five, 5000, "time-5s")
    assert len(ones) == SAMPLE_SECONDS and 0 < len(fives) == len(expected_five) < len(ones)
    assert {b.bar_id for b in ones}.isdisjoint(b.bar_id for b in fives)
    # Same trades, other cut: the totals agree.
    assert sum(b.volume for b in fives) == sum(b.volume for b in ones) == SAMPLE_SHARES
    assert sum(b.trade_count for b in fives) == sum(b.trade_count for b in ones)
    assert (results["one"].bars_out, results["five"].bars_out) == (len(ones), len(fives))
    assert (results["five"].late, results["five"].poison) == (0, 0)
    # The open-window gauges: nothing left open; one symbol, so at most the window being filled and
    # the one the grace still keeps open.
    assert [(c.open_windows, 1 <= c.open_windows_peak <= 2) for c in (results["one"], results["five"])] == [
        (0, True), (0, True)]
    assert [r for r in read_dlq(kafka) if r.stage == "aggregate"] == []


def test_five_second_bars_offline_through_the_cli(sample_path: Path, tmp_path: Path) -> None:
    settings = settings_for(load_settings().kafka)
    replay_to_jsonl([str(sample_path)], tmp_path / "bins.jsonl", tmp_path / "replay_dlq.jsonl", settings)
    done = subprocess.run(
        [sys.executable, "-m", "streaming", "aggregate", "--from", str(tmp_path / "bins.jsonl"),
         "--to", str(tmp_path / "bars.jsonl"), "--window-ms", "5000"],
        cwd=PROJECT_ROOT, capture_output=True, text=True, check=False,
    )
    assert done.returncode == 0, done.stderr
    bars = [bar_decoder.decode(line) for line in (tmp_path / "bars.jsonl").read_bytes().splitlines()]
    expected = expected_bars(sample_path, 5000, "time-5s")
    assert_bars_match(bars, expected, 5000, "time-5s")
    assert f"-> {len(expected):,} bars" in done.stdout


def test_a_final_watermark_closes_every_open_bar_whatever_its_size() -> None:
    t0 = 1_266_417_000_000
    windows = windows_for(WindowConfig(window_ms=5000, grace_ms=0))
    for i in range(3):  # 0 s, 2 s, 4 s: one open 5 s bar
        windows.add(make_bin("AAA", t0 + i * 2000, [10.0 + i], [1]), i, 0)
    end = t0 + 4000 + 10  # the last bin's end: what the replay's final watermark promises
    assert windows.advance_watermark(end, 0, 3) == 0  # a plain watermark leaves the 5 s bar open
    assert windows.finish(0, 3) == 1
    [bar], late = windows.drain()
    assert (bar.bar_id, bar.spec, bar.volume, bar.close, late) == (f"AAA-{t0:013d}-time-5s", "time-5s", 3, 12.0, [])
    assert windows.open_count == 0 and windows.oldest_open_end() is None


@pytest.mark.kafka
def test_a_final_watermark_record_closes_the_last_five_second_bars_on_kafka(kafka: KafkaSettings) -> None:
    """No idle flush (10 min timeout): only the final watermark record can close the last bars."""
    t0 = 1_266_417_000_000
    bins = [make_bin(s, t0 + i * 1000, [10.0 + i], [1]) for s in ("AAA", "BBB") for i in range(7)]
    produce_bins(kafka, bins)
    # What a paced replay writes at the end of its input: one final record per partition, after the bins.
    final = encode(Watermark(watermark_ms=t0 + 6010, job_id="final-test", final=True))
    producer = Producer({**kafka.client_base(), "enable.idempotence": True, "acks": "all"})
    for p in range(kafka.partitions):
        producer.produce(kafka.topic_raw, final, WATERMARK_KEY, partition=p)
    assert producer.flush(30) == 0
    five = five_second_settings(kafka, idle_timeout_ms=600_000, instance_id="final")
    five = Settings(**{**five.__dict__, "kafka": five.kafka.model_copy(update={"topic_agg": kafka.topic_agg})})
    deadline = time.monotonic() + 120  # a guard only: a missing close shows up as missing bars
    counters = Aggregator(five, until_idle=True, stop=lambda: time.monotonic() > deadline).run()
    bars = sorted((bar_decoder.decode(v) for _p, _o, v in read_topic(kafka, kafka.topic_agg)),
                  key=lambda b: b.bar_id)
    assert [(b.bar_id, b.volume, b.open, b.close) for b in bars] == [
        (f"{s}-{start:013d}-time-5s", volume, first, last)
        for s in ("AAA", "BBB")
        for start, volume, first, last in ((t0, 5, 10.0, 14.0), (t0 + 5000, 2, 15.0, 16.0))
    ]
    assert (counters.idle_flushes, counters.watermarks_in) == (0, kafka.partitions)
