"""Reliability: aggregator instances join and leave the group while data flows.

One aggregator runs the whole time under the supervisor; while the paced replay publishes, a
second and a third instance join the same group (each with its own static instance id), then the
second leaves with SIGTERM and the third dies with SIGKILL. Each change moves partitions with
their open windows: the new owner rebuilds them from the committed offsets and their rebuild
metadata. The end result must equal the clean run (0 lost, 0 duplicated, nothing dead-lettered).
"""

from __future__ import annotations

import random
import signal
import time

import pytest

from streaming.kernel.settings import KafkaSettings
from tick_platform_tests.reliability_support import (
    Stage,
    Supervised,
    assert_exact,
    check_against_clean_run,
    keep_logs,
    offline_run,
    score,
    start_pipeline,
    stop_all,
    synth_files,
    wait_until,
    work_dir,
)
from tick_platform_tests.test_aggregate_helpers import owned

IDLE_TIMEOUT_MS = 10_000  # above a handover's pause, as in the chaos runs
def settled(members: list[Stage], partitions: int) -> bool:
    """Whether the live members own every partition exactly once (the rebalance finished)."""
    sets = [owned(m.log) for m in members if m.running]
    return sum(len(s) for s in sets) == partitions and set().union(*sets) == set(range(partitions))


def _change(pipeline: Supervised, members: list[Stage], what: str, act: Stage, sig: int | None) -> float:
    """Start `act` (sig None) or send it `sig`; returns the seconds until the group owned every partition again."""
    if sig is None:
        act.start()
    else:
        code = act.kill(sig)
        if sig == signal.SIGTERM:
            assert code == 0, f"{act.name} did not stop cleanly on SIGTERM (exit {code}):\n{act.tail()}"
    live = [m for m in members if m.running]

    def done() -> bool:  # a joining member must own something, or nothing has happened yet
        return settled(live, pipeline.kafka.partitions) and (sig is not None or bool(owned(act.log)))

    return wait_until(pipeline.tended(done), 120, f"the group to settle after {what}")


@pytest.mark.kafka
def test_aggregators_joining_and_leaving_under_load_equal_the_clean_run(kafka: KafkaSettings) -> None:
    """Two instances join, one leaves (SIGTERM), one dies (SIGKILL), all while the replay publishes."""
    rng = random.Random(4242)
    with work_dir("rebalance") as work:
        files = synth_files(work / "synth", 8, 4_000, seed=17)
        expected_bins, expected_bars = offline_run(files, work)
        pipeline = start_pipeline(kafka, files, work, speed=350, idle_timeout_ms=IDLE_TIMEOUT_MS)
        job = pipeline.group.removeprefix("agg-")
        env = {**pipeline.aggregator.env}
        b = Stage("aggregate-b", ["aggregate"], {**env, "AGG_INSTANCE_ID": f"{job}-b"}, work / "aggregate-b.log")
        c = Stage("aggregate-c", ["aggregate"], {**env, "AGG_INSTANCE_ID": f"{job}-c"}, work / "aggregate-c.log")
        a = pipeline.aggregator
        changes: list[tuple[str, float]] = []
        # Who owned what once the group had settled after each change (from the members' own logs).
        owners: dict[str, dict[str, set[int]]] = {}
        try:
            wait_until(pipeline.tended(lambda: settled([a], kafka.partitions)), 120, "the first assignment")
            plan: list[tuple[str, Stage, int | None]] = [
                ("b joins", b, None), ("c joins", c, None),
                ("b leaves (SIGTERM)", b, signal.SIGTERM), ("c dies (SIGKILL)", c, signal.SIGKILL),
            ]
            for what, stage, sig in plan:
                pause_until = time.monotonic() + rng.uniform(1.0, 3.0)
                while time.monotonic() < pause_until:
                    pipeline.tend()
                    time.sleep(0.1)
                assert pipeline.replay.poll() is None, f"the replay finished before '{what}': slow it down"
                changes.append((what, _change(pipeline, [a, b, c], what, stage, sig)))
                owners[what] = {m.name: owned(m.log) for m in (a, b, c) if m.running}
            assert pipeline.replay.poll() is None, "the replay finished during the last change: slow it down"
            pipeline.run_to_end(300)
            run = check_against_clean_run(kafka, expected_bins, expected_bars, pipeline, members=(b, c))
            if not (run.bins.exact and run.bars.exact):
                run.notes.append(f"logs kept in {keep_logs(work, 'rebalance')}")
        finally:
            stop_all(pipeline.replay, a, b, c)
    score("rebalance under load", "2 aggregator instances join, 1 leaves (SIGTERM), 1 dies (SIGKILL) "
          f"while the replay publishes; AGG_IDLE_TIMEOUT_MS={IDLE_TIMEOUT_MS}", 8 * 4_000, run,
          max(s for _w, s in changes), rebalance_s={w: round(s, 1) for w, s in changes})
    everything = set(range(kafka.partitions))
    # Each join took partitions over, each departure handed them back: the live members split all
    # partitions between them, every one of them owning some, and the last one left owns them all.
    assert {w: set(o) for w, o in owners.items()} == {
        "b joins": {"aggregate", "aggregate-b"}, "c joins": {"aggregate", "aggregate-b", "aggregate-c"},
        "b leaves (SIGTERM)": {"aggregate", "aggregate-c"}, "c dies (SIGKILL)": {"aggregate"}}, owners
    for what, split in owners.items():
        assert all(split.values()), f"a member owned nothing after '{what}': {split}"
        assert sorted(p for parts in split.values() for p in parts) == sorted(everything), (what, split)
    assert (b.poll(), c.poll()) == (0, -signal.SIGKILL)
    # Each instance started once (b and c by the scenario), none restarted by the harness or in-process:
    # a rebalance is no fatal client error.
    assert_exact(run, injected_restarts={})
