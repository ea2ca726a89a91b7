"""The synthetic generator: deterministic Kibot files with a realistic shape."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from datetime import date
from pathlib import Path

import polars as pl

from streaming.kernel.settings import PROJECT_ROOT
from streaming.sources import read_ticks
from streaming.sources.synth import synth_symbols, write_synth
from tick_platform_tests.test_replay_support import eastern_ms


def _digest(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def test_cli_writes_one_kibot_file_per_symbol_deterministically(tmp_path: Path) -> None:
    def run(out: Path, seed: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "streaming", "synth", "--symbols", "3", "--ticks-per-symbol", "5000",
             "--seed", seed, "--date", "2024-03-08", "--out-dir", str(out)],
            cwd=PROJECT_ROOT, capture_output=True, text=True, env=dict(os.environ), timeout=120,
        )

    for out, seed in ((tmp_path / "a", "7"), (tmp_path / "b", "7"), (tmp_path / "c", "8")):
        done = run(out, seed)
        assert done.returncode == 0, done.stderr
        assert "15,000 ticks" in done.stdout
    assert sorted(_digest(tmp_path / "a")) == ["AAPL_tickbidask.txt", "MSFT_tickbidask.txt", "WDC_tickbidask.txt"]
    assert _digest(tmp_path / "a") == _digest(tmp_path / "b")
    assert _digest(tmp_path / "a") != _digest(tmp_path / "c")


def test_synthetic_day_has_a_realistic_shape(tmp_path: Path) -> None:
    files = write_synth(2, 40_000, 3, date(2024, 3, 8), tmp_path)
    ticks = pl.concat(list(read_ticks([f.path for f in files])))
    assert ticks.height == 80_000 and {f.symbol for f in files} == {"AAPL", "MSFT"}
    open_ms, close_ms = eastern_ms("03/08/2024", "09:30:00"), eastern_ms("03/08/2024", "16:00:00")
    first, last = ticks["ts_ms"].min(), ticks["ts_ms"].max()
    assert isinstance(first, int) and isinstance(last, int) and open_ms <= first and last < close_ms
    for path in (f.path for f in files):
        own = ticks.filter(pl.col("file") == str(path))
        assert own["ts_ms"].is_sorted()  # a Kibot file is in trade order
    inside = ticks.select(((pl.col("bid") <= pl.col("price")) & (pl.col("price") <= pl.col("ask"))).mean()).item()
    assert 0.98 < inside < 1.0  # bid <= price <= ask mostly, a few prints outside
    assert (ticks["size"] > 0).all() and (ticks["price"] > 0).all()
    per_second = ticks.group_by("symbol", "ts_ms").len()["len"]
    assert int(per_second.max() or 0) >= 50  # type: ignore[arg-type]  # bursts of many ticks in one second
    # U-shape: the first and last half hours are busier than a half hour at midday.
    half_hour = 1_800_000
    def count(lo: int) -> int:
        return ticks.filter((pl.col("ts_ms") >= lo) & (pl.col("ts_ms") < lo + half_hour)).height
    midday = count(open_ms + 3 * half_hour + half_hour // 2)
    assert count(open_ms) > 1.5 * midday and count(close_ms - half_hour) > 1.5 * midday


def test_symbols_are_distinct_and_filename_friendly() -> None:
    names = synth_symbols(1_000)
    assert len(set(names)) == 1_000
    assert all(name.isalpha() and name.isupper() for name in names)
