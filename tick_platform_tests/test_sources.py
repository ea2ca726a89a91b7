"""Tick readers: Kibot (time zone, DST, BOM, CRLF, header, bad rows), CSV, Parquet, merge, symbols."""

from __future__ import annotations

from pathlib import Path

import polars as pl
import pytest

from streaming.kernel.errors import SourceError
from streaming.sources import read_ticks, symbol_from_filename, tick_stream
from tick_platform_tests.test_replay_support import (
    SAMPLE_TICKS,
    SAMPLE_VOLUME,
    eastern_ms,
    kibot_ticks,
    write_lines,
)


def _all(paths: list[Path] | Path, **kw: object) -> pl.DataFrame:
    return pl.concat(list(read_ticks(paths, **kw)))  # type: ignore[arg-type]


def test_real_sample_reads_every_tick_in_file_order(sample_path: Path) -> None:
    ticks = _all(sample_path, chunk_rows=3_000)
    ref = kibot_ticks(sample_path, "WDC")
    assert ticks.height == SAMPLE_TICKS and ticks["size"].sum() == SAMPLE_VOLUME
    assert ticks.columns == ["symbol", "ts_ms", "price", "bid", "ask", "size", "file", "line"]
    assert ticks["symbol"].unique().to_list() == ["WDC"]
    assert ticks["line"].to_list() == list(range(1, SAMPLE_TICKS + 1))
    assert ticks["ts_ms"].to_list() == [t.ts_ms for t in ref]
    assert ticks["price"].to_list() == [t.price for t in ref]
    assert ticks["ts_ms"][0] == 1266417001000  # 2010-02-17 09:30:01 EST = 14:30:01 UTC


def test_chunk_size_does_not_change_the_result(sample_path: Path) -> None:
    assert _all(sample_path, chunk_rows=1_000).equals(_all(sample_path, chunk_rows=200_000))


@pytest.mark.parametrize(
    ("name", "symbol"),
    [("WDC_tickbidask_first_20000.txt", "WDC"), ("BRK.B_tickbidask.txt", "BRK.B"), ("wdc_ticks.txt", None),
     ("WDC.txt", None), ("AAPL_1.csv", "AAPL")],
)
def test_symbol_from_filename(name: str, symbol: str | None) -> None:
    assert symbol_from_filename(Path("/data") / name) == symbol


def test_eastern_time_with_dst_both_ways(tmp_path: Path) -> None:
    rows = [
        ("03/13/2010", "10:00:00"),  # EST, UTC-5
        ("03/14/2010", "01:59:59"),  # last second before spring forward
        ("03/14/2010", "03:00:00"),  # first second of EDT
        ("03/15/2010", "10:00:00"),  # EDT, UTC-4
        ("11/07/2010", "00:59:59"),
        ("11/07/2010", "02:00:00"),  # after fall back: EST again
    ]
    path = write_lines(tmp_path / "X_dst.txt", [f"{d},{t},10.0,9.9,10.1,100" for d, t in rows])
    ticks = _all(path)
    assert ticks["ts_ms"].to_list() == [eastern_ms(d, t) for d, t in rows]
    assert ticks["ts_ms"][3] - ticks["ts_ms"][0] == (2 * 24 - 1) * 3_600_000  # a 47-hour span across DST
    assert ticks["ts_ms"][2] - ticks["ts_ms"][1] == 1_000  # 01:59:59 EST -> 03:00:00 EDT is one second


def test_bom_crlf_header_blank_lines_and_long_decimals(tmp_path: Path) -> None:
    lines = [
        "Date,Time,Price,Bid,Ask,Size",
        "02/17/2010,09:30:01,42.87123456789,42.7,43.01,1161",
        "",
        "02/17/2010,09:30:02,42.9384,42.84,42.93,300",
        "   ",
        "02/17/2010,09:30:02,42.5,42.4,42.6,0",
    ]
    path = write_lines(tmp_path / "ABC_tickbidask.txt", lines, newline="\r\n", bom=True)
    chunks = list(tick_stream([path]))
    ticks = pl.concat([c.ticks for c in chunks])
    rejects = pl.concat([c.rejects for c in chunks])
    # Rounded half away from zero to the contract's 6 decimals where it is read.
    assert ticks["price"].to_list() == [42.871235, 42.9384, 42.5]
    assert ticks["size"].to_list() == [1161, 300, 0]
    assert ticks["line"].to_list() == [2, 4, 6]
    assert ticks["symbol"].unique().to_list() == ["ABC"]
    assert sorted(zip(rejects["line"].to_list(), rejects["reason"].to_list(), strict=True)) == [
        (1, "header"), (3, "blank"), (5, "blank")
    ]


def test_bad_rows_are_rejected_with_reason_and_line(tmp_path: Path) -> None:
    good = "02/17/2010,09:30:01,42.87,42.7,43.01,100"
    lines = [
        good,
        "02/17/2010,09:30:01,42.87,42.7,43.01",  # 2: five fields
        "02/17/2010,09:30:01,42.87,42.7,43.01,100,7",  # 3: seven fields
        "02/17/2010,09:30:01,abc,42.7,43.01,100",  # 4: price not a number
        "02/17/2010,09:30:01,0,42.7,43.01,100",  # 5: price 0
        "02/17/2010,09:30:01,-1.5,42.7,43.01,100",  # 6: negative price
        "02/17/2010,09:30:01,42.87,42.7,43.01,-5",  # 7: negative size
        "02/30/2010,09:30:01,42.87,42.7,43.01,100",  # 8: no such date
        "03/14/2010,02:30:00,42.87,42.7,43.01,100",  # 9: inside the DST gap
        "02/17/2010,9h30,42.87,42.7,43.01,100",  # 10: bad time
        "02/17/2010,09:30:01,42.87,42.7,43.01,1.5",  # 11: fractional size
        good,
    ]
    path = write_lines(tmp_path / "WDC_bad.txt", lines)
    chunks = list(tick_stream([path]))
    ticks = pl.concat([c.ticks for c in chunks])
    rejects = pl.concat([c.rejects for c in chunks]).sort("line")
    assert ticks["line"].to_list() == [1, 12]
    assert list(zip(rejects["line"].to_list(), rejects["reason"].to_list(), strict=True)) == [
        (2, "malformed"), (3, "malformed"), (4, "malformed"), (5, "bad_price"), (6, "bad_price"),
        (7, "bad_size"), (8, "bad_time"), (9, "bad_time"), (10, "bad_time"), (11, "malformed"),
    ]
    assert rejects["payload"].to_list() == lines[1:11]
    assert "got 5" in rejects["detail"][0] and "got 7" in rejects["detail"][1]


def test_missing_binary_and_unknown_files_raise_source_error(tmp_path: Path) -> None:
    with pytest.raises(SourceError, match="no such file"):
        list(read_ticks(tmp_path / "nope.txt"))
    binary = tmp_path / "WDC_x.txt"
    binary.write_bytes(b"\x00\x01\x02garbage")
    with pytest.raises(SourceError, match="binary"):
        list(read_ticks(binary))
    odd = write_lines(tmp_path / "WDC_y.txt", ["12345 67890", "1 2 3"])
    with pytest.raises(SourceError, match="unrecognised format"):
        list(read_ticks(odd))
    nosym = write_lines(tmp_path / "ticks.txt", ["02/17/2010,09:30:01,42.87,42.7,43.01,100"])
    with pytest.raises(SourceError, match="cannot tell the symbol"):
        list(read_ticks(nosym))
    assert _all(nosym, symbol="XYZ")["symbol"].to_list() == ["XYZ"]


def test_generic_csv_with_header_and_mapping(tmp_path: Path) -> None:
    path = write_lines(
        tmp_path / "trades.csv",
        [
            "Ticker,When,Last,Qty,Bid,Ask",
            "AAA,2024-03-08T09:30:00.250,10.5,100,10.4,10.6",
            "BBB,1709908200500,20.25,7,20.2,20.3",
            "AAA,2024-03-08 09:30:01+00:00,10.75,3,10.7,10.8",
            "AAA,not-a-time,10.75,3,10.7,10.8",
        ],
    )
    chunks = list(tick_stream([path], columns="ts=When,price=Last"))
    ticks = pl.concat([c.ticks for c in chunks])
    rejects = pl.concat([c.rejects for c in chunks]).sort("line")
    # Symbol blocks AAA, BBB, AAA: one stream per symbol, merged by the running maximum of each
    # symbol's own time, so AAA's out-of-order tick stays behind AAA's first, ahead of BBB.
    assert ticks["symbol"].to_list() == ["AAA", "AAA", "BBB"]
    assert ticks["ts_ms"].to_list() == [
        eastern_ms("03/08/2024", "09:30:00") + 250, 1709890201000, 1709908200500
    ]
    assert ticks["size"].to_list() == [100, 3, 7]
    assert list(zip(rejects["line"].to_list(), rejects["reason"].to_list(), strict=True)) == [
        (1, "header"), (5, "bad_time")
    ]
    with pytest.raises(SourceError, match="cannot find column"):
        list(read_ticks(path))  # without the mapping there is no price column


def test_parquet_source(tmp_path: Path) -> None:
    frame = pl.DataFrame(
        {
            "symbol": ["AAA", "AAA", "AAA"],
            "ts_ms": [1709908200000, 1709908200005, 1709908200010],
            "price": [10.0, -1.0, 10.5],
            "size": [100, 5, 200],
        }
    )
    path = tmp_path / "ticks.parquet"
    frame.write_parquet(path)
    chunks = list(tick_stream([path]))
    ticks = pl.concat([c.ticks for c in chunks])
    rejects = pl.concat([c.rejects for c in chunks])
    assert ticks.select("symbol", "ts_ms", "price", "size", "line").rows() == [
        ("AAA", 1709908200000, 10.0, 100, 1), ("AAA", 1709908200010, 10.5, 200, 3)
    ]
    assert rejects.select("line", "reason").rows() == [(2, "bad_price")]
    assert '"price":-1.0' in rejects["payload"][0]


def test_two_files_merge_in_event_time_order(tmp_path: Path) -> None:
    a = write_lines(tmp_path / "AAA_t.txt", [f"02/17/2010,09:30:{s:02d},10.0,9.9,10.1,{s}" for s in range(0, 60, 2)])
    b = write_lines(tmp_path / "BBB_t.txt", [f"02/17/2010,09:30:{s:02d},20.0,19.9,20.1,{s}" for s in range(1, 60, 3)])
    for rows in (1_000, 7):
        merged = _all([a, b], chunk_rows=rows)
        assert merged.height == 30 + 20
        assert merged["ts_ms"].is_sorted()
        # Ties (same second) keep the order of the files on the command line.
        keys = list(zip(merged["ts_ms"].to_list(), merged["symbol"].to_list(), strict=True))
        assert keys == sorted(keys, key=lambda k: (k[0], k[1]))
        for symbol, path in (("AAA", a), ("BBB", b)):
            own = merged.filter(pl.col("symbol") == symbol)
            assert own["line"].to_list() == list(range(1, own.height + 1))
            assert own["file"].unique().to_list() == [str(path)]
