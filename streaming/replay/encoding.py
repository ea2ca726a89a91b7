"""Closed bins (a polars frame) -> JSON lines of the Bin contract, encoded vectorised."""

from __future__ import annotations

import polars as pl

from streaming.kernel.records import Bin

BIN_FIELDS = list(Bin.__struct_fields__)
_TEXT_FIELDS = ("bin_id", "symbol", "source")
# Text JSON can carry between quotes as it is: no quote, backslash or control character.
_PLAIN_TEXT = r'^[^"\\\x00-\x1f]*$'


def bin_frame(bins: pl.DataFrame, ingest_ts_ms: int) -> pl.DataFrame:
    """Bins with ingest time and source, columns in contract order."""
    return bins.with_columns(
        ingest_ts_ms=pl.lit(ingest_ts_ms, pl.Int64), source=pl.lit("replay", pl.String)
    ).select(BIN_FIELDS)


def _json_string(name: str) -> pl.Expr:
    """The column as JSON string literals, escaped by polars' JSON writer (`{"v":"..."}` -> `"..."`)."""
    return pl.struct(pl.col(name).alias("v")).struct.json_encode().str.slice(len('{"v":')).str.strip_suffix("}")


def _json_document(escape: bool) -> pl.Expr:
    """One Bin JSON object per row, built by string concatenation (4x faster than write_ndjson)."""
    parts: list[pl.Expr] = []
    for index, name in enumerate(BIN_FIELDS):
        opener = "{" if index == 0 else ","
        if name in _TEXT_FIELDS:
            if escape:
                parts += [pl.lit(f'{opener}"{name}":'), _json_string(name)]
            else:
                parts += [pl.lit(f'{opener}"{name}":"'), pl.col(name), pl.lit('"')]
        else:
            parts += [pl.lit(f'{opener}"{name}":'), pl.col(name).cast(pl.String).fill_null("null")]
    parts.append(pl.lit("}"))
    return pl.concat_str(parts)


_DOCUMENT = _json_document(escape=False)
_ESCAPED_DOCUMENT = _json_document(escape=True)


def bin_json_lines(bins: pl.DataFrame, ingest_ts_ms: int) -> list[str]:
    """One JSON document per bin, the bytes `streaming.kernel.records.encode(Bin(...))` writes for it.

    Sources only let symbols of the contract's pattern through, which need no escaping; should
    any other text reach this point, it is escaped rather than written as broken JSON.
    """
    if bins.height == 0:
        return []
    frame = bin_frame(bins, ingest_ts_ms)
    plain = all(frame[name].str.contains(_PLAIN_TEXT).all() for name in _TEXT_FIELDS)
    return frame.select(_DOCUMENT if plain else _ESCAPED_DOCUMENT).to_series().to_list()


def bin_json_text(bins: pl.DataFrame, ingest_ts_ms: int) -> bytes:
    """All bins as one JSON lines text (ends with a newline), for files."""
    if bins.height == 0:
        return b""
    return ("\n".join(bin_json_lines(bins, ingest_ts_ms)) + "\n").encode()
