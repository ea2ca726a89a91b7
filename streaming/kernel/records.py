"""The records that travel between stages (contracts in docs/contracts/*.json).

msgspec Structs: frozen, typed, and decoded with validation at C speed, so a
schema violation in a Kafka message is caught where it is read.
"""

from __future__ import annotations

from typing import Any, Literal

import msgspec


class Bin(msgspec.Struct, frozen=True, kw_only=True):
    """One 10 ms bin of one symbol's trades (ticks.raw)."""

    bin_id: str
    symbol: str
    start_ts_ms: int
    end_ts_ms: int
    window_ms: int
    open: float
    high: float
    low: float
    close: float
    volume: int
    notional: float
    trade_count: int
    max_lateness_ms: int
    api_send_ts_ms: int | None
    source_event_ts_ms: int
    ingest_ts_ms: int
    source: str = "replay"


class Bar(msgspec.Struct, frozen=True, kw_only=True, gc=False):
    """One final OHLCV bar of one symbol (ticks.agg.1s for the default spec, time-1s).

    `spec` is the canonical text of its `BarSpec` (`time-1s`, `time-5s`) and ends its
    `bar_id`, so bars of two sizes never share an id. It has no default: a bar without one
    (written before the spec was part of the contract) is refused where it is read.
    """

    bar_id: str
    symbol: str
    spec: str
    start_ts_ms: int
    end_ts_ms: int
    open: float
    high: float
    low: float
    close: float
    volume: int
    notional: float
    vwap: float
    trade_count: int
    bin_count: int
    max_lateness_ms: int
    api_send_ts_ms: int | None
    source_event_ts_ms: int
    ingest_ts_ms: int
    revision: int = 0
    source: str = "aggregator"


class DlqRecord(msgspec.Struct, frozen=True, kw_only=True, omit_defaults=True):
    """Input that a stage could not use, with the reason and where it came from (ticks.dlq)."""

    stage: Literal["replay", "aggregate", "api", "platform"]
    reason: str
    detail: str
    source: str
    position: dict[str, Any]
    payload: str
    dlq_ts_ms: int
    late_by_ms: int | None = None
    event_ts_ms: int | None = None
    symbol: str | None = None


class Watermark(msgspec.Struct, frozen=True, kw_only=True):
    """A producer's promise on one ticks.raw partition: no bin with start_ts_ms < watermark_ms follows.

    The replay writes one to every partition in the same transaction as the bins it closed
    (REPLAY_WATERMARK_INTERVAL_MS), so a quiet partition's windows close on the replay's clock
    instead of waiting for the next bin or the idle timeout. Key `__watermark__`; readers of
    bins skip it (`decode_watermark`).
    """

    type: Literal["watermark"] = "watermark"
    watermark_ms: int
    job_id: str
    source: str = "replay"
    # The end of the job's input: nothing at all follows on this partition from this job, so every
    # open window closes, whatever its size (not only those ending by `watermark_ms`).
    final: bool = False


WATERMARK_KEY = b"__watermark__"
_WATERMARK_PREFIX = b'{"type":"watermark"'


def make_bin_id(symbol: str, start_ts_ms: int) -> str:
    """`<SYMBOL>-<start_ms 13 digits>`, the bin's idempotency key (a bar's id adds its spec: bar_spec.make_bar_id)."""
    return f"{symbol}-{start_ts_ms:013d}"


PAYLOAD_LIMIT = 4096


def clip_payload(raw: bytes | str | None) -> str:
    """The offending input as text for a DLQ record, bounded so a huge message stays small."""
    if raw is None:
        return ""
    text = raw.decode("utf-8", errors="replace") if isinstance(raw, bytes) else raw
    return text if len(text) <= PAYLOAD_LIMIT else text[:PAYLOAD_LIMIT] + f"...[{len(text)} chars]"


_encoder = msgspec.json.Encoder()
encode = _encoder.encode
bin_decoder = msgspec.json.Decoder(Bin)
bar_decoder = msgspec.json.Decoder(Bar)
dlq_decoder = msgspec.json.Decoder(DlqRecord)
watermark_decoder = msgspec.json.Decoder(Watermark)


def decode_watermark(raw: bytes | None) -> Watermark | None:
    """The watermark record in `raw`, or None for anything else (a bin, poison)."""
    if raw is None or not raw.startswith(_WATERMARK_PREFIX):
        return None
    try:
        return watermark_decoder.decode(raw)
    except (msgspec.ValidationError, msgspec.DecodeError, UnicodeDecodeError):
        return None
