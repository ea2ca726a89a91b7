"""Pipeline health: topics and end offsets, consumer-group lag, DLQ, the latest fact partition."""

from __future__ import annotations

import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

_ROOT = str(Path(__file__).resolve().parents[2])
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

import streamlit as st  # noqa: E402
from confluent_kafka import KafkaException  # noqa: E402

from dashboard.health import group_lags, latest_dlq, topic_rows, warehouse_status  # noqa: E402
from dashboard.settings import dashboard_settings  # noqa: E402
from streaming.kernel.errors import TickPlatformError  # noqa: E402
from streaming.kernel.settings import Settings  # noqa: E402
from streaming.kernel.topics import describe_topics  # noqa: E402
from streaming.kernel.warehouse.targets import open_warehouse  # noqa: E402

KAFKA_ERRORS = (KafkaException, TickPlatformError, RuntimeError)


def _kafka_section(settings: Settings) -> None:
    kafka = settings.kafka
    st.subheader("Topics")
    try:
        infos = describe_topics(kafka)
    except KAFKA_ERRORS as exc:
        st.error(f"Cannot reach Kafka at {kafka.brokers}: {exc}. Is the broker up (`make up`)?",
                 icon=":material/cloud_off:")
        st.button("Retry now", key="health_retry")
        return
    if not infos:
        st.warning(f"None of {kafka.topic_raw}, {kafka.topic_agg}, {kafka.topic_dlq} exists yet (`make topics`).")
    else:
        st.dataframe([r.__dict__ for r in topic_rows(infos)], hide_index=True, width="stretch")
    st.subheader("Consumer-group lag")
    try:
        lags = group_lags(kafka, settings.agg.group_id, settings.warehouse.consumer_group)
    except KAFKA_ERRORS as exc:
        st.error(f"Cannot read consumer groups: {exc}")
        lags = []
    rows = [{**r.__dict__, "total_lag": "no commits yet" if r.total_lag is None else r.total_lag} for r in lags]
    st.dataframe(rows, hide_index=True, width="stretch")
    st.subheader("Dead-letter queue")
    try:
        count, records = latest_dlq(kafka)
    except KAFKA_ERRORS as exc:
        st.error(f"Cannot read {kafka.topic_dlq}: {exc}")
        return
    st.metric(f"Records in {kafka.topic_dlq}", f"{count:,}")
    if records:
        st.dataframe([{
            "time (UTC)": datetime.fromtimestamp(r.dlq_ts_ms / 1000, UTC).strftime("%Y-%m-%d %H:%M:%S"),
            "stage": r.stage, "reason": r.reason, "detail": r.detail, "symbol": r.symbol or "",
            "late by (ms)": r.late_by_ms, "position": str(r.position),
        } for r in records], hide_index=True, width="stretch")
    else:
        st.caption("No rejected input.")


def _warehouse_section(settings: Settings) -> None:
    st.subheader("Warehouse facts")
    try:
        warehouse = open_warehouse(settings, read_only=True)
    except TickPlatformError as exc:  # e.g. WAREHOUSE_TARGET=snowflake without SNOW_USER
        st.error(f"Cannot open the warehouse: {exc}")
        return
    facts = warehouse_status(warehouse)
    st.dataframe([{
        "table": f.table, "rows": f.rows, "latest partition (UTC)": f.latest_partition,
        "latest bar start (UTC)": f.latest_start, "last load": f.last_load, "note": f.note,
    } for f in facts], hide_index=True, width="stretch")
    st.caption(f"Warehouse: {warehouse.describe()}")


def _panel(settings: Settings) -> None:
    _kafka_section(settings)
    _warehouse_section(settings)
    st.caption(f"Updated {datetime.now(UTC):%H:%M:%S} UTC")


st.title("Pipeline health")
_settings = dashboard_settings()
_auto = st.sidebar.toggle("Auto-refresh (5 s)", value=True, key="health_auto")
st.fragment(_panel, run_every=timedelta(seconds=5) if _auto else None)(_settings)
