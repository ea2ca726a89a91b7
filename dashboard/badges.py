"""Sidebar badges: each a value and a status that turns to a warning colour past its SLA.

Pure: computed from a cache snapshot and "now", so they are tested without Streamlit.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Literal

from dashboard.bar_cache import CacheSnapshot
from streaming.validate.compare import percentile

Status = Literal["ok", "warn", "na"]
COLOURS: dict[Status, str] = {"ok": "green", "warn": "orange", "na": "gray"}
# Beyond this, ingest - event time measures the data's age (a historical replay), not the pipeline.
HISTORICAL_MS = 3_600_000


@dataclass(frozen=True)
class Badge:
    """One sidebar badge."""

    key: str
    label: str
    value: str
    status: Status
    help: str

    @property
    def colour(self) -> str:
        """Streamlit badge colour of the status."""
        return COLOURS[self.status]

    @property
    def text(self) -> str:
        """What the badge shows."""
        return f"{self.label}: {self.value}"


def _ms(value: float) -> str:
    return f"{value:,.0f} ms" if value < 10_000 else f"{value / 1000:,.1f} s"


def _age(ms: float) -> str:
    return f"{ms / 1000:,.1f} s" if ms < 120_000 else f"{ms / 60_000:,.0f} min"


def _distribution(key: str, label: str, values: list[float], sla_ms: int, help_: str, empty: str) -> Badge:
    if not values:
        return Badge(key, label, empty, "na", help_)
    ordered = sorted(values)
    p50, p95 = percentile(ordered, 50), percentile(ordered, 95)
    status: Status = "warn" if p95 > sla_ms else "ok"
    return Badge(key, label, f"p50 {_ms(p50)} · p95 {_ms(p95)}", status, f"{help_} SLA: p95 ≤ {sla_ms:,} ms.")


def end_to_end_badge(snapshot: CacheSnapshot, sla_ms: int) -> Badge:
    """ingest_ts_ms - end_ts_ms of the recently received bars; n/a for historical replays."""
    values = [float(e.bar.ingest_ts_ms - e.bar.end_ts_ms) for e in snapshot.recent]
    help_ = "Bar ingest_ts_ms - end_ts_ms over the last received bars."
    if values and percentile(sorted(values), 50) > HISTORICAL_MS:
        newest = max(e.bar.end_ts_ms for e in snapshot.recent)
        day = datetime.fromtimestamp(newest / 1000, UTC).strftime("%Y-%m-%d")
        return Badge("end_to_end", "End-to-end latency", f"n/a (replay of {day})", "na",
                     help_ + " Not meaningful when event times are historical.")
    return _distribution("end_to_end", "End-to-end latency", values, sla_ms, help_, "no bars yet")


def api_badge(snapshot: CacheSnapshot, sla_ms: int) -> Badge:
    """receive time - api_send_ts_ms: from the mock API's send to this dashboard."""
    values = [float(e.received_ms - e.bar.api_send_ts_ms) for e in snapshot.recent if e.bar.api_send_ts_ms]
    return _distribution("api_to_view", "API → dashboard", values, sla_ms,
                         "Receive time - api_send_ts_ms (mock API send).", "n/a (no API source)")


def kafka_lag_badge(snapshot: CacheSnapshot, sla_ms: int) -> Badge:
    """receive time - broker message timestamp: how far behind the log this view reads."""
    values = [float(e.received_ms - e.kafka_ts_ms) for e in snapshot.recent if e.kafka_ts_ms is not None]
    return _distribution("kafka_lag", "Kafka log lag", values, sla_ms,
                         "Receive time - the bar's broker timestamp.", "no bars yet")


def freshness_badge(snapshot: CacheSnapshot, now_ms: int, sla_s: int) -> Badge:
    """Age of the newest bar written to the topic (broker timestamp)."""
    help_ = f"Now - broker timestamp of the newest bar. SLA: ≤ {sla_s} s."
    if snapshot.newest_kafka_ts_ms is None:
        return Badge("freshness", "Data freshness", "no bars yet", "na", help_)
    age = max(0, now_ms - snapshot.newest_kafka_ts_ms)
    return Badge("freshness", "Data freshness", f"{_age(age)} old", "warn" if age > sla_s * 1000 else "ok", help_)


def count_badge(snapshot: CacheSnapshot) -> Badge:
    """Bars held in the cache."""
    value = f"{snapshot.bar_count:,} bars · {snapshot.symbol_count} symbol{'s' if snapshot.symbol_count != 1 else ''}"
    return Badge("cached", "Cached bars", value, "ok" if snapshot.bar_count else "na",
                 f"Deduplicated by bar_id; {snapshot.ignored_duplicates:,} duplicates ignored, "
                 f"{snapshot.evicted:,} evicted by the per-symbol bound.")


def last_update_badge(snapshot: CacheSnapshot, now_ms: int, sla_s: int) -> Badge:
    """When the consumer last received a bar."""
    help_ = f"Wall clock of the last received bar. SLA: ≤ {sla_s} s ago."
    if snapshot.last_received_ms is None:
        return Badge("last_update", "Last update", "never", "na", help_)
    age = max(0, now_ms - snapshot.last_received_ms)
    stamp = datetime.fromtimestamp(snapshot.last_received_ms / 1000, UTC).strftime("%H:%M:%S UTC")
    return Badge("last_update", "Last update", f"{stamp} ({_age(age)} ago)",
                 "warn" if age > sla_s * 1000 else "ok", help_)


def all_badges(snapshot: CacheSnapshot, now_ms: int, latency_sla_ms: int, freshness_sla_s: int) -> list[Badge]:
    """The sidebar's badges in display order."""
    return [
        end_to_end_badge(snapshot, latency_sla_ms),
        api_badge(snapshot, latency_sla_ms),
        kafka_lag_badge(snapshot, latency_sla_ms),
        freshness_badge(snapshot, now_ms, freshness_sla_s),
        count_badge(snapshot),
        last_update_badge(snapshot, now_ms, freshness_sla_s),
    ]
