"""read_ahead: a paced replay parses the next chunks in a thread; order, errors and early stops."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import pytest

from streaming.kernel.errors import SourceError
from streaming.sources.read_ahead import read_ahead


def test_items_arrive_in_order_and_complete() -> None:
    assert list(read_ahead(iter(range(1000)), depth=3)) == list(range(1000))
    assert list(read_ahead(iter([]))) == []


def test_the_producer_runs_ahead_while_the_consumer_waits() -> None:
    produced: list[int] = []

    def slow_source() -> Iterator[int]:
        for i in range(5):
            produced.append(i)
            yield i

    items = read_ahead(slow_source(), depth=2)
    assert next(items) == 0
    deadline = time.monotonic() + 10
    while len(produced) < 3 and time.monotonic() < deadline:  # 1 and 2 are parsed before they are asked for
        time.sleep(0.01)
    assert produced[:3] == [0, 1, 2]
    assert list(items) == [1, 2, 3, 4]


def test_an_error_of_the_source_is_raised_to_the_consumer_after_the_items_before_it() -> None:
    def failing() -> Iterator[int]:
        yield 1
        raise SourceError("bad file")

    items = read_ahead(failing())
    assert next(items) == 1
    with pytest.raises(SourceError, match="bad file"):
        next(items)


def test_closing_early_stops_the_thread() -> None:
    def endless() -> Iterator[int]:
        i = 0
        while True:
            yield i
            i += 1

    before = {t.ident for t in threading.enumerate()}
    items = read_ahead(endless(), depth=1, poll_s=0.01)
    assert next(items) == 0
    items.close()
    deadline = time.monotonic() + 10
    while any(t.name == "tick-read-ahead" and t.ident not in before for t in threading.enumerate()):
        assert time.monotonic() < deadline, "the read-ahead thread kept running"
        time.sleep(0.01)
