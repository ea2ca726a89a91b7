"""The partitioned job that materializes the facts (with their checks)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from dagster import AssetSelection, PartitionsDefinition, define_asset_job, in_process_executor

from tick_platform.assets.facts import FACT_60S_KEY, FACT_300S_KEY

if TYPE_CHECKING:  # what define_asset_job returns; dagster does not export the name
    from dagster._core.definitions.unresolved_asset_job_definition import UnresolvedAssetJobDefinition

WAREHOUSE_TAG = "tick_platform/warehouse"
# The sensor and the schedule target the job by name: they need no partitions of their own.
FACT_JOB_NAME = "fact_ticks_job"


def build_fact_job(partitions_def: PartitionsDefinition) -> UnresolvedAssetJobDefinition:
    """`fact_ticks_job` over the facts' partitions (the same `partitions_def` as build_fact_ticks)."""
    return define_asset_job(
        FACT_JOB_NAME,
        selection=AssetSelection.assets(FACT_60S_KEY, FACT_300S_KEY),
        partitions_def=partitions_def,
        tags={WAREHOUSE_TAG: "write"},
        # One process per run: the steps share one DuckDB writer anyway, and a second
        # interpreter start would add seconds to the window-close -> rows-visible latency.
        executor_def=in_process_executor,
        description="Materialize fact_ticks_60s and fact_ticks_300s for 5-minute windows, then run their checks.",
    )
