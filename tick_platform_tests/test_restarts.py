"""The bounded in-process restart loop of the Kafka stages (streaming.restarts), on a fake clock."""

from __future__ import annotations

import pytest

from streaming.kernel.errors import BrokerError, StageKafkaError
from streaming.restarts import RestartPolicy, run_with_restarts


class Script:
    """A stage run that fails as scripted: each entry is (seconds it ran, error or None for success)."""

    def __init__(self, outcomes: list[tuple[float, Exception | None]]) -> None:
        self.outcomes = outcomes
        self.now = 0.0
        self.calls: list[int] = []
        self.waits: list[float] = []
        self.lines: list[str] = []

    def run(self, restarts: int) -> str:
        self.calls.append(restarts)
        ran, error = self.outcomes[len(self.calls) - 1]
        self.now += ran
        if error is not None:
            raise error
        return "done"

    def wait(self, seconds: float) -> bool:
        self.waits.append(seconds)
        self.now += seconds
        return False

    def go(self, policy: RestartPolicy) -> str:
        return run_with_restarts(self.run, policy, what="stage", log=self.lines.append, wait=self.wait,
                                 clock=lambda: self.now)


def fenced(n: int = 0) -> StageKafkaError:
    return StageKafkaError(f"fenced #{n}")


def test_a_fatal_kafka_error_restarts_the_stage_with_backoff_and_one_line_each() -> None:
    script = Script([(1, fenced(1)), (1, fenced(2)), (5, None)])
    assert script.go(RestartPolicy(max_restarts=3, backoff_s=(1, 4))) == "done"
    assert script.calls == [0, 1, 2]
    assert script.waits == [1, 4]
    assert len(script.lines) == 2
    assert "fenced #1" in script.lines[0] and "restart 1 of 3" in script.lines[0]
    assert "in 4 s" in script.lines[1] and "restart 2 of 3" in script.lines[1]


def test_the_budget_is_bounded_and_the_last_error_ends_the_stage() -> None:
    script = Script([(1, fenced(n)) for n in range(4)])
    with pytest.raises(StageKafkaError, match="fenced #3"):
        script.go(RestartPolicy(max_restarts=3, backoff_s=(1,)))
    assert script.calls == [0, 1, 2, 3]
    assert script.lines[-1] == "stage: giving up after 3 restarts"


def test_a_run_that_stayed_healthy_resets_the_budget() -> None:
    # Two quick failures, a long healthy run that fails, then two quick ones: 4 restarts with a budget of 2.
    script = Script([(1, fenced(1)), (1, fenced(2)), (120, fenced(3)), (1, fenced(4)), (1, None)])
    assert script.go(RestartPolicy(max_restarts=2, backoff_s=(1,), healthy_after_s=60)) == "done"
    assert script.calls == [0, 1, 2, 1, 2]


def test_zero_restarts_and_other_errors_end_the_stage_at_once() -> None:
    script = Script([(1, fenced(1))])
    with pytest.raises(StageKafkaError):
        script.go(RestartPolicy(max_restarts=0))
    assert script.lines == [] and script.waits == []
    script = Script([(1, BrokerError("cannot start"))])
    with pytest.raises(BrokerError, match="cannot start"):
        script.go(RestartPolicy())
    assert script.calls == [0] and script.waits == []


def test_a_stop_during_the_backoff_ends_the_stage_with_its_error() -> None:
    script = Script([(1, fenced(1)), (1, None)])
    with pytest.raises(StageKafkaError, match="fenced #1"):
        run_with_restarts(script.run, RestartPolicy(), what="stage", log=script.lines.append,
                          wait=lambda _s: True, clock=lambda: script.now)
    assert script.calls == [0]
