"""Hostile tick sources (issue 15, items 3, 4, 8): symbols, CSV headers by name, `--symbol` and files given twice.

Every case runs small files generated here through the CLI (`replay --to`, and `aggregate --from`
where the bins must survive the next stage), counts every input row as kept or dead-lettered, and
checks the numbers against a plain-Python computation. Errors must be one line, non-zero, no traceback.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import defaultdict
from pathlib import Path

import polars as pl
import pytest
from fastapi.testclient import TestClient
from jsonschema import Draft202012Validator

from streaming.kernel.bounds import SYMBOL_REGEX, SYMBOL_RULE, is_symbol
from streaming.kernel.records import Bin, encode
from streaming.kernel.settings import PROJECT_ROOT
from streaming.replay.encoding import bin_json_lines
from streaming.sources.api import create_app
from streaming.sources.files import source_format
from streaming.sources.naming import symbol_from_filename
from tick_platform_tests.test_replay_support import eastern_ms

T0 = 1_709_908_200_000  # 2024-03-08 14:30:00 UTC, 09:30 in New York
HOSTILE = ['AB"C', "A\\B", "A\x01B", "A\tB", "aaa", "ABCDEFGHIJKLMNOPQ", "1AB", "A B", "ÄPFEL", "A/B"]


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    """`python -m streaming ...` as a user runs it (the tests' PYTHONPATH reaches the subprocess)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("REPLAY_")}
    return subprocess.run([sys.executable, "-m", "streaming", *args], cwd=PROJECT_ROOT, capture_output=True,
                          text=True, env=env, timeout=300)


def replay(tmp_path: Path, *args: str) -> tuple[list[dict], list[dict], str]:
    """Replay to files; (bins, dlq records, summary line). Every line written must be valid JSON."""
    bins, dlq = tmp_path / "bins.jsonl", tmp_path / "dlq.jsonl"
    done = cli("replay", *args, "--to", str(bins), "--dlq", str(dlq), "--quiet")
    assert done.returncode == 0, done.stderr
    return strict_jsonl(bins), strict_jsonl(dlq), done.stdout.strip().splitlines()[-1]


def strict_jsonl(path: Path) -> list[dict]:
    """Every line of a JSON lines file as an object; fails on a line that is not one JSON document."""
    records = []
    for number, line in enumerate(path.read_bytes().splitlines(), 1):
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as exc:  # pragma: no cover - the failure this module guards against
            pytest.fail(f"{path.name} line {number} is not JSON ({exc}): {line[:120]!r}")
    return records


def one_line_error(done: subprocess.CompletedProcess[str], *needles: str) -> str:
    """The command failed with exactly one line on stderr, no traceback, containing every needle."""
    assert done.returncode != 0, done.stdout
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, done.stderr
    assert "Traceback" not in done.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]
    return lines[0]


def no_bins(path: Path) -> bool:
    """No bin was written (the file is absent, or empty where the sink opened it before the sources)."""
    return not path.exists() or path.read_bytes() == b""


def expected_bins(ticks: list[tuple[str, int, float, int]]) -> dict[tuple[str, int], tuple]:
    """(symbol, start) -> (open, high, low, close, volume, trade_count) of 10 ms bins, in plain Python."""
    grouped: dict[tuple[str, int], list[tuple[float, int]]] = defaultdict(list)
    for symbol, ts, price, size in ticks:
        grouped[(symbol, ts - ts % 10)].append((price, size))
    return {
        key: (rows[0][0], max(p for p, _ in rows), min(p for p, _ in rows), rows[-1][0],
              sum(s for _, s in rows), len(rows))
        for key, rows in grouped.items()
    }


def got_bins(bins: list[dict]) -> dict[tuple[str, int], tuple]:
    """The same view of the replay's bins."""
    return {
        (b["symbol"], b["start_ts_ms"]): (b["open"], b["high"], b["low"], b["close"], b["volume"], b["trade_count"])
        for b in bins
    }


# ---- 3. symbols ----------------------------------------------------------------------------------


def test_hostile_symbols_in_a_csv_column_are_bad_symbol_and_every_bin_line_is_json(tmp_path: Path) -> None:
    """Quote, backslash, control characters and anything outside the pattern: DLQ bad_symbol with the line.

    The good rows (BRK.A, BF-B, A1 are inside the pattern) are kept with exact values; the bins file
    is valid JSON line by line and the aggregator reads all of it (no `not_json`).
    """
    good = [("AAA", T0, 10.0, 100), ("BRK.A", T0 + 3, 600000.5, 1), ("BF-B", T0 + 12, 33.25, 7),
            ("A1", T0 + 15, 1.5, 2), ("AAA", T0 + 5, 10.5, 50)]
    rows = [f"{s},{ts},{p},{n}" for s, ts, p, n in good[:2]]
    rows += [f"{s},{T0 + 1},11.0,9" for s in HOSTILE]
    rows += [f"{s},{ts},{p},{n}" for s, ts, p, n in good[2:]]
    rows.append(f",{T0 + 2},11.0,9")  # an empty symbol cell
    path = tmp_path / "ticks.csv"
    path.write_text("symbol,ts_ms,price,size\n" + "\n".join(rows) + "\n", encoding="utf-8")

    bins, dlq, summary = replay(tmp_path, str(path), "--no-spread", "--max-late-ms", "1000")

    bad_lines = [*range(4, 4 + len(HOSTILE)), len(rows) + 1]
    assert sorted((d["position"]["line"], d["reason"]) for d in dlq) == [(n, "bad_symbol") for n in bad_lines]
    assert all(d["source"] == str(path) for d in dlq)
    assert f"ticks={len(good)} " in summary and f"dlq={len(bad_lines)} " in summary and "skipped=1" in summary
    assert len(good) + len(bad_lines) + 1 == len(path.read_text(encoding="utf-8").splitlines())
    assert got_bins(bins) == expected_bins(sorted(good, key=lambda t: t[1]))
    assert all(is_symbol(b["symbol"]) and b["bin_id"].startswith(b["symbol"] + "-") for b in bins)
    schema = Draft202012Validator(json.loads((PROJECT_ROOT / "docs/contracts/ticks_raw_schema.json").read_text()))
    assert [list(schema.iter_errors(b)) for b in bins] == [[] for _ in bins]

    bars = tmp_path / "bars.jsonl"
    agg = cli("aggregate", "--from", str(tmp_path / "bins.jsonl"), "--to", str(bars))
    assert agg.returncode == 0, agg.stderr
    assert "poison 0" in agg.stdout and f"{len(bins)} bins" in agg.stdout
    by_symbol = {b["symbol"]: b["volume"] for b in strict_jsonl(bars)}
    assert by_symbol == {"AAA": 150, "BRK.A": 1, "BF-B": 7, "A1": 2}


def test_hostile_symbols_in_a_parquet_column_are_bad_symbol_with_the_row(tmp_path: Path) -> None:
    """Parquet: the same shared row check, position = the 1-based row."""
    symbols = ["AAA", *HOSTILE, "BBB"]
    frame = pl.DataFrame({
        "symbol": symbols,
        "ts_ms": [T0 + i for i in range(len(symbols))],
        "price": [10.0] * len(symbols),
        "size": [5] * len(symbols),
    })
    path = tmp_path / "ticks.parquet"
    frame.write_parquet(path)

    bins, dlq, summary = replay(tmp_path, str(path), "--no-spread")

    assert sorted((d["position"]["line"], d["reason"]) for d in dlq) == [
        (row, "bad_symbol") for row in range(2, 2 + len(HOSTILE))
    ]
    assert "ticks=2 " in summary and f"dlq={len(HOSTILE)} " in summary
    assert got_bins(bins) == expected_bins([("AAA", T0, 10.0, 5), ("BBB", T0 + len(symbols) - 1, 10.0, 5)])


@pytest.mark.parametrize("bad", ['BAD"X', "BAD\\X", "bad", "A\x01B", "TOOLONGSYMBOL12345", ""])
def test_a_bad_symbol_option_is_a_one_line_error(tmp_path: Path, bad: str) -> None:
    """`--symbol BAD"X`: config error naming REPLAY_SYMBOL and the rule, exit 2, no output file."""
    path = tmp_path / "ticks.txt"
    path.write_text("03/08/2024,09:30:00,10.0,9.9,10.1,100\n")
    done = cli("replay", str(path), "--symbol", bad, "--to", str(tmp_path / "bins.jsonl"))
    one_line_error(done, "REPLAY_SYMBOL", SYMBOL_RULE)
    assert done.returncode == 2
    assert not (tmp_path / "bins.jsonl").exists()


@pytest.mark.parametrize(
    ("name", "symbol"),
    [("WDC_tickbidask.txt", "WDC"), ("BRK.B_tickbidask.txt", "BRK.B"), ("BF-B_ticks.txt", "BF-B"),
     ("X2_ticks.txt", "X2"), ('BAD"X_tickbidask.txt', None), ("BAD\\X_ticks.txt", None), ("wdc_ticks.txt", None),
     ("ABCDEFGHIJKLMNOPQ_ticks.txt", None), ("_ticks.txt", None), ("WDC.txt", None), (".A_ticks.txt", None)],
)
def test_the_symbol_of_a_file_name_follows_the_one_pattern(name: str, symbol: str | None) -> None:
    """The part before the first `_` is the symbol only when it matches the contract's pattern."""
    assert symbol_from_filename(Path("/data") / name) == symbol


def test_a_file_name_that_is_not_a_symbol_gives_no_symbol(tmp_path: Path) -> None:
    """`BAD"X_tickbidask.txt`: no symbol from the name; refused in one line, or named by `--symbol`."""
    path = tmp_path / 'BAD"X_tickbidask.txt'
    path.write_text("03/08/2024,09:30:00,10.0,9.9,10.1,100\n03/08/2024,09:30:01,10.5,9.9,10.1,20\n")
    done = cli("replay", str(path), "--to", str(tmp_path / "bins.jsonl"))
    one_line_error(done, "cannot tell the symbol", "BAD")
    assert no_bins(tmp_path / "bins.jsonl")

    bins, dlq, summary = replay(tmp_path, str(path), "--symbol", "WDC", "--no-spread")
    assert dlq == [] and "ticks=2 " in summary
    start = eastern_ms("03/08/2024", "09:30:00")
    assert got_bins(bins) == expected_bins([("WDC", start, 10.0, 100), ("WDC", start + 1000, 10.5, 20)])


def test_the_contract_schemas_state_the_one_symbol_pattern() -> None:
    """The JSON Schemas of bins and bars carry SYMBOL_REGEX itself, and their ids are built on it."""
    spec = "-time-[1-9][0-9]*(ms|s)"  # a bar's id ends with its spec (streaming/kernel/bar_spec.py)
    for name, id_field, tail in (("ticks_raw_schema.json", "bin_id", ""), ("ticks_agg_1s_schema.json", "bar_id", spec)):
        props = json.loads((PROJECT_ROOT / "docs/contracts" / name).read_text())["properties"]
        assert props["symbol"]["pattern"] == SYMBOL_REGEX
        assert props[id_field]["pattern"] == SYMBOL_REGEX.removesuffix("$") + "-[0-9]{13}" + tail + "$"


def test_the_bin_encoder_writes_valid_json_for_any_symbol() -> None:
    """Defensive: whatever reaches the encoder, each line is one JSON document with the exact strings."""
    names = ["AAA", *HOSTILE, "\x7f", "\u2028X", "\\\"", "\x00"]
    frame = pl.DataFrame({
        "bin_id": [f"{s}-{T0:013d}" for s in names],
        "symbol": names,
        "start_ts_ms": [T0] * len(names),
        "end_ts_ms": [T0 + 10] * len(names),
        "window_ms": [10] * len(names),
        "open": [1.5] * len(names), "high": [2.0] * len(names), "low": [1.0] * len(names),
        "close": [1.25] * len(names), "volume": [3] * len(names), "notional": [4.5] * len(names),
        "trade_count": [2] * len(names), "max_lateness_ms": [0] * len(names),
        "api_send_ts_ms": [T0] * len(names), "source_event_ts_ms": [T0] * len(names),
    })
    lines = bin_json_lines(frame, 7)
    decoded = [json.loads(line) for line in lines]
    assert [d["symbol"] for d in decoded] == names
    assert [d["bin_id"] for d in decoded] == [f"{s}-{T0:013d}" for s in names]
    plain = decoded[0]
    assert lines[0].encode() == encode(Bin(**plain))
    assert all(d["volume"] == 3 and d["ingest_ts_ms"] == 7 and d["source"] == "replay" for d in decoded)


def test_the_mock_api_refuses_a_bad_symbol_and_serves_every_pattern_symbol(tmp_path: Path) -> None:
    """422 for a symbol outside the pattern (quote, backslash, control character); BF-B is a symbol."""
    (tmp_path / "BF-B_tickbidask.txt").write_text(
        "03/08/2024,09:30:00,33.5,33.4,33.6,100\n03/08/2024,09:30:01,33.75,33.4,33.6,40\n"
    )
    (tmp_path / "X2_tickbidask.txt").write_text("03/08/2024,09:30:00,2.5,2.4,2.6,10\n")
    client = TestClient(create_app([str(tmp_path / "BF-B_tickbidask.txt"), str(tmp_path / "X2_tickbidask.txt")]))
    for bad in ['BAD"X', "A\\B", "A\x01B", "A B", "1AB", "ABCDEFGHIJKLMNOPQ"]:
        response = client.get("/ticks", params={"symbols": bad, "speed": 0})
        assert response.status_code == 422, bad
        assert "not a symbol" in response.json()["detail"]
    assert client.get("/health").json()["symbols"] == ["BF-B", "X2"]
    response = client.get("/ticks", params={"symbols": "BF-B", "speed": 0})
    assert response.status_code == 200
    rows = [json.loads(line) for line in response.text.splitlines()]
    assert [(r["symbol"], r["price"], r["size"]) for r in rows] == [("BF-B", 33.5, 100), ("BF-B", 33.75, 40)]


def test_the_mock_api_never_serves_a_row_with_a_bad_symbol(tmp_path: Path) -> None:
    """A CSV behind the API with hostile symbol cells: only the rows with a symbol are streamed."""
    path = tmp_path / "ticks.csv"
    path.write_text("symbol,ts_ms,price,size\n" + "\n".join(
        f"{s},{T0 + i},10.0,1" for i, s in enumerate(["AAA", *HOSTILE, "BBB"])
    ) + "\n", encoding="utf-8")
    response = TestClient(create_app([str(path)])).get("/ticks", params={"speed": 0})
    assert response.status_code == 200
    assert [json.loads(line)["symbol"] for line in response.text.splitlines()] == ["AAA", "BBB"]


# ---- 4. CSV headers read by name -------------------------------------------------------------------


@pytest.mark.parametrize("header", ["Date,Time,Bid,Ask,Price,Size", "date,time,size,price,ask,bid",
                                    '"Date","Time","Ask","Bid","Price","Size"', "Date,Time,Price,Bid,Ask,Size,Exch"])
def test_a_date_time_header_in_another_order_is_read_by_names(tmp_path: Path, header: str) -> None:
    """`Date,Time,Bid,Ask,Price,Size`: the price is the Price column, not the third field."""
    names = [n.strip('"').lower() for n in header.split(",")]
    values = [("03/08/2024", "09:30:00", 10.0, 9.9, 10.1, 100), ("03/08/2024", "09:30:00", 10.25, 9.8, 10.3, 5),
              ("03/08/2024", "09:30:01", 10.5, 10.4, 10.6, 7)]
    fields = {"date": 0, "time": 1, "price": 2, "bid": 3, "ask": 4, "size": 5}
    lines = [header]
    for row in values:
        lines.append(",".join(str(row[fields[n]]) if n in fields else "Q" for n in names))
    # Spaces after the commas and quoted cells, as some exports write them: the same ticks.
    quoted = ("03/08/2024", "09:30:01", 10.75, 10.4, 10.8, 3)
    lines.append(", ".join(f'"{quoted[fields[n]]}"' if n in fields else "Q" for n in names))
    path = tmp_path / "WDC_ticks.csv"
    path.write_text("\n".join(lines) + "\n")

    bins, dlq, summary = replay(tmp_path, str(path), "--no-spread")

    assert dlq == [] and "ticks=4 " in summary and "skipped=1" in summary
    start = eastern_ms("03/08/2024", "09:30:00")
    assert got_bins(bins) == expected_bins(
        [("WDC", start, 10.0, 100), ("WDC", start, 10.25, 5), ("WDC", start + 1000, 10.5, 7),
         ("WDC", start + 1000, 10.75, 3)]
    )


def test_kibot_header_and_headerless_kibot_stay_positional(tmp_path: Path) -> None:
    """Kibot's exact header, and no header at all, keep the fast positional Kibot reader."""
    headed = tmp_path / "WDC_a.txt"
    headed.write_text("Date,Time,Price,Bid,Ask,Size\n03/08/2024,09:30:00,10.0,9.9,10.1,100\n")
    bare = tmp_path / "WDC_b.txt"
    bare.write_text("03/08/2024,09:30:00,10.0,9.9,10.1,100\n")
    reordered = tmp_path / "WDC_c.txt"
    reordered.write_text("Date,Time,Bid,Ask,Price,Size\n03/08/2024,09:30:00,9.9,10.1,10.0,100\n")
    assert [source_format(p) for p in (headed, bare, reordered)] == ["kibot", "kibot", "csv"]
    for path in (headed, bare, reordered):
        bins, dlq, _ = replay(tmp_path, str(path))
        assert dlq == [] and got_bins(bins) == {("WDC", eastern_ms("03/08/2024", "09:30:00")):
                                                (10.0, 10.0, 10.0, 10.0, 100, 1)}


@pytest.mark.parametrize(
    ("header", "needles"),
    [("Date,Time,Bid,Ask,Prc,Size", ["price", "Prc"]), ("Date,Time,Bid,Ask,Price,Amount", ["size", "Amount"]),
     ("Date,Bid,Ask,Price,Size", ["ts (or date + time)"]), ("Date,Time,Price,Price,Size", ["Price", "twice"]),
     ("Date,Time,,Price,Size", ["empty"])],
)
def test_a_header_without_the_required_columns_is_one_line_naming_them(
    tmp_path: Path, header: str, needles: list[str]
) -> None:
    """Missing or unknown columns, a name twice or an empty name: one line naming them, nothing written."""
    path = tmp_path / "WDC_ticks.csv"
    path.write_text(header + "\n03/08/2024,09:30:00,9.9,10.1,10.0,100\n")
    done = cli("replay", str(path), "--to", str(tmp_path / "bins.jsonl"))
    one_line_error(done, str(path), *needles)
    assert done.returncode == 1
    assert no_bins(tmp_path / "bins.jsonl")


# ---- 8. --symbol precedence and a file given twice -------------------------------------------------


def test_symbol_option_names_only_files_without_their_own(tmp_path: Path) -> None:
    """AAA_ and BBB_ files keep their symbols; `--symbol ZZZ` names only the file without one."""
    rows = {"AAA_x.txt": (10.0, 100), "BBB_y.txt": (20.0, 7), "ticks.txt": (30.0, 3)}
    for name, (price, size) in rows.items():
        (tmp_path / name).write_text(f"03/08/2024,09:30:00,{price},{price},{price},{size}\n")
    csv = tmp_path / "CCC_mixed.csv"
    csv.write_text(f"symbol,ts_ms,price,size\nDDD,{T0},40.0,4\n,{T0 + 1},41.0,1\n")

    bins, dlq, summary = replay(tmp_path, *(str(tmp_path / n) for n in rows), str(csv), "--symbol", "ZZZ",
                                "--no-spread")

    start = eastern_ms("03/08/2024", "09:30:00")
    assert got_bins(bins) == expected_bins(
        [("AAA", start, 10.0, 100), ("BBB", start, 20.0, 7), ("ZZZ", start, 30.0, 3), ("DDD", T0, 40.0, 4)]
    )
    # A file with a symbol column names every row itself: an empty cell is not filled from elsewhere.
    assert [(d["position"]["line"], d["reason"]) for d in dlq] == [(3, "bad_symbol")]
    assert "ticks=4 " in summary and "dlq=1 " in summary


def test_the_same_file_twice_is_a_one_line_error(tmp_path: Path) -> None:
    """`x`, `./x`, `dir/../x`, a symlink and a hard link are one file: refused, not counted twice."""
    path = tmp_path / "WDC_ticks.txt"
    path.write_text("03/08/2024,09:30:00,10.0,9.9,10.1,100\n")
    (tmp_path / "link.txt").symlink_to(path)
    os.link(path, tmp_path / "hard.txt")
    (tmp_path / "sub").mkdir()
    spellings = [str(tmp_path / "sub" / ".." / "WDC_ticks.txt"), str(tmp_path / "link.txt"),
                 str(tmp_path / "hard.txt"), str(path)]
    for other in spellings:
        done = cli("replay", str(path), other, "--to", str(tmp_path / "bins.jsonl"))
        one_line_error(done, "given twice", "WDC_ticks.txt")
        assert no_bins(tmp_path / "bins.jsonl")
    relative = subprocess.run(
        [sys.executable, "-m", "streaming", "replay", "WDC_ticks.txt", "./WDC_ticks.txt", "--to", "bins.jsonl"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
        env={**os.environ, "PYTHONPATH": str(PROJECT_ROOT)},
    )
    one_line_error(relative, "given twice")
    # Two different files of the same symbol are fine: both counted once.
    second = tmp_path / "WDC_more.txt"
    second.write_text("03/08/2024,09:30:01,11.0,9.9,10.1,5\n")
    bins, dlq, summary = replay(tmp_path, str(path), str(second), "--no-spread")
    assert dlq == [] and "ticks=2 " in summary
    assert sum(b["volume"] for b in bins) == 105


def test_the_mock_api_refuses_the_same_file_twice(tmp_path: Path) -> None:
    """The API reads through the same sources: one file listed twice is refused at start."""
    from streaming.kernel.errors import SourceError

    path = tmp_path / "WDC_ticks.txt"
    path.write_text("03/08/2024,09:30:00,10.0,9.9,10.1,100\n")
    with pytest.raises(SourceError, match="given twice"):
        create_app([str(path), str(tmp_path / "." / "WDC_ticks.txt")])


def test_iso_times_with_a_utc_designator_or_an_offset_are_exact(tmp_path: Path) -> None:
    """`...Z`, `...+00:00`, `...-05:00` and fractions mean one instant each; naive text is New York wall clock."""
    forms = {
        "2024-03-08T14:30:00Z": T0,
        "2024-03-08T14:30:00.250z": T0 + 250,
        "2024-03-08T14:30:01+00:00": T0 + 1_000,
        "2024-03-08T09:30:02-05:00": T0 + 2_000,
        "2024-03-08 09:30:03": T0 + 3_000,
    }
    path = tmp_path / "iso.csv"
    path.write_text("symbol,ts,price,size\n" + "".join(f"AAA,{ts},10,1\n" for ts in forms))
    bins, dlq, _ = replay(tmp_path, str(path))
    assert dlq == []
    starts = sorted(b["start_ts_ms"] for b in bins)
    assert starts == sorted((ms // 10) * 10 for ms in forms.values())
