"""Reliability: kill -9 of the replay and of the aggregator, several times each in one run, both restarted.

The replay resumes from its last committed checkpoint (transactional producer: an aborted
transaction's bins are never visible), the aggregator from its committed offsets and their
rebuild metadata. The end result in ticks.raw and ticks.agg.1s (read_committed) must equal an
offline replay + offline aggregate of the same files: 0 lost, 0 duplicated, same data.

Other suites kill one stage at a time (replay resume tests, aggregator fault tests); this one
interleaves kills of both stages while data flows, like a flaky host would.
"""

from __future__ import annotations

import random
import signal
import time
from pathlib import Path

import pytest

from streaming.kernel.settings import KafkaSettings
from tick_platform_tests.reliability_support import (
    Run,
    Stage,
    Supervised,
    assert_exact,
    check_against_clean_run,
    committed_offsets,
    end_offsets,
    group_caught_up,
    keep_logs,
    offline_run,
    score,
    start_pipeline,
    stop_all,
    synth_files,
    wait_until,
    work_dir,
)

# AGG_IDLE_TIMEOUT_MS of the chaos runs (see _chaos): longer than a replay restart under load.
IDLE_TIMEOUT_MS = 10_000


def _progress(stage: str, pipeline: Supervised) -> int:
    """What the stage has made visible so far: ticks.raw offsets for the replay, committed input for the aggregator."""
    kafka = pipeline.kafka
    if stage == "replay":
        return sum(end_offsets(kafka, kafka.topic_raw).values())
    return committed_offsets(kafka, pipeline.group, kafka.topic_raw, kafka.partitions)


def _kill_and_restart(stage: Stage, pipeline: Supervised, rng: random.Random) -> float | None:
    """SIGKILL one incarnation, start the next at once; returns the seconds until its progress moved on.

    None when the kill found the stage already ended by itself (the replay finishes at some moment the
    kill cannot foresee): nothing was killed and nothing is restarted, because a finished replay job
    started again is a new run (docs/replay.md) that publishes every bin a second time.
    """
    name = "replay" if stage is pipeline.replay else "aggregate"
    before = _progress(name, pipeline)
    if stage.kill(signal.SIGKILL) == 0:
        return None
    time.sleep(rng.uniform(0.0, 1.0))  # a supervisor restarts after a short, variable delay
    stage.start()
    started = time.monotonic()

    def moved() -> bool:
        pipeline.tend()
        if name == "replay" and pipeline.replay.poll() == 0:
            return True  # it resumed and finished
        if name == "aggregate" and pipeline.replay.poll() == 0 and group_caught_up(pipeline.kafka, pipeline.group):
            return True
        # A restarted replay's init_transactions aborts its predecessor's transaction: those abort markers
        # raise the end offsets by up to one per partition without a single new bin.
        return _progress(name, pipeline) > before + (pipeline.kafka.partitions + 1 if name == "replay" else 0)

    wait_until(moved, 180, f"the {name} to make progress after its restart")
    return time.monotonic() - started


def chaos_run(kafka: KafkaSettings, name: str, *, symbols: int, ticks: int, speed: float,
              replay_kills: int, aggregator_kills: int, seed: int,
              watermarks_ms: int | None = None) -> tuple[Run, list[float], dict[str, int]]:
    """Run the pipeline and kill the stages at random moments; returns the comparison, recovery times and the
    kills that landed, by stage name (each one restarted by the scenario, not by the harness)."""
    with work_dir(name) as work:
        return _chaos(kafka, work, symbols=symbols, ticks=ticks, speed=speed, replay_kills=replay_kills,
                      aggregator_kills=aggregator_kills, seed=seed, watermarks_ms=watermarks_ms)


def _chaos(kafka: KafkaSettings, work: Path, *, symbols: int, ticks: int, speed: float,
           replay_kills: int, aggregator_kills: int, seed: int,
           watermarks_ms: int | None) -> tuple[Run, list[float], dict[str, int]]:
    files = synth_files(work / "synth", symbols, ticks, seed=seed)
    expected_bins, expected_bars = offline_run(files, work)
    rng = random.Random(seed)
    # The idle timeout must outlast a replay restart (2-5 s measured here): with the default 2 s, a quiet
    # partition is flushed while the replay restarts and the rest of its open window arrives late (DLQ).
    pipeline = start_pipeline(kafka, files, work, speed, idle_timeout_ms=IDLE_TIMEOUT_MS, watermarks_ms=watermarks_ms)
    victims = ["replay"] * replay_kills + ["aggregate"] * aggregator_kills
    rng.shuffle(victims)
    recoveries: list[float] = []
    kills = {"replay": 0, "aggregate": 0}
    try:
        wait_until(pipeline.tended(lambda: _progress("replay", pipeline) > 0), 120, "the first bins")
        for victim in victims:
            pause_until = time.monotonic() + rng.uniform(1.0, 4.0)
            while time.monotonic() < pause_until:
                pipeline.tend()
                time.sleep(0.1)
            stage = pipeline.replay if victim == "replay" else pipeline.aggregator
            if victim == "replay" and pipeline.replay.poll() == 0:
                break  # the replay finished before this kill: the run is over, the remaining kills are moot
            recovery = _kill_and_restart(stage, pipeline, rng)
            if recovery is None:
                break  # the same, found by the kill itself (the replay ended between the check and the kill)
            recoveries.append(recovery)
            kills[stage.name] += 1
        pipeline.run_to_end(300)
        run = check_against_clean_run(kafka, expected_bins, expected_bars, pipeline)
        if not (run.bins.exact and run.bars.exact):
            run.notes.append(f"logs kept in {keep_logs(work, 'chaos')}")
        return run, recoveries, kills
    finally:
        stop_all(pipeline.replay, pipeline.aggregator)


@pytest.mark.kafka
def test_replay_and_aggregator_killed_twice_each_equal_the_clean_run(kafka: KafkaSettings) -> None:
    """The short chaos run of the default suite: 2 + 2 kills at random moments, with producer watermarks.

    The replay writes watermark records (REPLAY_WATERMARK_INTERVAL_MS=10), so the kills also land
    between a promise and the bins after it, and the aggregator's rebuild crosses them.
    """
    run, recoveries, killed = chaos_run(kafka, "chaos-short", symbols=4, ticks=3_000, speed=900,
                                        replay_kills=2, aggregator_kills=2, seed=91, watermarks_ms=10)
    kills = sum(killed.values())
    score("kill -9 replay + aggregator (short)", f"{kills} SIGKILLs at random moments (2 replay, 2 aggregate), "
          f"each restarted; AGG_IDLE_TIMEOUT_MS={IDLE_TIMEOUT_MS}; REPLAY_WATERMARK_INTERVAL_MS=10", 4 * 3_000, run,
          max(recoveries, default=0.0),
          kills=kills,
          recovery_each_s=[round(r, 1) for r in recoveries])
    assert kills >= 3, "the replay finished before the kills could land: slow it down"
    assert_exact(run, injected_restarts=killed)


@pytest.mark.slow
@pytest.mark.ci
@pytest.mark.kafka
def test_replay_and_aggregator_killed_five_times_each_equal_the_clean_run(kafka: KafkaSettings) -> None:
    """The long chaos run of `make reliability`: 5 + 5 kills at random moments over a bigger day."""
    run, recoveries, killed = chaos_run(kafka, "chaos-long", symbols=10, ticks=8_000, speed=400,
                                        replay_kills=5, aggregator_kills=5, seed=2026)
    kills = sum(killed.values())
    score("kill -9 replay + aggregator (long)", f"{kills} SIGKILLs at random moments (5 replay, 5 aggregate), "
          f"each restarted; AGG_IDLE_TIMEOUT_MS={IDLE_TIMEOUT_MS}", 10 * 8_000, run, max(recoveries, default=0.0),
          kills=kills,
          recovery_each_s=[round(r, 1) for r in recoveries])
    assert kills >= 8, "the replay finished before the kills could land: slow it down"
    assert_exact(run, injected_restarts=killed)
