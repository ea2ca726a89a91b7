"""Ticks from the mock API's NDJSON stream, in chunks, for the replay (the client edge)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

import httpx
import msgspec
import polars as pl

from streaming.kernel.errors import SourceError
from streaming.sources.frames import TickChunk, checked

WIRE_SCHEMA = {
    "symbol": pl.String, "ts_ms": pl.Int64, "price": pl.Float64, "bid": pl.Float64, "ask": pl.Float64,
    "size": pl.Int64, "seq": pl.Int64, "api_send_ts_ms": pl.Int64,
}
# An API at speed 1 trickles: hand on what arrived at least this often.
MAX_HOLD_S = 0.05


@dataclass(frozen=True)
class ApiSpeed:
    """The URL a replay requests and the pacing speed the API applies to it."""

    url: str
    speed: str
    from_url: bool  # the URL set `speed` itself (else it is the replay's --speed)

    def line(self) -> str:
        """One line for the replay's start: which speed is in force, and where it comes from."""
        meaning = {"0": "as fast as possible", "1": "real time"}.get(self.speed, f"{self.speed} x real time")
        origin = "set in the URL" if self.from_url else "the replay's --speed, passed to the API"
        return f"replay from {self.url}: speed {self.speed} ({meaning}), {origin}"


def with_replay_speed(url: str, speed: float) -> ApiSpeed:
    """`url` with the replay's `speed` as its `speed` parameter, unless the URL sets one (it wins).

    The API paces its stream (default speed 1 there) and the replay does not pace an API source
    again, so without this a replay at its default speed 0 would trickle at real time.
    """
    parts = urlsplit(url)
    query = parse_qsl(parts.query, keep_blank_values=True)
    given = [value for key, value in query if key == "speed"]
    if given:
        return ApiSpeed(url, given[-1], True)
    text = f"{speed:g}"
    return ApiSpeed(urlunsplit(parts._replace(query=urlencode([*query, ("speed", text)]))), text, False)


class _WireTick(msgspec.Struct):
    symbol: str
    ts_ms: int
    price: float
    size: int
    bid: float | None = None
    ask: float | None = None
    seq: int | None = None
    api_send_ts_ms: int | None = None


_wire_decoder = msgspec.json.Decoder(_WireTick)


def parse_ndjson_lines(lines: list[bytes], first_line: int, url: str, src: int) -> TickChunk:
    """Decode a batch of NDJSON lines; lines that are not tick JSON become `malformed` rejects."""
    rows: list[dict[str, object]] = []
    bad: list[tuple[int, str, str]] = []
    for offset, raw in enumerate(lines):
        number = first_line + offset
        if not raw.strip():
            continue
        try:
            tick = _wire_decoder.decode(raw)
        except msgspec.DecodeError as exc:
            bad.append((number, str(exc), raw.decode("utf-8", errors="replace")))
            continue
        rows.append({**msgspec.structs.asdict(tick), "line": number, "payload": ""})
    frame = pl.DataFrame(rows, schema={**WIRE_SCHEMA, "line": pl.Int64, "payload": pl.String})
    candidates = frame.select(
        "line", "payload", "symbol", "ts_ms", "price", "bid", "ask", "size",
        pl.lit(None, pl.String).alias("reason"), pl.lit(None, pl.String).alias("detail"),
    )
    judged = checked(candidates, url, src)
    sends = frame.filter(pl.col("line").is_in(judged.ticks["line"].implode()))["api_send_ts_ms"]
    ticks = judged.ticks.with_columns(api_send_ts_ms=sends)
    rejects = judged.rejects.with_columns(
        payload=pl.when(pl.col("payload") == "").then(pl.lit("(tick json)")).otherwise(pl.col("payload"))
    )
    if bad:
        extra = pl.DataFrame(
            {
                "file": [url] * len(bad), "line": [b[0] for b in bad], "src": [src] * len(bad),
                "reason": ["malformed"] * len(bad), "detail": [b[1] for b in bad], "payload": [b[2] for b in bad],
            },
            schema=rejects.schema,
        )
        rejects = pl.concat([rejects, extra])
    return TickChunk(ticks, rejects)


def api_ticks(url: str, chunk_rows: int, src: int = 0, timeout_s: float = 30.0) -> Iterator[TickChunk]:
    """Stream `url` (the API's /ticks) as TickChunks; SourceError when it cannot be reached or refuses."""
    try:
        with httpx.stream("GET", url, timeout=httpx.Timeout(timeout_s, read=None)) as response:
            if response.status_code != 200:
                response.read()
                raise SourceError(f"{url}: HTTP {response.status_code}: {response.text[:300]}")
            pending = b""
            lines: list[bytes] = []
            line_no = 1
            held_since = time.monotonic()
            for data in response.iter_bytes():
                pending += data
                parts = pending.split(b"\n")
                pending = parts.pop()
                lines.extend(parts)
                if len(lines) >= chunk_rows or (lines and time.monotonic() - held_since >= MAX_HOLD_S):
                    yield parse_ndjson_lines(lines, line_no, url, src)
                    line_no += len(lines)
                    lines = []
                    held_since = time.monotonic()
            if pending.strip():
                lines.append(pending)
            if lines:
                yield parse_ndjson_lines(lines, line_no, url, src)
    except httpx.HTTPError as exc:
        raise SourceError(f"{url}: {type(exc).__name__}: {exc}") from None
