"""`python -m streaming validate` on known-good inputs with planted faults: each is caught, exit non-zero."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import msgspec
import pytest
from typer.testing import CliRunner

from streaming.cli import app
from streaming.kernel.records import Bar, Bin
from streaming.validate.reference import reference_bars, reference_bins, write_jsonl
from streaming.validate.ticks import read_kibot

INGEST_MS = 1_790_000_000_000


@pytest.fixture(scope="module")
def clean(sample_path: Path) -> tuple[list[Bin], list[Bar]]:
    bins = reference_bins(read_kibot(sample_path).ticks, 10, True, INGEST_MS)
    return bins, reference_bars(bins, 1000, INGEST_MS + 40)


def _validate(tmp_path: Path, bins: list[Bin] | None, bars: list[Bar], *extra: str) -> tuple[int, dict[str, Any], str]:
    args = ["validate", "--bars", str(write_jsonl(tmp_path / "bars.jsonl", bars)), "--json", str(tmp_path / "r.json")]
    if bins is not None:
        args += ["--bins", str(write_jsonl(tmp_path / "bins.jsonl", bins))]
    result = CliRunner().invoke(app, [*args, *extra])
    report = json.loads((tmp_path / "r.json").read_text())
    return result.exit_code, report, result.output


def _check(report: dict[str, Any], name: str) -> dict[str, Any]:
    return next(c for c in report["comparisons"] if c["name"] == name)


def test_clean_three_way_check_passes(tmp_path: Path, sample_path: Path, clean: tuple[list[Bin], list[Bar]]) -> None:
    code, report, output = _validate(tmp_path, *clean, "--ticks", str(sample_path))
    assert code == 0, output
    assert report["verdict"] == "PASS"
    assert [c["name"] for c in report["comparisons"]] == ["bars <- bins", "bins <- ticks", "bars <- ticks"]
    assert report["totals"]["bars"] == 5049
    assert report["totals"]["ticks"] == 20000
    assert report["totals"]["bar_volume"] == report["totals"]["tick_volume"] == 3_582_490
    assert report["latency_ms"]["bin_to_bar"]["p99"] == 40
    assert report["headline_latency"] == "bin_to_bar"
    assert "verdict: PASS" in output


def test_removed_bar_is_missing(tmp_path: Path, sample_path: Path, clean: tuple[list[Bin], list[Bar]]) -> None:
    bins, bars = clean
    gone = bars[1234]
    code, report, output = _validate(tmp_path, bins, bars[:1234] + bars[1235:], "--ticks", str(sample_path))
    assert code == 1
    for name in ("bars <- bins", "bars <- ticks"):
        check = _check(report, name)
        assert (check["missing_count"], check["extra_count"], check["ok"]) == (1, 0, False)
        assert check["missing_examples"] == [gone.bar_id]
    assert gone.bar_id in output
    assert "verdict: FAIL" in output


def test_duplicated_bar_is_reported(tmp_path: Path, clean: tuple[list[Bin], list[Bar]]) -> None:
    bins, bars = clean
    code, report, _ = _validate(tmp_path, bins, [*bars, bars[10]])
    assert code == 1
    check = _check(report, "bars <- bins")
    assert check["duplicate_count"] == 1
    assert check["duplicate_examples"] == [f"{bars[10].bar_id} rev 0"]
    assert check["missing_count"] == check["extra_count"] == 0
    assert check["diff_counts"] == {}


def test_changed_high_is_a_field_difference(tmp_path: Path, sample_path: Path,
                                            clean: tuple[list[Bin], list[Bar]]) -> None:
    bins, bars = clean
    bad = msgspec.structs.replace(bars[77], high=bars[77].high + 0.01)
    code, report, output = _validate(tmp_path, bins, [*bars[:77], bad, *bars[78:]], "--ticks", str(sample_path))
    assert code == 1
    for name in ("bars <- bins", "bars <- ticks"):
        check = _check(report, name)
        assert check["diff_counts"] == {"high": 1}
        assert check["diff_examples"][0] == {"key": bad.bar_id, "field": "high", "expected": bars[77].high,
                                             "actual": bad.high}
    assert _check(report, "bins <- ticks")["ok"]
    assert f"{bad.bar_id} high" in output


def test_dropped_bin_is_caught_with_and_without_ticks(tmp_path: Path, sample_path: Path,
                                                     clean: tuple[list[Bin], list[Bar]]) -> None:
    bins, bars = clean
    multi = next(b for b in bars if b.bin_count >= 3)
    dropped = next(b for b in bins if multi.start_ts_ms <= b.start_ts_ms < multi.end_ts_ms)
    fewer = [b for b in bins if b.bin_id != dropped.bin_id]
    code, report, _ = _validate(tmp_path, fewer, bars)
    assert code == 1
    diffs = _check(report, "bars <- bins")["diff_counts"]
    assert diffs["bin_count"] == 1
    assert diffs["trade_count"] == 1
    assert diffs["volume"] == 1
    code, report, _ = _validate(tmp_path, fewer, bars, "--ticks", str(sample_path))
    assert code == 1
    check = _check(report, "bins <- ticks")
    assert (check["missing_count"], check["missing_examples"]) == (1, [dropped.bin_id])
    assert _check(report, "bars <- ticks")["ok"]


def test_highest_revision_is_the_one_compared(tmp_path: Path, clean: tuple[list[Bin], list[Bar]]) -> None:
    bins, bars = clean
    wrong = msgspec.structs.replace(bars[5], close=bars[5].close + 1.0)
    fixed = msgspec.structs.replace(bars[5], revision=1)
    code, report, _ = _validate(tmp_path, bins, [*bars[:5], wrong, *bars[6:], fixed])
    assert code == 0
    assert report["totals"]["bars"] == 5049
    assert report["totals"]["bar_messages"] == 5050
    code, report, _ = _validate(tmp_path, bins, [*bars, msgspec.structs.replace(wrong, revision=1)])
    assert code == 1
    assert _check(report, "bars <- bins")["diff_counts"] == {"close": 1}


def test_spreading_is_modelled_both_ways(tmp_path: Path, sample_path: Path,
                                         clean: tuple[list[Bin], list[Bar]]) -> None:
    bins, bars = clean
    code, report, _ = _validate(tmp_path, bins, bars, "--ticks", str(sample_path), "--no-spread")
    assert code == 1
    assert not _check(report, "bins <- ticks")["ok"]
    unspread = reference_bins(read_kibot(sample_path).ticks, 10, False, INGEST_MS)
    unspread_bars = reference_bars(unspread, 1000, INGEST_MS)
    code, report, output = _validate(tmp_path, unspread, unspread_bars, "--ticks", str(sample_path), "--no-spread")
    assert code == 0, output
    assert report["totals"]["bins"] == len({b.start_ts_ms // 1000 for b in unspread}) == 5049


def test_unreadable_line_and_duplicate_bin_fail(tmp_path: Path, clean: tuple[list[Bin], list[Bar]]) -> None:
    bins, bars = clean
    path = write_jsonl(tmp_path / "bars_bad.jsonl", bars)
    path.write_bytes(path.read_bytes() + b'{"bar_id": "WDC-1", "oops": true}\n')
    result = CliRunner().invoke(app, ["validate", "--bins", str(write_jsonl(tmp_path / "b.jsonl", bins)),
                                      "--bars", str(path)])
    assert result.exit_code == 1
    assert "1 bars do not satisfy the contract" in result.output
    code, report, _ = _validate(tmp_path, [*bins, bins[3]], bars)
    assert code == 1
    assert _check(report, "bins unique")["duplicate_count"] == 1


def test_missing_inputs_are_one_line_errors(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["validate", "--bins", str(tmp_path / "nope.jsonl")])
    assert result.exit_code == 2
    result = CliRunner().invoke(app, ["validate", "--bins", str(tmp_path / "nope.jsonl"),
                                      "--bars", str(tmp_path / "nope2.jsonl")])
    assert result.exit_code == 1
    assert "no such file" in result.output
