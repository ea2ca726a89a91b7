"""The partitioned job that materializes the facts (with their checks)."""

from __future__ import annotations

from dagster import AssetSelection, define_asset_job, in_process_executor

from tick_platform.assets.facts import FACT_60S_KEY, FACT_300S_KEY
from tick_platform.partitions import FACT_PARTITIONS

WAREHOUSE_TAG = "tick_platform/warehouse"

FACT_JOB = define_asset_job(
    "fact_ticks_job",
    selection=AssetSelection.assets(FACT_60S_KEY, FACT_300S_KEY),
    partitions_def=FACT_PARTITIONS,
    tags={WAREHOUSE_TAG: "write"},
    # One process per run: the steps share one DuckDB writer anyway, and a second
    # interpreter start would add seconds to the window-close -> rows-visible latency.
    executor_def=in_process_executor,
    description="Materialize fact_ticks_60s and fact_ticks_300s for 5-minute windows, then run their checks.",
)
