"""`python -m streaming aggregate`: the bar aggregator (AGG_WINDOW_MS, 1 s by default), on Kafka or file to file."""

from __future__ import annotations

import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Annotated, Literal

import typer

from streaming.aggregate.counters import Counters
from streaming.cli_support import StopFlag, console, fail, one_line_errors, out, settings_or_exit


def _serve_metrics(port: int, counters: Callable[[], Counters]) -> ThreadingHTTPServer:
    """Prometheus text on http://127.0.0.1:<port>/metrics, from a daemon thread."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = counters().prometheus().encode()
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *_args: object) -> None:
            return

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def _changed_lines(emit: Callable[[str], None]) -> Callable[[Counters], None]:
    """A progress callback that stays quiet while nothing changes (an idle aggregator)."""
    last: list[str] = [""]

    def progress(counters: Counters) -> None:
        line = counters.line()
        if line != last[0]:
            last[0] = line
            emit(line)

    return progress


def aggregate(
    brokers: Annotated[str | None, typer.Option("--brokers", help="Bootstrap servers (KAFKA_BROKERS).")] = None,
    group_id: Annotated[str | None, typer.Option("--group-id", help="Consumer group (AGG_GROUP_ID).")] = None,
    window_ms: Annotated[int | None, typer.Option("--window-ms", help="Window size (AGG_WINDOW_MS).")] = None,
    grace_ms: Annotated[int | None, typer.Option("--grace-ms", help="Allowed lateness (AGG_GRACE_MS).")] = None,
    idle_timeout_ms: Annotated[
        int | None, typer.Option("--idle-timeout-ms", help="Quiet partition flush (AGG_IDLE_TIMEOUT_MS).")
    ] = None,
    late_policy: Annotated[
        Literal["dlq", "revise"] | None, typer.Option("--late-policy", help="dlq or revise (AGG_LATE_POLICY).")
    ] = None,
    exactly_once: Annotated[
        bool | None, typer.Option("--exactly-once/--no-exactly-once", help="Transactions (AGG_EXACTLY_ONCE).")
    ] = None,
    instance_id: Annotated[
        str | None, typer.Option("--instance-id", help="Stable transactional/static member id (AGG_INSTANCE_ID).")
    ] = None,
    src: Annotated[Path | None, typer.Option("--from", help="Offline: bins JSON lines to read.")] = None,
    dst: Annotated[Path | None, typer.Option("--to", help="Offline: bars JSON lines to write.")] = None,
    dlq: Annotated[Path | None, typer.Option("--dlq", help="Offline: DLQ JSON lines to write.")] = None,
    max_bins: Annotated[int | None, typer.Option("--max-bins", min=1, help="Exit after N bins.")] = None,
    until_idle: Annotated[
        bool, typer.Option("--until-idle", help="Exit when the group has consumed and flushed all input.")
    ] = False,
    metrics_port: Annotated[
        int | None, typer.Option("--metrics-port", help="Serve Prometheus text on this port.")
    ] = None,
    env_file: Annotated[str | None, typer.Option("--env-file", help="Settings file (default .env).")] = None,
) -> None:
    """Aggregate 10 ms bins into final bars (1 s, --window-ms): ticks.raw -> ticks.agg.1s, or --from/--to files."""
    settings = settings_or_exit(
        env_file,
        kafka={"brokers": brokers},
        agg={"group_id": group_id, "window_ms": window_ms, "grace_ms": grace_ms,
             "idle_timeout_ms": idle_timeout_ms, "late_policy": late_policy, "exactly_once": exactly_once,
             "instance_id": instance_id},
    )
    from streaming.aggregate.checkpoints import window_config

    if (src is None) != (dst is None):
        fail("offline mode needs both --from and --to")
    with one_line_errors():
        if src is not None and dst is not None:
            from streaming.aggregate.offline import aggregate_file

            result = aggregate_file(src, dst, dlq, window_config(settings))
            out.print(f"aggregate: {result.bins_in:,} bins -> {result.bars_out:,} bars ({dst}); "
                      f"late {result.late:,}, poison {result.poison:,}, duplicate {result.duplicates:,}, "
                      f"out of range {result.out_of_range:,}"
                      + (f" (dlq: {dlq})" if dlq else ""))
            return
        from streaming.aggregate.processor import Aggregator
        from streaming.restarts import RestartPolicy, run_with_restarts

        stop = StopFlag().install()
        counters = Counters()  # one set across in-process restarts
        server = _serve_metrics(metrics_port, lambda: counters) if metrics_port else None
        mode = "exactly-once" if settings.agg.exactly_once else "at-least-once"
        console.print(f"aggregate: {settings.kafka.topic_raw} -> {settings.kafka.topic_agg} ({mode}, group "
                      f"{settings.agg.group_id}, window {settings.agg.window_ms} ms, grace "
                      f"{settings.agg_grace_ms} ms)", highlight=False)

        def log(line: str) -> None:
            console.print(line, highlight=False, soft_wrap=True, markup=False)

        from streaming.kernel.kafka_access import check_access

        def run_once(restarts: int) -> Counters:
            # Before every (re)start: a refused password or TLS setup ends the stage with one line
            # (KafkaAccessError is not retried) instead of minutes of restarts that cannot help.
            check_access(settings.kafka, "agg")
            if restarts:
                counters.restarts += 1
            aggregator = Aggregator(settings, stop.is_set, max_bins=max_bins, until_idle=until_idle,
                                    progress=_changed_lines(log), log=log, counters=counters)
            return aggregator.run()

        try:
            run_with_restarts(run_once, RestartPolicy(settings.agg.max_restarts), what="aggregate", log=log,
                              wait=stop.wait)
        finally:
            if server is not None:
                server.shutdown()
        why = f" ({stop.signal_name})" if stop.signal_name else ""
        out.print(f"aggregate stopped{why}: {counters.line()}", highlight=False)

