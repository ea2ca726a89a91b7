"""Helpers of the platform tests: the raw sample as ticks, 1 s bars produced to a topic, independent OHLCV.

No tests here. The bars follow the aggregator's ordering contract: per partition, revision-0
bars in non-decreasing start_ts_ms; partition = crc32(symbol) % partitions; key = symbol.
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Callable, Iterable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import TYPE_CHECKING, Any

import polars as pl
import pytest
from confluent_kafka import Producer

from streaming.kernel.bar_spec import DEFAULT_BAR_SPEC, make_bar_id
from streaming.kernel.records import Bar, encode
from streaming.kernel.settings import KafkaSettings, Settings, load_settings

if TYPE_CHECKING:
    from dagster import AssetsDefinition, Definitions

SAMPLE_FIRST_WINDOW_MS = 1266417000000  # the real sample's first 5-minute window: 2010-02-17 14:30 UTC
# The fact partitions of the suite: the sample's day and the next (end exclusive), a bounded set
# as the pipeline and the demo give Dagster. The conftest exports them for subprocesses too.
SAMPLE_PARTITIONS_START = "2010-02-17"
SAMPLE_PARTITIONS_END = "2010-02-19"


def sample_settings(env_file: str | None = None, **sections: dict[str, Any]) -> Settings:
    """load_settings(env_file, **sections) with the sample's partitions (a `warehouse` section adds to them)."""
    loader = {"partitions_start": SAMPLE_PARTITIONS_START, "partitions_end": SAMPLE_PARTITIONS_END,
              **sections.pop("warehouse", {})}
    return load_settings(env_file, warehouse=loader, **sections)


def sample_definitions(settings: Settings | None = None) -> Definitions:
    """The code location built from `settings` (default: sample_settings())."""
    # Imported here: the conftest imports this module for the window, before any test needs Dagster.
    from tick_platform.code_location import build_definitions

    return build_definitions(settings if settings is not None else sample_settings())


def sample_fact_ticks(settings: Settings | None = None) -> AssetsDefinition:
    """The multi-asset fact_ticks over the partitions of `settings` (default: the sample's)."""
    from tick_platform.assets.facts import build_fact_ticks
    from tick_platform.partitions import configured_partitions

    return build_fact_ticks(configured_partitions((settings if settings is not None else sample_settings()).warehouse))


def read_kibot(path: Path, symbol: str = "WDC") -> pl.DataFrame:
    """Kibot Date,Time,Price,Bid,Ask,Size (US/Eastern) as symbol, ts_ms (UTC epoch ms), price, size, in file order."""
    raw = pl.read_csv(
        path,
        has_header=False,
        new_columns=["date", "time", "price", "bid", "ask", "size"],
        schema_overrides={"date": pl.String, "time": pl.String, "price": pl.Float64, "size": pl.Int64},
    )
    return raw.select(
        pl.lit(symbol).alias("symbol"),
        (pl.col("date") + " " + pl.col("time"))
        .str.strptime(pl.Datetime("ms"), "%m/%d/%Y %H:%M:%S")
        .dt.replace_time_zone("America/New_York")
        .dt.epoch("ms")
        .alias("ts_ms"),
        "price",
        "size",
    )


def bars_from_ticks(ticks: pl.DataFrame, ingest_ts_ms: int = 1_700_000_000_000) -> list[Bar]:
    """1 s bars (revision 0) by a per-second group-by of ticks in file order."""
    grouped = (
        ticks.with_columns((pl.col("ts_ms") // 1000 * 1000).alias("start"))
        .group_by(["symbol", "start"], maintain_order=True)
        .agg(
            pl.col("price").first().alias("open"),
            pl.col("price").max().alias("high"),
            pl.col("price").min().alias("low"),
            pl.col("price").last().alias("close"),
            pl.col("size").sum().alias("volume"),
            (pl.col("price") * pl.col("size")).sum().alias("notional"),
            pl.len().alias("n"),
        )
        .sort(["start", "symbol"])
    )
    return [
        Bar(
            bar_id=make_bar_id(r["symbol"], r["start"], DEFAULT_BAR_SPEC),
            symbol=r["symbol"],
            spec=DEFAULT_BAR_SPEC.text,
            start_ts_ms=r["start"],
            end_ts_ms=r["start"] + 1000,
            open=r["open"],
            high=r["high"],
            low=r["low"],
            close=r["close"],
            volume=r["volume"],
            notional=r["notional"],
            vwap=r["notional"] / r["volume"] if r["volume"] else r["close"],
            trade_count=r["n"],
            bin_count=1,
            max_lateness_ms=0,
            api_send_ts_ms=None,
            source_event_ts_ms=r["start"],
            ingest_ts_ms=ingest_ts_ms,
        )
        for r in grouped.iter_rows(named=True)
    ]


def partition_of(symbol: str, partitions: int) -> int:
    """The aggregator's partitioner: crc32(symbol) % partitions."""
    return zlib.crc32(symbol.encode()) % partitions


def produce_bars(kafka: KafkaSettings, bars: Iterable[Bar]) -> int:
    """Produce bars keyed by symbol to the agg topic, in the given order; returns how many."""
    producer = Producer({**kafka.client_base(), "enable.idempotence": True, "acks": "all", "linger.ms": 5})
    n = 0
    for bar in bars:
        producer.produce(
            kafka.topic_agg,
            key=bar.symbol.encode(),
            value=encode(bar),
            partition=partition_of(bar.symbol, kafka.partitions),
        )
        n += 1
        if n % 10_000 == 0:
            producer.flush()
    producer.flush(30)
    return n


def expected_ohlcv(ticks: pl.DataFrame, window_s: int) -> pl.DataFrame:
    """Independent per-window OHLCV straight from the raw ticks (no bars involved)."""
    w = window_s * 1000
    return (
        ticks.with_columns((pl.col("ts_ms") // w * w).alias("start"))
        .group_by(["symbol", "start"], maintain_order=True)
        .agg(
            pl.col("price").first().alias("OPEN"),
            pl.col("price").max().alias("HIGH"),
            pl.col("price").min().alias("LOW"),
            pl.col("price").last().alias("CLOSE"),
            pl.col("size").sum().alias("VOLUME"),
            (pl.col("price") * pl.col("size")).sum().alias("NOTIONAL"),
            (pl.col("ts_ms") // 1000).n_unique().alias("SOURCE_COUNT"),
        )
        .with_columns(
            pl.format("{}-{}-{}", "symbol", pl.col("start").cast(pl.String).str.zfill(13), pl.lit(str(window_s))).alias(
                "BAR_ID"
            ),
            (pl.col("NOTIONAL") / pl.col("VOLUME")).alias("VWAP"),
        )
        .sort("BAR_ID")
    )


def assert_facts_equal(actual: pl.DataFrame, expected: pl.DataFrame) -> None:
    """Warehouse fact rows equal the independent OHLCV (prices to 1e-6, notional relative 1e-9)."""
    a = actual.sort("BAR_ID")
    e = expected.sort("BAR_ID")
    assert a["BAR_ID"].to_list() == e["BAR_ID"].to_list()
    for col in ("VOLUME", "SOURCE_COUNT"):
        assert a[col].cast(pl.Int64).to_list() == e[col].cast(pl.Int64).to_list(), col
    for col in ("OPEN", "HIGH", "LOW", "CLOSE", "VWAP"):
        diff = (a[col].cast(pl.Float64) - e[col].cast(pl.Float64)).abs().max()
        assert diff is not None and float(diff) <= 1e-6, (col, diff)  # type: ignore[arg-type]
    rel = ((a["NOTIONAL"].cast(pl.Float64) - e["NOTIONAL"]).abs() / e["NOTIONAL"]).max()
    assert rel is not None and float(rel) <= 1e-9, rel  # type: ignore[arg-type]


def assert_marts(execute: Callable[[str], Any], minutes: pl.DataFrame) -> None:
    """Each MART view equals the same figure computed in plain Python from the independent 60 s OHLCV.

    `execute` runs one statement and returns something with `fetchall()` (a DuckDB connection's
    `execute`, or a Snowflake cursor's), so both targets are held to the same figures.
    """

    def fetch(sql: str) -> list[tuple[Any, ...]]:  # DECIMAL columns (prices, notional) as floats
        return [tuple(float(v) if isinstance(v, Decimal) else v for v in row) for row in execute(sql).fetchall()]

    rows = sorted(minutes.iter_rows(named=True), key=lambda r: r["start"])
    ts = [datetime.fromtimestamp(r["start"] / 1000, UTC).replace(tzinfo=None) for r in rows]
    minute = timedelta(minutes=1)
    volume, notional = sum(r["VOLUME"] for r in rows), sum(r["NOTIONAL"] for r in rows)

    session = fetch("SELECT * FROM MART.V_SESSION_VWAP")
    assert len(session) == 1
    (symbol, day, first, last_end, vol, notion, vwap, count) = session[0]
    assert (symbol, str(day), first, last_end, vol, count) == ("WDC", "2010-02-17", ts[0], ts[-1] + minute,
                                                               volume, len(rows))
    assert notion == pytest.approx(notional, rel=1e-12) and vwap == pytest.approx(notional / volume, rel=1e-12)

    # The last 15 minutes before the newest minute's end (inclusive of the minute starting 15 min before).
    as_of = ts[-1] + minute
    recent = [(t, r) for t, r in zip(ts, rows, strict=True) if t >= as_of - timedelta(minutes=15)]
    movers = fetch("SELECT * FROM MART.V_TOP_MOVERS_15M")
    open_15, close_15 = recent[0][1]["OPEN"], recent[-1][1]["CLOSE"]
    assert len(movers) == 1
    assert movers[0][:5] == ("WDC", as_of, open_15, close_15, sum(r["VOLUME"] for _t, r in recent))
    assert movers[0][5] == pytest.approx(close_15 / open_15 - 1, rel=1e-12)

    bands = fetch("SELECT * FROM MART.V_VOLATILITY_BANDS ORDER BY START_TS")
    closes = [r["CLOSE"] for r in rows]
    assert [(b[0], b[1], b[2]) for b in bands] == [("WDC", t, c) for t, c in zip(ts, closes, strict=True)]
    for i in (1, 19, 20, len(rows) - 1):  # a 2-point window, the first full one, the first sliding one, the last
        window = closes[max(0, i - 19): i + 1]
        mean = sum(window) / len(window)
        sd = math.sqrt(sum((c - mean) ** 2 for c in window) / (len(window) - 1))
        assert bands[i][3] == pytest.approx(mean, rel=1e-12), i
        assert (bands[i][4], bands[i][5]) == (pytest.approx(mean - 2 * sd, rel=1e-9),
                                              pytest.approx(mean + 2 * sd, rel=1e-9)), i
    assert bands[0][4] is None  # one close has no sample standard deviation

    [metrics] = fetch("SELECT SUM(ROWS_LOADED), MAX(SYMBOLS), SUM(BARS_1S), MIN(MIN_WINDOW_TS), "
                      "MAX(MAX_WINDOW_END_TS) FROM MART.V_PIPELINE_MINUTE_METRICS")
    assert metrics == (len(rows), 1, sum(r["SOURCE_COUNT"] for r in rows), ts[0], ts[-1] + minute)
