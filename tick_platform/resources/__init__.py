"""Dagster resources: Kafka and the warehouse (DuckDB or Snowflake)."""

from tick_platform.resources.kafka import KafkaResource
from tick_platform.resources.warehouse import WarehouseConnection, WarehouseResource

__all__ = ["KafkaResource", "WarehouseConnection", "WarehouseResource"]
