"""Bounded in-process restarts of a Kafka stage after a fatal client error.

A fenced or fatal librdkafka client cannot be used again; what an operator would do (start the
stage again, which resumes from its last commit) the stage does itself, a few times, with a
backoff and one log line each, so a broker restart or a coordinator move does not need a
supervisor. A run that lasted `healthy_after_s` counts as recovered and resets the budget.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from streaming.kernel.errors import KafkaAccessError, StageKafkaError
from streaming.kernel.kafka_access import denied_access

T = TypeVar("T")


@dataclass(frozen=True)
class RestartPolicy:
    """How often and how soon a stage restarts its clients."""

    max_restarts: int = 5
    backoff_s: tuple[float, ...] = (1.0, 2.0, 5.0, 10.0, 20.0)
    healthy_after_s: float = 60.0

    def delay(self, restart: int) -> float:
        """Seconds to wait before restart number `restart` (1-based)."""
        return self.backoff_s[min(restart, len(self.backoff_s)) - 1] if self.backoff_s else 0.0


def run_with_restarts(run_once: Callable[[int], T], policy: RestartPolicy, *, what: str,
                      log: Callable[[str], None], wait: Callable[[float], bool],
                      clock: Callable[[], float] = time.monotonic) -> T:
    """Call `run_once(restarts)` until it returns; a StageKafkaError restarts it within `policy`.

    `wait(seconds)` sleeps and returns True when the stage was asked to stop meanwhile; the error
    is then raised as it stands. Any other exception ends the stage at once.
    """
    restarts = 0
    while True:
        started = clock()
        try:
            return run_once(restarts)
        except StageKafkaError as exc:
            denied = denied_access(str(exc))
            if denied is not None:
                # The broker's authorizer said no: a restart asks again with the same principal
                # and gets the same answer, so it ends the stage at once with that answer.
                raise KafkaAccessError(f"{what}: {denied}") from None
            if clock() - started >= policy.healthy_after_s:
                restarts = 0
            if restarts >= policy.max_restarts:
                if policy.max_restarts:
                    log(f"{what}: giving up after {restarts} restarts")
                raise
            restarts += 1
            delay = policy.delay(restarts)
            log(f"{what}: {exc}; restarting its Kafka clients from the last commit in {delay:g} s "
                f"(restart {restarts} of {policy.max_restarts})")
            if wait(delay):
                raise
