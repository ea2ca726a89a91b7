"""The reliability harness itself, without a broker: what assert_exact accepts, the scorecard's columns,
and the independent expectation from the raw ticks."""

from __future__ import annotations

from pathlib import Path

import pytest

from tick_platform_tests import reliability_report
from tick_platform_tests.reliability_support import (
    Comparison,
    Run,
    Stage,
    assert_exact,
    bars_from_raw_ticks,
    compare,
    offline_run,
    synth_files,
)

EXACT = Comparison(expected=3, got=3, lost=0, duplicated=0, mismatched=0, examples=[])


def _run(**kwargs: object) -> Run:
    fields: dict[str, object] = {"bins": EXACT, "bars": EXACT, "dlq": 0, "failures": [], "harness_restarts": 0,
                                 "starts": {"replay": 1, "aggregate": 1}, "ticks": EXACT,
                                 "in_process": {"replay": 0, "aggregate": 0}}
    fields.update(kwargs)
    return Run(**fields)  # type: ignore[arg-type]


def test_assert_exact_fails_a_run_the_harness_had_to_restart() -> None:
    assert_exact(_run(), injected_restarts={})
    # Exact output, but the supervisor revived a crashed aggregator: before, this passed.
    with pytest.raises(AssertionError, match="harness had to step in 1 time"):
        assert_exact(_run(harness_restarts=1, failures=["aggregate exited 1: boom"],
                          starts={"replay": 1, "aggregate": 2}), injected_restarts={})
    # A non-zero exit on SIGTERM is a failure, not a restart.
    with pytest.raises(AssertionError, match="harness had to step in 0 time"):
        assert_exact(_run(failures=["aggregate exited 1 on SIGTERM"]), injected_restarts={})


def test_assert_exact_allows_exactly_the_injected_restarts() -> None:
    run = _run(starts={"replay": 3, "aggregate": 2})
    assert_exact(run, injected_restarts={"replay": 2, "aggregate": 1})
    with pytest.raises(AssertionError, match="stage starts"):
        assert_exact(run, injected_restarts={"replay": 2})  # an aggregator start nobody injected
    with pytest.raises(AssertionError, match="stage starts"):
        assert_exact(_run(), injected_restarts={"replay": 1})  # a kill that never landed


def test_assert_exact_holds_each_stage_to_the_in_process_restarts_it_allows() -> None:
    looping = _run(in_process={"replay": 0, "aggregate": 3})
    # A stage that restarted its own clients three times (a loop inside the process): before, this passed.
    with pytest.raises(AssertionError, match="aggregate restarted its Kafka clients in-process 3 time"):
        assert_exact(looping, injected_restarts={})
    with pytest.raises(AssertionError, match="in-process 3 time"):
        assert_exact(looping, injected_restarts={}, in_process={"aggregate": range(2)})
    assert_exact(looping, injected_restarts={}, in_process={"aggregate": 3})
    # An exact number is exact: a fence that caused no restart fails too.
    with pytest.raises(AssertionError, match="in-process 0 time"):
        assert_exact(_run(), injected_restarts={}, in_process={"replay": 1})
    assert_exact(_run(), injected_restarts={}, in_process={"replay": range(2), "aggregate": range(2)})
    with pytest.raises(AssertionError, match="did not have"):
        assert_exact(_run(), injected_restarts={}, in_process={"aggregate-b": 0})


def test_a_stage_counts_the_in_process_restarts_of_all_its_incarnations(tmp_path: Path) -> None:
    """Counted from the lines streaming.restarts really logs (not from the harness's own constant)."""
    from streaming.kernel.errors import StageKafkaError
    from streaming.restarts import RestartPolicy, run_with_restarts

    logged: list[str] = []
    failures = iter([StageKafkaError("KafkaError{_FENCED}")] * 2)

    def run_once(_restarts: int) -> str:
        for exc in failures:
            raise exc
        return "done"

    assert run_with_restarts(run_once, RestartPolicy(5, (0.0,)), what="aggregate", log=logged.append,
                             wait=lambda _s: False) == "done"
    stage = Stage("aggregate", ["aggregate"], {}, tmp_path / "aggregate.log")
    assert stage.in_process_restarts == 0  # no log yet
    lines = "".join(f"{line}\n" for line in logged)
    stage.log.write_text(f"=== aggregate start #1\n{lines}=== aggregate start #2\n{lines}progress\n")
    assert len(logged) == 2 and stage.in_process_restarts == 4


def test_assert_exact_needs_the_comparison_with_the_raw_ticks() -> None:
    with pytest.raises(AssertionError, match="raw ticks"):
        assert_exact(_run(ticks=None), injected_restarts={})
    wrong = Comparison(expected=3, got=3, lost=0, duplicated=0, mismatched=1, examples=["mismatched x"])
    with pytest.raises(AssertionError, match="raw ticks"):
        assert_exact(_run(ticks=wrong), injected_restarts={})


def test_bars_from_raw_ticks_agree_with_the_clean_run_and_catch_a_wrong_high(tmp_path: Path) -> None:
    files = synth_files(tmp_path / "synth", 3, 600, seed=7)
    _bins, clean_bars = offline_run(files, tmp_path)
    from_ticks = bars_from_raw_ticks(files)
    assert set(from_ticks) == set(clean_bars) and len(from_ticks) > 100
    assert compare(from_ticks, [{k: b[k] for k in from_ticks[i]} for i, b in clean_bars.items()], "bar_id").exact
    # A defect the stages and the clean run would share (here: one bar's high) is caught.
    some_id = sorted(clean_bars)[len(clean_bars) // 2]
    broken = [{k: b[k] + (1.0 if k == "high" and i == some_id else 0) if isinstance(b[k], float) else b[k]
               for k in from_ticks[i]} for i, b in clean_bars.items()]
    result = compare(from_ticks, broken, "bar_id")
    assert (result.mismatched, result.lost, result.duplicated) == (1, 0, 0), result


def test_scorecard_has_a_harness_restarts_column_and_widens_old_rows() -> None:
    row = {"scenario": "s", "injected": "i", "messages_in": 10, "messages_out": 9, "lost": 0, "duplicated": 0,
           "harness_restarts": 2, "recovery_s": 1.5, "recorded_at": "t", "runs": "1 (0 not exact)"}
    text = reliability_report.table([row])
    head, _rule, line = text.splitlines()
    assert head.split(" | ")[6] == "harness restarts"
    assert line == "| s | i | 10 | 9 | 0 | 0 | 2 | 1.5 s | runs recorded: 1 (0 not exact) | t |"
    old_doc = (f"{reliability_report.START}\n| scenario | injected | messages in | messages out | lost | duplicated "
               "| recovery time | notes | run at |\n|---|---|---:|---:|---:|---:|---:|---|---|\n"
               f"| old | x | 1 | 1 | 0 | 0 | 2.0 s | n | t0 |\n{reliability_report.END}\n")
    rendered = reliability_report.render(old_doc, [row])
    assert "| old | x | 1 | 1 | 0 | 0 | - | 2.0 s | n | t0 |" in rendered
    assert all(r.count(" | ") == 9 for r in rendered.splitlines() if r.startswith("| "))
