"""Hostile input, issue 15 items 5-7: chunking, the repeated DST hour, file order by symbol.

Every file is generated here; the expected bins and bars are computed in plain Python
(csv, zoneinfo, dicts), independently of the replay's polars readers.

* Item 5: bins never depend on `--chunk-rows` or where a chunk boundary falls (hypothesis over
  chunk sizes, spread on and off, for Kibot, generic CSV, Parquet and the mock API stream).
* Item 6: a file walking through the repeated hour of 2024-11-03 keeps every tick: file order
  decides EDT then EST, in every chunking and every local-time format, and the validator agrees.
* Item 7: a multi-symbol file sorted by symbol, and several files of one symbol in any order,
  are merged by time: nothing is dead-lettered as late except what is late in its own stream.
"""

from __future__ import annotations

import dataclasses
import os
import re
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import polars as pl
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from streaming.kernel.bar_spec import time_bars
from streaming.kernel.settings import PROJECT_ROOT, Settings, load_settings
from streaming.kernel.wallclock import RepeatedHour, second_pass_flags
from streaming.replay.engine import ReplayEngine
from streaming.replay.offline import replay_to_jsonl
from streaming.sources.api import create_app
from streaming.sources.files import plan_parts, read_ticks, tick_stream
from streaming.validate.ticks import read_kibot as validator_read_kibot
from tick_platform_tests.test_replay_support import (
    DATA_FIELDS,
    RefTick,
    assert_bins_match_reference,
    read_jsonl,
    reference_bins,
    served,
)

NEW_YORK = ZoneInfo("America/New_York")
T0 = 1_709_908_200_000  # 2024-03-08 14:30:00 UTC = 09:30 in New York
FALL_BACK_UTC = datetime(2024, 11, 3, 4, 50, tzinfo=UTC)  # 00:50 EDT, 70 minutes before the clocks go back


# ---- helpers ------------------------------------------------------------------------------------


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    """Run `python -m streaming ...` like a user does."""
    return subprocess.run(
        [sys.executable, "-m", "streaming", *args], cwd=PROJECT_ROOT, capture_output=True, text=True,
        env=dict(os.environ), timeout=300,
    )


def counts(stdout: str) -> dict[str, int]:
    """ticks, bins, dlq, skipped of the replay's last line."""
    match = re.search(r"ticks=(\d+) bins=(\d+) dlq=(\d+)(?: \([^)]*\))? skipped=(\d+)", stdout)
    assert match, stdout
    return dict(zip(("ticks", "bins", "dlq", "skipped"), map(int, match.groups()), strict=True))


def replay_settings(chunk_rows: int = 200_000, **replay: object) -> Settings:
    """Settings with any chunk size (the CLI's floor of 1,000 rows bypassed to cut tiny files often)."""
    loaded = load_settings(replay=replay)  # type: ignore[arg-type]
    return dataclasses.replace(loaded, replay=loaded.replay.model_copy(update={"chunk_rows": chunk_rows}))


def replay_bins(paths: list[str], chunk_rows: int, **replay: object) -> tuple[list[dict], list[dict]]:
    """Bins and DLQ records of an in-process offline replay."""
    with tempfile.TemporaryDirectory() as tmp:
        out, dlq = Path(tmp) / "bins.jsonl", Path(tmp) / "dlq.jsonl"
        replay_to_jsonl(paths, out, dlq, replay_settings(chunk_rows, **replay))
        return read_jsonl(out), read_jsonl(dlq)


def data(bins: list[dict]) -> list[tuple]:
    """What a bin says about the data (not when it was made)."""
    return [tuple(b[f] for f in DATA_FIELDS if f != "source") for b in bins]


def spread_whole_seconds(ticks: list[RefTick]) -> list[RefTick]:
    """The documented rule: a run of one second (one symbol) whose ticks all sit on .000 is spread."""
    out: list[RefTick] = []
    i = 0
    while i < len(ticks):
        j = i
        while j < len(ticks) and (ticks[j].ts_ms // 1000, ticks[j].symbol) == (ticks[i].ts_ms // 1000, ticks[i].symbol):
            j += 1
        run = ticks[i:j]
        whole = all(t.ts_ms % 1000 == 0 for t in run)
        out.extend(
            RefTick(t.symbol, t.ts_ms + (k * 1000) // len(run) if whole else t.ts_ms, t.price, t.size)
            for k, t in enumerate(run)
        )
        i = j
    return out


def reference_bars(ticks: list[RefTick], window_ms: int = 1000) -> dict[str, dict[str, float | int]]:
    """bar_id -> OHLCV of ticks in their (merged) order: plain dicts."""
    bars: dict[str, dict[str, float | int]] = {}
    for t in ticks:
        start = (t.ts_ms // window_ms) * window_ms
        key = f"{t.symbol}-{start:013d}-{time_bars(window_ms).text}"
        bar = bars.setdefault(key, {"open": t.price, "high": t.price, "low": t.price, "volume": 0, "trade_count": 0,
                                    "notional": 0.0})
        bar["high"], bar["low"] = max(bar["high"], t.price), min(bar["low"], t.price)
        bar["close"] = t.price
        bar["volume"] += t.size
        bar["notional"] += t.price * t.size
        bar["trade_count"] += 1
    return bars


def assert_bars_match(bars: list[dict], reference: dict[str, dict[str, float | int]]) -> None:
    """Every bar equals its reference bar (one bar per id, none missing)."""
    assert sorted(b["bar_id"] for b in bars) == sorted(reference)
    for bar in bars:
        ref = reference[bar["bar_id"]]
        ohlc = ("open", "high", "low", "close")
        assert tuple(bar[f] for f in ohlc) == tuple(ref[f] for f in ohlc)
        assert (bar["volume"], bar["trade_count"]) == (ref["volume"], ref["trade_count"])
        assert bar["vwap"] == pytest.approx(ref["notional"] / ref["volume"], rel=1e-9)


def kibot_line(moment: datetime, price: float, size: int) -> str:
    """A Kibot row for an aware moment, written as New York wall clock."""
    local = moment.astimezone(NEW_YORK)
    return f"{local:%m/%d/%Y},{local:%H:%M:%S},{price:.2f},{price - 0.01:.2f},{price + 0.01:.2f},{size}"


# ---- item 5: chunking ---------------------------------------------------------------------------


def chunk_ticks(sub_second: bool) -> list[RefTick]:
    """60 s of one symbol, 1-6 ticks a second; with `sub_second`, seconds 20-39 carry ms times.

    The first seconds are whole, so a reader deciding "spread or not" from its first chunk would
    spread the sub-second ones too (and one reading the whole file at once would spread none).
    """
    ticks: list[RefTick] = []
    for second in range(60):
        n = 1 + (second * 7) % 6
        ms = sorted({(j * 137 + second * 11) % 1000 for j in range(n)}) if sub_second and 20 <= second < 40 else [0] * n
        for k, offset in enumerate(ms):
            ticks.append(RefTick("AAA", T0 + second * 1000 + offset, round(10 + ((second * 31 + k) % 50) / 100, 2),
                                 100 + k))
    return ticks


def write_chunk_file(directory: Path, fmt: str) -> tuple[Path, list[RefTick]]:
    """The chunking file in one format and its ticks in file order."""
    if fmt == "kibot":
        ticks = chunk_ticks(sub_second=False)
        path = directory / "AAA_chunks.txt"
        path.write_text("".join(
            kibot_line(datetime.fromtimestamp(t.ts_ms / 1000, UTC), t.price, t.size) + "\n" for t in ticks
        ))
        return path, ticks
    ticks = chunk_ticks(sub_second=True)
    rows = {"symbol": [t.symbol for t in ticks], "ts_ms": [t.ts_ms for t in ticks],
            "price": [t.price for t in ticks], "size": [t.size for t in ticks]}
    if fmt == "parquet":
        path = directory / "chunks.parquet"
        pl.DataFrame(rows).write_parquet(path, row_group_size=37)
        return path, ticks
    path = directory / "chunks.csv"
    path.write_text("symbol,ts_ms,price,size\n" + "".join(
        f"{t.symbol},{t.ts_ms},{t.price:.2f},{t.size}\n" for t in ticks
    ))
    return path, ticks


@pytest.fixture(scope="module")
def chunk_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, list[RefTick]]]:
    """One chunking file per file format."""
    directory = tmp_path_factory.mktemp("chunks")
    return {fmt: write_chunk_file(directory, fmt) for fmt in ("kibot", "csv", "parquet")}


@pytest.fixture(scope="module")
def api_url(chunk_files: dict[str, tuple[Path, list[RefTick]]]) -> Iterator[str]:
    """The mock API (real uvicorn) serving the sub-second CSV of the chunking test."""
    with served(create_app([str(chunk_files["csv"][0])])) as url:
        yield f"{url}/ticks?speed=0"


@pytest.mark.parametrize("fmt", ["kibot", "csv", "parquet", "api"])
@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(chunk_rows=st.integers(1, 260), spread=st.booleans())
def test_bins_do_not_depend_on_chunking(
    chunk_files: dict[str, tuple[Path, list[RefTick]]], api_url: str, fmt: str, chunk_rows: int, spread: bool
) -> None:
    path, ticks = chunk_files["csv" if fmt == "api" else fmt]
    source = api_url if fmt == "api" else str(path)
    bins, dlq = replay_bins([source], chunk_rows, spread=spread, max_late_ms=0)
    whole, _ = replay_bins([source], 1_000_000, spread=spread, max_late_ms=0)
    assert dlq == []
    assert data(bins) == data(whole)
    assert_bins_match_reference(bins, reference_bins(spread_whole_seconds(ticks) if spread else ticks))


def test_a_second_across_a_chunk_boundary_is_spread_whole(tmp_path: Path) -> None:
    start = datetime.fromtimestamp(T0 / 1000, UTC)
    path = tmp_path / "AAA_boundary.txt"
    # Five ticks of one second; chunks of 3 lines cut it after the third.
    path.write_text("".join(kibot_line(start, 10 + k / 100, 1 + k) + "\n" for k in range(5)))
    times = [t for chunk in tick_stream([path], chunk_rows=3, spread=True) for t in chunk.ticks["ts_ms"].to_list()]
    assert times == [T0, T0 + 200, T0 + 400, T0 + 600, T0 + 800]


# ---- item 6: the repeated hour ------------------------------------------------------------------


def fall_back_ticks() -> list[tuple[datetime, float, int]]:
    """840 ticks every 10 s from 00:50 EDT to 02:10 EST: 01:00-01:59 twice, in true time order."""
    return [(FALL_BACK_UTC + timedelta(seconds=10 * i), round(20 + (i % 97) / 100, 2), 100 + i) for i in range(840)]


def true_ticks(symbol: str = "DST") -> list[RefTick]:
    """The fall-back ticks with their true UTC times (no wall clock involved)."""
    return [RefTick(symbol, int(m.timestamp() * 1000), p, s) for m, p, s in fall_back_ticks()]


def write_fall_back(directory: Path, fmt: str) -> Path:
    """The fall-back walk as Kibot, CSV date+time, CSV naive ISO time, or Parquet naive datetime."""
    rows = [(m.astimezone(NEW_YORK).replace(tzinfo=None), p, s) for m, p, s in fall_back_ticks()]
    if fmt == "kibot":
        path = directory / "DST_tickbidask.txt"
        path.write_text("".join(kibot_line(m, p, s) + "\n" for m, p, s in fall_back_ticks()))
    elif fmt == "csv_date_time":
        path = directory / "dst_date_time.csv"
        path.write_text("symbol,date,time,price,size\n" + "".join(
            f"DST,{w:%m/%d/%Y},{w:%H:%M:%S},{p:.2f},{s}\n" for w, p, s in rows
        ))
    elif fmt == "csv_iso":
        path = directory / "dst_iso.csv"
        path.write_text("symbol,timestamp,price,size\n" + "".join(
            f"DST,{w:%Y-%m-%d %H:%M:%S},{p:.2f},{s}\n" for w, p, s in rows
        ))
    else:
        path = directory / "dst.parquet"
        pl.DataFrame({"symbol": ["DST"] * len(rows), "timestamp": [w for w, _, _ in rows],
                      "price": [p for _, p, _ in rows], "size": [s for _, _, s in rows]}).write_parquet(
            path, row_group_size=100
        )
    return path


def test_a_walk_through_the_repeated_hour_keeps_every_tick(tmp_path: Path) -> None:
    path = write_fall_back(tmp_path, "kibot")
    bins_path, dlq_path, bars_path = tmp_path / "bins.jsonl", tmp_path / "dlq.jsonl", tmp_path / "bars.jsonl"
    done = cli("replay", str(path), "--to", str(bins_path), "--dlq", str(dlq_path))
    assert done.returncode == 0, done.stderr
    assert counts(done.stdout) == {"ticks": 840, "bins": 840, "dlq": 0, "skipped": 0}
    assert read_jsonl(dlq_path) == []
    truth = true_ticks()
    assert_bins_match_reference(read_jsonl(bins_path), reference_bins(truth))
    aggregated = cli("aggregate", "--from", str(bins_path), "--to", str(bars_path))
    assert aggregated.returncode == 0, aggregated.stderr
    assert_bars_match(read_jsonl(bars_path), reference_bars(truth))
    checked = cli("validate", "--bins", str(bins_path), "--bars", str(bars_path), "--ticks", str(path))
    assert checked.returncode == 0 and "verdict: PASS" in checked.stdout, checked.stdout + checked.stderr


@pytest.mark.parametrize("fmt", ["kibot", "csv_date_time", "csv_iso", "parquet"])
@pytest.mark.parametrize("chunk_rows", [1, 7, 359, 420, 421, 1_000_000])
def test_the_repeated_hour_rule_holds_in_every_chunking_and_local_time_format(
    tmp_path: Path, fmt: str, chunk_rows: int
) -> None:
    path = write_fall_back(tmp_path, fmt)
    ticks = pl.concat(list(read_ticks(path, chunk_rows=chunk_rows)))
    assert ticks["ts_ms"].to_list() == [t.ts_ms for t in true_ticks()]


def test_the_validator_reads_the_repeated_hour_as_the_replay_does(tmp_path: Path) -> None:
    path = write_fall_back(tmp_path, "kibot")
    # Two walks through the hour in one file (2023 and 2024): each November on its own.
    earlier = [kibot_line(m - timedelta(days=364), p, s) for m, p, s in fall_back_ticks()]
    path.write_text("\n".join(earlier) + "\n" + path.read_text())
    validator = validator_read_kibot(path).ticks["ts_ms"].to_list()
    replay = pl.concat(list(read_ticks(path, chunk_rows=100)))["ts_ms"].to_list()
    truth = [int((m - timedelta(days=364)).timestamp() * 1000) for m, _, _ in fall_back_ticks()]
    truth += [t.ts_ms for t in true_ticks()]
    assert validator == replay == truth


def test_the_spring_gap_stays_bad_time(tmp_path: Path) -> None:
    path = tmp_path / "GAP_tickbidask.txt"
    path.write_text("03/10/2024,01:59:59,10.00,9.99,10.01,100\n03/10/2024,02:30:00,10.00,9.99,10.01,100\n"
                    "03/10/2024,03:00:00,10.00,9.99,10.01,100\n")
    bins, dlq = replay_bins([str(path)], 1000)
    assert [(d["reason"], d["position"]["line"]) for d in dlq] == [("bad_time", 2)]
    assert sum(b["trade_count"] for b in bins) == 2


@settings(max_examples=200, deadline=None)
@given(times=st.lists(st.integers(0, 7_199_999), max_size=40), cut=st.integers(0, 40))
def test_the_repeated_hour_state_carries_across_chunks(times: list[int], cut: int) -> None:
    start = int(datetime(2024, 11, 3, 5, tzinfo=UTC).timestamp() * 1000)
    ts = [start + t % 3_600_000 for t in times]
    whole, _ = second_pass_flags(ts, RepeatedHour())
    head, state = second_pass_flags(ts[:cut], RepeatedHour())
    tail, _ = second_pass_flags(ts[cut:], state)
    assert head + tail == whole
    # First pass until the wall clock first steps back, second pass from there on.
    back = next((i for i in range(1, len(ts)) if ts[i] < max(ts[:i])), len(ts))
    assert whole == [i >= back for i in range(len(ts))]


# ---- item 7: file order -------------------------------------------------------------------------


def symbol_ticks(symbol: str, offset: int, n: int = 400) -> list[RefTick]:
    """n ticks of one symbol over n/2 seconds of the same morning, ms times never on .000."""
    return [
        RefTick(symbol, T0 + (i // 2) * 1000 + 1 + (i * 379 + offset) % 998, round(10 + offset + (i % 41) / 100, 2),
                1 + (i * 7 + offset) % 300)
        for i in range(n)
    ]


def in_order(ticks: list[RefTick]) -> list[RefTick]:
    """A stream's ticks as the replay sees them: its own order (each symbol's ticks sorted by time here)."""
    return sorted(ticks, key=lambda t: t.ts_ms)


def test_a_csv_sorted_by_symbol_is_merged_by_time(tmp_path: Path) -> None:
    per_symbol = {s: in_order(symbol_ticks(s, k)) for k, s in enumerate(("AAA", "BBB", "CCC"))}
    lines = ["symbol,ts_ms,price,size"]
    for symbol_rows in per_symbol.values():
        lines += [f"{t.symbol},{t.ts_ms},{t.price:.2f},{t.size}" for t in symbol_rows]
        lines += ["", f"{symbol_rows[0].symbol},{T0},not-a-price,5"]  # a blank line and a malformed row per block
    path = tmp_path / "sorted_by_symbol.csv"
    path.write_text("\n".join(lines) + "\n")
    bins_path, dlq_path, bars_path = tmp_path / "bins.jsonl", tmp_path / "dlq.jsonl", tmp_path / "bars.jsonl"
    done = cli("replay", str(path), "--to", str(bins_path), "--dlq", str(dlq_path), "--chunk-rows", "1000")
    assert done.returncode == 0, done.stderr
    got = counts(done.stdout)
    assert got["ticks"] + got["dlq"] + got["skipped"] == len(lines)
    assert (got["ticks"], got["dlq"], got["skipped"]) == (1200, 3, 4)
    dlq = read_jsonl(dlq_path)
    assert sorted((d["reason"], d["position"]["line"]) for d in dlq) == [
        ("malformed", 403), ("malformed", 805), ("malformed", 1207)
    ]
    truth = [t for rows in per_symbol.values() for t in rows]
    assert_bins_match_reference(read_jsonl(bins_path), reference_bins(truth))
    aggregated = cli("aggregate", "--from", str(bins_path), "--to", str(bars_path))
    assert aggregated.returncode == 0, aggregated.stderr
    assert_bars_match(read_jsonl(bars_path), reference_bars(truth))


def test_a_parquet_file_sorted_by_symbol_is_merged_by_time(tmp_path: Path) -> None:
    truth = [t for k, s in enumerate(("AAA", "BBB")) for t in in_order(symbol_ticks(s, k))]
    path = tmp_path / "sorted.parquet"
    pl.DataFrame({"symbol": [t.symbol for t in truth], "ts_ms": [t.ts_ms for t in truth],
                  "price": [t.price for t in truth], "size": [t.size for t in truth]}).write_parquet(
        path, row_group_size=150
    )
    assert len(plan_parts([str(path)])) == 2
    bins, dlq = replay_bins([str(path)], 64, max_late_ms=0)
    assert dlq == []
    assert_bins_match_reference(bins, reference_bins(truth))


def test_a_tick_late_within_its_own_symbol_still_goes_to_the_dlq(tmp_path: Path) -> None:
    aaa, bbb = in_order(symbol_ticks("AAA", 0)), in_order(symbol_ticks("BBB", 1))
    # BBB's tick 301 arrives 5 s behind BBB's own clock: late in its own stream, whatever AAA did.
    late = RefTick("BBB", bbb[300].ts_ms - 5_000, 99.0, 7)
    rows = aaa + bbb[:301] + [late] + bbb[301:]
    path = tmp_path / "late.csv"
    path.write_text("symbol,ts_ms,price,size\n" + "".join(f"{t.symbol},{t.ts_ms},{t.price:.2f},{t.size}\n"
                                                          for t in rows))
    bins, dlq = replay_bins([str(path)], 100, max_late_ms=100)
    assert [(d["reason"], d["position"]["line"], d["symbol"]) for d in dlq] == [("late", 1 + 400 + 301 + 1, "BBB")]
    assert_bins_match_reference(bins, reference_bins(aaa + bbb))


@pytest.mark.parametrize("order", ["day2_first", "overlapping"])
def test_several_files_of_one_symbol_are_merged_by_time(tmp_path: Path, order: str) -> None:
    day1 = datetime(2024, 3, 7, 14, 30, tzinfo=UTC)
    shift = timedelta(days=1) if order == "day2_first" else timedelta(seconds=30)
    first = [(day1 + timedelta(seconds=i // 3), 10 + i / 100, 1 + i) for i in range(180)]
    second = [(m + shift, p + 1, s + 1000) for m, p, s in first]
    a, b = tmp_path / "WDC_day1.txt", tmp_path / "WDC_day2.txt"
    a.write_text("".join(kibot_line(m, p, s) + "\n" for m, p, s in first))
    b.write_text("".join(kibot_line(m, p, s) + "\n" for m, p, s in second))
    sources = [str(b), str(a)] if order == "day2_first" else [str(a), str(b)]
    bins_path, dlq_path = tmp_path / "bins.jsonl", tmp_path / "dlq.jsonl"
    done = cli("replay", *sources, "--to", str(bins_path), "--dlq", str(dlq_path))
    assert done.returncode == 0, done.stderr
    assert counts(done.stdout)["ticks"] == 360 and counts(done.stdout)["dlq"] == 0
    # Each file spread on its own (3 ticks a second), then merged by (time, file given first).
    per_file = [
        spread_whole_seconds([RefTick("WDC", int(m.timestamp() * 1000), round(p, 2), s) for m, p, s in rows])
        for rows in ((second, first) if order == "day2_first" else (first, second))
    ]
    merged = sorted(((t.ts_ms, src, i, t) for src, rows in enumerate(per_file) for i, t in enumerate(rows)),
                    key=lambda x: x[:3])
    assert_bins_match_reference(read_jsonl(bins_path), reference_bins(t for *_, t in merged))


def test_a_time_ordered_multi_symbol_file_stays_one_stream(tmp_path: Path) -> None:
    # Symbols alternate row by row (the usual export): more blocks than the split takes.
    ticks = sorted((t for k, s in enumerate(("AAA", "BBB")) for t in symbol_ticks(s, k, 1500)), key=lambda t: t.ts_ms)
    path = tmp_path / "time_ordered.csv"
    path.write_text("symbol,ts_ms,price,size\n" + "".join(f"{t.symbol},{t.ts_ms},{t.price:.2f},{t.size}\n"
                                                          for t in ticks))
    assert len(plan_parts([str(path)])) == 1
    bins, dlq = replay_bins([str(path)], 500, max_late_ms=0)
    assert dlq == []
    assert_bins_match_reference(bins, reference_bins(ticks))


def test_symbol_streams_hold_one_chunk_each(tmp_path: Path) -> None:
    truth = [t for k, s in enumerate(("AAA", "BBB", "CCC", "DDD")) for t in in_order(symbol_ticks(s, k, 2000))]
    path = tmp_path / "big_sorted.csv"
    path.write_text("symbol,ts_ms,price,size\n" + "".join(f"{t.symbol},{t.ts_ms},{t.price:.2f},{t.size}\n"
                                                          for t in truth))
    sizes = [chunk.ticks.height for chunk in tick_stream([path], chunk_rows=100)]
    # Four streams of 100-row chunks: a step of the merge holds at most two chunks of each, never
    # a whole symbol block (one stream for the file would have to hold all of AAA before BBB).
    assert sum(sizes) == len(truth) and max(sizes) <= 4 * 2 * 100


@pytest.mark.parametrize("stop_after", [1, 4, 9])
def test_a_symbol_sorted_file_resumes_exactly_from_a_checkpoint(tmp_path: Path, stop_after: int) -> None:
    truth = [t for k, s in enumerate(("AAA", "BBB", "CCC")) for t in in_order(symbol_ticks(s, k))]
    path = tmp_path / "resume.csv"
    path.write_text("symbol,ts_ms,price,size\n" + "".join(f"{t.symbol},{t.ts_ms},{t.price:.2f},{t.size}\n"
                                                          for t in truth))
    replay = replay_settings(60, max_late_ms=0).replay
    engine = ReplayEngine([str(path)], replay, "resume-test")
    before: list[pl.DataFrame] = []
    for number, step in enumerate(engine.steps()):
        before.append(step.bins)
        if number == stop_after:
            break
    # A restart: a new engine from the checkpoint of what was written so far.
    again = ReplayEngine([str(path)], replay, "resume-test", resume=engine.checkpoint())
    after = [step.bins for step in again.steps()]
    bins = pl.concat([b for b in before + after if b.height]).to_dicts()
    assert len({b["bin_id"] for b in bins}) == len(bins)
    assert_bins_match_reference(bins, reference_bins(truth))


def test_many_symbol_streams_hold_no_file_open_each(tmp_path: Path) -> None:
    letters = "ABCDEFGHIJ"
    symbols = ["S" + "".join(letters[int(d)] for d in f"{k:03d}") for k in range(150)]
    truth = [RefTick(s, T0 + i * 1000 + 5, 10.0 + i, 1 + i) for s in symbols for i in range(3)]
    path = tmp_path / "many_symbols.csv"
    path.write_text("symbol,ts_ms,price,size\n" + "".join(f"{t.symbol},{t.ts_ms},{t.price:.2f},{t.size}\n"
                                                          for t in truth))
    bins_path = tmp_path / "bins.jsonl"
    # 150 symbol streams under a limit of 64 open files: a stream must not keep its file open.
    done = subprocess.run(
        ["/bin/sh", "-c", 'ulimit -n 64 && exec "$0" -m streaming replay "$1" --to "$2"', sys.executable, str(path),
         str(bins_path)], cwd=PROJECT_ROOT, capture_output=True, text=True, env=dict(os.environ), timeout=300,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert counts(done.stdout)["dlq"] == 0
    assert_bins_match_reference(read_jsonl(bins_path), reference_bins(truth))
