"""The synthetic session the demo and `make pipeline` replay when no file is given."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from streaming.kernel.errors import SourceError
from streaming.kernel.settings import PROJECT_ROOT

DEMO_DIR = PROJECT_ROOT / "data" / "samples" / "demo"
DEMO_SYMBOLS = 8
DEMO_TICKS_PER_SYMBOL = 25_000
DEMO_SEED = 20240308
DEMO_DATE = "2024-03-08"


def ensure_demo_data(out_dir: Path = DEMO_DIR) -> list[str]:
    """Generate the deterministic demo session once (Kibot files, one per symbol); return the paths."""
    files = sorted(out_dir.glob("*_tickbidask.txt"))
    if len(files) >= DEMO_SYMBOLS:
        return [str(f) for f in files]
    out_dir.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run(
        [sys.executable, "-m", "streaming", "synth", "--symbols", str(DEMO_SYMBOLS),
         "--ticks-per-symbol", str(DEMO_TICKS_PER_SYMBOL), "--seed", str(DEMO_SEED),
         "--date", DEMO_DATE, "--out-dir", str(out_dir)],
        capture_output=True, text=True,
    )
    if proc.returncode != 0:
        raise SourceError(f"generating the demo data failed: {proc.stderr.strip()[-300:]}")
    files = sorted(out_dir.glob("*_tickbidask.txt"))
    if not files:
        raise SourceError(f"the synthetic generator wrote no files into {out_dir}")
    return [str(f) for f in files]
