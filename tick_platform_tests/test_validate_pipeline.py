"""The real sample through the real offline replay and aggregator, checked three ways by validate."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from typer.testing import CliRunner

from streaming.cli import app
from streaming.kernel.settings import PROJECT_ROOT


def _stage(*args: str) -> None:
    done = subprocess.run([sys.executable, "-m", "streaming", *args], cwd=PROJECT_ROOT, env=os.environ.copy(),
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr


def test_offline_replay_and_aggregate_pass_the_three_way_check(sample_path: Path, tmp_path: Path) -> None:
    bins, bars, report = tmp_path / "bins.jsonl", tmp_path / "bars.jsonl", tmp_path / "report.json"
    _stage("replay", str(sample_path), "--to", str(bins), "--quiet")
    _stage("aggregate", "--from", str(bins), "--to", str(bars))
    result = CliRunner().invoke(app, ["validate", "--bins", str(bins), "--bars", str(bars),
                                      "--ticks", str(sample_path), "--json", str(report)])
    assert result.exit_code == 0, result.output
    data = json.loads(report.read_text())
    assert data["verdict"] == "PASS"
    assert {c["name"]: c["ok"] for c in data["comparisons"]} == {
        "bars <- bins": True, "bins <- ticks": True, "bars <- ticks": True}
    assert data["totals"]["bars"] == 5049
    assert data["totals"]["ticks"] == data["totals"]["bar_trades"] == 20000
    assert data["totals"]["bar_volume"] == data["totals"]["tick_volume"] == 3_582_490
    assert data["totals"]["bins"] == sum(1 for line in bins.read_bytes().splitlines() if line.strip())
    assert data["latency_ms"]["bin_to_bar"]["count"] == 5049

    # The same output with one bar's low lowered must fail, naming the bar.
    lines = bars.read_bytes().splitlines()
    bar = json.loads(lines[100])
    bar["low"] = bar["low"] - 0.5
    lines[100] = json.dumps(bar).encode()
    bars.write_bytes(b"\n".join(lines) + b"\n")
    result = CliRunner().invoke(app, ["validate", "--bins", str(bins), "--bars", str(bars),
                                      "--ticks", str(sample_path)])
    assert result.exit_code == 1
    assert f"{bar['bar_id']} low" in result.output
