"""The code location's Definitions, built from settings: the only place the platform's config decides its shape.

`build_definitions(settings)` gives the facts' partitions (WAREHOUSE_PARTITIONS_START/END) to the
multi-asset and its job, and binds the resource of the warehouse target the settings name
(WAREHOUSE_TARGET, WAREHOUSE_DUCKDB_PATH: `DuckDBWarehouse` or `SnowflakeWarehouse`).
Without settings it loads them (`load_settings()`): that is what tick_platform/definitions.py does
for Dagster. Importing this module, or any other of tick_platform, reads no settings.
"""

from __future__ import annotations

from dagster import Definitions

from streaming.kernel.settings import Settings, load_settings
from tick_platform.assets.dimensions import dim_calendar, dim_symbol
from tick_platform.assets.facts import build_fact_ticks
from tick_platform.assets.streams import kafka_topics
from tick_platform.checks import FACT_CHECKS
from tick_platform.jobs import build_fact_job
from tick_platform.partitions import configured_partitions
from tick_platform.resources import KafkaResource, warehouse_resource
from tick_platform.schedules import fact_ticks_schedule
from tick_platform.sensors import closed_windows_sensor, dimensions_automation


def build_definitions(settings: Settings | None = None) -> Definitions:
    """The tick platform's assets, checks, job, schedule, sensors and resources for `settings`.

    The Kafka resource, the sensor and the schedule read the rest of the settings when they run
    (the same environment and env file, in the same process, as this build for `dagster dev`).
    """
    chosen = settings if settings is not None else load_settings()
    partitions = configured_partitions(chosen.warehouse)
    return Definitions(
        assets=[
            kafka_topics,
            build_fact_ticks(partitions, chosen.warehouse.session_hours, chosen.warehouse.exchange),
            dim_symbol,
            dim_calendar,
        ],
        asset_checks=FACT_CHECKS,
        jobs=[build_fact_job(partitions)],
        schedules=[fact_ticks_schedule],
        sensors=[closed_windows_sensor, dimensions_automation],
        resources={"kafka": KafkaResource(), "warehouse": warehouse_resource(chosen)},
    )
