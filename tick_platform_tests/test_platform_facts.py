"""Fact assets and checks through dagster.materialize: real broker, real DuckDB file, the real sample."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import polars as pl
import pytest
from confluent_kafka import TopicPartition
from confluent_kafka.admin import AdminClient
from dagster import AssetKey, AssetSelection, DagsterEventType, DagsterInstance, materialize

import tick_platform.checks
from streaming.kernel.records import Bar
from streaming.kernel.settings import KafkaSettings, Settings
from tick_platform.backfill import BackfillReport, materialize_facts
from tick_platform.bar_reader import first_offset_at, open_consumer, watermarks
from tick_platform.checks import FACT_CHECK_NAMES, FACT_CHECKS
from tick_platform.partitions import RANGE_END_TAG, RANGE_START_TAG, range_tags
from tick_platform.resources import KafkaResource, warehouse_resource
from tick_platform.warehouse_sql import VIEWS
from tick_platform_tests.test_platform_support import (
    assert_facts_equal,
    assert_marts,
    bars_from_ticks,
    expected_ohlcv,
    partition_of,
    produce_bars,
    read_kibot,
    sample_fact_ticks,
    sample_settings,
)

pytestmark = pytest.mark.kafka

DAY_START = datetime(2010, 2, 17, 14, 30, tzinfo=UTC)  # 09:30 ET
DAY_END = datetime(2010, 2, 17, 20, 45, tzinfo=UTC)  # 15:45 ET


def _settings(db: Path) -> Settings:
    return sample_settings(warehouse={"target": "duckdb", "duckdb_path": str(db)})


def _table(db: Path, name: str) -> pl.DataFrame:
    with duckdb.connect(str(db), read_only=True) as conn:
        return conn.sql(f"SELECT * FROM CORE.{name} ORDER BY BAR_ID").pl()


def _resources(kafka: KafkaSettings, settings: Settings) -> dict[str, object]:
    return {"kafka": KafkaResource.from_settings(kafka), "warehouse": warehouse_resource(settings)}


def _checks_only(kafka: KafkaSettings, settings: Settings, instance: DagsterInstance) -> dict[str, tuple[bool, dict]]:
    result = materialize(
        [sample_fact_ticks(), *FACT_CHECKS],
        selection=AssetSelection.all_asset_checks(),
        tags=range_tags("2010-02-17-09:30", "2010-02-17-09:55"),
        resources=_resources(kafka, settings),
        instance=instance,
        raise_on_error=False,
    )
    return {
        e.check_name: (e.passed, {k: v.value for k, v in e.metadata.items()})
        for e in result.get_asset_check_evaluations()
    }


@pytest.fixture()
def sample_ticks(sample_path: Path) -> pl.DataFrame:
    return read_kibot(sample_path)


@pytest.fixture()
def loaded(
    kafka: KafkaSettings, sample_ticks: pl.DataFrame, tmp_path: Path
) -> tuple[Settings, DagsterInstance, BackfillReport]:
    produce_bars(kafka, bars_from_ticks(sample_ticks))
    settings = _settings(tmp_path / "warehouse.duckdb")
    instance = DagsterInstance.ephemeral()
    report = materialize_facts(DAY_START, DAY_END, settings, kafka=kafka, instance=instance)
    return settings, instance, report


def test_day_backfill_matches_independent_ohlcv(
    loaded: tuple[Settings, DagsterInstance, BackfillReport], sample_ticks: pl.DataFrame
) -> None:
    settings, _, report = loaded
    db = settings.warehouse.duckdb_path
    assert report.success
    assert (report.first_partition, report.last_partition, report.partitions) == (
        "2010-02-17-09:30",
        "2010-02-17-15:40",
        75,
    )
    assert report.rows == {"FACT_TICKS_60S": 374, "FACT_TICKS_300S": 75}
    assert len(report.checks) == len(FACT_CHECK_NAMES) == 10
    assert report.checks_passed, [c for c in report.checks if not c.passed]
    assert report.metadata["bars_1s"] == 5049
    rows_60 = _table(db, "FACT_TICKS_60S")
    rows_300 = _table(db, "FACT_TICKS_300S")
    assert (rows_60.height, rows_300.height) == (374, 75)
    assert_facts_equal(rows_60, expected_ohlcv(sample_ticks, 60))
    assert_facts_equal(rows_300, expected_ohlcv(sample_ticks, 300))
    assert rows_300["BAR_ID"][0] == "WDC-1266417000000-300"
    with duckdb.connect(str(db), read_only=True) as conn:
        assert set(VIEWS) == {"MART.V_SESSION_VWAP", "MART.V_TOP_MOVERS_15M", "MART.V_VOLATILITY_BANDS",
                              "MART.V_PIPELINE_MINUTE_METRICS"}  # a new view gets its expected rows here
        assert_marts(conn.execute, expected_ohlcv(sample_ticks, 60))
        vwap = conn.execute("SELECT SESSION_VWAP, VOLUME FROM MART.V_SESSION_VWAP").fetchone()
        assert conn.execute("SELECT COUNT(*) FROM CORE.DIM_SYMBOL WHERE SYMBOL = 'WDC'").fetchone()[0] == 1  # type: ignore[index]
        minutes_2010 = conn.execute("SELECT COUNT(*) FROM CORE.DIM_CALENDAR WHERE YEAR = 2010").fetchone()[0]  # type: ignore[index]
    total = sample_ticks.select((pl.col("price") * pl.col("size")).sum() / pl.col("size").sum()).item()
    assert vwap is not None and abs(vwap[0] - total) < 1e-6 and vwap[1] == 3_582_490
    # NYSE 2010: 261 weekdays less 9 holidays, x 390 minutes, less the 180 of the Nov 26 early close.
    assert minutes_2010 == (261 - 9) * 390 - 180


def test_a_backfill_in_runs_of_one_session_tracks_every_partition(
    kafka: KafkaSettings, sample_ticks: pl.DataFrame, tmp_path: Path
) -> None:
    # The sample day and the same ticks one session later (Thursday): two sessions, two runs.
    ticks = pl.concat([sample_ticks, sample_ticks.with_columns(pl.col("ts_ms") + 86_400_000)])
    produce_bars(kafka, bars_from_ticks(ticks))
    settings = _settings(tmp_path / "w.duckdb")
    instance = DagsterInstance.ephemeral()
    report = materialize_facts(
        DAY_START, DAY_END + timedelta(days=1), settings, kafka=kafka, instance=instance, sessions_per_run=1
    )
    assert report.success and len(report.run_ids) == 2 and len(set(report.run_ids)) == 2
    assert (report.first_partition, report.last_partition, report.partitions) == (
        "2010-02-17-09:30", "2010-02-18-15:40", 78 + 75)
    # Dagster recorded every partition, each by the run of its session.
    for key in ("fact_ticks_60s", "fact_ticks_300s"):
        done = instance.get_materialized_partitions(AssetKey(key))
        assert len(done) == 78 + 75 and {k[:10] for k in done} == {"2010-02-17", "2010-02-18"}
    runs = [instance.get_run_by_id(r) for r in report.run_ids]
    assert [(r.tags[RANGE_START_TAG], r.tags[RANGE_END_TAG]) for r in runs if r is not None] == [
        ("2010-02-17-09:30", "2010-02-17-15:55"), ("2010-02-18-09:30", "2010-02-18-15:40")]
    # Each run's window checks passed (freshness only in the last run, when the range is whole).
    window_checks = [c for c in report.checks if c.name != "fact_300s_freshness"]
    assert len(window_checks) == 2 * (len(FACT_CHECK_NAMES) - 1) and report.checks_passed
    assert [c.name for c in report.checks].count("fact_300s_freshness") == 1
    assert report.rows == {"FACT_TICKS_60S": 2 * 374, "FACT_TICKS_300S": 2 * 75}
    db = settings.warehouse.duckdb_path
    assert_facts_equal(_table(db, "FACT_TICKS_60S"), expected_ohlcv(ticks, 60))
    assert_facts_equal(_table(db, "FACT_TICKS_300S"), expected_ohlcv(ticks, 300))


def _snapshot(db: Path) -> tuple[list[tuple], list[tuple]]:
    with duckdb.connect(str(db), read_only=True) as conn:
        return (
            conn.execute("SELECT * FROM CORE.FACT_TICKS_60S ORDER BY BAR_ID").fetchall(),
            conn.execute("SELECT * FROM CORE.FACT_TICKS_300S ORDER BY BAR_ID").fetchall(),
        )


def _one_window(kafka: KafkaSettings, settings: Settings, key: str) -> tuple[bool, list[str], dict[str, Any]]:
    result = materialize([sample_fact_ticks()], partition_key=key, resources=_resources(kafka, settings),
                         instance=DagsterInstance.ephemeral(), raise_on_error=False)
    failures = [str(e.step_failure_data.user_failure_data.description) for e in result.all_events
                if e.event_type == DagsterEventType.STEP_FAILURE and e.step_failure_data.user_failure_data]
    meta = {k: v.value for m in result.asset_materializations_for_node("fact_ticks")[:1] for k, v in m.metadata.items()}
    return result.success, failures, meta


def test_a_window_retention_deleted_keeps_its_rows(
    kafka: KafkaSettings, loaded: tuple[Settings, DagsterInstance, BackfillReport]
) -> None:
    settings, _, _ = loaded
    db = settings.warehouse.duckdb_path
    before_60, before_300 = _table(db, "FACT_TICKS_60S"), _table(db, "FACT_TICKS_300S")
    wdc = partition_of("WDC", kafka.partitions)
    cut_ms = int((DAY_START + timedelta(hours=1)).timestamp() * 1000)  # 10:30 ET
    with open_consumer(kafka) as consumer:
        low, high = watermarks(consumer, kafka.topic_agg, wdc)
        cut = first_offset_at(consumer, kafka.topic_agg, wdc, low, high, cut_ms)
    assert low == 0 < cut < high
    # What retention does to old segments, at once: the partition's low offset moves up to `cut`.
    admin = AdminClient(kafka.client_base())
    for fut in admin.delete_records([TopicPartition(kafka.topic_agg, wdc, cut)]).values():
        assert fut.result().low_watermark == cut

    # The first window's bars are gone: re-reading it would write no rows. It fails, rows kept.
    ok, failures, _ = _one_window(kafka, settings, "2010-02-17-09:30")
    assert not ok and len(failures) == 1
    assert f"retention deleted the oldest offsets of partition(s) [{wdc}]" in failures[0]
    assert "would change 5 of its 5 60 s rows" in failures[0] and "\n" not in failures[0]
    # The first window after the cut is as ambiguous (nothing retained before it), but its rows
    # come out the same, so it is written; a later one has retained bars before it: no doubt.
    ok, failures, meta = _one_window(kafka, settings, "2010-02-17-10:30")
    assert ok and failures == [] and meta["partitions_truncated"] == [wdc]
    ok, failures, meta = _one_window(kafka, settings, "2010-02-17-11:00")
    assert ok and failures == [] and meta["partitions_truncated"] == []
    assert _table(db, "FACT_TICKS_60S").equals(before_60)  # every row as it was, LOAD_TS too
    assert _table(db, "FACT_TICKS_300S").equals(before_300)


def test_rematerialize_is_identical_and_revisions_win(
    kafka: KafkaSettings, sample_ticks: pl.DataFrame, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    bars = bars_from_ticks(sample_ticks)
    produce_bars(kafka, bars)
    settings = _settings(tmp_path / "w.duckdb")
    instance = DagsterInstance.ephemeral()
    first = materialize_facts(
        DAY_START, DAY_START + timedelta(minutes=30), settings, kafka=kafka, instance=instance, with_dimensions=False
    )
    assert first.success and first.rows == {"FACT_TICKS_60S": 30, "FACT_TICKS_300S": 6}
    before = _snapshot(settings.warehouse.duckdb_path)
    again = materialize(
        [sample_fact_ticks(), *FACT_CHECKS],
        partition_key="2010-02-17-09:40",
        resources=_resources(kafka, settings),
        instance=instance,
    )
    assert again.success
    assert _snapshot(settings.warehouse.duckdb_path) == before  # byte-identical, LOAD_TS included

    # A corrected bar (same bar_id, revision 1) arrives later in the topic; with the revise policy it wins.
    target = next(b for b in bars if b.start_ts_ms >= 1266417600000)  # first bar at/after 14:40 UTC
    revised = Bar(**{**{f: getattr(target, f) for f in Bar.__struct_fields__}, "high": 99.5, "revision": 1})
    produce_bars(kafka, [revised])
    monkeypatch.setenv("AGG_LATE_POLICY", "revise")
    monkeypatch.setenv("AGG_REVISE_HORIZON_MS", str(24 * 3_600_000))
    third = materialize(
        [sample_fact_ticks(), *FACT_CHECKS],
        partition_key="2010-02-17-09:40",
        resources=_resources(kafka, settings),
        instance=instance,
    )
    assert third.success
    assert all(e.passed for e in third.get_asset_check_evaluations() if e.check_name != "fact_300s_freshness")
    rows_60, rows_300 = (
        _table(settings.warehouse.duckdb_path, "FACT_TICKS_60S"),
        _table(settings.warehouse.duckdb_path, "FACT_TICKS_300S"),
    )
    minute = rows_60.filter(pl.col("BAR_ID") == f"WDC-{target.start_ts_ms // 60000 * 60000:013d}-60")
    assert float(minute["HIGH"][0]) == 99.5
    assert float(rows_300.filter(pl.col("BAR_ID") == "WDC-1266417600000-300")["HIGH"][0]) == 99.5
    assert rows_60.height == 30 and rows_300.height == 6  # replaced, not added


def test_planted_faults_fail_their_checks(
    kafka: KafkaSettings, sample_ticks: pl.DataFrame, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    produce_bars(kafka, bars_from_ticks(sample_ticks))
    settings = _settings(tmp_path / "w.duckdb")
    instance = DagsterInstance.ephemeral()
    report = materialize_facts(
        DAY_START, DAY_START + timedelta(minutes=30), settings, kafka=kafka, instance=instance, with_dimensions=False
    )
    assert report.success
    db = settings.warehouse.duckdb_path
    changed = "WDC-1266417120000-60"  # 14:32 UTC
    removed = "WDC-1266418200000-60"  # 14:50 UTC
    with duckdb.connect(str(db)) as conn:
        conn.execute("UPDATE CORE.FACT_TICKS_60S SET HIGH = HIGH + 1 WHERE BAR_ID = ?", [changed])
        conn.execute("DELETE FROM CORE.FACT_TICKS_60S WHERE BAR_ID = ?", [removed])
    reads: list[tuple[int, int]] = []
    original_read = tick_platform.checks.read_ranges

    def counted(kafka_settings: KafkaSettings, ranges: Any, start_ms: int, end_ms: int) -> Any:
        reads.append((start_ms, end_ms))
        return original_read(kafka_settings, ranges, start_ms, end_ms)

    monkeypatch.setattr(tick_platform.checks, "read_ranges", counted)
    checks = _checks_only(kafka, settings, instance)
    # Every check of the window from ONE read of its offsets (three reads before the multi-asset check).
    assert sorted(checks) == sorted(FACT_CHECK_NAMES) and len(reads) == 1
    passed, meta = checks["fact_60s_matches_bars"]
    assert not passed
    offending = {(r["BAR_ID"], r["problem"]) for r in meta["offending"]}
    assert offending == {(changed, "HIGH differs"), (removed, "missing in warehouse")}
    passed, meta = checks["fact_60s_no_missing_bars"]
    assert not passed and [r["BAR_ID"] for r in meta["offending"]] == [removed]
    assert meta["offending"][0]["missing"] == meta["offending"][0]["bars_in_kafka"] > 0
    passed, meta = checks["fact_300s_matches_60s"]
    assert not passed and {r["BAR_ID"] for r in meta["offending"]} == {"WDC-1266417000000-300", "WDC-1266418200000-300"}
    passed, meta = checks["fact_60s_ohlc_invariants"]
    assert passed  # HIGH + 1 keeps low <= open, close <= high
    assert checks["fact_300s_matches_bars"][0] and checks["fact_60s_unique_bar_id"][0]


def test_bars_outside_the_session_are_reported_once_never_rolled_up(
    kafka: KafkaSettings, sample_ticks: pl.DataFrame, tmp_path: Path
) -> None:
    """After-hours bars under regular hours: counted by the session's first window, not in the facts."""
    half_hour = sample_ticks.filter(pl.col("ts_ms") < int((DAY_START + timedelta(minutes=30)).timestamp() * 1000))
    evening_before = int(datetime(2010, 2, 16, 22, 0, 5, tzinfo=UTC).timestamp() * 1000)  # 17:00:05 ET
    after_close = int(datetime(2010, 2, 17, 21, 10, 0, tzinfo=UTC).timestamp() * 1000)  # 16:10 ET
    extra = pl.DataFrame(
        {"symbol": ["WDC"] * 4, "ts_ms": [evening_before, evening_before + 1000, evening_before + 2000, after_close],
         "price": [42.5, 42.6, 42.4, 43.0], "size": [100, 200, 300, 400]},
        schema=sample_ticks.schema,
    )
    produce_bars(kafka, bars_from_ticks(pl.concat([extra[:3], half_hour, extra[3:]])))
    settings = _settings(tmp_path / "w.duckdb")
    checks = _checks_only_after(kafka, settings, "2010-02-17-09:30", "2010-02-17-09:55")
    passed, meta = checks["fact_60s_bars_in_session"]
    assert not passed and meta["bars_outside_session"] == 3
    assert meta["offending"] == [{"symbol": "WDC", "bars": 3, "first_utc": "2010-02-16T22:00:05",
                                  "last_utc": "2010-02-16T22:00:07"}]
    failed = sorted(name for name, (ok, _) in checks.items() if not ok)
    # Freshness: the 16:10 bar closes the whole session, of which only 09:30-10:00 is loaded here.
    assert failed == ["fact_300s_freshness", "fact_60s_bars_in_session"], failed
    db = settings.warehouse.duckdb_path
    assert_facts_equal(_table(db, "FACT_TICKS_60S"), expected_ohlcv(half_hour, 60))
    assert_facts_equal(_table(db, "FACT_TICKS_300S"), expected_ohlcv(half_hour, 300))
    # A window inside the session reads no gap: the check passes. The 16:10 bar belongs to the
    # next session's first window (Thursday 09:30), which reports it.
    assert _checks_only_after(kafka, settings, "2010-02-17-15:55", "2010-02-17-15:55")["fact_60s_bars_in_session"][0]
    passed, meta = _checks_only_after(kafka, settings, "2010-02-18-09:30", "2010-02-18-09:30")[
        "fact_60s_bars_in_session"
    ]
    assert not passed and meta["bars_outside_session"] == 1
    assert_facts_equal(_table(db, "FACT_TICKS_60S"), expected_ohlcv(half_hour, 60))  # nothing else written


def _checks_only_after(
    kafka: KafkaSettings, settings: Settings, first: str, last: str
) -> dict[str, tuple[bool, dict[str, Any]]]:
    result = materialize(
        [sample_fact_ticks(), *FACT_CHECKS],
        tags=range_tags(first, last),
        resources=_resources(kafka, settings),
        instance=DagsterInstance.ephemeral(),
        raise_on_error=False,
    )
    assert result.success
    return {
        e.check_name: (e.passed, {k: v.value for k, v in e.metadata.items()})
        for e in result.get_asset_check_evaluations()
    }
