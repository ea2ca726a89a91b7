"""Dagster resources: Kafka and the warehouse (one resource per target behind WarehouseResource)."""

from tick_platform.resources.kafka import KafkaResource
from tick_platform.resources.warehouse import (
    DuckDBWarehouse,
    SnowflakeWarehouse,
    WarehouseConnection,
    WarehouseResource,
    warehouse_resource,
)

__all__ = [
    "DuckDBWarehouse",
    "KafkaResource",
    "SnowflakeWarehouse",
    "WarehouseConnection",
    "WarehouseResource",
    "warehouse_resource",
]
