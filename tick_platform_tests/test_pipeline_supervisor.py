"""The one-shell launcher: ordered start, health waits, reverse-order stop, failure propagation."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

from streaming.kernel.settings import PROJECT_ROOT

# A stand-in service: writes its pid, logs, and on SIGTERM records the stop order after a short cleanup.
SERVICE = textwrap.dedent(
    """
    import os, signal, sys, time
    name, log, delay = sys.argv[1], sys.argv[2], float(sys.argv[3])
    def stop(*_):
        time.sleep(delay)
        with open(log, "a") as f:
            f.write(f"stop {name} {os.getpid()}\\n")
        sys.exit(0)
    signal.signal(signal.SIGTERM, stop)
    with open(log, "a") as f:
        f.write(f"start {name} {os.getpid()}\\n")
    print(f"{name} ready", flush=True)
    if len(sys.argv) > 4:
        time.sleep(float(sys.argv[4]))
        sys.exit(int(sys.argv[5]))
    while True:
        time.sleep(0.1)
    """
)

LAUNCHER = textwrap.dedent(
    """
    import sys
    from tick_tools.pipeline.supervisor import ServiceSpec, run_services
    script, log = sys.argv[1], sys.argv[2]
    specs = [ServiceSpec(n, [sys.executable, script, n, log, d, *extra], ready_after_s=0.3)
             for n, d, extra in [("stubborn", "30", []), ("api", "0.1", []), ("aggregate", "0.2", []),
                                 *([("crashy", "0", ["1.0", "3"])] if len(sys.argv) > 3 else [])]]
    sys.exit(run_services(specs))
    """
)


def _launch(tmp_path: Path, crash: bool) -> tuple[subprocess.Popen[str], Path]:
    script = tmp_path / "service.py"
    script.write_text(SERVICE)
    launcher = tmp_path / "launcher.py"
    launcher.write_text(LAUNCHER)
    log = tmp_path / "events.log"
    args = [sys.executable, str(launcher), str(script), str(log)] + (["crash"] if crash else [])
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=PROJECT_ROOT,
                            env={**os.environ, "PYTHONPATH": str(PROJECT_ROOT)})
    return proc, log


def _events(log: Path) -> list[tuple[str, str, int]]:
    return [(a, b, int(c)) for a, b, c in (line.split() for line in log.read_text().splitlines())]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and stat.read_text().rsplit(")", 1)[1].split()[0] != "Z"


def test_sigint_stops_every_child_in_reverse_order(tmp_path: Path) -> None:
    proc, log = _launch(tmp_path, crash=False)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and not (log.exists() and len(log.read_text().splitlines()) == 3):
        time.sleep(0.1)
    time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    output, _ = proc.communicate(timeout=60)
    events = _events(log)
    starts = [name for kind, name, _ in events if kind == "start"]
    stops = [name for kind, name, _ in events if kind == "stop"]
    assert starts == ["stubborn", "api", "aggregate"]
    # The others stop in reverse order; the stubborn one, started first and so stopped last, ignores
    # SIGTERM past the budget and is killed. Stopped first, it left the others only the supervisor's
    # 1 s reserve each, which a loaded machine can overrun (it failed once under a load of 10-40).
    assert stops == ["aggregate", "api"]
    assert "SIGINT received" in output and "SIGKILL needed for stubborn" in output
    assert "api | api ready" in output  # prefixed child output
    assert proc.returncode == 0
    assert not any(_alive(pid) for _, _, pid in events)


def test_a_dying_child_is_named_and_the_rest_are_stopped(tmp_path: Path) -> None:
    proc, log = _launch(tmp_path, crash=True)
    output, _ = proc.communicate(timeout=90)
    assert proc.returncode == 1
    assert "crashy died (exit status 3)" in output
    events = _events(log)
    assert {name for kind, name, _ in events if kind == "stop"} == {"api", "aggregate"}
    assert not any(_alive(pid) for _, _, pid in events)
