"""Producer watermarks (REPLAY_WATERMARK_INTERVAL_MS): the replay's promise and the aggregator closing on it.

The replay writes `Watermark(watermark_ms=W)` to every ticks.raw partition: no bin starting
before W follows. The engine test checks that promise against everything the replay emits after
it; the Kafka test runs a live replay of sparse ticks with an idle timeout far beyond the run, so
only the watermark records can close the windows in time, and checks the bars against the
offline run of the same file.
"""

from __future__ import annotations

import json
import random
import signal
from pathlib import Path

import orjson
import pytest
from jsonschema import Draft202012Validator

from streaming.kernel.records import Watermark, decode_watermark, encode
from streaming.kernel.settings import PROJECT_ROOT, KafkaSettings, load_settings
from streaming.replay.engine import ReplayEngine
from streaming.validate.run import validate_kafka
from tick_platform_tests.reliability_support import (
    Stage,
    decode_rows,
    offline_run,
    read_committed,
    stage_env,
    wait_until,
    work_dir,
)
from tick_platform_tests.test_aggregate_helpers import owned
from tick_platform_tests.test_replay_support import write_lines


class _StepClock:
    """A wall clock that moves forward by `step_s` each time it is read."""

    def __init__(self, step_s: float) -> None:
        self.now = 1_700_000_000.0
        self.step_s = step_s

    def __call__(self) -> float:
        self.now += self.step_s
        return self.now


def sparse_ticks(path: Path, seconds: int, seed: int) -> Path:
    """A Kibot file with 0-3 ticks in each second: many seconds have nothing after them for a while."""
    rng = random.Random(seed)
    rows = []
    price = 50.0
    for second in range(seconds):
        for _ in range(rng.choice([0, 0, 1, 2, 3])):
            price = round(price + rng.uniform(-0.05, 0.05), 2)
            rows.append(f"02/17/2010,09:30:{second:02d},{price:.2f},{price - 0.01:.2f},{price + 0.01:.2f},"
                        f"{rng.randint(1, 500)}")
    return write_lines(path, rows)


SCHEMA = Draft202012Validator(
    json.loads((PROJECT_ROOT / "docs/contracts/ticks_raw_watermark_schema.json").read_text()))


def test_the_watermark_record_matches_its_contract_and_is_never_a_bin() -> None:
    raw = encode(Watermark(watermark_ms=1_266_417_000_000, job_id="job-1"))
    assert list(SCHEMA.iter_errors(orjson.loads(raw))) == []
    assert decode_watermark(raw) == Watermark(watermark_ms=1_266_417_000_000, job_id="job-1")
    from streaming.aggregate.dead_letters import decode_bin

    assert isinstance(decode_bin(raw), tuple)  # to a reader of bins it is not one
    assert decode_watermark(b'{"bin_id":"A-1"}') is None and decode_watermark(b'{"type":"watermark"}') is None


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_no_bin_follows_a_watermark_that_it_would_break(tmp_path: Path, seed: int) -> None:
    """Every bin the replay emits after watermark W starts at or after W; the last one covers every bin."""
    path = sparse_ticks(tmp_path / f"AAA_{seed}.txt", 20, seed)
    settings = load_settings(replay={"speed": 40.0, "max_late_ms": 100, "watermark_interval_ms": 10})
    # A clock that moves 2 ms per reading: the schedule then advances by the engine's own steps, not by
    # how the machine's load stretched its naps, so the run is the same under any load.
    engine = ReplayEngine([str(path)], settings.replay, "wm-test", clock=_StepClock(0.002))
    promised: int | None = None
    promises = bins = 0
    last_end = 0
    finals: list[int] = []
    for step in engine.steps():
        assert not finals, "a step after the final watermark"
        for start in step.bins["start_ts_ms"].to_list():
            assert promised is None or start >= promised, f"bin at {start} after watermark {promised}"
            bins += 1
        if step.bins.height:
            last_end = max(last_end, int(step.bins["end_ts_ms"].max()))  # type: ignore[arg-type]
        if step.watermark_ms is not None:
            # Only ever forward; the final one may repeat the last promise (its news is "nothing follows").
            assert promised is None or step.watermark_ms > promised or (step.final and step.watermark_ms == promised)
            promised = step.watermark_ms
            promises += 1
            if step.final:
                finals.append(step.watermark_ms)
        else:
            assert not step.final
    assert bins > 0 and promises > bins, (bins, promises)  # watermarks also flow where no bin closes
    # The end: one final watermark at the last bin's end, no rounding to any bar size.
    assert finals == [promised] == [last_end]


@pytest.mark.kafka
def test_a_live_replay_with_watermarks_closes_quiet_windows_without_the_idle_timeout(kafka: KafkaSettings) -> None:
    """Live speed-1 replay of sparse ticks, AGG_IDLE_TIMEOUT_MS=600000: every bar arrives through the watermarks."""
    with work_dir("watermarks") as work:
        path = sparse_ticks(work / "WMK_sparse.txt", 8, seed=7)
        _bins, expected = offline_run([path], work)
        env = stage_env(kafka, AGG_GROUP_ID=f"agg-{kafka.topic_raw}", AGG_IDLE_TIMEOUT_MS="600000",
                        AGG_PROGRESS_INTERVAL_S="0.5")
        aggregator = Stage("aggregate", ["aggregate"], env, work / "aggregate.log").start()
        replay = Stage("replay", ["replay", str(path), "--speed", "1", "--live", "--watermark-interval-ms", "10",
                                  "--quiet"], env, work / "replay.log")
        try:
            # The aggregator has joined and rebuilt (its "assigned partitions" line), so its first watermark
            # check is not a backlog. Was a sleep(3) that hoped so.
            wait_until(lambda: owned(aggregator.log) == set(range(kafka.partitions)), 120,
                       "the aggregator to own every partition")
            replay.start()
            wait_until(lambda: replay.poll() is not None, 120, "the live replay to finish")
            assert replay.poll() == 0, replay.tail()
            got: list[dict] = []

            def all_bars() -> bool:
                got[:] = decode_rows(read_committed(kafka, kafka.topic_agg, timeout_s=30))
                return len(got) >= len(expected)

            # Far inside the idle timeout: only the watermark records can have closed the last windows.
            wait_until(all_bars, 60, f"{len(expected)} bars")
            assert aggregator.kill(signal.SIGTERM) == 0, aggregator.tail()
        finally:
            replay.kill()
            aggregator.kill()
        log = aggregator.log.read_text()
    # Live mode moved event times by whole seconds: compare each bar with its offline twin.
    offline = sorted(expected.values(), key=lambda b: b["start_ts_ms"])
    live = sorted(got, key=lambda b: b["start_ts_ms"])
    shift = live[0]["start_ts_ms"] - offline[0]["start_ts_ms"]
    assert shift % 1000 == 0 and shift > 0
    fields = ("open", "high", "low", "close", "volume", "trade_count", "bin_count")
    assert [(b["start_ts_ms"] - shift, *(b[f] for f in fields)) for b in live] == \
           [(b["start_ts_ms"], *(b[f] for f in fields)) for b in offline]
    assert "watermark closes" in log and "idle flushes 0" in log.splitlines()[-1], log[-600:]
    # The watermark records are in ticks.raw beside the bins, and no reader takes them for bins.
    raw = read_committed(kafka, kafka.topic_raw, timeout_s=30)
    marks = [v for _p, _o, v in raw if decode_watermark(v) is not None]
    assert len(marks) > 0 and len(marks) % kafka.partitions == 0
    report = validate_kafka(kafka, timeout_s=30)
    assert report.ok, report.problems
    assert report.totals["bins"] == len(raw) - len(marks)
