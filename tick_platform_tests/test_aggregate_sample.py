"""Acceptance: the real WDC sample through replay and aggregator, offline and through Kafka.

Every bar must equal the per-second OHLCV computed straight from the raw ticks with polars.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import polars as pl
import pytest
from jsonschema import Draft202012Validator

from streaming.aggregate.offline import aggregate_file
from streaming.aggregate.processor import Aggregator, window_config
from streaming.kernel.records import Bar, bar_decoder
from streaming.kernel.settings import PROJECT_ROOT, KafkaSettings, load_settings
from streaming.replay.offline import replay_to_jsonl
from streaming.replay.producer import run_replay
from streaming.sources import read_ticks
from tick_platform_tests.test_aggregate_helpers import read_bars, read_dlq, settings_for

SAMPLE_SECONDS = 5_049
SAMPLE_SHARES = 3_582_490


@pytest.fixture(scope="module")
def expected_bars(sample_path: Path) -> dict[str, dict[str, float | int]]:
    """bar_id -> OHLCV of each second, from the raw ticks (file order = trade order)."""
    ticks = pl.concat(list(read_ticks(sample_path))).with_row_index("seq")
    per_second = (
        ticks.with_columns(start=(pl.col("ts_ms") // 1000) * 1000)
        .sort("seq")
        .group_by("symbol", "start", maintain_order=True)
        .agg(
            open=pl.col("price").first(), high=pl.col("price").max(), low=pl.col("price").min(),
            close=pl.col("price").last(), volume=pl.col("size").sum(),
            notional=(pl.col("price") * pl.col("size")).sum(), trade_count=pl.len(),
        )
    )
    assert per_second.height == SAMPLE_SECONDS
    assert per_second["volume"].sum() == SAMPLE_SHARES
    return {
        f"{row['symbol']}-{row['start']:013d}-time-1s": {**row, "vwap": row["notional"] / row["volume"]}
        for row in per_second.iter_rows(named=True)
    }


def assert_bars_match(bars: list[Bar], expected: dict[str, dict[str, float | int]]) -> None:
    ids = Counter(b.bar_id for b in bars)
    assert [i for i, n in ids.items() if n > 1] == []
    assert set(ids) == set(expected)
    for bar in bars:
        want = expected[bar.bar_id]
        assert (bar.start_ts_ms, bar.end_ts_ms, bar.revision) == (want["start"], int(want["start"]) + 1000, 0)
        assert (bar.open, bar.high, bar.low, bar.close) == (want["open"], want["high"], want["low"], want["close"])
        assert (bar.volume, bar.trade_count) == (want["volume"], want["trade_count"])
        assert bar.notional == pytest.approx(want["notional"], rel=1e-9)
        assert bar.vwap == pytest.approx(want["vwap"], rel=1e-9)


def test_sample_offline_replay_then_aggregate(sample_path: Path, tmp_path: Path,
                                              expected_bars: dict[str, dict[str, float | int]]) -> None:
    settings = settings_for(load_settings().kafka)
    replay_to_jsonl([str(sample_path)], tmp_path / "bins.jsonl", tmp_path / "replay_dlq.jsonl", settings)
    result = aggregate_file(tmp_path / "bins.jsonl", tmp_path / "bars.jsonl", tmp_path / "dlq.jsonl",
                            window_config(settings))
    lines = (tmp_path / "bars.jsonl").read_bytes().splitlines()
    bars = [bar_decoder.decode(line) for line in lines]
    assert (result.bars_out, result.late, result.poison) == (SAMPLE_SECONDS, 0, 0)
    assert_bars_match(bars, expected_bars)
    schema = json.loads((PROJECT_ROOT / "docs" / "contracts" / "ticks_agg_1s_schema.json").read_text())
    assert schema["required"] == list(Bar.__struct_fields__)  # the contract and the struct agree
    validator = Draft202012Validator(schema)
    assert [str(e.message) for line in lines for e in validator.iter_errors(json.loads(line))] == []


@pytest.mark.kafka
def test_sample_through_kafka_replay_and_aggregator(sample_path: Path, kafka: KafkaSettings,
                                                    expected_bars: dict[str, dict[str, float | int]]) -> None:
    settings = settings_for(kafka, idle_timeout_ms=1_000, instance_id="sample")
    run_replay(settings, [str(sample_path)])
    counters = Aggregator(settings, until_idle=True).run()
    rows = read_bars(kafka)
    assert_bars_match([bar for _p, _o, bar in rows], expected_bars)
    assert (counters.bars_out, counters.late, counters.poison) == (SAMPLE_SECONDS, 0, 0)
    assert [r for r in read_dlq(kafka) if r.stage == "aggregate"] == []
    starts = [bar.start_ts_ms for _p, _o, bar in sorted(rows, key=lambda r: (r[0], r[1]))]
    assert starts == sorted(starts)  # one symbol, one partition: bars in event-time order
