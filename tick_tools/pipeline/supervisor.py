"""Run several services as child processes in one shell, like a tiny process manager.

Each child's output is prefixed with its name in its own colour; children start
in order, each only once the previous one is healthy; SIGINT/SIGTERM stop them
in reverse order (SIGTERM, then SIGKILL after the budget); if a service dies,
the supervisor says which and why, stops the rest and exits non-zero.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import IO

from rich.console import Console
from rich.text import Text

COLOURS = ["cyan", "magenta", "green", "yellow", "blue", "bright_red", "bright_cyan"]


@dataclass(frozen=True)
class ServiceSpec:
    """A child process: how to start it and how to know it is up."""

    name: str
    cmd: list[str]
    env: dict[str, str] = field(default_factory=dict)
    health_url: str | None = None  # ready when this answers 2xx
    ready_after_s: float = 1.0  # without a URL: ready when still alive after this long
    start_timeout_s: float = 120.0
    oneshot: bool = False  # exiting 0 is "finished", not a failure (the replay of a file)


class ServiceFailed(Exception):
    """A child exited unexpectedly or never became healthy."""


def http_ok(url: str, timeout: float = 1.0) -> bool:
    """Whether `url` answers with a 2xx status."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return 200 <= int(resp.status) < 300
    except Exception:
        return False


class Supervisor:
    """Starts, watches and stops the services of one pipeline."""

    def __init__(self, console: Console | None = None, stop_budget_s: float = 10.0):
        self.console = console or Console(highlight=False)
        self.stop_budget_s = stop_budget_s
        self.procs: list[tuple[ServiceSpec, subprocess.Popen[bytes]]] = []
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self.finished: set[str] = set()

    # output -------------------------------------------------------------------
    def say(self, message: str, style: str = "bold") -> None:
        """A line of the supervisor's own."""
        with self._lock:
            self.console.print(Text("pipeline | ", style="bold white") + Text(message, style=style), soft_wrap=True)

    def _pump(self, name: str, colour: str, stream: IO[bytes]) -> None:
        prefix = Text(f"{name:>9} | ", style=f"bold {colour}")
        for raw in iter(stream.readline, b""):
            # Children colour their own output (Dagster's log levels): keep it, one line per line.
            line = Text.from_ansi(raw.decode(errors="replace").rstrip())
            with self._lock:
                self.console.print(prefix + line, soft_wrap=True)

    # lifecycle ----------------------------------------------------------------
    def start(self, spec: ServiceSpec) -> None:
        """Start one service and wait until it is healthy (or raise ServiceFailed)."""
        colour = COLOURS[len(self.procs) % len(COLOURS)]
        self.say(f"starting {spec.name}: {' '.join(spec.cmd)}")
        proc = subprocess.Popen(
            spec.cmd,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**os.environ, "PYTHONUNBUFFERED": "1", **spec.env},
            start_new_session=True,  # Ctrl+C reaches only us; we stop the children in order
        )
        self.procs.append((spec, proc))
        assert proc.stdout is not None
        threading.Thread(target=self._pump, args=(spec.name, colour, proc.stdout), daemon=True).start()
        deadline = time.monotonic() + spec.start_timeout_s
        started = time.monotonic()
        while not self._stop.is_set():
            code = proc.poll()
            if code is not None:
                if spec.oneshot and code == 0:
                    self.finished.add(spec.name)
                    return
                raise ServiceFailed(f"{spec.name} exited with status {code} while starting")
            if spec.health_url and http_ok(spec.health_url):
                break
            if not spec.health_url and time.monotonic() - started >= spec.ready_after_s:
                break
            if time.monotonic() > deadline:
                raise ServiceFailed(f"{spec.name} was not healthy within {spec.start_timeout_s:.0f}s")
            time.sleep(0.2)
        self.say(f"{spec.name} is up", style="bold green")

    def watch(self) -> None:
        """Block until a stop is requested; raise ServiceFailed if a service dies."""
        while not self._stop.wait(0.3):
            for spec, proc in self.procs:
                code = proc.poll()
                if code is None or spec.name in self.finished:
                    continue
                if spec.oneshot and code == 0:
                    self.finished.add(spec.name)
                    self.say(f"{spec.name} finished", style="bold green")
                    continue
                why = f"killed by {signal.Signals(-code).name}" if code < 0 else f"exit status {code}"
                raise ServiceFailed(f"{spec.name} died ({why})")

    def request_stop(self) -> None:
        """Ask `watch` and `start` to return (from a signal handler)."""
        self._stop.set()

    def stop_all(self) -> list[str]:
        """Stop the services in reverse start order within the budget; returns those that needed SIGKILL."""
        deadline = time.monotonic() + self.stop_budget_s
        killed: list[str] = []
        for spec, proc in reversed(self.procs):
            if proc.poll() is not None:
                continue
            self.say(f"stopping {spec.name}")
            _signal_group(proc, signal.SIGTERM)
            # What is left of the budget, less a second for each service still to stop after this
            # one: dagster dev needs a few seconds to stop its daemon, webserver and code server.
            later = sum(1 for _, p in self.procs if p.poll() is None and p is not proc)
            share = max(0.5, deadline - time.monotonic() - later * 1.0)
            try:
                proc.wait(timeout=share)
            except subprocess.TimeoutExpired:
                _signal_group(proc, signal.SIGKILL)
                proc.wait(timeout=5)
                killed.append(spec.name)
        for _, proc in self.procs:
            _signal_group(proc, signal.SIGKILL)  # stragglers of a group (grandchildren)
        return killed


def _signal_group(proc: subprocess.Popen[bytes], sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, sig)


def run_services(specs: list[ServiceSpec], console: Console | None = None,
                 on_ready: Callable[[], None] | None = None) -> int:
    """Start `specs` in order, run until Ctrl+C/SIGTERM or a failure; return the exit status."""
    sup = Supervisor(console)
    received: list[str] = []

    def handler(signum: int, _frame: object) -> None:
        received.append(signal.Signals(signum).name)
        sup.request_stop()

    old = {s: signal.signal(s, handler) for s in (signal.SIGINT, signal.SIGTERM)}
    status = 0
    try:
        for spec in specs:
            if received:
                break
            sup.start(spec)
        if not received:
            sup.say("all services up; Ctrl+C stops them", style="bold green")
            if on_ready is not None:
                on_ready()
            sup.watch()
    except ServiceFailed as exc:
        sup.say(f"{exc}; stopping the others", style="bold red")
        status = 1
    finally:
        if received:
            sup.say(f"{received[0]} received; stopping in reverse order")
        started = time.monotonic()
        killed = sup.stop_all()
        sup.say(f"all stopped in {time.monotonic() - started:.1f}s"
                + (f" (SIGKILL needed for {', '.join(killed)})" if killed else ""))
        for sig, h in old.items():
            signal.signal(sig, h)
    return status


if __name__ == "__main__":  # pragma: no cover - manual check
    sys.exit(run_services([ServiceSpec("sleep", ["sleep", "30"])]))
