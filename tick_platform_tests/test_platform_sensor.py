"""The streaming sensor and the 5-minute schedule, evaluated against the real broker."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
from dagster import DagsterInstance, RunRequest, SensorResult, build_schedule_context, build_sensor_context

from streaming.config import KafkaSettings
from streaming.records import Bar
from tick_platform.closure import SensorCursor
from tick_platform.resources import KafkaResource
from tick_platform.schedules import fact_ticks_schedule
from tick_platform.sensors import closed_windows_sensor
from tick_platform_tests.test_platform_support import bars_from_ticks, partition_of, produce_bars, read_kibot

pytestmark = pytest.mark.kafka

FIRST_WINDOW_MS = 1266417000000  # 2010-02-17 14:30 UTC


def _keys(first_ms: int, count: int) -> list[str]:
    return [
        datetime.fromtimestamp((first_ms + i * 300_000) / 1000, tz=UTC).strftime("%Y-%m-%d-%H:%M") for i in range(count)
    ]


def _evaluate(resource: KafkaResource, cursor: str | None, instance: DagsterInstance) -> tuple[list[str], str]:
    context = build_sensor_context(cursor=cursor, resources={"kafka": resource}, instance=instance)
    result = closed_windows_sensor(context)
    assert isinstance(result, SensorResult)
    requests = result.run_requests or []
    assert all(r.run_key == r.partition_key for r in requests)
    assert result.cursor is not None
    return [str(r.partition_key) for r in requests], result.cursor


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
    assert keys == ["2010-02-17-20:40"]  # the last window, closed by the idle timeout
    assert _evaluate(eager, cursor, instance)[0] == []


def test_schedule_requests_the_window_closed_after_lateness(kafka: KafkaSettings) -> None:
    resource = KafkaResource.from_settings(kafka)
    lateness_ms = resource.lateness_ms()
    assert lateness_ms < 60_000  # the cron's one-minute offset covers it
    scheduled = datetime(2026, 11, 24, 10, 6, tzinfo=UTC)
    context = build_schedule_context(scheduled_execution_time=scheduled, resources={"kafka": resource})
    request = fact_ticks_schedule(context)
    assert isinstance(request, RunRequest)
    assert request.partition_key == "2026-11-24-10:00" and request.run_key == "2026-11-24-10:00"
    early = build_schedule_context(
        scheduled_execution_time=datetime(2026, 11, 24, 10, 5, 1, tzinfo=UTC), resources={"kafka": resource}
    )
    earlier = fact_ticks_schedule(early)
    assert (
        isinstance(earlier, RunRequest) and earlier.partition_key == "2026-11-24-09:55"
    )  # 10:00-10:05 not yet past its lateness
