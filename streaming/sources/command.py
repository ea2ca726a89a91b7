"""CLI commands of the sources stage: `synth` (synthetic Kibot files) and `api` (the mock tick API)."""

from __future__ import annotations

import time
from datetime import date as Date
from pathlib import Path
from typing import Annotated

import typer

from streaming.cli_support import fail, one_line_errors, out, settings_or_exit


def synth(
    symbols: Annotated[int, typer.Option("--symbols", min=1, max=10_000, help="How many symbols (one file each).")] = 5,
    ticks_per_symbol: Annotated[int, typer.Option("--ticks-per-symbol", min=1, help="Ticks per symbol.")] = 20_000,
    seed: Annotated[int, typer.Option("--seed", help="Same seed, same bytes.")] = 42,
    day: Annotated[str, typer.Option("--date", help="Trading day, YYYY-MM-DD.")] = "2024-03-08",
    out_dir: Annotated[Path, typer.Option("--out-dir", help="Where <SYM>_tickbidask.txt files go.")] = Path(
        "data/samples"
    ),
    single_file: Annotated[
        str | None, typer.Option("--single-file", help="Also merge all symbols into this one CSV (symbol column).")
    ] = None,
) -> None:
    """Write deterministic synthetic Kibot tick files (U-shaped volume, bursts, bid/ask quotes)."""
    from streaming.sources.synth import merge_files, write_synth

    try:
        trading_day = Date.fromisoformat(day)
    except ValueError:
        fail(f"--date: expected YYYY-MM-DD, got {day!r}", code=2)
    started = time.monotonic()
    with one_line_errors():
        files = write_synth(symbols, ticks_per_symbol, seed, trading_day, out_dir)
        total = sum(f.ticks for f in files)
        out.print(
            f"synth: {len(files)} file(s), {total:,} ticks in {out_dir} ({time.monotonic() - started:.1f}s)",
            highlight=False,
        )
        if single_file:
            merge_files(files, Path(single_file))
            out.print(f"synth: merged {total:,} ticks of {len(files)} symbols into {single_file}", highlight=False)


def api(
    files: Annotated[list[str] | None, typer.Argument(help="Tick files to serve (default API_DATA).")] = None,
    host: Annotated[str | None, typer.Option("--host", help="Bind address (API_HOST).")] = None,
    port: Annotated[int | None, typer.Option("--port", help="Port (API_PORT).")] = None,
    env_file: Annotated[str | None, typer.Option("--env-file", help="Settings file (.env or ENV_FILE).")] = None,
) -> None:
    """Serve the mock tick API: /health and /ticks (NDJSON, paced, api_send_ts_ms stamped at send)."""
    from streaming.sources.api import serve

    settings = settings_or_exit(env_file, api={"host": host, "port": port})
    chosen = list(files or []) or [p for p in (settings.api.data or "").split(",") if p]
    if not chosen:
        fail("no tick files: give FILES or set API_DATA")
    with one_line_errors():
        out.print(f"mock tick API on http://{settings.api.host}:{settings.api.port}/ticks", highlight=False)
        serve(chosen, settings.api.host, settings.api.port)
