"""`python -m streaming replay`: tick files or the mock API into 10 ms bins (Kafka, or a file with --to)."""

from __future__ import annotations

from typing import Annotated

import typer

from streaming.cli_support import StopFlag, console, one_line_errors, out, settings_or_exit
from streaming.sources.http_source import with_replay_speed

Sources = Annotated[list[str], typer.Argument(help="Tick files (Kibot, CSV, Parquet) or a mock API /ticks URL.")]
Symbol = Annotated[str | None, typer.Option("--symbol", help="Symbol for files without one in name or columns.")]
Speed = Annotated[float | None, typer.Option("--speed", min=0, help="1 = real time, N = N x faster, 0 = max.")]
Live = Annotated[bool | None, typer.Option("--live/--no-live", help="Shift event times so the first tick is now.")]
Loop = Annotated[bool | None, typer.Option("--loop/--no-loop", help="Start over at the end, times shifted on.")]
Spread = Annotated[bool | None, typer.Option("--spread/--no-spread", help="Spread the ticks of a second in it.")]
BinMs = Annotated[int | None, typer.Option(
    "--bin-ms", help="Bin length; must divide AGG_WINDOW_MS (REPLAY_BIN_MS).")]
MaxLate = Annotated[int | None, typer.Option("--max-late-ms", min=0, help="Allowed lateness (REPLAY_MAX_LATE_MS).")]
To = Annotated[str | None, typer.Option("--to", help="Offline: write bins as JSON lines to this file, no Kafka.")]
Dlq = Annotated[str | None, typer.Option("--dlq", help="Offline: write DLQ records as JSON lines here.")]
Columns = Annotated[str | None, typer.Option("--columns", help="CSV/Parquet column mapping, e.g. price=Last,ts=Time.")]
ChunkRows = Annotated[int | None, typer.Option("--chunk-rows", help="Rows parsed per chunk (REPLAY_CHUNK_ROWS).")]
CommitMs = Annotated[int | None, typer.Option("--commit-interval-ms", help="Transaction length (ms).")]
WatermarkMs = Annotated[int | None, typer.Option(
    "--watermark-interval-ms", min=0,
    help="Paced: watermark records to every partition this often, 0 = off (REPLAY_WATERMARK_INTERVAL_MS).")]
Brokers = Annotated[str | None, typer.Option("--brokers", help="Bootstrap servers (KAFKA_BROKERS).")]
ExactlyOnce = Annotated[
    bool | None, typer.Option("--exactly-once/--no-exactly-once", help="Transactions + resume checkpoints.")
]
NewRun = Annotated[bool, typer.Option(
    "--new-run", help="Publish again a job whose checkpoint says it is complete (else a rerun publishes nothing).")]
JobId = Annotated[str | None, typer.Option("--job-id", help="Checkpoint key (default: from sources + settings).")]
Quiet = Annotated[bool, typer.Option("--quiet", help="No progress lines, only the summary.")]
EnvFile = Annotated[str | None, typer.Option("--env-file", help="Settings file (default .env, or ENV_FILE).")]


def replay(
    sources: Sources,
    symbol: Symbol = None,
    speed: Speed = None,
    live: Live = None,
    loop: Loop = None,
    spread: Spread = None,
    bin_ms: BinMs = None,
    max_late_ms: MaxLate = None,
    to: To = None,
    dlq: Dlq = None,
    columns: Columns = None,
    chunk_rows: ChunkRows = None,
    commit_interval_ms: CommitMs = None,
    watermark_interval_ms: WatermarkMs = None,
    brokers: Brokers = None,
    exactly_once: ExactlyOnce = None,
    job_id: JobId = None,
    new_run: NewRun = False,
    quiet: Quiet = False,
    env_file: EnvFile = None,
) -> None:
    """Replay tick files (or the mock API) as 10 ms bins into ticks.raw, or into a JSON lines file with --to."""
    settings = settings_or_exit(
        env_file,
        kafka={"brokers": brokers},
        replay={
            "symbol": symbol, "speed": speed, "live": live, "loop": loop, "spread": spread, "bin_ms": bin_ms,
            "max_late_ms": max_late_ms, "exactly_once": exactly_once, "chunk_rows": chunk_rows,
            "commit_interval_ms": commit_interval_ms, "watermark_interval_ms": watermark_interval_ms,
        },
    )
    stop = StopFlag().install()
    progress = None if quiet else console
    for source in sources:
        if "://" in source:
            # The first line: an API source is paced by the API, at this speed (also with --quiet).
            console.print(with_replay_speed(source, settings.replay.speed).line(), highlight=False, soft_wrap=True,
                          markup=False)
    with one_line_errors():
        if to is not None:
            from streaming.replay.offline import replay_to_jsonl

            summary = replay_to_jsonl(sources, to, dlq, settings, columns=columns, stop=stop, console=progress)
        else:
            if dlq is not None:
                console.print("note: --dlq is for offline runs; DLQ records go to the DLQ topic", highlight=False)
            from streaming.kernel.kafka_access import check_access
            from streaming.replay.producer import run_replay

            check_access(settings.kafka, "replay")  # a refused password is one line, not retried
            summary = run_replay(settings, sources, stop, job_id=job_id, columns=columns, console=progress,
                                 new_run=new_run,
                                 log=lambda line: console.print(line, highlight=False, soft_wrap=True, markup=False))
    out.print(summary.line(), highlight=False, soft_wrap=True, markup=False)
    if stop.signal_name is not None:
        out.print(f"stopped by {stop.signal_name}", highlight=False)
        if to is not None:
            # An offline run restarts from scratch: its part is removed, not left to look complete.
            out.print(f"{to} not written (an offline replay writes its files only when it reaches the end)",
                      highlight=False, soft_wrap=True, markup=False)
            raise typer.Exit(130)
