"""DLQ records of the aggregate stage: late bins and poison input, each with reason and position."""

from __future__ import annotations

from typing import Any

import msgspec

from streaming.aggregate.windows import MAX_NOTIONAL_DOLLARS, LateBin
from streaming.kernel.bounds import MAX_PRICE, MAX_VOLUME
from streaming.kernel.records import Bin, DlqRecord, clip_payload, encode

MAX_MESSAGE_BYTES = 65_536  # a bin is ~400 bytes; anything this big is not one


def late_record(late: LateBin, source: str, position: dict[str, Any], now_ms: int) -> DlqRecord:
    """A bin the windows did not count (late, a duplicate, beyond the bar's bounds) as a DLQ record."""
    b = late.bin
    return DlqRecord(
        stage="aggregate",
        reason=late.reason,
        detail=late.detail or f"window of {b.bin_id} closed at watermark {late.watermark}",
        source=source,
        position=position,
        payload=clip_payload(encode(b)),
        dlq_ts_ms=now_ms,
        late_by_ms=late.late_by_ms,
        event_ts_ms=b.start_ts_ms,
        symbol=b.symbol,
    )


def poison_record(reason: str, detail: str, raw: bytes | None, source: str,
                  position: dict[str, Any], now_ms: int) -> DlqRecord:
    """Input that is not a valid Bin (not UTF-8, not JSON, schema violation, too big)."""
    return DlqRecord(
        stage="aggregate", reason=reason, detail=detail, source=source,
        position=position, payload=clip_payload(raw), dlq_ts_ms=now_ms,
    )


def classify_poison(raw: bytes | None, exc: Exception | None) -> tuple[str, str]:
    """(reason, detail) for input that failed to decode as a Bin."""
    if raw is None:
        return "empty", "message has no value"
    if len(raw) > MAX_MESSAGE_BYTES:
        return "too_large", f"{len(raw)} bytes > {MAX_MESSAGE_BYTES}"
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as err:
        return "not_utf8", str(err)
    try:
        msgspec.json.decode(text)
    except msgspec.DecodeError as err:
        return "not_json", str(err)
    return "schema", str(exc) if exc is not None else "not a Bin"


def check_bin(b: Bin) -> str | None:
    """Semantic checks msgspec types cannot express; returns the violation or None."""
    if b.end_ts_ms <= b.start_ts_ms:
        return f"end_ts_ms {b.end_ts_ms} <= start_ts_ms {b.start_ts_ms}"
    if b.volume < 0 or b.trade_count < 0:
        return f"negative volume {b.volume} or trade_count {b.trade_count}"
    if not (b.low <= b.open <= b.high and b.low <= b.close <= b.high):
        return "open/close outside [low, high]"
    return None


def bin_out_of_range(b: Bin) -> str | None:
    """The contract bound a bin's own fields break (docs/contracts.md, "Bounds and symbols"), or None.

    A bin within them can be added to a bar without any sum leaving the bounds unnoticed.
    """
    prices = (b.open, b.high, b.low, b.close)
    if not all(0 < p <= MAX_PRICE for p in prices):  # also false for NaN
        return f"a price outside (0, MAX_PRICE = {MAX_PRICE:,.0f}]"
    if b.volume > MAX_VOLUME:
        return f"volume {b.volume} above MAX_VOLUME ({MAX_VOLUME:,})"
    if not 0 <= b.notional <= MAX_NOTIONAL_DOLLARS:
        return f"notional {b.notional!r} outside [0, MAX_NOTIONAL_UNITS / PRICE_SCALE = {MAX_NOTIONAL_DOLLARS:,.0f}]"
    return None


def decode_bin(raw: bytes | None) -> Bin | tuple[str, str]:
    """The Bin in `raw`, or (reason, detail) when it is poison."""
    from streaming.kernel.records import bin_decoder

    if raw is None or len(raw) > MAX_MESSAGE_BYTES:
        return classify_poison(raw, None)
    try:
        b = bin_decoder.decode(raw)
    except (msgspec.ValidationError, msgspec.DecodeError, UnicodeDecodeError) as exc:
        # invalid UTF-8 inside a JSON string surfaces as UnicodeDecodeError, not DecodeError
        return classify_poison(raw, exc)
    problem = check_bin(b)
    if problem is not None:
        return "schema", problem
    beyond = bin_out_of_range(b)
    if beyond is not None:
        return "out_of_range", beyond
    return b
