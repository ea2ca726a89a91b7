"""Generic tick tables (CSV with a header, Parquet): which column is which, and their timestamps."""

from __future__ import annotations

import polars as pl

from streaming.kernel.errors import SourceError
from streaming.sources.frames import REPEAT_SHIFT
from streaming.sources.kibot import (
    eastern_repeat_shift_ms,
    eastern_to_epoch_ms,
    local_repeat_shift_ms,
    local_to_epoch_ms,
)

# Accepted column names per tick field (case-insensitive), unless a mapping names the column.
ALIASES: dict[str, tuple[str, ...]] = {
    "symbol": ("symbol", "ticker", "sym"),
    "ts": ("ts_ms", "timestamp", "ts", "datetime", "event_ts_ms", "time_ms"),
    "date": ("date",),
    "time": ("time",),
    "price": ("price", "last", "trade_price"),
    "bid": ("bid",),
    "ask": ("ask", "offer"),
    "size": ("size", "volume", "qty", "quantity"),
}
REQUIRED = ("price", "size")


def parse_mapping(text: str | None) -> dict[str, str]:
    """`price=Last,size=Qty` -> {"price": "Last", "size": "Qty"}; raises SourceError on a bad entry."""
    mapping: dict[str, str] = {}
    for part in (text or "").split(","):
        if not part.strip():
            continue
        field, sep, column = part.partition("=")
        field = field.strip().lower()
        if not sep or field not in ALIASES or not column.strip():
            raise SourceError(f"bad column mapping {part!r}: expected FIELD=COLUMN with FIELD in {sorted(ALIASES)}")
        mapping[field] = column.strip()
    return mapping


def resolve_columns(header: list[str], mapping: dict[str, str], source: str) -> dict[str, str]:
    """Tick field -> column of this table, from the mapping or the aliases (SourceError naming what is wrong)."""
    lowered = [name.strip().lower() for name in header]
    if "" in lowered:
        raise SourceError(f"{source}: column {lowered.index('') + 1} of the header has an empty name in {header}")
    twice = sorted({name for name, low in zip(header, lowered, strict=True) if lowered.count(low) > 1})
    if twice:
        # Which of the two would be the price? Refused rather than guessed.
        raise SourceError(f"{source}: column(s) {', '.join(twice)} named twice in the header {header}")
    by_lower = dict(zip(lowered, header, strict=True))
    resolved: dict[str, str] = {}
    for field, aliases in ALIASES.items():
        if field in mapping:
            if mapping[field] not in header:
                raise SourceError(f"{source}: mapped column {mapping[field]!r} for {field} is not in {header}")
            resolved[field] = mapping[field]
            continue
        found = next((by_lower[a] for a in aliases if a in by_lower), None)
        if found is not None:
            resolved[field] = found
    missing = [f for f in REQUIRED if f not in resolved]
    if "ts" not in resolved and not {"date", "time"} <= resolved.keys():
        missing.append("ts (or date + time)")
    if missing:
        known = {alias for aliases in ALIASES.values() for alias in aliases}
        unknown = [name for name in header if name.strip().lower() not in known and name not in mapping.values()]
        hint = f" (not recognised: {', '.join(unknown)})" if unknown else ""
        raise SourceError(
            f"{source}: cannot find column(s) {', '.join(missing)} in {header}{hint}; "
            "give a mapping like price=Last,ts=Time"
        )
    return resolved


def epoch_ms(values: pl.Expr, dtype: pl.DataType) -> pl.Expr:
    """Timestamps of any common form -> UTC epoch ms; naive wall clock is taken as America/New_York.

    A naive time in the repeated November hour comes out as its first pass; see `repeat_shift_ms`.
    """
    if dtype.is_integer():
        return values.cast(pl.Int64)
    if dtype.is_float():
        return values.round(0).cast(pl.Int64, strict=False)
    if isinstance(dtype, pl.Datetime):
        return values.dt.epoch("ms") if dtype.time_zone else local_to_epoch_ms(values)
    as_int, aware, naive = _text_forms(values)
    return pl.coalesce(as_int, aware, local_to_epoch_ms(naive))


def repeat_shift_ms(values: pl.Expr, dtype: pl.DataType) -> pl.Expr:
    """For naive wall-clock times in a repeated hour: ms to the second pass (REPEAT_SHIFT); 0 for any other."""
    if isinstance(dtype, pl.Datetime) and not dtype.time_zone:
        return local_repeat_shift_ms(values)
    if dtype.is_numeric() or isinstance(dtype, pl.Datetime):
        return pl.lit(0, pl.Int64)
    as_int, aware, naive = _text_forms(values)
    # Only a value read as naive text is wall clock; epoch ms and times with an offset are exact.
    return pl.when(as_int.is_null() & aware.is_null()).then(local_repeat_shift_ms(naive)).otherwise(0)


def _text_forms(values: pl.Expr) -> tuple[pl.Expr, pl.Expr, pl.Expr]:
    """Epoch ms as text, ISO 8601 with an offset (-> epoch ms), and naive ISO 8601 (-> naive datetime)."""
    text = values.cast(pl.String).str.strip_chars()
    as_int = text.cast(pl.Int64, strict=False)
    # ISO 8601's `Z` (UTC) is an offset too: chrono's %z reads only numeric ones.
    iso = text.str.replace(" ", "T", literal=True).str.replace(r"[Zz]$", "+00:00")
    aware = iso.str.to_datetime("%Y-%m-%dT%H:%M:%S%.f%z", time_unit="ms", strict=False).dt.epoch("ms")
    naive = iso.str.to_datetime("%Y-%m-%dT%H:%M:%S%.f", time_unit="ms", strict=False)
    return as_int, aware, naive


def table_candidates(
    table: pl.DataFrame, columns: dict[str, str], symbol: str | None, lines: pl.Series, payload: pl.Series
) -> pl.DataFrame:
    """A raw table chunk -> the candidate rows `frames.checked` judges."""
    def col(field: str, dtype: pl.DataType) -> pl.Expr:
        if field not in columns:
            return pl.lit(None, dtype)
        expr = pl.col(columns[field])
        if table.schema[columns[field]] == pl.String:
            expr = expr.str.strip_chars().str.strip_chars('"')
        return expr.cast(dtype, strict=False)

    if "ts" in columns:
        ts = epoch_ms(pl.col(columns["ts"]), table.schema[columns["ts"]])
        shift = repeat_shift_ms(pl.col(columns["ts"]), table.schema[columns["ts"]])
    else:
        # Trimmed like every other field (and like the Kibot reader does), so `03/08/2024, 09:30:00`
        # parses the same whichever order the header puts the columns in.
        date, time = col("date", pl.String()), col("time", pl.String())
        ts, shift = eastern_to_epoch_ms(date, time), eastern_repeat_shift_ms(date, time)
    # A symbol column names every row itself (an empty cell is a row without a symbol, not one to
    # fill in from elsewhere); `symbol` (the file name's, else --symbol) is for tables without one.
    sym = col("symbol", pl.String()) if "symbol" in columns else pl.lit(symbol, pl.String)
    return table.select(
        lines.alias("line"),
        payload.alias("payload"),
        sym.alias("symbol"),
        ts.alias("ts_ms"),
        shift.cast(pl.Int64).alias(REPEAT_SHIFT),
        col("price", pl.Float64()).alias("price"),
        col("bid", pl.Float64()).alias("bid"),
        col("ask", pl.Float64()).alias("ask"),
        col("size", pl.Float64()).alias("size_f"),
        pl.lit(None, pl.String).alias("reason"),
        pl.lit(None, pl.String).alias("detail"),
    ).with_columns(
        # A size must be a whole number; 100.0 is fine, 100.5 is not.
        size=pl.when(pl.col("size_f") == pl.col("size_f").round(0)).then(pl.col("size_f").cast(pl.Int64, strict=False))
    ).drop("size_f")
