"""`python -m tick_tools demo` on 40 trading days of the real sample (issue 14): the facts equal a recomputation.

The file is the sample's one day (WDC, 2010-02-17, 20,000 ticks) repeated on the first 40 NYSE
sessions from 2010-02-17, every price, bid and ask shifted by one cent per day
(tick_tools.pipeline.demo_data.write_history_from_sample), so a fact of one day taken for another's
would not match. Choice: Good Friday 2010-04-02, an NYSE holiday, is SKIPPED, not written as a
weekday whose bars fall outside the session: the file holds 40 sessions, 2010-02-17 .. 2010-04-14,
and the fact partitions are exactly 40 x 78 (bars outside sessions are covered by
test_platform_facts and test_platform_calendar). The days cross the DST change of Sunday
2010-03-14: the 09:30 open is 14:30 UTC before it and 13:30 UTC after.

The expected facts are recomputed from the file alone: its own parse of the Kibot lines, New York
wall clock to UTC by zoneinfo, and a DuckDB SQL group-by over the ticks in file (trade) order;
nothing of the platform's readers, binning or rollups.

The demo runs are marked `slow` (not `ci`): `make reliability` and `pytest -m slow` run them,
`make test` does not. The demo's fact step over 3,117 partitions takes 9-16 minutes here, almost
all of it Dagster's per-partition events on SQLite (docs/benchmarks.md, section 7d); the suite
would grow by half. The generator's own tests run everywhere.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from zoneinfo import ZoneInfo

import duckdb
import polars as pl
import pytest

from streaming.kernel.errors import SourceError
from streaming.kernel.settings import PROJECT_ROOT, KafkaSettings
from tick_tools.broker.runner import LocalCluster
from tick_tools.pipeline.demo_data import trading_days, write_history_from_sample

FIRST_DAY = date(2010, 2, 17)
DAYS = 40
GOOD_FRIDAY = date(2010, 4, 2)  # the one NYSE holiday among the weekdays from 2010-02-17 to 2010-04-14
NEW_YORK = ZoneInfo("America/New_York")
WINDOWS_PER_SESSION = 78  # 09:30-16:00 in 5-minute windows
SAMPLE_TICKS = 20_000
# The sample's last tick is at 15:43:44: the demo backfills from the first tick to the last, so
# the last session's 15:45, 15:50 and 15:55 windows are not in its range.
LAST_SESSION_WINDOWS = 75
FACT_COLUMNS = "BAR_ID, SYMBOL, OPEN, HIGH, LOW, CLOSE, VOLUME, NOTIONAL, VWAP, SOURCE_COUNT, START_TS, END_TS"
HALF_MICRO = Decimal("0.0000005")
# 800,000 ticks end to end; the fact step's Dagster bookkeeping (about 4 events per partition, 3,117
# partitions) dominates: about 10 minutes on an idle 2-core machine, more under load.
DEMO_TIMEOUT_S = 2400  # a value rounded to the warehouse's 6 decimals is this close


def expected_days() -> list[date]:
    """The 40 weekdays from FIRST_DAY without Good Friday, counted here without a calendar library."""
    days: list[date] = []
    day = FIRST_DAY
    while len(days) < DAYS:
        if day.weekday() < 5 and day != GOOD_FRIDAY:
            days.append(day)
        day += timedelta(days=1)
    return days


def read_ticks(path: Path) -> pl.DataFrame:
    """The file's ticks: line number (trade order), UTC epoch ms by zoneinfo, price text, size."""
    raw = pl.read_csv(path, has_header=False, new_columns=["date", "time", "price", "bid", "ask", "size"],
                      infer_schema=False).with_row_index("seq")
    # New York's UTC offset per (date, hour) by zoneinfo: DST changes at 02:00, never inside an hour of trading.
    hours = raw.select("date", pl.col("time").str.slice(0, 2).alias("hour")).unique()
    offsets = pl.DataFrame(
        {
            "date": hours["date"],
            "hour": hours["hour"],
            "offset_ms": [
                int(datetime.strptime(f"{d} {h}", "%m/%d/%Y %H").replace(tzinfo=NEW_YORK).utcoffset()
                    .total_seconds() * 1000)  # type: ignore[union-attr]
                for d, h in hours.iter_rows()
            ],
        }
    )
    wall = (pl.col("date") + " " + pl.col("time")).str.strptime(pl.Datetime("ms"), "%m/%d/%Y %H:%M:%S")
    return (
        raw.with_columns(pl.col("time").str.slice(0, 2).alias("hour"))
        .join(offsets, on=["date", "hour"], how="left")
        .select(
            "seq",
            (wall.dt.epoch("ms") - pl.col("offset_ms")).alias("ts_ms"),  # the wall clock read as UTC, less the offset
            "price",
            pl.col("size").cast(pl.Int64),
        )
        .sort("seq")
    )


@dataclass(frozen=True)
class Fact:
    """One fact row as the warehouse stores it (DECIMAL columns as Decimal)."""

    bar_id: str
    symbol: str
    open: Decimal
    high: Decimal
    low: Decimal
    close: Decimal
    volume: int
    notional: Decimal
    vwap: Decimal
    source_count: int
    start: datetime
    end: datetime


def recompute(ticks: pl.DataFrame, symbol: str, window_s: int) -> list[Fact]:
    """The facts of `window_s` windows straight from the ticks (exact decimals; VWAP is checked separately)."""
    window_ms = window_s * 1000
    con = duckdb.connect()
    try:
        con.register("ticks", ticks.to_arrow())
        rows = con.execute(
            f"""
            SELECT ts_ms // {window_ms} * {window_ms} AS start_ms,
                   arg_min(p, seq), max(p), min(p), arg_max(p, seq),
                   sum(size), sum(p * size), count(DISTINCT ts_ms // 1000)
            FROM (SELECT seq, ts_ms, CAST(price AS DECIMAL(18, 6)) AS p, size FROM ticks)
            GROUP BY start_ms ORDER BY start_ms
            """
        ).fetchall()
    finally:
        con.close()
    facts = []
    for start_ms, o, h, lo, c, volume, notional, seconds in rows:
        start = datetime.fromtimestamp(start_ms / 1000, UTC).replace(tzinfo=None)
        facts.append(Fact(f"{symbol}-{start_ms:013d}-{window_s}", symbol, o, h, lo, c, int(volume), notional,
                          notional / volume, int(seconds), start, start + timedelta(seconds=window_s)))
    return facts


def stored_facts(warehouse: Path, table: str) -> list[Fact]:
    """The rows of CORE.<table>, by start."""
    con = duckdb.connect(str(warehouse), read_only=True)
    try:
        rows = con.execute(f"SELECT {FACT_COLUMNS} FROM CORE.{table} ORDER BY START_TS, SYMBOL").fetchall()
        nulls = con.execute(f"SELECT count(*) FROM CORE.{table} WHERE INGEST_TS IS NULL OR LOAD_TS IS NULL").fetchone()
    finally:
        con.close()
    assert nulls == (0,), f"{table}: rows without INGEST_TS or LOAD_TS"
    return [Fact(*row) for row in rows]


def assert_facts_match(actual: list[Fact], expected: list[Fact], table: str) -> None:
    """Row for row: ids, symbol, OHLC, volume, notional, counts and times equal; VWAP is notional / volume
    rounded to 6 decimals (either way at a tie: the platform divides floats)."""
    assert [f.bar_id for f in actual] == [f.bar_id for f in expected], f"{table}: other windows"
    for got, want in zip(actual, expected, strict=True):
        assert abs(got.vwap - want.vwap) <= HALF_MICRO, (table, got.bar_id, got.vwap, want.vwap)
        got_rest = {**got.__dict__, "vwap": None}
        want_rest = {**want.__dict__, "vwap": None}
        assert got_rest == want_rest, (table, got, want)


def summary_value(output: str, label: str) -> str:
    """The value of one row of the demo's summary table (`│ label │ value │`)."""
    match = re.search(rf"│ {re.escape(label)}\s+│\s+(\S.*?)\s+│", output)
    assert match, f"the demo printed no {label!r} row"
    return match.group(1)


def count(output: str, label: str) -> int:
    """A number of the demo's summary table."""
    return int(summary_value(output, label).replace(",", ""))


# --- the generator -----------------------------------------------------------------------------------------


def test_trading_days_are_the_nyse_sessions_without_good_friday() -> None:
    days = trading_days(FIRST_DAY, DAYS)
    assert days == expected_days()
    assert GOOD_FRIDAY not in days and days[-1] == date(2010, 4, 14)


def test_history_repeats_the_sample_day_by_day_with_a_cent_per_day(tmp_path: Path) -> None:
    sample = tmp_path / "XYZ_tickbidask.txt"
    sample.write_text("02/17/2010,09:30:01,42.87,42.7,43.01,1161\n\n02/17/2010,15:59:59,42.9384,42.84,42.93,300\n")
    days = [date(2010, 3, 12), date(2010, 3, 15)]
    history = write_history_from_sample(sample, days, tmp_path / "XYZ_history.txt")
    assert (history.days, history.ticks_per_day, history.ticks) == (days, 2, 4)
    assert history.path.read_text().splitlines() == [
        "03/12/2010,09:30:01,42.87,42.70,43.01,1161",
        "03/12/2010,15:59:59,42.9384,42.84,42.93,300",
        "03/15/2010,09:30:01,42.88,42.71,43.02,1161",
        "03/15/2010,15:59:59,42.9484,42.85,42.94,300",
    ]
    assert not list(tmp_path.glob("*.partial"))


def test_history_refuses_another_symbol_and_a_sample_of_several_days(tmp_path: Path) -> None:
    sample = tmp_path / "XYZ_tickbidask.txt"
    sample.write_text("02/17/2010,09:30:01,42.87,42.7,43.01,1161\n")
    with pytest.raises(SourceError, match="must name the sample's symbol XYZ"):
        write_history_from_sample(sample, [FIRST_DAY], tmp_path / "ABC_history.txt")
    sample.write_text("02/17/2010,09:30:01,42.87,42.7,43.01,1161\n02/18/2010,09:30:01,42.87,42.7,43.01,1\n")
    with pytest.raises(SourceError, match="this one has 2 dates"):
        write_history_from_sample(sample, [FIRST_DAY], tmp_path / "XYZ_history.txt")
    with pytest.raises(SourceError, match="distinct and in order"):
        write_history_from_sample(sample, [date(2010, 2, 18), FIRST_DAY], tmp_path / "XYZ_history.txt")


# --- the demo on 40 days -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class DemoRun:
    """One finished `python -m tick_tools demo` on the 40-day file."""

    history: Path
    warehouse: Path
    dagster_home: Path
    output: str
    returncode: int


@pytest.fixture(scope="module")
def demo_run(
    kafka_cluster: LocalCluster, sample_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[DemoRun]:
    """The demo's own entry (`make demo DATA=...`) as a subprocess on the session broker, once for the module."""
    from streaming.kernel.topics import bootstrap_topics

    root = tmp_path_factory.mktemp("demo-history")
    history = write_history_from_sample(sample_path, trading_days(FIRST_DAY, DAYS),
                                        root / "WDC_tickbidask_40days.txt").path
    suffix = uuid.uuid4().hex[:8]
    kafka = KafkaSettings(brokers=kafka_cluster.bootstrap, topic_raw=f"ticks.raw.{suffix}",
                          topic_agg=f"ticks.agg.1s.{suffix}", topic_dlq=f"ticks.dlq.{suffix}")
    bootstrap_topics(kafka)
    env = {
        **os.environ,
        "KAFKA_BROKERS": kafka.brokers,
        "KAFKA_TOPIC_RAW": kafka.topic_raw,
        "KAFKA_TOPIC_AGG": kafka.topic_agg,
        "KAFKA_TOPIC_DLQ": kafka.topic_dlq,
        "AGG_GROUP_ID": f"agg-{suffix}",
        "DAGSTER_HOME": str(root / "dagster_home"),
        "WAREHOUSE_TARGET": "duckdb",
        "WAREHOUSE_DUCKDB_PATH": str(root / "warehouse.duckdb"),
        "COLUMNS": "200",  # the summary table on one line per row
        "PYTHONUNBUFFERED": "1",
    }
    # The suite pins the sample's partitions; the demo must choose the data's days itself, as for a user.
    for name in ("WAREHOUSE_PARTITIONS_START", "WAREHOUSE_PARTITIONS_END"):
        env.pop(name, None)
    log = root / "demo.log"
    with log.open("wb") as out:
        # Its own process group: on a timeout the demo's aggregator child is stopped with it.
        demo = subprocess.Popen([sys.executable, "-m", "tick_tools", "demo", "--data", str(history)],
                                cwd=PROJECT_ROOT, env=env, stdout=out, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
        try:
            code = demo.wait(timeout=DEMO_TIMEOUT_S)
        except BaseException:
            os.killpg(demo.pid, signal.SIGKILL)
            demo.wait()
            raise
    yield DemoRun(history, root / "warehouse.duckdb", root / "dagster_home", log.read_text(errors="replace"), code)


@pytest.mark.kafka
@pytest.mark.slow
@pytest.mark.timeout(DEMO_TIMEOUT_S + 300)  # whichever runs first also runs the demo (the module fixture)
def test_demo_on_40_days_passes_and_accounts_for_every_row(demo_run: DemoRun) -> None:
    out = demo_run.output
    assert demo_run.returncode == 0, out[-4000:]
    assert "validation verdict: PASS" in out, out[-4000:]
    checks = re.search(r"asset checks passed\s+│\s+(\d+)/(\d+)", out)
    assert checks and checks.group(1) == checks.group(2) and int(checks.group(2)) > 0, out[-4000:]

    lines = sum(1 for _ in demo_run.history.open())
    assert lines == DAYS * SAMPLE_TICKS
    assert re.search(rf"replay done: ticks={lines} bins=\d+ dlq=0 skipped=0 ", out), out[-4000:]
    assert count(out, "ticks replayed") == count(out, "validated ticks") == lines
    assert count(out, "DLQ records (replay)") == count(out, "validated dlq") == 0
    ticks = read_ticks(demo_run.history)
    volume = int(ticks["size"].sum())
    seconds = (ticks["ts_ms"] // 1000).n_unique()
    assert count(out, "validated tick_volume") == count(out, "validated bar_volume") == volume
    assert count(out, "validated bars") == seconds
    # Every 1 s bar is in a 60 s fact (none outside the sessions, none lost), every share too.
    con = duckdb.connect(str(demo_run.warehouse), read_only=True)
    try:
        for table in ("FACT_TICKS_60S", "FACT_TICKS_300S"):
            rows, bars, shares = con.execute(
                f"SELECT count(*), sum(SOURCE_COUNT), sum(VOLUME) FROM CORE.{table}").fetchone()  # type: ignore[misc]
            assert (rows, bars, shares) == (count(out, f"rows in {table}"), seconds, volume), table
    finally:
        con.close()


@pytest.mark.kafka
@pytest.mark.slow
@pytest.mark.timeout(DEMO_TIMEOUT_S + 300)  # whichever runs first also runs the demo (the module fixture)
def test_demo_on_40_days_facts_equal_an_independent_recomputation(demo_run: DemoRun) -> None:
    assert demo_run.returncode == 0, demo_run.output[-4000:]
    ticks = read_ticks(demo_run.history)
    for window_s, table in ((60, "FACT_TICKS_60S"), (300, "FACT_TICKS_300S")):
        assert_facts_match(stored_facts(demo_run.warehouse, table), recompute(ticks, "WDC", window_s), table)


@pytest.mark.kafka
@pytest.mark.slow
@pytest.mark.timeout(DEMO_TIMEOUT_S + 300)  # whichever runs first also runs the demo (the module fixture)
def test_demo_on_40_days_crosses_dst_on_the_session_calendar(demo_run: DemoRun) -> None:
    out = demo_run.output
    assert demo_run.returncode == 0, out[-4000:]
    facts = stored_facts(demo_run.warehouse, "FACT_TICKS_60S")
    first_by_day: dict[date, datetime] = {}
    for fact in facts:
        first_by_day.setdefault(fact.start.date(), fact.start)
    # One UTC day per session: 14:30 (13:30) to 21:00 (20:00) UTC never crosses midnight.
    assert list(first_by_day) == expected_days()
    assert first_by_day[date(2010, 3, 12)] == datetime(2010, 3, 12, 14, 30)  # EST, UTC-5
    assert first_by_day[date(2010, 3, 15)] == datetime(2010, 3, 15, 13, 30)  # EDT, UTC-4
    for day, start in first_by_day.items():  # every session opens at 09:30 New York time
        assert start.replace(tzinfo=UTC).astimezone(NEW_YORK).strftime("%H:%M") == "09:30", day
    five = stored_facts(demo_run.warehouse, "FACT_TICKS_300S")
    assert {d: sum(1 for f in five if f.start.date() == d) for d in expected_days()} == dict.fromkeys(
        expected_days(), LAST_SESSION_WINDOWS)

    # The demo chose the data's days as the partitions: exactly 40 sessions of 78 windows each.
    assert "fact partitions 2010-02-17 .. 2010-04-15 (the data's days)" in out
    from tick_platform.partitions import fact_partitions

    keys = fact_partitions("2010-02-17", "2010-04-15").get_partition_keys()
    assert len(keys) == DAYS * WINDOWS_PER_SESSION
    assert {k[:10] for k in keys} == {d.isoformat() for d in expected_days()}
    assert not [k for k in keys if k.startswith(GOOD_FRIDAY.isoformat())]
    # The backfill ran from the first tick's window to the last one's, in chunks of sessions.
    backfilled = DAYS * WINDOWS_PER_SESSION - (WINDOWS_PER_SESSION - LAST_SESSION_WINDOWS)
    ranged = rf"partitions 2010-02-17-09:30 … 2010-04-14-15:40 \({backfilled}\), \d+ run\(s\)"
    assert re.search(ranged, out), out[-4000:]

    from dagster import AssetKey, DagsterInstance

    with DagsterInstance.from_config(str(demo_run.dagster_home)) as instance:
        for asset in ("fact_ticks_60s", "fact_ticks_300s"):
            done = instance.get_materialized_partitions(AssetKey(asset))
            assert done == set(keys[:backfilled]), asset
