"""Parse the next chunks of ticks in a background thread while the current one is paced out."""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import TypeVar

T = TypeVar("T")


@dataclass(frozen=True)
class _Failed:
    error: BaseException


_END = object()


def read_ahead(items: Iterable[T], depth: int = 2, poll_s: float = 0.1) -> Iterator[T]:
    """Iterate `items` in a daemon thread, at most `depth` ahead; its exceptions are raised here.

    A paced replay must not stop its clock while the merge of many files parses the next chunk
    (up to half a second each with 100 files): bins would close late. Closing this iterator
    stops the thread at its next hand-over.
    """
    handoff: queue.Queue[object] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(item: object) -> bool:
        while not stop.is_set():
            try:
                handoff.put(item, timeout=poll_s)
                return True
            except queue.Full:
                continue
        return False

    def work() -> None:
        try:
            for item in items:
                if not put(item):
                    return
        except BaseException as exc:  # handed to the consumer, which raises it
            put(_Failed(exc))
            return
        put(_END)

    threading.Thread(target=work, name="tick-read-ahead", daemon=True).start()
    try:
        while True:
            item = handoff.get()
            if item is _END:
                return
            if isinstance(item, _Failed):
                raise item.error
            yield item  # type: ignore[misc]
    finally:
        stop.set()
