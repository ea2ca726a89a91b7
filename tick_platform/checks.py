"""Asset checks: the warehouse facts validated against ticks.agg.1s and against themselves.

Each check looks at the window of the latest materialization (its metadata holds the
window and the offset ranges read), re-reads the same offsets where it needs the bars,
and fails with ERROR severity listing the offending rows.
"""

import json
from dataclasses import dataclass
from typing import Any

import polars as pl
from dagster import (
    AssetCheckExecutionContext,
    AssetCheckResult,
    AssetCheckSeverity,
    AssetKey,
    MetadataValue,
    asset_check,
)

from tick_platform.assets.facts import FACT_60S_KEY, FACT_300S_KEY, WAREHOUSE_POOL
from tick_platform.bar_reader import OffsetRange, partition_heads, read_ranges
from tick_platform.calendar import SessionHours, TradingCalendar, calendar_covering, outside_session, session_bars
from tick_platform.closure import SensorPartitionState, closed_until
from tick_platform.fact_store import naive_utc, normalize, read_rows
from tick_platform.partitions import configured_calendar, floor_window
from tick_platform.resources import KafkaResource, WarehouseResource
from tick_platform.rollup import bars_frame, latest_revisions, rollup_bars, rollup_facts
from tick_platform.validation import compare_rows, missing_bar_counts, ohlc_violations
from tick_platform.warehouse_sql import FACT_60S, FACT_300S, Table

_SHOWN = 50


class NothingMaterializedError(Exception):
    """A check ran before its asset was ever materialized."""


@dataclass(frozen=True)
class LastWindow:
    """The window and offsets of an asset's latest materialization."""

    start_ms: int
    end_ms: int
    ranges: list[OffsetRange]
    session_hours: SessionHours = "regular"
    exchange: str = "XNYS"

    def calendar(self) -> TradingCalendar:
        """The sessions the materialization rolled up (bars outside them are not in the facts)."""
        return calendar_covering(self.start_ms, self.end_ms, self.session_hours, self.exchange)


def last_window(context: AssetCheckExecutionContext, key: AssetKey) -> LastWindow:
    """Window and offset ranges recorded by the asset's latest materialization."""
    event = context.instance.get_latest_materialization_event(key)
    if event is None or event.asset_materialization is None:
        raise NothingMaterializedError(f"{key.to_user_string()} has not been materialized yet")
    meta = event.asset_materialization.metadata
    offsets = meta["offsets"].value
    raw = offsets if isinstance(offsets, dict) else json.loads(str(offsets))
    ranges = [OffsetRange(int(p), int(se[0]), int(se[1])) for p, se in sorted(raw.items(), key=lambda kv: int(kv[0]))]
    hours = str(meta["session_hours"].value) if "session_hours" in meta else "regular"
    return LastWindow(
        int(str(meta["window_start_ms"].value)),
        int(str(meta["window_end_ms"].value)),
        ranges,
        "extended" if hours == "extended" else "regular",
        str(meta["exchange"].value) if "exchange" in meta else "XNYS",
    )


def _result(check: str, problems: list[dict[str, Any]], window: LastWindow | None, **extra: Any) -> AssetCheckResult:
    meta: dict[str, Any] = {
        "offending_rows": MetadataValue.int(len(problems)),
        "offending": MetadataValue.json(problems[:_SHOWN]),
        **extra,
    }
    if window is not None:
        meta["window_start"] = MetadataValue.text(naive_utc(window.start_ms).isoformat())
        meta["window_end"] = MetadataValue.text(naive_utc(window.end_ms).isoformat())
    return AssetCheckResult(
        passed=not problems,
        severity=AssetCheckSeverity.ERROR,
        metadata=meta,
        description=None if not problems else f"{check}: {len(problems)} offending row(s)",
    )


def _expected(kafka: KafkaResource, window: LastWindow, window_s: int) -> tuple[pl.DataFrame, int]:
    read = read_ranges(kafka.kafka(), window.ranges, window.start_ms, window.end_ms)
    return rollup_bars(session_bars(bars_frame(read.bars), window.calendar()), window_s), len(read.bars)


def _rows_match_bars(
    context: AssetCheckExecutionContext, kafka: KafkaResource, warehouse: WarehouseResource, table: Table, window_s: int
) -> AssetCheckResult:
    window = last_window(context, FACT_60S_KEY)
    expected, bars = _expected(kafka, window, window_s)
    with warehouse.connect() as conn:
        actual = read_rows(conn, table, window.start_ms, window.end_ms)
    problems = compare_rows(actual, expected)
    return _result(
        f"{table.name} vs 1 s bars", problems, window, bars_reread=MetadataValue.int(bars), rows=actual.height
    )


@asset_check(
    asset=FACT_60S_KEY,
    pool=WAREHOUSE_POOL,
    description="Each 60 s row equals the rollup of its 1 s bars.",
)
def fact_60s_matches_bars(
    context: AssetCheckExecutionContext, kafka: KafkaResource, warehouse: WarehouseResource
) -> AssetCheckResult:
    """Re-read the window's bars by the recorded offsets; compare every 60 s row."""
    return _rows_match_bars(context, kafka, warehouse, FACT_60S, 60)


@asset_check(
    asset=FACT_300S_KEY,
    pool=WAREHOUSE_POOL,
    description="Each 300 s row equals the rollup of its 1 s bars.",
)
def fact_300s_matches_bars(
    context: AssetCheckExecutionContext, kafka: KafkaResource, warehouse: WarehouseResource
) -> AssetCheckResult:
    """Re-read the window's bars by the recorded offsets; compare every 300 s row."""
    return _rows_match_bars(context, kafka, warehouse, FACT_300S, 300)


@asset_check(
    asset=FACT_300S_KEY,
    pool=WAREHOUSE_POOL,
    description="Each 300 s row equals the rollup of its five 60 s rows.",
)
def fact_300s_matches_60s(context: AssetCheckExecutionContext, warehouse: WarehouseResource) -> AssetCheckResult:
    """Roll the warehouse's 60 s rows up to 300 s and compare with the 300 s rows."""
    window = last_window(context, FACT_300S_KEY)
    with warehouse.connect() as conn:
        rows_60s = read_rows(conn, FACT_60S, window.start_ms, window.end_ms)
        rows_300s = read_rows(conn, FACT_300S, window.start_ms, window.end_ms)
    problems = compare_rows(rows_300s, rollup_facts(rows_60s.drop("LOAD_TS"), 300))
    return _result("300 s vs 60 s", problems, window, rows=rows_300s.height)


def _ohlc(
    context: AssetCheckExecutionContext, warehouse: WarehouseResource, key: AssetKey, table: Table
) -> AssetCheckResult:
    window = last_window(context, key)
    with warehouse.connect() as conn:
        rows = read_rows(conn, table, window.start_ms, window.end_ms)
    return _result(f"{table.name} OHLC", ohlc_violations(rows), window, rows=rows.height)


@asset_check(
    asset=FACT_60S_KEY,
    pool=WAREHOUSE_POOL,
    description="low <= open, close <= high; volume >= 0; vwap in range.",
)
def fact_60s_ohlc_invariants(context: AssetCheckExecutionContext, warehouse: WarehouseResource) -> AssetCheckResult:
    """OHLC invariants of the latest window's 60 s rows."""
    return _ohlc(context, warehouse, FACT_60S_KEY, FACT_60S)


@asset_check(
    asset=FACT_300S_KEY,
    pool=WAREHOUSE_POOL,
    description="low <= open, close <= high; volume >= 0; vwap in range.",
)
def fact_300s_ohlc_invariants(context: AssetCheckExecutionContext, warehouse: WarehouseResource) -> AssetCheckResult:
    """OHLC invariants of the latest window's 300 s rows."""
    return _ohlc(context, warehouse, FACT_300S_KEY, FACT_300S)


def _duplicates(warehouse: WarehouseResource, table: Table) -> AssetCheckResult:
    with warehouse.connect() as conn:
        dupes = conn.query(
            f"SELECT BAR_ID, COUNT(*) AS N FROM {table.qualified} GROUP BY BAR_ID HAVING COUNT(*) > 1 ORDER BY BAR_ID"
        )
    problems = [{"BAR_ID": r["BAR_ID"], "copies": int(r["N"])} for r in dupes.iter_rows(named=True)]
    return _result(f"{table.name} duplicates", problems, None)


@asset_check(
    asset=FACT_60S_KEY,
    pool=WAREHOUSE_POOL,
    description="No BAR_ID appears twice in FACT_TICKS_60S.",
)
def fact_60s_unique_bar_id(warehouse: WarehouseResource) -> AssetCheckResult:
    """Snowflake does not enforce primary keys: look for duplicate BAR_IDs in the whole table."""
    return _duplicates(warehouse, FACT_60S)


@asset_check(
    asset=FACT_300S_KEY,
    pool=WAREHOUSE_POOL,
    description="No BAR_ID appears twice in FACT_TICKS_300S.",
)
def fact_300s_unique_bar_id(warehouse: WarehouseResource) -> AssetCheckResult:
    """Snowflake does not enforce primary keys: look for duplicate BAR_IDs in the whole table."""
    return _duplicates(warehouse, FACT_300S)


@asset_check(
    asset=FACT_60S_KEY,
    pool=WAREHOUSE_POOL,
    description="No 1 s bar of the window is missing (count vs ticks.agg.1s).",
)
def fact_60s_no_missing_bars(
    context: AssetCheckExecutionContext, kafka: KafkaResource, warehouse: WarehouseResource
) -> AssetCheckResult:
    """SOURCE_COUNT of every minute against the distinct 1 s bars of that minute in ticks.agg.1s."""
    window = last_window(context, FACT_60S_KEY)
    expected, _ = _expected(kafka, window, 60)
    with warehouse.connect() as conn:
        rows = read_rows(conn, FACT_60S, window.start_ms, window.end_ms)
    problems = missing_bar_counts(rows, expected)
    return _result(
        "missing 1 s bars",
        problems,
        window,
        bars_in_kafka=MetadataValue.int(int(expected["SOURCE_COUNT"].sum() or 0)),
        bars_in_warehouse=MetadataValue.int(int(rows["SOURCE_COUNT"].sum() or 0)),
    )


@asset_check(
    asset=FACT_300S_KEY,
    pool=WAREHOUSE_POOL,
    description="The facts are not behind the stream: every window ticks.agg.1s has closed is loaded.",
)
def fact_300s_freshness(kafka: KafkaResource, warehouse: WarehouseResource) -> AssetCheckResult:
    """Latest loaded window end vs the newest window the stream's revision-0 bars have closed."""
    heads = partition_heads(kafka.kafka())
    now = 0  # no partition counts as idle here: the check has no memory of earlier looks
    states = {h.partition: SensorPartitionState(h.high, h.last_start_ms, now) for h in heads}
    bound = closed_until(states, now, idle_timeout_ms=1 << 62, horizon_ms=kafka.horizon_ms())
    closed_end = _last_session_end(kafka, bound) if bound is not None else None
    with warehouse.connect() as conn:
        latest = normalize(
            conn.query(f"SELECT MAX(END_TS) AS END_TS, MAX(LOAD_TS) AS LOAD_TS FROM {FACT_300S.qualified}")
        )
    loaded_end = latest["END_TS"][0] if latest.height else None
    loaded_ms = int(loaded_end.timestamp() * 1000) if loaded_end is not None else None
    problems: list[dict[str, Any]] = []
    if closed_end is not None and (loaded_ms is None or loaded_ms < closed_end):
        problems.append(
            {
                "stream_closed_until": naive_utc(closed_end).isoformat(),
                "warehouse_loaded_until": None if loaded_end is None else loaded_end.isoformat(),
            }
        )
    latency = None
    if latest.height and latest["LOAD_TS"][0] is not None and loaded_end is not None:
        latency = (latest["LOAD_TS"][0] - loaded_end).total_seconds()
    return _result(
        "freshness",
        problems,
        None,
        stream_closed_until=MetadataValue.text("" if closed_end is None else naive_utc(closed_end).isoformat()),
        warehouse_loaded_until=MetadataValue.text("" if loaded_end is None else loaded_end.isoformat()),
        latest_load_latency_s=MetadataValue.float(float(latency) if latency is not None else -1.0),
    )


def _last_session_end(kafka: KafkaResource, bound_ms: int) -> int | None:
    """The end of the newest session window that ends by `bound_ms` (a weekend is not missing data)."""
    calendar = configured_calendar(kafka.settings().loader)
    end = floor_window(bound_ms)
    session = calendar.session_at(end - 1)
    if session is not None:
        return end
    # In a gap: the facts are fresh once the previous session's last window is loaded.
    before = [s.close_ms for s in calendar.sessions if s.close_ms <= end]
    return before[-1] if before else None


@asset_check(
    asset=FACT_60S_KEY,
    pool=WAREHOUSE_POOL,
    description="Every bar of the window's read lies inside the configured trading sessions.",
)
def fact_60s_bars_in_session(context: AssetCheckExecutionContext, kafka: KafkaResource) -> AssetCheckResult:
    """Counts the bars of the last run's offsets outside the sessions, with their time range.

    Such bars (after-hours trades under regular hours, a bar stamped on a holiday) are not rolled
    up: the facts hold session windows only. A WARN: the data is what it is; set
    SNOWFLAKE_SESSION_HOURS=extended to keep pre-market and after-hours bars.
    """
    window = last_window(context, FACT_60S_KEY)
    read = read_ranges(kafka.kafka(), window.ranges, window.start_ms, window.end_ms)
    outside = latest_revisions(outside_session(bars_frame(read.bars), window.calendar()))
    problems: list[dict[str, Any]] = []
    if outside.height:
        per_symbol = (
            outside.group_by("symbol")
            .agg(
                pl.len().alias("bars"),
                pl.col("start_ts_ms").min().alias("first"),
                pl.col("start_ts_ms").max().alias("last"),
            )
            .sort("symbol")
        )
        problems = [
            {
                "symbol": r["symbol"],
                "bars": r["bars"],
                "first_utc": naive_utc(r["first"]).isoformat(),
                "last_utc": naive_utc(r["last"]).isoformat(),
            }
            for r in per_symbol.iter_rows(named=True)
        ]
    result = _result(
        f"bars outside the {window.session_hours} sessions of {window.exchange}",
        problems,
        window,
        bars_outside_session=MetadataValue.int(outside.height),
        bars_reread=MetadataValue.int(len(read.bars)),
    )
    return AssetCheckResult(
        passed=result.passed,
        severity=AssetCheckSeverity.WARN,
        metadata=result.metadata,
        description=None if result.passed else f"{outside.height} bar(s) outside the sessions: not in the facts",
    )


FACT_CHECKS = [
    fact_60s_matches_bars,
    fact_300s_matches_bars,
    fact_300s_matches_60s,
    fact_60s_ohlc_invariants,
    fact_300s_ohlc_invariants,
    fact_60s_unique_bar_id,
    fact_300s_unique_bar_id,
    fact_60s_no_missing_bars,
    fact_300s_freshness,
    fact_60s_bars_in_session,
]
