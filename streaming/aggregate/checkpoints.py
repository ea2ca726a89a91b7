"""The aggregator's pure helpers beside the windows: its window settings and its checkpoint codec (no I/O).

Kept out of the Kafka module (`processor`), so the offline path and the tests use them without
loading the Kafka client. The checkpoint rides in the metadata of each committed offset.
"""

from __future__ import annotations

import json
from typing import Any

from streaming.aggregate.windows import AggregatorCheckpoint, WindowConfig
from streaming.kernel.settings import Settings


def window_config(settings: Settings) -> WindowConfig:
    """The window settings of AGG_* (grace defaults to REPLAY_MAX_LATE_MS)."""
    agg = settings.agg
    return WindowConfig(
        agg.window_ms, settings.agg_grace_ms, agg.late_policy, agg.revise_horizon_ms, agg.max_open_windows
    )


def encode_checkpoint(cp: AggregatorCheckpoint) -> str:
    """Offset-commit metadata (under the broker's offset.metadata.max.bytes, 4096 by default)."""
    data: dict[str, Any] = {"rebuild_from": cp.rebuild_from, "watermark": cp.watermark}
    if cp.closes:
        data["closes"] = sorted(cp.closes.items())
    return json.dumps(data, separators=(",", ":"))


def decode_checkpoint(metadata: str | None, committed: int) -> AggregatorCheckpoint:
    """The checkpoint in a committed offset's metadata; plain offsets (no metadata) rebuild nothing."""
    if not metadata:
        return AggregatorCheckpoint(committed, None)
    try:
        data = json.loads(metadata)
        rebuild_from = int(data["rebuild_from"])
        watermark = data.get("watermark")
        closes = {int(start): int(offset) for start, offset in data.get("closes", [])}
        return AggregatorCheckpoint(min(rebuild_from, committed), None if watermark is None else int(watermark), closes)
    except (ValueError, KeyError, TypeError):
        return AggregatorCheckpoint(committed, None)
