"""The mock tick API: parameters (422), NDJSON stream, filters, live, pacing by pull, and replay from its URL."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import polars as pl
import pytest
from fastapi.testclient import TestClient

from streaming.kernel.errors import SourceError
from streaming.kernel.settings import load_settings
from streaming.replay.offline import replay_to_jsonl
from streaming.sources import api as api_module
from streaming.sources.api import TickQuery, create_app, ndjson_stream
from tick_platform_tests.test_replay_support import (
    SAMPLE_TICKS,
    SAMPLE_VOLUME,
    data_fields,
    eastern_ms,
    kibot_ticks,
    read_jsonl,
    served,
)


@pytest.fixture(scope="module")
def server(sample_path: Path) -> Iterator[str]:
    """A real uvicorn server on a free port, serving the real sample, stopped after the module."""
    with served(create_app([str(sample_path)])) as url:
        yield url


def _lines(url: str) -> list[dict]:
    with httpx.stream("GET", url, timeout=60) as response:
        assert response.status_code == 200
        return [json.loads(line) for line in response.iter_lines() if line]


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("speed=-1", "greater than or equal"),
        ("speed=fast", "valid number"),
        ("symbols=AAPL", "unknown AAPL"),
        ("symbols=wd$c", "not a symbol"),
        ("start=yesterday", "start: expected epoch ms or ISO 8601"),
        ("start=2010-02-17T10:00:00&end=2010-02-17T09:00:00", "start must be before end"),
        ("loop=maybe", "valid boolean"),
    ],
)
def test_bad_parameters_get_422_with_a_message(sample_path: Path, query: str, message: str) -> None:
    client = TestClient(create_app([str(sample_path)]))
    response = client.get(f"/ticks?{query}")
    assert response.status_code == 422
    assert message in response.text


def test_app_refuses_missing_files(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="no such file"):
        create_app([str(tmp_path / "nope.txt")])


def test_health(server: str, sample_path: Path) -> None:
    body = httpx.get(f"{server}/health", timeout=10).json()
    assert body == {"status": "ok", "files": [str(sample_path)], "symbols": ["WDC"]}


def test_stream_at_max_speed_sends_every_tick_with_send_stamps(server: str, sample_path: Path) -> None:
    before = int(time.time() * 1000)
    ticks = _lines(f"{server}/ticks?speed=0&symbols=WDC")
    after = int(time.time() * 1000)
    ref = kibot_ticks(sample_path, "WDC")
    assert len(ticks) == SAMPLE_TICKS and sum(t["size"] for t in ticks) == SAMPLE_VOLUME
    assert [t["ts_ms"] for t in ticks] == [r.ts_ms for r in ref]
    assert [t["seq"] for t in ticks] == list(range(1, SAMPLE_TICKS + 1))
    stamps = [t["api_send_ts_ms"] for t in ticks]
    assert stamps == sorted(stamps) and before <= stamps[0] and stamps[-1] <= after


def test_start_end_filter_and_live_shift(server: str) -> None:
    start, end = eastern_ms("02/17/2010", "10:00:00"), eastern_ms("02/17/2010", "10:01:00")
    window = _lines(f"{server}/ticks?speed=0&start=2010-02-17T10:00:00&end={end}")
    assert window and all(start <= t["ts_ms"] < end for t in window)
    before = int(time.time() * 1000)
    live = _lines(f"{server}/ticks?speed=0&start={start}&end={end}&live=true")
    shift = live[0]["ts_ms"] - window[0]["ts_ms"]
    assert shift % 1000 == 0 and before - 1000 < live[0]["ts_ms"] <= int(time.time() * 1000)
    assert [t["ts_ms"] - shift for t in live] == [t["ts_ms"] for t in window]


def test_loop_continues_with_shifted_times(sample_path: Path) -> None:
    first = kibot_ticks(sample_path, "WDC")
    end = first[99].ts_ms + 1
    query = TickQuery(None, 0.0, True, None, end, False)
    frames = api_module.tick_batches([str(sample_path)], query)
    one = next(frames)
    two = next(frames)
    assert one.height == two.height == 100
    assert (two["ts_ms"] - one["ts_ms"]).unique().to_list() == [((end - 1 - first[0].ts_ms) // 1000 + 2) * 1000]
    assert two["seq"][0] == 101


def test_stream_is_produced_only_as_fast_as_it_is_consumed(sample_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Bounded buffering: the generator reads the next chunk of ticks only when the client pulls for it."""
    reads = []
    real = api_module.read_ticks

    def counting(*args: object, **kw: object):  # type: ignore[no-untyped-def]
        for frame in real(*args, **kw):  # type: ignore[arg-type]
            reads.append(frame.height)
            yield frame

    monkeypatch.setattr(api_module, "read_ticks", counting)
    monkeypatch.setattr(api_module, "READ_ROWS", 1_000)

    async def pull_two() -> list[bytes]:
        stream = ndjson_stream([str(sample_path)], TickQuery(None, 0.0, False, None, None, False))
        got = [await anext(stream), await anext(stream)]
        await stream.aclose()  # type: ignore[attr-defined]
        return got

    batches = asyncio.run(pull_two())
    assert [len(b.splitlines()) for b in batches] == [1_000, 1_000]
    assert reads == [1_000, 1_000]  # 2 of the 20 chunks were read, not the whole file


def test_replay_from_the_api_equals_replay_from_the_file(server: str, sample_path: Path, tmp_path: Path) -> None:
    settings = load_settings()
    from_api = replay_to_jsonl([f"{server}/ticks?speed=0"], tmp_path / "api.jsonl", tmp_path / "dlq.jsonl", settings)
    from_file = replay_to_jsonl([str(sample_path)], tmp_path / "file.jsonl", None, settings)
    assert (from_api.ticks, from_api.dlq, from_api.bins) == (SAMPLE_TICKS, 0, from_file.bins)
    api_bins, file_bins = read_jsonl(tmp_path / "api.jsonl"), read_jsonl(tmp_path / "file.jsonl")
    assert data_fields(api_bins) == data_fields(file_bins)
    assert all(b["api_send_ts_ms"] is not None for b in api_bins)
    # A bin's api_send_ts_ms is the earliest send stamp of its ticks: never after it was published.
    assert all(b["api_send_ts_ms"] <= b["ingest_ts_ms"] for b in api_bins)
    assert pl.DataFrame(api_bins)["volume"].sum() == SAMPLE_VOLUME


def test_replay_from_an_unreachable_api_is_a_source_error(tmp_path: Path) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(SourceError, match=f"127.0.0.1:{port}"):
        replay_to_jsonl([f"http://127.0.0.1:{port}/ticks"], tmp_path / "b.jsonl", None, load_settings())
