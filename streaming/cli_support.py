"""Helpers every command shares: settings with CLI overrides, one-line errors, signal handling."""

from __future__ import annotations

import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, NoReturn

import typer
from rich.console import Console

from streaming.kernel.errors import ConfigError, TickPlatformError
from streaming.kernel.settings import Settings, load_settings

# Piped output (CI logs, grep) gets a wide console so tables are not truncated.
console = Console(stderr=True, width=None if sys.stderr.isatty() else 200)
out = Console(width=None if sys.stdout.isatty() else 200)


def cli_app(name: str, help: str) -> typer.Typer:
    """A top-level Typer app as every platform CLI builds it.

    Typer's pretty exceptions are off: an unexpected error must not print a framed traceback
    (named errors are one line through `one_line_errors`), and completion scripts are not offered.
    """
    return typer.Typer(name=name, help=help, no_args_is_help=True, add_completion=False,
                       pretty_exceptions_enable=False)


def fail(message: str, code: int = 1) -> NoReturn:
    """Print one clear line and exit non-zero."""
    console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    raise SystemExit(code)


def settings_or_exit(env_file: str | None = None, **overrides: dict[str, Any]) -> Settings:
    """Load settings; a bad value stops the command with one line naming the setting."""
    try:
        return load_settings(env_file, **overrides)
    except ConfigError as exc:
        fail(f"config: {exc}", code=2)


@contextmanager
def one_line_errors() -> Iterator[None]:
    """Turn the platform's named errors into one line and exit status 1 instead of a traceback."""
    try:
        yield
    except ConfigError as exc:
        fail(f"config: {exc}", code=2)
    except TickPlatformError as exc:
        fail(str(exc))


class StopFlag:
    """Set by SIGINT/SIGTERM so long-running loops finish their transaction and exit cleanly."""

    # How often `wait` looks at a flag set by a signal (the handler itself only stores the number).
    POLL_S = 0.05

    def __init__(self) -> None:
        self._event = threading.Event()
        self._signum: int | None = None

    def install(self) -> StopFlag:
        """Route SIGINT and SIGTERM to this flag (a second Ctrl+C exits at once)."""

        def handler(signum: int, _frame: Any) -> None:
            # Only an attribute store: the handler can run while a librdkafka callback that raised
            # still has its exception pending, and any call here would then end in a SystemError
            # instead of a clean stop (docs/reliability.md, finding 11).
            if self._signum is not None:
                raise SystemExit(130)
            self._signum = signum

        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGINT, handler)
            signal.signal(signal.SIGTERM, handler)
        return self

    @property
    def signal_name(self) -> str | None:
        """SIGINT or SIGTERM once a signal stopped the process."""
        return None if self._signum is None else signal.Signals(self._signum).name

    def set(self) -> None:
        self._event.set()

    def wait(self, timeout: float) -> bool:
        """Sleep up to `timeout` seconds; True as soon as the flag is set."""
        deadline = time.monotonic() + timeout
        while not self:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            if self._event.wait(min(left, self.POLL_S)):
                return True
        return True

    def __bool__(self) -> bool:
        return self._signum is not None or self._event.is_set()

    @property
    def is_set(self) -> Callable[[], bool]:
        return self.__bool__
