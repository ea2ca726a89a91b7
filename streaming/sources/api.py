"""The mock tick API (FastAPI): `/health` and `/ticks`, an NDJSON stream of ticks paced like a live feed.

The stream is an async generator: Starlette pulls the next batch only when the previous one
was handed to the socket, and uvicorn waits while the client does not read, so a slow client
holds the generator back instead of making the server buffer without bound.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import numpy as np
import polars as pl
from fastapi import FastAPI, HTTPException, Query
from fastapi.responses import JSONResponse, StreamingResponse
from starlette.concurrency import run_in_threadpool

from streaming.kernel.bounds import is_symbol
from streaming.kernel.errors import SourceError
from streaming.sources.files import read_ticks, refuse_repeats, source_format
from streaming.sources.naming import symbol_from_filename
from streaming.sources.pacing_api import batch_bounds

EASTERN = ZoneInfo("America/New_York")
BATCH_LINES = 2_000
READ_ROWS = 20_000


@dataclass(frozen=True)
class TickQuery:
    """The validated parameters of one /ticks request."""

    symbols: frozenset[str] | None
    speed: float
    loop: bool
    start_ms: int | None
    end_ms: int | None
    live: bool


def parse_instant(text: str | None, name: str) -> int | None:
    """Epoch ms, or ISO 8601 (naive = America/New_York) -> epoch ms; None when absent; HTTP 422 when unparsable.

    An empty value (`start=`) is a slip, not "no bound": it is refused like any unparsable one.
    """
    if text is None:
        return None
    if not text.strip():
        raise HTTPException(422, f"{name}: empty; omit the parameter for no bound")
    if re.fullmatch(r"-?\d+", text):
        return int(text)
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise HTTPException(422, f"{name}: expected epoch ms or ISO 8601 date-time, got {text!r}") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=EASTERN)
    return int(moment.timestamp() * 1000)


def tick_batches(files: Sequence[str], query: TickQuery) -> Iterator[pl.DataFrame]:
    """The requested ticks in event-time order (looping if asked), shifted for loop/live, with `seq`."""
    seq, offset = 0, 0
    first_ts: int | None = None
    while True:
        last_ts: int | None = None
        for frame in read_ticks(files, chunk_rows=READ_ROWS):
            if query.symbols is not None:
                frame = frame.filter(pl.col("symbol").is_in(list(query.symbols)))
            if query.start_ms is not None:
                frame = frame.filter(pl.col("ts_ms") >= query.start_ms)
            if query.end_ms is not None:
                frame = frame.filter(pl.col("ts_ms") < query.end_ms)
            if frame.height == 0:
                continue
            if first_ts is None:
                first_ts = int(frame["ts_ms"][0])
                if query.live:
                    offset = ((int(time.time() * 1000) - first_ts) // 1000) * 1000
            last_ts = int(frame["ts_ms"].max())  # type: ignore[arg-type]
            yield frame.select(
                "symbol",
                (pl.col("ts_ms") + offset).alias("ts_ms"),
                "price", "bid", "ask", "size",
                pl.int_range(seq + 1, seq + 1 + frame.height, dtype=pl.Int64).alias("seq"),
            )
            seq += frame.height
        if not query.loop or last_ts is None or first_ts is None:
            return
        # The next round continues after the last tick, whole seconds later.
        offset += ((last_ts - first_ts) // 1000 + 2) * 1000


async def ndjson_stream(files: Sequence[str], query: TickQuery) -> AsyncIterator[bytes]:
    """NDJSON lines, paced by `speed`, each batch stamped with api_send_ts_ms when it is sent."""
    batches = tick_batches(files, query)
    wall0: float | None = None
    event0 = 0
    while True:
        frame = await run_in_threadpool(next, batches, None)
        if frame is None:
            return
        ts = np.maximum.accumulate(frame["ts_ms"].to_numpy())
        if wall0 is None:
            wall0, event0 = time.time() * 1000, int(ts[0])
        for lo, hi in batch_bounds(ts, wall0, event0, query.speed, BATCH_LINES):
            if query.speed > 0:
                due = wall0 + (int(ts[lo]) - event0) / query.speed
                delay = (due - time.time() * 1000) / 1000
                if delay > 0:
                    await asyncio.sleep(delay)
            stamp = int(time.time() * 1000)
            yield frame.slice(lo, hi - lo).with_columns(api_send_ts_ms=pl.lit(stamp, pl.Int64)).write_ndjson().encode()


def create_app(files: Sequence[str]) -> FastAPI:
    """The API over `files` (checked at once: a missing or unreadable file raises SourceError)."""
    paths = [str(Path(f)) for f in files]
    if not paths:
        raise SourceError("the tick API needs at least one tick file")
    refuse_repeats(paths)
    for path in paths:
        source_format(Path(path))
    named = {symbol_from_filename(p) for p in paths}
    known = None if None in named else frozenset(s for s in named if s is not None)
    app = FastAPI(title="mock tick API", version="1.0")

    @app.get("/health")
    def health() -> JSONResponse:
        """Liveness and what the API serves."""
        return JSONResponse({"status": "ok", "files": paths, "symbols": sorted(known) if known else None})

    @app.get("/ticks")
    async def ticks(
        symbols: str | None = Query(None, description="Comma-separated symbols (default: all)."),
        speed: float = Query(1.0, ge=0, le=1_000_000, description="1 = real time, N = N x faster, 0 = max."),
        loop: bool = Query(False, description="Start over at the end, times shifted on."),
        start: str | None = Query(None, description="First event time (epoch ms or ISO 8601; naive = New York)."),
        end: str | None = Query(None, description="End event time, exclusive."),
        live: bool = Query(False, description="Shift event times so the first tick is now."),
    ) -> StreamingResponse:
        """Stream ticks as NDJSON: symbol, ts_ms, price, bid, ask, size, seq, api_send_ts_ms."""
        wanted: frozenset[str] | None = None
        if symbols is not None:
            wanted = frozenset(s.strip().upper() for s in symbols.split(",") if s.strip())
            if not wanted:
                # An explicit list that names nothing is a slip, not "all symbols" (omit the parameter for that).
                raise HTTPException(422, f"symbols: no symbol in {symbols!r}; omit the parameter for all symbols")
            bad = sorted(s for s in wanted if not is_symbol(s))
            if bad:
                raise HTTPException(422, f"symbols: not a symbol: {', '.join(bad)}")
            if known is not None and not wanted <= known:
                missing = ", ".join(sorted(wanted - known))
                raise HTTPException(422, f"symbols: unknown {missing}; available: {', '.join(sorted(known))}")
        start_ms, end_ms = parse_instant(start, "start"), parse_instant(end, "end")
        if start_ms is not None and end_ms is not None and start_ms >= end_ms:
            raise HTTPException(422, "start must be before end")
        chosen = paths if wanted is None or known is None else [
            p for p in paths if symbol_from_filename(p) in wanted
        ]
        query = TickQuery(wanted, speed, loop, start_ms, end_ms, live)
        return StreamingResponse(ndjson_stream(chosen, query), media_type="application/x-ndjson")

    return app


def serve(files: Sequence[str], host: str, port: int) -> None:
    """Run the API with uvicorn until SIGINT/SIGTERM (uvicorn stops gracefully on both)."""
    import uvicorn

    uvicorn.run(create_app(files), host=host, port=port, log_level="warning")


