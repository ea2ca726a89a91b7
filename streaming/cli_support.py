"""Helpers every command shares: settings with CLI overrides, one-line errors, signal handling."""

from __future__ import annotations

import signal
import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, NoReturn

from rich.console import Console

from streaming.config import Settings, load_settings
from streaming.errors import ConfigError, TickPlatformError

# Piped output (CI logs, grep) gets a wide console so tables are not truncated.
console = Console(stderr=True, width=None if sys.stderr.isatty() else 200)
out = Console(width=None if sys.stdout.isatty() else 200)


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

    def __init__(self) -> None:
        self._event = threading.Event()
        self.signal_name: str | None = None

    def install(self) -> StopFlag:
        """Route SIGINT and SIGTERM to this flag (a second Ctrl+C exits at once)."""

        def handler(signum: int, _frame: Any) -> None:
            if self._event.is_set():
                sys.exit(130)
            self.signal_name = signal.Signals(signum).name
            self._event.set()

        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGINT, handler)
            signal.signal(signal.SIGTERM, handler)
        return self

    def set(self) -> None:
        self._event.set()

    def wait(self, timeout: float) -> bool:
        return self._event.wait(timeout)

    def __bool__(self) -> bool:
        return self._event.is_set()

    @property
    def is_set(self) -> Callable[[], bool]:
        return self._event.is_set
