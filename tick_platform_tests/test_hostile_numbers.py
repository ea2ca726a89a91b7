"""Hostile numbers, settings and duplicates (issue 15, items 1, 9, 10), file -> bins -> bars.

Every case runs the real CLI (`replay --to` -> `aggregate --from`) on a small Kibot file the
test writes, counts every input row as kept (a trade in a bin) or dead-lettered (reason and
line), and compares the bars with a plain-Python computation in `Decimal`: prices rounded half
away from zero to 6 decimals, notional summed in exact micro-dollars.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from jsonschema import Draft202012Validator

from streaming.aggregate.offline import aggregate_file
from streaming.aggregate.processor import Aggregator, window_config
from streaming.aggregate.windows import PartitionWindows, WindowConfig
from streaming.kernel.bounds import MAX_NOTIONAL_UNITS, MAX_PRICE, MAX_VOLUME, PRICE_SCALE
from streaming.kernel.errors import ConfigError
from streaming.kernel.records import Bin, encode
from streaming.kernel.settings import PROJECT_ROOT, KafkaSettings, load_settings
from streaming.replay.binning import OPEN_COLUMNS, Binner
from tick_platform_tests.test_aggregate_helpers import (
    make_bin,
    produce_bins,
    read_bars,
    read_dlq,
    reference_bars,
    settings_for,
)

T0 = 1_704_205_800_000  # 2024-01-02 09:30:00 America/New_York (EST), a whole second
HEADER = "Date,Time,Price,Bid,Ask,Size"
NOW = 1_800_000_000_000


# ---- the chain through the CLI ----------------------------------------------------------------


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """`python -m streaming ARGS` in a subprocess (PYTHONPATH is inherited: this tree's code)."""
    return subprocess.run([sys.executable, "-m", "streaming", *args], capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=300)


def kibot_file(path: Path, rows: list[tuple[int, str, str]]) -> Path:
    """A Kibot file of (second after 09:30:00, price text, size text); file line = index + 2."""
    lines = [HEADER] + [f"01/02/2024,09:30:{s:02d},{p},{p},{p},{z}" for s, p, z in rows]
    path.write_text("\n".join(lines) + "\n")
    return path


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    """The records of a JSON lines file (empty when it does not exist)."""
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def chain(tmp_path: Path, rows: list[tuple[int, str, str]], symbol: str = "AAA") -> dict[str, Any]:
    """replay --no-spread --to -> aggregate --from on `rows`; both must exit 0 without a traceback."""
    src = kibot_file(tmp_path / f"{symbol}_tickbidask.txt", rows)
    bins, bars = tmp_path / "bins.jsonl", tmp_path / "bars.jsonl"
    rdlq, adlq = tmp_path / "replay_dlq.jsonl", tmp_path / "agg_dlq.jsonl"
    replay = cli("replay", str(src), "--no-spread", "--to", str(bins), "--dlq", str(rdlq))
    assert replay.returncode == 0, replay.stderr
    aggregate = cli("aggregate", "--from", str(bins), "--to", str(bars), "--dlq", str(adlq))
    assert aggregate.returncode == 0, aggregate.stderr
    for proc in (replay, aggregate):
        assert "Traceback" not in proc.stderr + proc.stdout
    binned, replay_dlq = read_jsonl(bins), read_jsonl(rdlq)
    # Every row is accounted for: a trade in a bin, or a DLQ record at its line.
    assert sum(b["trade_count"] for b in binned) + len(replay_dlq) == len(rows)
    return {"bins": binned, "bars": read_jsonl(bars), "replay_dlq": replay_dlq, "agg_dlq": read_jsonl(adlq),
            "replay": replay, "aggregate": aggregate}


def units(price: str) -> int:
    """A price text in micro-dollars, rounded half away from zero (prices are positive)."""
    return int((Decimal(price) * PRICE_SCALE).quantize(Decimal(1), rounding=ROUND_HALF_UP))


def expected_bars(rows: list[tuple[int, str, str]], kept_lines: set[int]) -> list[dict[str, Any]]:
    """Plain-Python 1 s bars of the kept rows (no spread: one bin per second), in start order."""
    seconds: dict[int, list[tuple[int, int]]] = {}
    for i, (second, price, size) in enumerate(rows):
        if i + 2 in kept_lines:
            seconds.setdefault(second, []).append((units(price), int(size)))
    bars = []
    for second in sorted(seconds):
        trades = seconds[second]
        prices = [u / PRICE_SCALE for u, _ in trades]
        volume = sum(z for _, z in trades)
        notional = sum(u * z for u, z in trades) / PRICE_SCALE
        low, high = min(prices), max(prices)
        vwap = prices[-1] if volume == 0 else min(max(notional / volume, low), high)
        bars.append({"start_ts_ms": T0 + second * 1000, "open": prices[0], "high": high, "low": low,
                     "close": prices[-1], "volume": volume, "notional": notional, "vwap": vwap,
                     "trade_count": len(trades)})
    return bars


def bar_values(bars: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The compared fields of bars read from a file."""
    keys = ("start_ts_ms", "open", "high", "low", "close", "volume", "notional", "vwap", "trade_count")
    return [{k: b[k] for k in keys} for b in bars]


def dlq_lines(records: list[dict[str, Any]]) -> list[tuple[int, str]]:
    """(line, reason) of DLQ records, by line."""
    return sorted((r["position"]["line"], r["reason"]) for r in records)


# ---- item 1: numbers beyond what the contract holds -------------------------------------------


def test_price_size_and_notional_beyond_the_bounds_are_dead_lettered_at_read(tmp_path: Path) -> None:
    rows = [
        (0, "10.25", "100"),                     # line 2: kept
        (0, "10000000000000", "1"),              # line 3: price 1e13 (was a polars traceback)
        (1, "10", "1000000000000"),              # line 4: size 1e12 (was a negative notional)
        (1, "1000000", "9000001"),               # line 5: price * size just above MAX_NOTIONAL
        (2, "5", "5000000000000000000"),         # line 6: size 5e18 (two of them wrapped the volume)
        (2, "5", "5000000000000000000"),         # line 7
        (2, "1000000", "9000000"),               # line 8: exactly MAX_NOTIONAL: kept
        (3, "12.5", "0"),                        # line 9: size 0 is a trade: kept
    ]
    out = chain(tmp_path, rows)
    assert dlq_lines(out["replay_dlq"]) == [(n, "out_of_range") for n in (3, 4, 5, 6, 7)]
    details = {r["position"]["line"]: r["detail"] for r in out["replay_dlq"]}
    assert "MAX_PRICE" in details[3] and "MAX_SIZE" in details[4] and "MAX_NOTIONAL" in details[5]
    assert "MAX_SIZE" in details[6] and "MAX_SIZE" in details[7]
    assert "out_of_range=5" in out["replay"].stdout
    assert bar_values(out["bars"]) == expected_bars(rows, {2, 8, 9})
    assert all(b["volume"] >= 0 and b["notional"] >= 0 for b in out["bins"] + out["bars"])
    assert out["agg_dlq"] == []  # nothing vanishes between the stages


def test_a_bins_sums_stay_within_the_bounds_decided_in_arrival_order(tmp_path: Path) -> None:
    rows = [
        (0, "1000000", "5000000"),   # line 2: 5e18 micro-dollars
        (0, "1000000", "5000000"),   # line 3: would make 1e19 (int64 wraps): refused
        (0, "1000000", "4000000"),   # line 4: 9e18, exactly the bound: kept
        (0, "10.5", "7"),            # line 5: one micro-dollar too many: refused
        (1, "10.5", "7"),            # line 6: the next bin starts from zero: kept
    ]
    out = chain(tmp_path, rows, symbol="BBB")
    assert dlq_lines(out["replay_dlq"]) == [(3, "out_of_range"), (5, "out_of_range")]
    assert all("bin notional" in r["detail"] for r in out["replay_dlq"])
    [first, _second] = out["bins"]
    assert (first["volume"], first["notional"]) == (9_000_000, MAX_NOTIONAL_UNITS / PRICE_SCALE)
    assert bar_values(out["bars"]) == expected_bars(rows, {2, 4, 6})


def _ticks(sizes: list[int], price: float, ts: list[int]) -> pl.DataFrame:
    """Binner input (arrival order) of one symbol; line = index + 1."""
    n = len(sizes)
    return pl.DataFrame(
        {"symbol": ["AAA"] * n, "ts_ms": ts, "price": [price] * n, "size": sizes, "src": [0] * n,
         "line": list(range(1, n + 1)), "seq": list(range(1, n + 1)), "orig_ts_ms": ts,
         "api_send_ts_ms": [0] * n, "file": ["f"] * n, "bid": [None] * n, "ask": [None] * n},
        schema_overrides={**OPEN_COLUMNS, "bid": pl.Float64, "ask": pl.Float64},
    )


def test_the_bin_volume_bound_does_not_depend_on_where_the_input_is_cut() -> None:
    quarter = 4 * 10**15  # three of these pass MAX_VOLUME (2**53 - 1) in one bin
    sizes = [quarter, quarter, quarter, 10**15, 7, quarter, 3]
    ts = [T0, T0 + 1, T0 + 2, T0 + 3, T0 + 4, T0 + 10, T0 + 5]  # the last one is in the first bin again
    # Plain Python, tick by tick in arrival order.
    sums: dict[int, int] = {}
    refused = []
    for line, (size, t) in enumerate(zip(sizes, ts, strict=True), start=1):
        start = t - t % 10
        if sums.get(start, 0) + size > MAX_VOLUME:
            refused.append(line)
        else:
            sums[start] = sums.get(start, 0) + size
    assert refused == [3]
    frame = _ticks(sizes, 0.000001, ts)  # one micro-dollar: the notional bound is not the one hit
    for cut in range(len(sizes) + 1):
        binner = Binner(bin_ms=10, max_late_ms=100)
        steps = [binner.push(frame.slice(0, cut)), binner.push(frame.slice(cut))]
        bins = pl.concat([s.bins for s in steps] + [binner.flush()])
        over = pl.concat([s.over for s in steps], how="diagonal_relaxed")
        assert over["line"].to_list() == refused, cut
        assert dict(zip(bins["start_ts_ms"].to_list(), bins["volume"].to_list(), strict=True)) == sums, cut
        assert bins["notional"].to_list() == [v / PRICE_SCALE for v in sums.values()], cut


def test_the_aggregator_refuses_bins_beyond_the_bounds_alone_or_summed_into_a_bar(tmp_path: Path) -> None:
    half = 2**52  # two of these make 2**53 > MAX_VOLUME
    bins = [
        make_bin("AAA", T0, [0.000001], [half]),             # line 1: kept
        make_bin("AAA", T0 + 10, [0.000001], [half]),        # line 2: the bar's volume would pass MAX_VOLUME
        make_bin("AAA", T0 + 20, [0.000002], [5]),           # line 3: kept
        make_bin("BBB", T0, [1_000_000.0], [5_000_000]),     # line 4: 5e12 dollars, kept
        make_bin("BBB", T0 + 10, [1_000_000.0], [5_000_000]),  # line 5: the bar's notional would pass 9e12
        make_bin("CCC", T0, [2_000_000.0], [1]),             # line 6: price beyond MAX_PRICE
        make_bin("CCC", T0 + 10, [1.0], [MAX_VOLUME + 1]),   # line 7: volume beyond MAX_VOLUME
        make_bin("CCC", T0 + 20, [1_000_000.0], [10_000_000]),  # line 8: notional beyond 9e12 dollars
    ]
    src, bars_path, dlq_path = tmp_path / "bins.jsonl", tmp_path / "bars.jsonl", tmp_path / "dlq.jsonl"
    src.write_bytes(b"".join(encode(b) + b"\n" for b in bins))
    proc = cli("aggregate", "--from", str(src), "--to", str(bars_path), "--dlq", str(dlq_path))
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, proc.stderr
    assert "out of range 5" in proc.stdout
    dlq = read_jsonl(dlq_path)
    assert dlq_lines(dlq) == [(n, "out_of_range") for n in (2, 5, 6, 7, 8)]
    assert [r["position"]["file"] for r in dlq] == [str(src)] * 5
    got = {b["symbol"]: (b["volume"], b["notional"], b["bin_count"]) for b in read_jsonl(bars_path)}
    assert got == {"AAA": (half + 5, bins[0].notional + bins[2].notional, 2), "BBB": (5_000_000, 5e12, 1)}


def test_prices_with_more_than_six_decimals_are_rounded_half_away_from_zero(tmp_path: Path) -> None:
    rows = [
        (0, "10.0000005", "3"),      # line 2: -> 10.000001
        (0, "10.00000049999", "2"),  # line 3: -> 10.0
        (0, "42.8712345", "1"),      # line 4: -> 42.871235 (not to even)
        (1, "0.0000005", "10"),      # line 5: -> 0.000001
        (1, "0.0000004", "10"),      # line 6: -> 0: not a price
        (1, "2.0000025", "4"),       # line 7: -> 2.000003
    ]
    out = chain(tmp_path, rows)
    assert dlq_lines(out["replay_dlq"]) == [(6, "bad_price")]
    assert [b["open"] for b in out["bins"]] == [10.000001, 0.000001]
    assert [(b["high"], b["low"]) for b in out["bins"]] == [(42.871235, 10.0), (2.000003, 0.000001)]
    assert bar_values(out["bars"]) == expected_bars(rows, {2, 3, 4, 5, 7})


def test_vwap_lies_within_low_high_and_is_the_close_without_volume(tmp_path: Path) -> None:
    rows = [(0, "0.1", "1"), (0, "0.1", "1"), (0, "0.1", "1"),  # 0.3 / 3 is 0.09999999999999999 in floats
            (1, "7.25", "0"), (1, "7.5", "0")]  # no volume: vwap = close
    out = chain(tmp_path, rows)
    assert [(b["low"], b["vwap"], b["high"]) for b in out["bars"]] == [(0.1, 0.1, 0.1), (7.25, 7.5, 7.5)]
    assert bar_values(out["bars"]) == expected_bars(rows, {2, 3, 4, 5, 6})
    # The same in the window code across bins, whose float notionals add up with rounding error.
    windows = PartitionWindows(WindowConfig())
    for i in range(10):
        windows.add(make_bin("AAA", T0 + 10 * i, [0.1], [1]), i, NOW)
    windows.flush_all(NOW)
    [bar] = windows.bars
    assert bar.low <= bar.vwap <= bar.high and bar.vwap == 0.1


def test_the_contract_schemas_state_the_bounds(tmp_path: Path) -> None:
    contracts = PROJECT_ROOT / "docs" / "contracts"
    for name in ("ticks_raw_schema.json", "ticks_agg_1s_schema.json"):
        props = json.loads((contracts / name).read_text())["properties"]
        assert {props[f]["maximum"] for f in ("open", "high", "low", "close")} == {MAX_PRICE}, name
        assert props["volume"]["maximum"] == MAX_VOLUME and props["volume"]["minimum"] == 0, name
        assert props["notional"]["maximum"] == MAX_NOTIONAL_UNITS / PRICE_SCALE, name
    # What the chain writes at the bounds is valid under them.
    out = chain(tmp_path, [(0, "1000000", "9000000"), (1, "0.000001", "1"), (1, "1e13", "1")])
    for name, records in (("ticks_raw_schema.json", out["bins"]), ("ticks_agg_1s_schema.json", out["bars"]),
                          ("dlq_record_schema.json", out["replay_dlq"])):
        validator = Draft202012Validator(json.loads((contracts / name).read_text()))
        assert records and [e.message for r in records for e in validator.iter_errors(r)] == [], name


# ---- item 9: settings that cannot be right ----------------------------------------------------


@pytest.mark.parametrize(
    ("args", "env", "names"),
    [
        (["replay", "{src}", "--to", "{out}"], {"REPLAY_BIN_MS": "7"}, ("REPLAY_BIN_MS", "AGG_WINDOW_MS")),
        (["replay", "{src}", "--bin-ms", "7", "--to", "{out}"], {}, ("REPLAY_BIN_MS", "AGG_WINDOW_MS")),
        (["replay", "{src}", "--bin-ms", "30", "--to", "{out}"], {"AGG_WINDOW_MS": "1000"},
         ("REPLAY_BIN_MS", "AGG_WINDOW_MS")),
        (["aggregate", "--window-ms", "7000", "--from", "{src}", "--to", "{out}"], {}, ("AGG_WINDOW_MS", "60,000")),
        (["aggregate", "--from", "{src}", "--to", "{out}"], {"AGG_WINDOW_MS": "700", "REPLAY_BIN_MS": "7"},
         ("AGG_WINDOW_MS", "300,000")),
        (["validate", "--bins", "{src}", "--bars", "{src}"], {"REPLAY_BIN_MS": "3"}, ("REPLAY_BIN_MS",)),
    ],
)
def test_bins_must_tile_bars_and_bars_the_fact_windows(tmp_path: Path, args: list[str], env: dict[str, str],
                                                        names: tuple[str, ...]) -> None:
    src = kibot_file(tmp_path / "AAA_tickbidask.txt", [(0, "10", "1")])
    out = tmp_path / "out.jsonl"
    proc = cli(*(a.format(src=src, out=out) for a in args), env=env)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: config: "), proc.stderr
    assert all(name in lines[0] for name in names), lines[0]
    assert not out.exists()


def test_settings_that_tile_are_accepted_and_used(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"REPLAY_BIN_MS \(7\) must divide AGG_WINDOW_MS \(1000\)"):
        load_settings(replay={"bin_ms": 7})
    assert load_settings(replay={"bin_ms": 20}, agg={"window_ms": 500}).replay.bin_ms == 20
    src = kibot_file(tmp_path / "AAA_tickbidask.txt", [(0, "10", "1")])
    proc = cli("replay", str(src), "--bin-ms", "20", "--to", str(tmp_path / "bins.jsonl"))
    assert proc.returncode == 0, proc.stderr
    [b] = read_jsonl(tmp_path / "bins.jsonl")
    assert (b["window_ms"], b["end_ts_ms"] - b["start_ts_ms"]) == (20, 20)


def test_bins_that_do_not_tile_the_bars_are_refused_by_the_aggregator(tmp_path: Path) -> None:
    # A bins file made with 7 ms bins (before the settings check, or by another producer): some of
    # them hold trades of two bars, so no bar of them would be right. 20 ms bins tile and count.
    bins = [make_bin("AAA", T0 + 7 * i, [10.0 + i], [1 + i], bin_ms=7) for i in range(3)]
    good = [make_bin("BBB", T0 + 20 * i, [10.0 + i], [1 + i], bin_ms=20) for i in range(3)]
    src, bars_path, dlq_path = tmp_path / "bins.jsonl", tmp_path / "bars.jsonl", tmp_path / "dlq.jsonl"
    src.write_bytes(b"".join(encode(b) + b"\n" for b in [*bins, *good]))
    proc = cli("aggregate", "--from", str(src), "--to", str(bars_path), "--dlq", str(dlq_path))
    assert proc.returncode == 0 and "poison 3" in proc.stdout, proc.stdout + proc.stderr
    dlq = read_jsonl(dlq_path)
    assert dlq_lines(dlq) == [(1, "bad_window"), (2, "bad_window"), (3, "bad_window")]
    assert "REPLAY_BIN_MS must divide AGG_WINDOW_MS" in dlq[0]["detail"]
    [bar] = read_jsonl(bars_path)
    assert (bar["symbol"], bar["volume"], bar["bin_count"], bar["close"]) == ("BBB", 6, 3, 12.0)


# ---- item 10: a bin delivered twice -----------------------------------------------------------


def _stream() -> list[Bin]:
    """Three symbols over three seconds, in time order."""
    return [make_bin(s, T0 + t * 10, [10.0 + t / 100], [100 + t]) for t in range(300) for s in ("AAA", "BBB", "CCC")]


def test_a_bin_delivered_twice_is_counted_once_offline(tmp_path: Path) -> None:
    bins = _stream()
    # Producer retries: copies right after the first, a little later in the same window, and a
    # copy with different numbers under the same bin_id (the key decides, the first copy counts).
    changed = make_bin("BBB", T0 + 50, [99.0], [1])
    stream = [*bins[:40], bins[10], bins[39], changed, *bins[40:500], bins[499], bins[450], *bins[500:]]
    dup_lines = [41, 42, 43, 504, 505]
    src, bars_path, dlq_path = tmp_path / "bins.jsonl", tmp_path / "bars.jsonl", tmp_path / "dlq.jsonl"
    src.write_bytes(b"".join(encode(b) + b"\n" for b in stream))
    proc = cli("aggregate", "--from", str(src), "--to", str(bars_path), "--dlq", str(dlq_path))
    assert proc.returncode == 0, proc.stderr
    assert "duplicate 5" in proc.stdout and "late 0" in proc.stdout
    dlq = read_jsonl(dlq_path)
    assert dlq_lines(dlq) == [(n, "duplicate_bin") for n in dup_lines]
    assert [r["symbol"] for r in sorted(dlq, key=lambda r: r["position"]["line"])] == [
        stream[n - 1].symbol for n in dup_lines]
    expected, _late = reference_bars(bins, 1000, 100)
    got = {b["bar_id"]: b for b in read_jsonl(bars_path)}
    assert set(got) == set(expected)
    for bar_id, want in expected.items():
        assert {k: got[bar_id][k] for k in ("volume", "notional", "trade_count", "bin_count", "open", "close",
                                            "high", "low", "vwap")} == {
            k: want[k] for k in ("volume", "notional", "trade_count", "bin_count", "open", "close", "high", "low",
                                 "vwap")}, bar_id


def test_a_rebuild_after_a_restart_counts_a_duplicate_once_too() -> None:
    bins = _stream()[:120]
    stream = [*bins[:30], bins[5], bins[29], *bins[30:90], bins[60], *bins[90:]]
    config = WindowConfig(window_ms=1000, grace_ms=100)
    whole = PartitionWindows(config)
    for i, b in enumerate(stream):
        whole.add(b, i, NOW)
    whole.flush_all(NOW, len(stream))
    all_bars, all_refused = whole.drain()
    assert [(x.offset, x.reason) for x in all_refused] == [(30, "duplicate_bin"), (31, "duplicate_bin"),
                                                          (92, "duplicate_bin")]
    for split in range(len(stream) + 1):
        first = PartitionWindows(config)
        for i in range(split):
            first.add(stream[i], i, NOW)
        cp = first.checkpoint(split)
        bars_a, refused_a = first.drain()
        resumed = PartitionWindows(config, cp.watermark, cp.closes)
        for i in range(cp.rebuild_from, split):
            resumed.rebuild(stream[i], i)
        for i in range(split, len(stream)):
            resumed.add(stream[i], i, NOW)
        resumed.flush_all(NOW, len(stream))
        bars_b, refused_b = resumed.drain()
        assert bars_a + bars_b == all_bars, split
        assert [x.offset for x in refused_a + refused_b] == [x.offset for x in all_refused], split


def test_a_revision_does_not_count_a_duplicate_either() -> None:
    config = WindowConfig(window_ms=1000, grace_ms=0, late_policy="revise")
    windows = PartitionWindows(config)
    first, late = make_bin("AAA", T0, [10.0], [5]), make_bin("AAA", T0 + 500, [11.0], [7])
    for i, b in enumerate([first, make_bin("AAA", T0 + 2000, [12.0], [1]), late, late, first]):
        windows.add(b, i, NOW)
    bars, refused = windows.drain()
    assert [(b.start_ts_ms - T0, b.volume, b.revision) for b in bars] == [(0, 5, 0), (0, 12, 1)]
    assert [(x.offset, x.reason) for x in refused] == [(3, "duplicate_bin"), (4, "duplicate_bin")]


@pytest.mark.kafka
def test_kafka_duplicate_bins_are_counted_once_across_a_restart(kafka: KafkaSettings, tmp_path: Path) -> None:
    bins = _stream()
    # A non-transactional retry: some bins a second time, some of them after the first run stops.
    stream = bins[:200] + bins[150:260] + bins[260:] + bins[-40:]
    produce_bins(kafka, stream)
    settings = settings_for(kafka, idle_timeout_ms=500, instance_id="dup")
    first = Aggregator(settings, max_bins=230).run()  # stops mid-stream, commits its checkpoint
    second = Aggregator(settings, until_idle=True).run()  # rebuilds the open windows, then the rest
    assert second.rebuilt > 0
    expected, _late = reference_bars(bins, 1000, settings.agg_grace_ms)
    got = [bar for _p, _o, bar in read_bars(kafka)]
    assert len(got) == len(expected)  # each bar once
    assert {b.bar_id: (b.volume, b.notional, b.bin_count, b.open, b.close) for b in got} == {
        k: (v["volume"], v["notional"], v["bin_count"], v["open"], v["close"]) for k, v in expected.items()}
    dlq = read_dlq(kafka)
    assert sorted(r.reason for r in dlq) == ["duplicate_bin"] * 90  # each second copy once, none late
    assert all(r.position["topic"] == kafka.topic_raw and r.position["offset"] >= 0 for r in dlq)
    assert first.duplicates + second.duplicates == 90
    # The offline path over the same stream agrees.
    src = tmp_path / "bins.jsonl"
    src.write_bytes(b"".join(encode(b) + b"\n" for b in stream))
    result = aggregate_file(src, tmp_path / "bars.jsonl", None, window_config(settings))
    assert (result.bars_out, result.duplicates, result.late) == (len(expected), 90, 0)
