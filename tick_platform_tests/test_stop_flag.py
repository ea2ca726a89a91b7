"""StopFlag: what SIGINT/SIGTERM do to the long-running stages (a real signal to this process)."""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Iterator

import pytest

from streaming.cli_support import StopFlag


@pytest.fixture()
def restore_handlers() -> Iterator[None]:
    saved = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    yield
    for s, handler in saved.items():
        signal.signal(s, handler)


@pytest.mark.usefixtures("restore_handlers")
def test_a_signal_sets_the_flag_names_it_and_wakes_a_waiter() -> None:
    flag = StopFlag().install()
    assert not flag and flag.signal_name is None and flag.wait(0.01) is False
    woke: list[bool] = []
    waiter = threading.Thread(target=lambda: woke.append(flag.wait(30)))
    waiter.start()
    os.kill(os.getpid(), signal.SIGTERM)
    waiter.join(10)
    assert woke == [True]
    assert flag and flag.is_set() and flag.signal_name == "SIGTERM"


@pytest.mark.usefixtures("restore_handlers")
def test_a_second_signal_exits_at_once_with_130() -> None:
    StopFlag().install()
    os.kill(os.getpid(), signal.SIGINT)
    with pytest.raises(SystemExit) as exited:
        os.kill(os.getpid(), signal.SIGINT)
    assert exited.value.code == 130


def test_set_by_code_without_a_signal() -> None:
    flag = StopFlag()
    flag.set()
    assert flag and flag.wait(5) is True and flag.signal_name is None
