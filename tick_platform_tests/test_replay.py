"""The offline replay (`replay FILE --to bins.jsonl`): counts, OHLC, contracts, DLQ, speed, live, errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from jsonschema import Draft202012Validator

from streaming.kernel.records import bin_decoder, encode
from streaming.kernel.settings import PROJECT_ROOT, Settings, load_settings
from streaming.replay.offline import replay_to_jsonl
from tick_platform_tests.test_replay_support import (
    SAMPLE_TICKS,
    SAMPLE_VOLUME,
    assert_bins_match_reference,
    data_fields,
    kibot_ticks,
    read_jsonl,
    reference_bins,
    spread,
    write_lines,
)

BIN_SCHEMA = Draft202012Validator(json.loads((PROJECT_ROOT / "docs/contracts/ticks_raw_schema.json").read_text()))
DLQ_SCHEMA = Draft202012Validator(json.loads((PROJECT_ROOT / "docs/contracts/dlq_record_schema.json").read_text()))


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run `python -m streaming ...` like a user does."""
    return subprocess.run(
        [sys.executable, "-m", "streaming", *args], cwd=PROJECT_ROOT, capture_output=True, text=True,
        env={**os.environ, **(env or {})}, timeout=300,
    )


def settings(**replay: object) -> Settings:
    return load_settings(replay=replay)  # type: ignore[arg-type]


@pytest.mark.parametrize("lateness", ["0", "100"])
def test_cli_offline_real_sample(sample_path: Path, tmp_path: Path, lateness: str) -> None:
    bins_path, dlq_path = tmp_path / "bins.jsonl", tmp_path / "dlq.jsonl"
    done = cli("replay", str(sample_path), "--to", str(bins_path), "--dlq", str(dlq_path), "--max-late-ms", lateness)
    assert done.returncode == 0, done.stderr
    assert f"ticks={SAMPLE_TICKS}" in done.stdout and "dlq=0" in done.stdout
    bins = read_jsonl(bins_path)
    assert dlq_path.read_bytes() == b""
    assert sum(b["trade_count"] for b in bins) == SAMPLE_TICKS
    assert sum(b["volume"] for b in bins) == SAMPLE_VOLUME
    assert_bins_match_reference(bins, reference_bins(spread(kibot_ticks(sample_path, "WDC"))))
    for raw in bins_path.read_bytes().splitlines():
        document = json.loads(raw)
        assert not list(BIN_SCHEMA.iter_errors(document))
        assert encode(bin_decoder.decode(raw)) == raw  # the bytes msgspec would write
    assert {b["symbol"] for b in bins} == {"WDC"} and {b["window_ms"] for b in bins} == {10}
    assert [(b["end_ts_ms"], b["symbol"]) for b in bins] == sorted((b["end_ts_ms"], b["symbol"]) for b in bins)
    assert all(b["start_ts_ms"] <= b["source_event_ts_ms"] < b["end_ts_ms"] for b in bins)


def test_same_bins_at_any_speed(sample_path: Path, tmp_path: Path) -> None:
    lines = sample_path.read_text().splitlines()
    first = kibot_ticks(sample_path, "WDC")
    within = [i for i, t in enumerate(first) if t.ts_ms - first[0].ts_ms <= 20_000]
    part = write_lines(tmp_path / "WDC_part.txt", lines[: within[-1] + 1])
    fast = replay_to_jsonl([str(part)], tmp_path / "fast.jsonl", None, settings(speed=0))
    paced = replay_to_jsonl([str(part)], tmp_path / "paced.jsonl", None, settings(speed=80))
    assert fast.ticks == paced.ticks == len(within) and fast.dlq == paced.dlq == 0
    assert paced.lag_p50_ms is not None  # a paced replay measures its publish lag
    assert data_fields(read_jsonl(tmp_path / "fast.jsonl")) == data_fields(read_jsonl(tmp_path / "paced.jsonl"))


def test_malformed_rows_are_dead_lettered_and_the_replay_goes_on(tmp_path: Path) -> None:
    good = [f"02/17/2010,09:30:{s:02d},42.{s:02d},42.0,43.0,{100 + s}" for s in range(0, 50)]
    lines = list(good)
    bad = {
        5: "02/17/2010,09:30:04,42.1,42.0,43.0",
        12: "02/17/2010,09:30:10,x,42.0,43.0,100",
        20: "02/17/2010,09:30:17,-3,42.0,43.0,100",
        30: "02/17/2010,09:30:26,42.5,42.0,43.0,-100",
        40: "13/45/2010,09:30:35,42.5,42.0,43.0,100",
    }
    for line_no in sorted(bad):
        lines.insert(line_no - 1, bad[line_no])
    lines.insert(44, "")
    path = write_lines(tmp_path / "WDC_mixed.txt", lines)
    bins_path, dlq_path = tmp_path / "bins.jsonl", tmp_path / "dlq.jsonl"
    done = cli("replay", str(path), "--to", str(bins_path), "--dlq", str(dlq_path))
    assert done.returncode == 0, done.stderr
    assert "ticks=50 " in done.stdout and "dlq=5 " in done.stdout and "skipped=1 " in done.stdout
    bins = read_jsonl(bins_path)
    assert sum(b["trade_count"] for b in bins) == 50
    assert sum(b["volume"] for b in bins) == sum(100 + s for s in range(50))
    records = read_jsonl(dlq_path)
    for record in records:
        assert not list(DLQ_SCHEMA.iter_errors(record))
    assert [(r["position"]["line"], r["reason"]) for r in records] == [
        (5, "malformed"), (12, "malformed"), (20, "bad_price"), (30, "bad_size"), (40, "bad_time")
    ]
    assert [r["payload"] for r in records] == [bad[n] for n in sorted(bad)]
    assert {r["stage"] for r in records} == {"replay"} and {r["source"] for r in records} == {str(path)}


def test_late_ticks_carry_late_by_and_position(tmp_path: Path) -> None:
    rows = ["02/17/2010,09:30:01,10.0,9.9,10.1,1", "02/17/2010,09:30:05,10.0,9.9,10.1,2",
            "02/17/2010,09:30:02,10.0,9.9,10.1,3", "02/17/2010,09:30:06,10.0,9.9,10.1,4"]
    path = write_lines(tmp_path / "WDC_late.txt", rows)
    summary = replay_to_jsonl([str(path)], tmp_path / "b.jsonl", tmp_path / "d.jsonl", settings(max_late_ms=1000))
    assert (summary.ticks, summary.dlq, summary.dlq_by_reason) == (4, 1, {"late": 1})
    (record,) = read_jsonl(tmp_path / "d.jsonl")
    # watermark = 09:30:05 - 1000 ms = 09:30:04; the tick at 09:30:02 is 2000 ms behind it.
    assert (record["reason"], record["late_by_ms"], record["position"], record["symbol"]) == (
        "late", 2000, {"line": 3}, "WDC"
    )
    assert not list(DLQ_SCHEMA.iter_errors(record))
    assert sum(b["volume"] for b in read_jsonl(tmp_path / "b.jsonl")) == 1 + 2 + 4


def test_missing_file_and_unreadable_format_exit_non_zero_with_one_line(tmp_path: Path) -> None:
    missing = cli("replay", str(tmp_path / "nope.txt"), "--to", str(tmp_path / "b.jsonl"))
    assert missing.returncode != 0
    assert missing.stderr.strip().count("\n") == 0 and "no such file" in missing.stderr
    binary = tmp_path / "WDC_bin.txt"
    binary.write_bytes(bytes(range(256)) * 4)
    unreadable = cli("replay", str(binary), "--to", str(tmp_path / "b.jsonl"))
    assert unreadable.returncode != 0
    assert unreadable.stderr.strip().count("\n") == 0 and "binary" in unreadable.stderr


def test_two_symbols_offline_are_merged_and_sorted(tmp_path: Path) -> None:
    a = write_lines(tmp_path / "AAA_t.txt", [f"02/17/2010,09:30:{s:02d},10.0,9.9,10.1,1" for s in range(0, 40, 2)])
    b = write_lines(tmp_path / "BBB_t.txt", [f"02/17/2010,09:30:{s:02d},20.0,19.9,20.1,1" for s in range(0, 40, 4)])
    summary = replay_to_jsonl([str(a), str(b)], tmp_path / "b.jsonl", None, settings(max_late_ms=0))
    bins = read_jsonl(tmp_path / "b.jsonl")
    assert (summary.ticks, summary.dlq, len(bins)) == (30, 0, 30)
    assert [(x["end_ts_ms"], x["symbol"]) for x in bins] == sorted((x["end_ts_ms"], x["symbol"]) for x in bins)
    assert {x["symbol"] for x in bins} == {"AAA", "BBB"}


def test_live_mode_moves_the_first_tick_to_just_after_now_in_whole_seconds(sample_path: Path, tmp_path: Path) -> None:
    before = int(time.time() * 1000)
    replay_to_jsonl([str(sample_path)], tmp_path / "live.jsonl", None, settings(live=True))
    after = int(time.time() * 1000)
    replay_to_jsonl([str(sample_path)], tmp_path / "hist.jsonl", None, settings(live=False))
    live, hist = read_jsonl(tmp_path / "live.jsonl"), read_jsonl(tmp_path / "hist.jsonl")
    shifts = {x["start_ts_ms"] - y["start_ts_ms"] for x, y in zip(live, hist, strict=True)}
    assert len(shifts) == 1 and next(iter(shifts)) % 1000 == 0
    assert before - 10 < live[0]["start_ts_ms"] < after + 1000  # the first tick at or after now (its bin floors it)
    assert [x["source_event_ts_ms"] for x in live] == [y["source_event_ts_ms"] for y in hist]
    assert [x["volume"] for x in live] == [y["volume"] for y in hist]


def test_loop_replays_the_file_again_shifted_by_whole_seconds(tmp_path: Path) -> None:
    from streaming.cli_support import StopFlag
    from streaming.replay.engine import ReplayEngine

    rows = [f"02/17/2010,09:30:{s:02d},{10 + s / 100:.2f},9.9,10.1,{s + 1}" for s in range(0, 20, 3)]
    path = write_lines(tmp_path / "AAA_loop.txt", rows)
    stop = StopFlag()
    engine = ReplayEngine([str(path)], settings(loop=True, max_late_ms=0).replay, "loop-test", stop=stop)
    rounds: list[list[dict]] = [[]]
    for step in engine.steps():
        while len(rounds) <= engine.round:
            rounds.append([])
        rounds[-1] += step.bins.to_dicts()
        if engine.round == 2:
            stop.set()
    first, second = rounds[0], rounds[1]
    period = ((18 - 0) // 1 + 2) * 1000  # last tick 18 s after the first -> 20 s
    assert len(first) == len(second) == len(rows)
    assert [b["start_ts_ms"] + period for b in first] == [b["start_ts_ms"] for b in second]
    assert [b["volume"] for b in first] == [b["volume"] for b in second]
    assert [b["source_event_ts_ms"] for b in first] == [b["source_event_ts_ms"] for b in second]
