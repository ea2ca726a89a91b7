"""The streaming sensor and the 5-minute schedule, evaluated against the real broker."""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from dagster import (
    AssetMaterialization,
    DagsterInstance,
    DagsterRun,
    RunRequest,
    SensorResult,
    SkipReason,
    build_schedule_context,
    build_sensor_context,
)

from streaming.kernel.records import Bar
from streaming.kernel.settings import KafkaSettings
from streaming.kernel.topics import recreate_topics
from tick_platform.assets.facts import FACT_60S_KEY
from tick_platform.closure import SensorCursor
from tick_platform.partitions import RANGE_END_TAG, RANGE_START_TAG
from tick_platform.resources import KafkaResource
from tick_platform.schedules import fact_ticks_schedule
from tick_platform.sensors import closed_windows_sensor
from tick_platform_tests.test_platform_support import (
    SAMPLE_FIRST_WINDOW_MS,
    bars_from_ticks,
    partition_of,
    produce_bars,
    read_kibot,
)

pytestmark = pytest.mark.kafka

FIRST_WINDOW_MS = SAMPLE_FIRST_WINDOW_MS
NEW_YORK = ZoneInfo("America/New_York")  # partition keys are the exchange's clock


def _keys(first_ms: int, count: int) -> list[str]:
    return [
        datetime.fromtimestamp((first_ms + i * 300_000) / 1000, tz=NEW_YORK).strftime("%Y-%m-%d-%H:%M")
        for i in range(count)
    ]


ALL_KEYS = _keys(FIRST_WINDOW_MS - 24 * 12 * 300_000, 3 * 24 * 12)


def _evaluate(resource: KafkaResource, cursor: str | None, instance: DagsterInstance) -> tuple[list[str], str]:
    # As a context manager: the context enters the instance, which sets Dagster's process-wide
    # definitions-state storage; left open, later tests resolve a collected instance through it.
    with build_sensor_context(cursor=cursor, resources={"kafka": resource}, instance=instance) as context:
        result = closed_windows_sensor(context)
    assert isinstance(result, SensorResult)
    requests = result.run_requests or []
    assert len(requests) <= 1  # catching up on many windows is ONE ranged run
    assert result.cursor is not None
    if not requests:
        return [], result.cursor
    (request,) = requests
    if request.partition_key is not None:
        assert request.run_key == request.partition_key
        return [request.partition_key], result.cursor
    span = request.partition_key_range
    assert span is not None and request.run_key == f"{span.start}...{span.end}"
    return [k for k in ALL_KEYS if span.start <= k <= span.end], result.cursor


def test_sensor_requests_closed_windows_once_across_restarts(kafka: KafkaSettings, sample_path: Path) -> None:
    bars = bars_from_ticks(read_kibot(sample_path))
    # A second symbol on another partition, ending earlier: it holds windows open until it is idle.
    other = [
        Bar(**{**{f: getattr(b, f) for f in Bar.__struct_fields__}, "symbol": "WDCX", "bar_id": "WDCX" + b.bar_id[3:]})
        for b in bars
        if b.start_ts_ms < FIRST_WINDOW_MS + 20 * 60_000
    ]
    assert partition_of("WDCX", kafka.partitions) != partition_of("WDC", kafka.partitions)
    cut = next(i for i, b in enumerate(bars) if b.start_ts_ms >= FIRST_WINDOW_MS + 60 * 60_000)
    produce_bars(kafka, other + bars[:cut])  # WDC up to 10:30 ET, WDCX up to 09:50 ET
    instance = DagsterInstance.ephemeral()
    patient = KafkaResource.from_settings(kafka, idle_timeout_ms=3_600_000)

    keys, cursor = _evaluate(patient, None, instance)
    # WDCX's newest bar (09:4x ET) closes only the windows ending by 09:45 ET.
    assert keys == _keys(FIRST_WINDOW_MS, 3)
    assert SensorCursor.from_json(cursor).raw_version == "0:0,1:0,2:0,3:0,4:0,5:0|lag=0"  # ticks.raw observed
    again, cursor = _evaluate(patient, cursor, instance)
    assert again == []  # a restart from the stored cursor repeats nothing

    # Both stay quiet: once idle they hold nothing back, up to the window of the newest bar (10:29:xx ET).
    eager = KafkaResource.from_settings(kafka, idle_timeout_ms=1)
    time.sleep(0.05)
    keys, cursor = _evaluate(eager, cursor, instance)
    assert keys == _keys(FIRST_WINDOW_MS + 3 * 300_000, 9)

    produce_bars(kafka, bars[cut:])  # the rest of the day, up to 15:43:44
    keys, cursor = _evaluate(eager, cursor, instance)  # WDC just moved (not idle): its newest bar bounds
    assert keys == _keys(FIRST_WINDOW_MS + 12 * 300_000, 62)  # up to the window ending 15:40 ET
    state = SensorCursor.from_json(cursor)
    assert state.next_window_ms == FIRST_WINDOW_MS + 74 * 300_000
    assert sum(s.high for s in state.partitions.values()) == len(bars) + len(other)
    time.sleep(0.05)
    keys, cursor = _evaluate(eager, cursor, instance)
    assert keys == ["2010-02-17-15:40"]  # the last window, closed by the idle timeout
    assert _evaluate(eager, cursor, instance)[0] == []


def test_a_tick_cut_off_before_its_cursor_was_stored_requests_nothing_twice(
    kafka: KafkaSettings, sample_path: Path
) -> None:
    bars = bars_from_ticks(read_kibot(sample_path))
    cut = next(i for i, b in enumerate(bars) if b.start_ts_ms >= FIRST_WINDOW_MS + 60 * 60_000)
    produce_bars(kafka, bars[:cut])  # up to 10:30 ET
    instance = DagsterInstance.ephemeral()
    eager = KafkaResource.from_settings(kafka, idle_timeout_ms=1)
    time.sleep(0.05)
    with build_sensor_context(cursor=None, resources={"kafka": eager}, instance=instance) as context:
        result = closed_windows_sensor(context)
    assert isinstance(result, SensorResult) and result.run_requests and result.cursor
    (request,) = result.run_requests
    stored_cursor = result.cursor  # had the daemon lived, it would have stored this one
    # The daemon submitted the tick's run, then died before storing its cursor: the run exists.
    instance.add_run(DagsterRun(job_name="fact_ticks_job", run_id=str(uuid.uuid4()),
                                tags={**request.tags, "dagster/sensor_name": "closed_windows_sensor"}))
    first_keys = [k for k in ALL_KEYS if request.tags[RANGE_START_TAG] <= k <= request.tags[RANGE_END_TAG]]
    assert first_keys[0] == "2010-02-17-09:30" and len(first_keys) >= 2
    following = ALL_KEYS[ALL_KEYS.index(first_keys[-1]) + 1]
    produce_bars(kafka, bars[cut:])  # more windows close meanwhile: a re-evaluation would widen the range
    time.sleep(0.05)
    keys, _ = _evaluate(eager, None, instance)  # the next tick starts from the cursor before the lost one
    assert keys and keys[0] == following and not set(keys) & set(first_keys)
    # With the cursor stored, the run record agrees with it: the same next windows.
    keys, _ = _evaluate(eager, stored_cursor, instance)
    assert keys and keys[0] == following


def test_a_topic_reset_under_the_stored_cursor_requests_the_new_bars_windows(kafka: KafkaSettings,
                                                                              sample_path: Path) -> None:
    bars = bars_from_ticks(read_kibot(sample_path))
    hour = [b for b in bars if b.start_ts_ms < FIRST_WINDOW_MS + 60 * 60_000]
    produce_bars(kafka, hour)
    instance = DagsterInstance.ephemeral()
    eager = KafkaResource.from_settings(kafka, idle_timeout_ms=1)
    time.sleep(0.05)
    keys, cursor = _evaluate(eager, None, instance)  # the newest bar's window waits for the idle timeout
    time.sleep(0.05)
    more, cursor = _evaluate(eager, cursor, instance)
    assert keys + more == _keys(FIRST_WINDOW_MS, 12)
    assert SensorCursor.from_json(cursor).next_window_ms == FIRST_WINDOW_MS + 12 * 300_000

    # `topics reset` (as `make demo` does), then a re-replay of the first half hour only: every
    # window it fills lies before the stored cursor's next window.
    assert kafka.topic_agg in recreate_topics(kafka, force=True)
    half = [b for b in hour if b.start_ts_ms < FIRST_WINDOW_MS + 30 * 60_000]
    produce_bars(kafka, half)
    time.sleep(0.05)
    keys, cursor = _evaluate(eager, cursor, instance)
    time.sleep(0.05)
    more, cursor = _evaluate(eager, cursor, instance)
    assert keys + more == _keys(FIRST_WINDOW_MS, 6)  # requested again, from the new first bar
    state = SensorCursor.from_json(cursor)
    assert state.next_window_ms == FIRST_WINDOW_MS + 6 * 300_000
    assert sum(s.high for s in state.partitions.values()) == len(half)
    assert _evaluate(eager, cursor, instance)[0] == []  # and only once


def _bar(symbol: str, start: datetime) -> Bar:
    t0 = int(start.timestamp() * 1000)
    return Bar(
        bar_id=f"{symbol}-{t0:013d}-time-1s", symbol=symbol, spec="time-1s",
        start_ts_ms=t0, end_ts_ms=t0 + 1000, open=10.0, high=10.0,
        low=10.0, close=10.0, volume=100, notional=1000.0, vwap=10.0, trade_count=1, bin_count=1,
        max_lateness_ms=0, api_send_ts_ms=None, source_event_ts_ms=t0, ingest_ts_ms=t0 + 1000,
    )


def test_schedule_requests_the_window_closed_after_lateness(
    kafka: KafkaSettings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("WAREHOUSE_PARTITIONS_START", "2026-11-01")  # a live deployment's partitions
    monkeypatch.delenv("WAREHOUSE_PARTITIONS_END")
    resource = KafkaResource.from_settings(kafka)
    lateness_ms = resource.lateness_ms()
    assert lateness_ms < 60_000  # the cron's one-minute offset covers it
    instance = DagsterInstance.local_temp(str(tmp_path))  # the schedule looks up materializations in it

    def evaluate(at: datetime) -> RunRequest | SkipReason:
        with build_schedule_context(
            scheduled_execution_time=at, resources={"kafka": resource}, instance=instance
        ) as context:
            result = fact_ticks_schedule(context)
        assert isinstance(result, RunRequest | SkipReason)
        return result

    scheduled = datetime(2026, 11, 24, 15, 6, tzinfo=UTC)
    empty = evaluate(scheduled)  # nothing in ticks.agg.1s: no empty window is written
    assert isinstance(empty, SkipReason) and "no bar" in str(empty.skip_message)

    produce_bars(kafka, [_bar("WDC", datetime(2026, 11, 24, 14, 57, tzinfo=UTC))])
    behind = evaluate(scheduled)  # the stream has not reached 10:00 (a historical replay, a stall)
    assert isinstance(behind, SkipReason) and "2026-11-24-10:00" in str(behind.skip_message)

    produce_bars(kafka, [_bar("WDC", datetime(2026, 11, 24, 15, 2, tzinfo=UTC))])
    request = evaluate(scheduled)
    assert isinstance(request, RunRequest)
    assert request.partition_key == "2026-11-24-10:00" and request.run_key == "2026-11-24-10:00"
    earlier = evaluate(datetime(2026, 11, 24, 15, 5, 1, tzinfo=UTC))
    # 10:00-10:05 New York is not yet past its lateness at 10:05:01
    assert isinstance(earlier, RunRequest) and earlier.partition_key == "2026-11-24-09:55"

    # Once the sensor has loaded the window, the schedule does not load it again.
    instance.report_runless_asset_event(AssetMaterialization(FACT_60S_KEY, partition="2026-11-24-10:00"))
    done = evaluate(scheduled)
    assert isinstance(done, SkipReason) and "already materialized" in str(done.skip_message)

    # Outside the session (the evening, Thanksgiving, a Saturday) no window has a partition: not missing data.
    for closed in (datetime(2026, 11, 24, 22, 6, tzinfo=UTC), datetime(2026, 11, 26, 15, 6, tzinfo=UTC),
                   datetime(2026, 11, 28, 15, 6, tzinfo=UTC)):
        off = evaluate(closed)
        assert isinstance(off, SkipReason) and "outside the regular sessions of XNYS" in str(off.skip_message)

    monkeypatch.setenv("WAREHOUSE_PARTITIONS_END", "2026-11-24")  # the window has no partition
    outside = evaluate(datetime(2026, 11, 24, 15, 11, tzinfo=UTC))
    assert isinstance(outside, SkipReason) and "WAREHOUSE_PARTITIONS_END" in str(outside.skip_message)
