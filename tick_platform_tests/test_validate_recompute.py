"""The validator's independent recomputation against plain-Python computations of the same numbers."""

from __future__ import annotations

import math
from collections import defaultdict
from datetime import datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import polars as pl
import pytest

from streaming.kernel.errors import SourceError
from streaming.validate.compare import floats_close, latency_stats, percentile
from streaming.validate.recompute import bars_from_bins, bars_from_ticks, bins_from_ticks, event_times
from streaming.validate.ticks import read_kibot, symbol_from_path

NY = ZoneInfo("America/New_York")


def _epoch_ms(date: str, time: str) -> int:
    return int(datetime.strptime(f"{date} {time}", "%m/%d/%Y %H:%M:%S").replace(tzinfo=NY).timestamp() * 1000)


def _plain_ticks(path: Path) -> list[tuple[int, float, int]]:
    rows = []
    for line in path.read_text().splitlines():
        date, time, price, _bid, _ask, size = line.split(",")
        rows.append((_epoch_ms(date, time), float(price), int(size)))
    return rows


@pytest.fixture(scope="module")
def sample_ticks(sample_path: Path) -> pl.DataFrame:
    return read_kibot(sample_path).ticks


def test_kibot_times_use_new_york_zone_with_dst_and_reject_bad_rows(tmp_path: Path) -> None:
    path = tmp_path / "ABC_ticks.txt"
    path.write_text(
        "02/17/2010,09:30:01,42.87,42.7,43.01,1161\n"
        "07/01/2010,09:30:01,10.5,10.4,10.6,100\n"
        "07/01/2010,09:30:02,oops,10.4,10.6,100\n"
        "07/01/2010,09:30:03,10.5,10.4,10.6,-5\n"
        "11/08/2010,16:00:00,11.25,11.2,11.3,7\n"
    )
    parsed = read_kibot(path)
    assert parsed.symbol == "ABC"
    assert parsed.rejected == 2
    assert parsed.ticks["ts_ms"].to_list() == [
        _epoch_ms("02/17/2010", "09:30:01"), _epoch_ms("07/01/2010", "09:30:01"), _epoch_ms("11/08/2010", "16:00:00"),
    ]
    # EST is UTC-5 in February, EDT UTC-4 in July.
    assert parsed.ticks["ts_ms"][0] == 1266417001000
    assert parsed.ticks["ts_ms"][1] == int(datetime(2010, 7, 1, 13, 30, 1, tzinfo=ZoneInfo("UTC")).timestamp() * 1000)
    assert parsed.ticks["seq"].to_list() == [0, 1, 4]
    assert parsed.ticks["size"].to_list() == [1161, 100, 7]


def test_symbol_comes_from_the_file_name_or_fails_clearly() -> None:
    assert symbol_from_path(Path("WDC_tickbidask_first_20000.txt")) == "WDC"
    assert symbol_from_path(Path("brk.b_ticks.txt")) == "BRK.B"
    with pytest.raises(SourceError):
        symbol_from_path(Path("_ticks.txt"))


def test_spread_gives_floor_i_times_1000_over_n_in_file_order() -> None:
    ticks = pl.DataFrame({
        "symbol": ["A"] * 4 + ["B"], "seq": [0, 1, 2, 3, 4],
        "ts_ms": [5000, 5000, 5000, 6000, 5000], "price": [1.0, 2.0, 3.0, 4.0, 5.0], "size": [1, 1, 1, 1, 1],
    })
    spread = event_times(ticks, spread=True).sort("seq")["event_ms"].to_list()
    assert spread == [5000, 5333, 5666, 6000, 5000]
    assert event_times(ticks, spread=False).sort("seq")["event_ms"].to_list() == [5000, 5000, 5000, 6000, 5000]


def test_bins_equal_a_plain_python_binning_of_the_real_sample(sample_path: Path, sample_ticks: pl.DataFrame) -> None:
    plain = _plain_ticks(sample_path)
    per_second: dict[int, int] = defaultdict(int)
    for ts, _, _ in plain:
        per_second[ts] += 1
    seen: dict[int, int] = defaultdict(int)
    expected: dict[int, list[float]] = {}
    for ts, price, size in plain:
        event = ts + seen[ts] * 1000 // per_second[ts]
        seen[ts] += 1
        start = event // 10 * 10
        if start not in expected:
            expected[start] = [price, price, price, price, 0, 0.0, 0]
        b = expected[start]
        b[1], b[2], b[3] = max(b[1], price), min(b[2], price), price
        b[4] += size
        b[5] += price * size
        b[6] += 1
    bins = bins_from_ticks(sample_ticks, 10, spread=True)
    assert bins.height == len(expected)
    for row in bins.iter_rows(named=True):
        o, h, low, c, v, n, t = expected[row["start_ts_ms"]]
        assert row["bin_id"] == f"WDC-{row['start_ts_ms']:013d}"
        assert (row["open"], row["high"], row["low"], row["close"], row["volume"], row["trade_count"]) == (
            o, h, low, c, v, t)
        assert math.isclose(row["notional"], n, rel_tol=1e-12)
        assert row["end_ts_ms"] == row["start_ts_ms"] + 10


def test_bars_from_ticks_and_from_bins_agree_with_the_sample_totals(
    sample_path: Path, sample_ticks: pl.DataFrame
) -> None:
    plain = _plain_ticks(sample_path)
    first: dict[int, float] = {}
    last: dict[int, float] = {}
    for ts, price, _ in plain:
        first.setdefault(ts, price)
        last[ts] = price
    from_ticks = bars_from_ticks(sample_ticks, 1000, 10, spread=True)
    bins = bins_from_ticks(sample_ticks, 10, spread=True).with_columns(
        pl.lit(None, pl.Int64).alias("api_send_ts_ms"), pl.lit(0, pl.Int64).alias("ingest_ts_ms")
    )
    from_bins = bars_from_bins(bins, 1000)
    assert from_ticks.height == from_bins.height == 5049
    assert int(from_ticks["trade_count"].sum()) == 20000
    assert int(from_ticks["volume"].sum()) == 3_582_490
    assert int(from_ticks["bin_count"].sum()) == bins.height
    joined = from_ticks.join(from_bins, on="bar_id", suffix="_b")
    assert joined.height == 5049
    for col in ("open", "high", "low", "close", "volume", "trade_count", "bin_count"):
        assert (joined[col] == joined[f"{col}_b"]).all(), col
    for row in from_ticks.iter_rows(named=True):
        assert row["open"] == first[row["start_ts_ms"]]
        assert row["close"] == last[row["start_ts_ms"]]
        assert math.isclose(row["vwap"], row["notional"] / row["volume"])


def test_percentiles_are_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert (percentile(values, 50), percentile(values, 95), percentile(values, 99)) == (50.0, 95.0, 99.0)
    assert percentile([7.0], 99) == 7.0
    stats = latency_stats("x", "", [30.0, 10.0, 20.0, float("nan")])
    assert stats is not None
    assert (stats.count, stats.p50, stats.max, stats.mean) == (3, 20.0, 30.0, 20.0)
    assert latency_stats("x", "", []) is None


def test_float_tolerance_is_relative_1e_9() -> None:
    assert floats_close(100.0, 100.0 + 100.0 * 0.5e-9)
    assert not floats_close(100.0, 100.0 + 100.0 * 2e-9)
    assert not floats_close(1.0, None)
    assert floats_close(None, None)
