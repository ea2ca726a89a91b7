"""The tick platform's Dagster code location: one Definitions."""

from __future__ import annotations

from dagster import Definitions

from streaming.kernel.settings import load_settings
from tick_platform.assets.dimensions import dim_calendar, dim_symbol
from tick_platform.assets.facts import fact_ticks
from tick_platform.assets.streams import kafka_topics
from tick_platform.checks import FACT_CHECKS
from tick_platform.jobs import FACT_JOB
from tick_platform.resources import KafkaResource, WarehouseResource
from tick_platform.schedules import fact_ticks_schedule
from tick_platform.sensors import closed_windows_sensor, dimensions_automation

defs = Definitions(
    assets=[kafka_topics, fact_ticks, dim_symbol, dim_calendar],
    asset_checks=FACT_CHECKS,
    jobs=[FACT_JOB],
    schedules=[fact_ticks_schedule],
    sensors=[closed_windows_sensor, dimensions_automation],
    resources={"kafka": KafkaResource(), "warehouse": WarehouseResource.from_settings(load_settings())},
)
