"""Asset checks: the warehouse facts validated against ticks.agg.1s and against themselves.

Generated from the fact registry (`FACT_SPECS`). `fact_window_checks` is one multi-asset check
holding every check of the latest window: it reads the window recorded by the latest
materialization (its metadata holds the window and the offset ranges read), re-reads those
offsets ONCE and each table's rows once, and judges them all; each fails with ERROR severity
listing the offending rows. `fact_300s_freshness` compares the stream's heads with the coarsest table.
"""

import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, get_args

import polars as pl
from dagster import (
    AssetCheckExecutionContext,
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetKey,
    MetadataValue,
    asset_check,
    multi_asset_check,
)

from streaming.kernel.warehouse.connection import WarehouseConnection
from streaming.kernel.warehouse.schema import FACT_SPECS, FactSpec, Table, fact_spec
from tick_platform.assets.facts import WAREHOUSE_POOL, fact_key
from tick_platform.bar_reader import OffsetRange, partition_heads, read_ranges
from tick_platform.calendar import SessionHours, TradingCalendar, calendar_covering, outside_session, session_bars
from tick_platform.closure import SensorPartitionState, closed_until
from tick_platform.fact_store import naive_utc, normalize, read_rows
from tick_platform.partitions import configured_calendar, floor_window
from tick_platform.resources import KafkaResource, WarehouseResource
from tick_platform.rollup import bars_frame, latest_revisions, rollup_bars, rollup_facts
from tick_platform.validation import compare_rows, missing_bar_counts, ohlc_violations

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


def _session_hours(text: str) -> SessionHours:
    for hours in get_args(SessionHours):
        if hours == text:
            return hours  # type: ignore[no-any-return]
    raise ValueError(f"unknown session hours {text!r} in the materialization's metadata")


def last_window(context: AssetCheckExecutionContext, key: AssetKey) -> LastWindow:
    """Window and offset ranges recorded by the asset's latest materialization."""
    event = context.instance.get_latest_materialization_event(key)
    if event is None or event.asset_materialization is None:
        raise NothingMaterializedError(f"{key.to_user_string()} has not been materialized yet")
    meta = event.asset_materialization.metadata
    offsets = meta["offsets"].value
    raw = offsets if isinstance(offsets, dict) else json.loads(str(offsets))
    ranges = [OffsetRange(int(p), int(se[0]), int(se[1])) for p, se in sorted(raw.items(), key=lambda kv: int(kv[0]))]
    # Materializations from before the calendar partitions carry no session metadata: regular NYSE.
    hours = str(meta["session_hours"].value) if "session_hours" in meta else "regular"
    return LastWindow(
        int(str(meta["window_start_ms"].value)),
        int(str(meta["window_end_ms"].value)),
        ranges,
        _session_hours(hours),
        str(meta["exchange"].value) if "exchange" in meta else "XNYS",
    )


def _fields(title: str, problems: list[dict[str, Any]], window: LastWindow | None, **extra: Any) -> dict[str, Any]:
    """An ERROR-severity outcome listing the first offending rows (shared by every check)."""
    meta: dict[str, Any] = {
        "offending_rows": MetadataValue.int(len(problems)),
        "offending": MetadataValue.json(problems[:_SHOWN]),
        **extra,
    }
    if window is not None:
        meta["window_start"] = MetadataValue.text(naive_utc(window.start_ms).isoformat())
        meta["window_end"] = MetadataValue.text(naive_utc(window.end_ms).isoformat())
    return {
        "passed": not problems,
        "severity": AssetCheckSeverity.ERROR,
        "metadata": meta,
        "description": None if not problems else f"{title}: {len(problems)} offending row(s)",
    }


def _result(
    spec: FactSpec, check: str, title: str, problems: list[dict[str, Any]], window: LastWindow | None, **extra: Any
) -> AssetCheckResult:
    return AssetCheckResult(
        asset_key=fact_key(spec), check_name=check_name(spec, check), **_fields(title, problems, window, **extra)
    )


def check_name(spec: FactSpec, check: str) -> str:
    """The name of one window check of one resolution, e.g. fact_60s_matches_bars."""
    return f"fact_{spec.label}_{check}"


def _window_checks(spec: FactSpec) -> list[AssetCheckSpec]:
    """The checks of one resolution, all answered from one read of the window (see fact_window_checks)."""
    key = fact_key(spec)
    checks = [
        AssetCheckSpec(
            check_name(spec, "matches_bars"),
            asset=key,
            description=f"Each {spec.window_s} s row equals the rollup of its 1 s bars.",
        ),
        AssetCheckSpec(
            check_name(spec, "ohlc_invariants"),
            asset=key,
            description="low <= open, close <= high; volume >= 0; vwap in range.",
        ),
        AssetCheckSpec(
            check_name(spec, "unique_bar_id"), asset=key, description=f"No BAR_ID appears twice in {spec.table.name}."
        ),
    ]
    if spec.rolled_from:
        finer = fact_spec(spec.rolled_from)
        checks.append(
            AssetCheckSpec(
                check_name(spec, f"matches_{finer.label}"),
                asset=key,
                description=f"Each {spec.window_s} s row equals the rollup of its "
                f"{spec.window_s // finer.window_s} {finer.window_s} s rows.",
            )
        )
    else:
        checks.append(
            AssetCheckSpec(
                check_name(spec, "no_missing_bars"),
                asset=key,
                description="No 1 s bar of the window is missing (count vs ticks.agg.1s).",
            )
        )
        checks.append(
            AssetCheckSpec(
                check_name(spec, "bars_in_session"),
                asset=key,
                description="Every bar of the window's read lies inside the configured trading sessions (WARN).",
            )
        )
    return checks


def _duplicates(conn: WarehouseConnection, table: Table) -> list[dict[str, Any]]:
    # Snowflake does not enforce primary keys: look for duplicate BAR_IDs in the whole table.
    dupes = conn.query(
        f"SELECT BAR_ID, COUNT(*) AS N FROM {table.qualified} GROUP BY BAR_ID HAVING COUNT(*) > 1 ORDER BY BAR_ID"
    )
    return [{"BAR_ID": r["BAR_ID"], "copies": int(r["N"])} for r in dupes.iter_rows(named=True)]


@multi_asset_check(
    name="fact_window_checks",
    specs=[check for spec in FACT_SPECS for check in _window_checks(spec)],
    pool=WAREHOUSE_POOL,
    description="Every fact check of the latest window, from one read of its offsets and one of its rows.",
)
def fact_window_checks(
    context: AssetCheckExecutionContext, kafka: KafkaResource, warehouse: WarehouseResource
) -> Iterator[AssetCheckResult]:
    """Re-read the window's bars once (by the recorded offsets) and its rows once per table; judge every check."""
    began = time.perf_counter()
    window = last_window(context, fact_key(FACT_SPECS[0]))
    read = read_ranges(kafka.kafka(), window.ranges, window.start_ms, window.end_ms)
    all_bars = bars_frame(read.bars)
    read.bars.clear()  # the frame holds them now: a chunk of sessions' bars is not kept twice
    calendar = window.calendar()
    bars = session_bars(all_bars, calendar)  # what the materialization rolled up
    with warehouse.connect() as conn:
        stored = {spec.label: read_rows(conn, spec.table, window.start_ms, window.end_ms) for spec in FACT_SPECS}
        duplicates = {spec.label: _duplicates(conn, spec.table) for spec in FACT_SPECS}
    read_seconds = MetadataValue.float(round(time.perf_counter() - began, 3))  # the re-read and the rows
    for spec in FACT_SPECS:
        rows = stored[spec.label]
        expected = rollup_bars(bars, spec.window_s)
        yield _result(
            spec,
            "matches_bars",
            f"{spec.table.name} vs 1 s bars",
            compare_rows(rows, expected),
            window,
            bars_reread=MetadataValue.int(all_bars.height),
            read_seconds=read_seconds,
            rows=rows.height,
        )
        yield _result(
            spec, "ohlc_invariants", f"{spec.table.name} OHLC", ohlc_violations(rows), window, rows=rows.height
        )
        yield _result(spec, "unique_bar_id", f"{spec.table.name} duplicates", duplicates[spec.label], None)
        if spec.rolled_from:
            finer = fact_spec(spec.rolled_from)
            rolled = rollup_facts(stored[finer.label].drop("LOAD_TS"), spec.window_s)
            yield _result(
                spec,
                f"matches_{finer.label}",
                f"{spec.window_s} s vs {finer.window_s} s",
                compare_rows(rows, rolled),
                window,
                rows=rows.height,
            )
        else:
            yield _outside_sessions(spec, window, outside_session(all_bars, calendar), all_bars.height)
            yield _result(
                spec,
                "no_missing_bars",
                "missing 1 s bars",
                missing_bar_counts(rows, expected),
                window,
                bars_in_kafka=MetadataValue.int(int(expected["SOURCE_COUNT"].sum() or 0)),
                bars_in_warehouse=MetadataValue.int(int(rows["SOURCE_COUNT"].sum() or 0)),
            )


def _outside_sessions(spec: FactSpec, window: LastWindow, outside: pl.DataFrame, bars_read: int) -> AssetCheckResult:
    """The bars of the read outside the sessions, per symbol with their time range; a WARN.

    Such bars (after-hours trades under regular hours, a bar stamped on a holiday) are not rolled
    up: the facts hold session windows only. The data is what it is, so it warns;
    WAREHOUSE_SESSION_HOURS=extended keeps pre-market and after-hours bars.
    """
    latest = latest_revisions(outside)
    problems: list[dict[str, Any]] = []
    if latest.height:
        per_symbol = (
            latest.group_by("symbol")
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
    fields = _fields(
        f"bars outside the {window.session_hours} sessions of {window.exchange}",
        problems,
        window,
        bars_outside_session=MetadataValue.int(latest.height),
        bars_reread=MetadataValue.int(bars_read),
    )
    fields["severity"] = AssetCheckSeverity.WARN
    if problems:
        fields["description"] = f"{latest.height} bar(s) outside the sessions: not in the facts"
    return AssetCheckResult(asset_key=fact_key(spec), check_name=check_name(spec, "bars_in_session"), **fields)


def _last_session_end(kafka: KafkaResource, bound_ms: int) -> int | None:
    """The end of the newest session window that ends by `bound_ms` (a weekend is not missing data)."""
    calendar = configured_calendar(kafka.settings().warehouse)
    end = floor_window(bound_ms)
    if calendar.session_at(end - 1) is not None:
        return end
    # In a gap: the facts are fresh once the previous session's last window is loaded.
    return calendar.last_close_by(end)


_COARSEST = FACT_SPECS[-1]


@asset_check(
    asset=fact_key(_COARSEST),
    name=check_name(_COARSEST, "freshness"),
    pool=WAREHOUSE_POOL,
    description="The facts are not behind the stream: every window ticks.agg.1s has closed is loaded.",
)
def fact_freshness(kafka: KafkaResource, warehouse: WarehouseResource) -> AssetCheckResult:
    """Latest loaded window end vs the newest window the stream's revision-0 bars have closed."""
    heads = partition_heads(kafka.kafka())
    now = 0  # no partition counts as idle here: the check has no memory of earlier looks
    states = {h.partition: SensorPartitionState(h.high, h.last_start_ms, now) for h in heads}
    bound = closed_until(states, now, idle_timeout_ms=1 << 62, horizon_ms=kafka.horizon_ms())
    closed_end = _last_session_end(kafka, bound) if bound is not None else None
    with warehouse.connect() as conn:
        latest = normalize(
            conn.query(f"SELECT MAX(END_TS) AS END_TS, MAX(LOAD_TS) AS LOAD_TS FROM {_COARSEST.table.qualified}")
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
    return AssetCheckResult(
        **_fields(
            "freshness",
            problems,
            None,
            stream_closed_until=MetadataValue.text("" if closed_end is None else naive_utc(closed_end).isoformat()),
            warehouse_loaded_until=MetadataValue.text("" if loaded_end is None else loaded_end.isoformat()),
            latest_load_latency_s=MetadataValue.float(float(latency) if latency is not None else -1.0),
        )
    )


FACT_CHECKS = [fact_window_checks, fact_freshness]
# Every check's name, e.g. for counting a run's evaluations.
FACT_CHECK_NAMES = [key.name for checks in FACT_CHECKS for key in checks.check_keys]
