"""The aggregator on the real broker: bars equal the offline run, poison and late input, idle flush."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest
from jsonschema import Draft202012Validator

from streaming.aggregate.offline import aggregate_file
from streaming.aggregate.processor import Aggregator, window_config
from streaming.kernel.records import Bar, bar_decoder, encode
from streaming.kernel.settings import PROJECT_ROOT, KafkaSettings
from tick_platform_tests.test_aggregate_helpers import (
    assert_partition_order,
    data_fields,
    make_bin,
    partition_of,
    per_partition_reference,
    produce_bins,
    read_bars,
    read_dlq,
    reference_bars,
    settings_for,
    synthetic_bins,
)

pytestmark = pytest.mark.kafka


def test_kafka_bars_equal_offline_and_poison_goes_to_dlq(kafka: KafkaSettings, tmp_path: Path) -> None:
    bins = synthetic_bins(symbols=12, ticks=30_000, seed=7, late_every=997)
    poison = [(0, b"not json at all"), (1, b"\xff\xfe\x00binary"), (2, b'{"bin_id": "x", "symbol": 5}'),
              (3, b'{"a": "' + b"x" * 70_000 + b'"}'),
              (4, encode(make_bin("S000", 1_266_417_001_000, [1.0], [1])).replace(b'"volume":1', b'"volume":-1'))]
    produce_bins(kafka, bins, poison)
    settings = settings_for(kafka, idle_timeout_ms=500, instance_id="t1")
    counters = Aggregator(settings, until_idle=True).run()

    expected, expected_late = per_partition_reference(bins, settings)
    rows = read_bars(kafka)
    got = [data_fields(bar) for _p, _o, bar in rows]
    assert len(got) == len(expected)
    assert {g["bar_id"]: g for g in got} == expected
    assert_partition_order(kafka, rows)
    # independent check: no bin of this stream is late within a partition except the planted ones
    plain, _late = reference_bars([b for b in bins if b.volume != 7], 1000, settings.agg_grace_ms)
    assert sum(v["trade_count"] for v in plain.values()) == sum(v["trade_count"] for v in expected.values())

    dlq = read_dlq(kafka)
    late = [r for r in dlq if r.reason == "late"]
    assert len(late) == expected_late > 0
    assert all(r.stage == "aggregate" and (r.late_by_ms or 0) > 0 for r in late)
    bad = sorted((r.position["partition"], r.reason) for r in dlq if r.reason != "late")
    assert bad == [(0, "not_json"), (1, "not_utf8"), (2, "schema"), (3, "too_large"), (4, "schema")]
    assert all(r.position["topic"] == kafka.topic_raw and r.position["offset"] >= 0 for r in dlq)
    schema = json.loads((PROJECT_ROOT / "docs" / "contracts" / "dlq_record_schema.json").read_text())
    validator = Draft202012Validator(schema)
    assert [e.message for r in dlq for e in validator.iter_errors(json.loads(encode(r)))] == []
    assert (counters.bins_in, counters.poison, counters.late) == (len(bins), 5, expected_late)
    assert counters.bars_out == len(expected)

    # the offline CLI path over one stream gives the plain group-by
    src = tmp_path / "bins.jsonl"
    src.write_bytes(b"".join(encode(b) + b"\n" for b in bins) + b"garbage\n")
    result = aggregate_file(src, tmp_path / "bars.jsonl", tmp_path / "dlq.jsonl", window_config(settings))
    offline = [data_fields(bar_decoder.decode(line)) for line in (tmp_path / "bars.jsonl").read_bytes().splitlines()]
    whole, whole_late = reference_bars(bins, 1000, settings.agg_grace_ms)
    assert {o["bar_id"]: o for o in offline} == whole
    assert (result.bars_out, result.late, result.poison) == (len(whole), len(whole_late), 1)


def test_last_bar_of_a_symbol_that_stops_trading_comes_out_on_idle(kafka: KafkaSettings) -> None:
    t0 = 1_266_417_001_000
    # two symbols on one partition; the last second of each never sees a later bin
    bins = [make_bin("AAA", t0 + i * 100, [10.0 + i], [100]) for i in range(25)]
    bins += [make_bin("AAA", t0 + 2500 + i, [9.0], [1]) for i in range(3)]
    produce_bins(kafka, bins)
    settings = settings_for(kafka, idle_timeout_ms=1_500, instance_id="idle")
    stop = threading.Event()
    aggregator = Aggregator(settings, stop.is_set)
    worker = threading.Thread(target=aggregator.run)
    produced_ms = time.time_ns() // 1_000_000
    worker.start()
    try:
        rows: list[tuple[int, int, Bar]] = []
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and len(rows) < 3:
            time.sleep(0.5)
            rows = read_bars(kafka)
        assert worker.is_alive()  # emitted by the running aggregator, not by its shutdown
    finally:
        stop.set()
        worker.join(30)
    assert [bar.start_ts_ms - t0 for _p, _o, bar in rows] == [0, 1000, 2000]
    last = rows[-1][2]
    assert (last.volume, last.bin_count, last.close, last.open) == (503, 8, 9.0, 30.0)
    assert aggregator.counters.idle_flushes >= 1
    assert last.ingest_ts_ms >= produced_ms + 1_500  # held back until the partition was quiet that long


def test_aligned_watermarks_close_a_quiet_partition_without_waiting_for_idle(kafka: KafkaSettings) -> None:
    t0 = 1_266_417_001_000
    quiet, busy = "BBB", next(s for s in ("AAA", "CCC", "DDD", "EEE") if
                              partition_of(s, kafka.partitions) != partition_of("BBB", kafka.partitions))
    bins = [make_bin(quiet, t0 + 200, [20.0], [5]), make_bin(quiet, t0 + 300, [21.0], [7])]
    bins += [make_bin(busy, t0 + i * 100, [10.0 + i], [100]) for i in range(30)]
    produce_bins(kafka, sorted(bins, key=lambda b: b.start_ts_ms))  # one producer, event-time order
    # An idle timeout the test never reaches: only the alignment can close the quiet partition's window.
    settings = settings_for(kafka, idle_timeout_ms=600_000, instance_id="align", align_watermarks=True)
    stop = threading.Event()
    aggregator = Aggregator(settings, stop.is_set)
    worker = threading.Thread(target=aggregator.run)
    worker.start()
    try:
        deadline = time.monotonic() + 60
        rows = read_bars(kafka)
        while time.monotonic() < deadline and not any(bar.symbol == quiet for _p, _o, bar in rows):
            time.sleep(0.5)
            rows = read_bars(kafka)
        assert worker.is_alive()
    finally:
        stop.set()
        worker.join(30)
    expected, _ = per_partition_reference(bins, settings)
    [first] = [bar for _p, _o, bar in rows if bar.symbol == quiet]
    assert data_fields(first) == expected[first.bar_id]  # the same bar the partition's own bins give
    assert (first.start_ts_ms, first.open, first.close, first.volume) == (t0, 20.0, 21.0, 12)
    assert aggregator.counters.aligned_closes >= 1 and aggregator.counters.idle_flushes == 0
    assert aggregator.counters.late == 0
