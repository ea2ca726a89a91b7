"""`python -m streaming validate`: recompute bins/bars independently and compare; non-zero exit on mismatch."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from streaming.cli_support import console, fail, one_line_errors, out, settings_or_exit


def validate(
    bins: Annotated[Path | None, typer.Option("--bins", help="Bins as JSON lines (replay --to).")] = None,
    bars: Annotated[Path | None, typer.Option("--bars", help="Bars as JSON lines (aggregate --to).")] = None,
    ticks: Annotated[
        list[Path] | None,
        typer.Option("--ticks", help="Raw Kibot tick file(s) for the three-way check ticks -> bins -> bars."),
    ] = None,
    symbol: Annotated[str | None, typer.Option("--symbol", help="Symbol of the tick file (default: from its name).")]
    = None,
    kafka: Annotated[bool, typer.Option("--kafka", help="Read bins and bars from the topics instead of files.")]
    = False,
    brokers: Annotated[str | None, typer.Option("--brokers", help="Bootstrap servers (KAFKA_BROKERS).")] = None,
    spread: Annotated[
        bool | None,
        typer.Option("--spread/--no-spread", help="Model the replay's spreading of a second's ticks "
                     "(default REPLAY_SPREAD)."),
    ] = None,
    json_report: Annotated[Path | None, typer.Option("--json", help="Also write a machine-readable report.")]
    = None,
    timeout_s: Annotated[float, typer.Option("--timeout", help="Seconds to read the topics to their end.")]
    = 120.0,
    env_file: Annotated[str | None, typer.Option("--env-file", help="Settings file (default .env, or ENV_FILE).")]
    = None,
) -> None:
    """Recompute bins and bars independently (polars) and compare: missing, extra, duplicate, field diffs, latency."""
    from streaming.validate.report import render
    from streaming.validate.run import validate_files, validate_kafka

    settings = settings_or_exit(env_file, kafka={"brokers": brokers}, replay={"spread": spread})
    if kafka and (bins or bars):
        fail("--kafka reads bins and bars from the topics; drop --bins/--bars", code=2)
    if not kafka and bars is None and not (bins and ticks):
        fail("give --bars with --bins and/or --ticks, or --kafka", code=2)
    with one_line_errors():
        if kafka:
            from streaming.kernel.kafka_access import check_access

            check_access(settings.kafka, "validate")
            report = validate_kafka(
                settings.kafka, ticks, symbol=symbol, spread=settings.replay.spread,
                bin_ms=settings.replay.bin_ms, window_ms=settings.agg.window_ms, timeout_s=timeout_s,
            )
        else:
            report = validate_files(
                bins, bars, ticks, symbol=symbol, spread=settings.replay.spread,
                bin_ms=settings.replay.bin_ms, window_ms=settings.agg.window_ms,
            )
    render(report, out)
    if json_report is not None:
        with one_line_errors():  # an unwritable --json path is one line, not a traceback
            report.write_json(json_report)
        console.print(f"report written to {json_report}")
    if not report.ok:
        raise typer.Exit(1)
