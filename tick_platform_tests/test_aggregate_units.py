"""Small pure pieces of the aggregator: poison classification, checkpoint metadata, counters, offline CLI."""

from __future__ import annotations

from pathlib import Path

from confluent_kafka import TopicPartition
from typer.testing import CliRunner

from streaming.aggregate.checkpoints import decode_checkpoint, encode_checkpoint
from streaming.aggregate.counters import Counters
from streaming.aggregate.dead_letters import decode_bin
from streaming.aggregate.processor import Aggregator
from streaming.aggregate.windows import AggregatorCheckpoint
from streaming.cli import app
from streaming.kernel.records import Bin, bar_decoder, dlq_decoder, encode
from streaming.kernel.settings import Settings, load_settings
from tick_platform_tests.test_aggregate_helpers import make_bin

T0 = 1_266_417_001_000


def test_decode_bin_names_each_kind_of_poison() -> None:
    good = make_bin("WDC", T0, [1.0, 2.0], [1, 2])
    assert decode_bin(encode(good)) == good
    assert decode_bin(None)[0] == "empty"  # type: ignore[index]
    assert decode_bin(b"\xff\xfe")[0] == "not_utf8"  # type: ignore[index]
    assert decode_bin(b'{"bin_id": "\xff\xfe", "symbol": "\xc3\x28"}')[0] == "not_utf8"  # type: ignore[index]
    assert decode_bin(b"{nope")[0] == "not_json"  # type: ignore[index]
    assert decode_bin(b'{"bin_id": 1}')[0] == "schema"  # type: ignore[index]
    assert decode_bin(b" " * 70_000 + b"{}")[0] == "too_large"  # type: ignore[index]
    inverted = encode(good).replace(f'"end_ts_ms":{T0 + 10}'.encode(), f'"end_ts_ms":{T0}'.encode())
    assert decode_bin(inverted) == ("schema", f"end_ts_ms {T0} <= start_ts_ms {T0}")


def test_checkpoint_metadata_round_trips_and_tolerates_foreign_metadata() -> None:
    cp = AggregatorCheckpoint(120, T0 + 900, {T0: 118, T0 + 100: 119})
    assert decode_checkpoint(encode_checkpoint(cp), 130) == cp
    assert decode_checkpoint(encode_checkpoint(AggregatorCheckpoint(7, None)), 9) == AggregatorCheckpoint(7, None)
    assert decode_checkpoint("", 42) == AggregatorCheckpoint(42, None)  # a plain commit: nothing to rebuild
    assert decode_checkpoint("written by someone else", 42) == AggregatorCheckpoint(42, None)
    assert decode_checkpoint('{"rebuild_from": 99, "watermark": 5}', 42) == AggregatorCheckpoint(42, 5)  # never past C


def test_prometheus_text_has_every_counter() -> None:
    counters = Counters(bins_in=12, bars_out=3, late=1, dlq=2, watermark_lag_ms=40, open_windows=7)
    text = counters.prometheus()
    assert "# TYPE tick_aggregator_open_windows gauge\ntick_aggregator_open_windows 7\n" in text
    assert "# TYPE tick_aggregator_bins_in_total counter\ntick_aggregator_bins_in_total 12\n" in text
    assert "tick_aggregator_bars_out_total 3\n" in text and "tick_aggregator_dlq_total 2\n" in text
    assert "# TYPE tick_aggregator_watermark_lag_ms gauge\ntick_aggregator_watermark_lag_ms 40\n" in text


def test_offline_cli_writes_bars_and_dlq(tmp_path: Path) -> None:
    bins: list[Bin] = [make_bin("AB", T0 + 10 * i, [10.0 + i], [100]) for i in range(150)]
    bins.append(make_bin("AB", T0 + 5, [1.0], [1]))  # a second after its window closed: late
    src = tmp_path / "bins.jsonl"
    src.write_bytes(b"".join(encode(b) + b"\n" for b in bins) + b"{broken\n")
    result = CliRunner().invoke(app, ["aggregate", "--from", str(src), "--to", str(tmp_path / "bars.jsonl"),
                                      "--dlq", str(tmp_path / "dlq.jsonl")])
    assert result.exit_code == 0, result.output
    bars = [bar_decoder.decode(x) for x in (tmp_path / "bars.jsonl").read_bytes().splitlines()]
    assert [(b.start_ts_ms - T0, b.volume, b.open, b.close) for b in bars] == [(0, 10_000, 10.0, 109.0),
                                                                               (1000, 5_000, 110.0, 159.0)]
    dlq = [dlq_decoder.decode(x) for x in (tmp_path / "dlq.jsonl").read_bytes().splitlines()]
    assert [(r.reason, r.position["line"]) for r in dlq] == [("late", 151), ("not_json", 152)]
    missing = CliRunner().invoke(app, ["aggregate", "--from", str(tmp_path / "nope"), "--to", str(src)])
    assert missing.exit_code == 1 and "no such bins file" in missing.output


class _StaleMessage:
    """A message the batch API handed back, fetched for the assignment before the rebalance."""

    def __init__(self, topic: str, offset: int, value: bytes) -> None:
        self._topic, self._offset, self._value = topic, offset, value

    def error(self) -> None:
        return None

    def topic(self) -> str:
        return self._topic

    def partition(self) -> int:
        return 0

    def offset(self) -> int:
        return self._offset

    def value(self) -> bytes:
        return self._value


class _RebalancingConsumer:
    """consume() runs the assignment callback (as librdkafka does inside the call), then returns old messages."""

    def __init__(self, aggregator: Aggregator, stale: list[_StaleMessage]) -> None:
        self.aggregator, self.stale = aggregator, stale
        self.topic = aggregator.kafka.topic_raw
        self.seeks: list[tuple[int, int]] = []

    def consume(self, num_messages: int, timeout: float) -> list[_StaleMessage]:
        first = self.aggregator.counters.assignments == 0
        if not first:  # a rebalance: the partition is revoked and assigned again within this call
            self.aggregator._on_revoke(self, [TopicPartition(self.topic, 0)])  # type: ignore[arg-type]
        self.aggregator._on_assign(self, [TopicPartition(self.topic, 0)])  # type: ignore[arg-type]
        return [] if first else self.stale

    def committed(self, partitions: list[TopicPartition], timeout: float) -> list[TopicPartition]:
        # Committed at 100; the open windows need the bins from offset 90 on.
        return [TopicPartition(self.topic, 0, 100, metadata=encode_checkpoint(AggregatorCheckpoint(90, T0)))]

    def assign(self, partitions: list[TopicPartition]) -> None:
        assert [(tp.partition, tp.offset) for tp in partitions] == [(0, 90)]

    def seek(self, tp: TopicPartition) -> None:
        self.seeks.append((tp.partition, tp.offset))

    def close(self) -> None:
        pass


def test_a_batch_fetched_before_a_rebalance_is_dropped_and_reread_from_the_restored_offset() -> None:
    """Finding 0: processing old-generation messages after a restore would skip offsets 90..119."""
    settings = load_settings()
    settings = Settings(**{**settings.__dict__, "agg": settings.agg.model_copy(update={"exactly_once": False})})
    rounds = iter([False, False, True])  # the first assignment, then the rebalance
    aggregator = Aggregator(settings, stop=lambda: next(rounds))
    topic = aggregator.kafka.topic_raw
    stale = [_StaleMessage(topic, 120 + i, encode(make_bin("WDC", T0 + 20 * i, [1.0], [100]))) for i in range(5)]
    consumer = _RebalancingConsumer(aggregator, stale)
    aggregator.consumer.close()
    aggregator.consumer = consumer  # type: ignore[assignment]
    aggregator._loop()
    assert consumer.seeks == [(0, 90)]
    state = aggregator.states[0]
    assert (state.next_offset, state.rebuild_until) == (90, 100)  # resumes at 90: nothing skipped
    assert aggregator.counters.bins_in == 0 and aggregator.counters.stale_batches == 1
