"""Raw Kibot ticks read with polars, independently of the replay's own reader.

The validator must not share code with the stage it checks, so the file format
(Date,Time,Price,Bid,Ask,Size; no header; US/Eastern wall clock at one-second
resolution) is parsed here from scratch. One rule is shared on purpose: the repeated
November hour is decided by file order with the replay's pure function
(streaming/wallclock.py), so both read such a file alike.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import polars as pl

from streaming.errors import SourceError
from streaming.wallclock import RepeatedHour, second_pass_flags

KIBOT_COLUMNS = ["date", "time", "price", "bid", "ask", "size"]
EXCHANGE_ZONE = "America/New_York"

TICK_SCHEMA = {
    "symbol": pl.String,
    "seq": pl.Int64,
    "ts_ms": pl.Int64,
    "price": pl.Float64,
    "size": pl.Int64,
}


@dataclass(frozen=True)
class TickFile:
    """The ticks of one file as a frame (symbol, seq, ts_ms, price, size) and the rows left out."""

    path: Path
    symbol: str
    ticks: pl.DataFrame
    rejected: int


def symbol_from_path(path: Path) -> str:
    """The symbol a Kibot file name starts with (`WDC_tickbidask.txt` -> `WDC`)."""
    match = re.match(r"^([A-Za-z][A-Za-z0-9.\-]*)_", path.name)
    if not match:
        raise SourceError(f"cannot tell the symbol from the file name {path.name!r}; pass --symbol")
    return match.group(1).upper()


def read_kibot(path: Path, symbol: str | None = None) -> TickFile:
    """Parse a Kibot tick file; rows that do not parse or have a non-positive price/size are rejected."""
    if not path.is_file():
        raise SourceError(f"no such tick file: {path}")
    sym = symbol or symbol_from_path(path)
    raw = pl.read_csv(
        path,
        has_header=False,
        new_columns=KIBOT_COLUMNS,
        schema_overrides=dict.fromkeys(KIBOT_COLUMNS, pl.String),
        truncate_ragged_lines=True,
    )
    wall = (pl.col("date").str.strip_chars() + " " + pl.col("time").str.strip_chars()).str.strptime(
        pl.Datetime("ms"), "%m/%d/%Y %H:%M:%S", strict=False
    )
    first_pass = wall.dt.replace_time_zone(EXCHANGE_ZONE, ambiguous="earliest", non_existent="null").dt.epoch("ms")
    second_pass = wall.dt.replace_time_zone(EXCHANGE_ZONE, ambiguous="latest", non_existent="null").dt.epoch("ms")
    parsed = raw.with_row_index("seq").select(
        pl.lit(sym).alias("symbol"),
        pl.col("seq").cast(pl.Int64),
        first_pass.alias("ts_ms"),
        (second_pass - first_pass).alias("repeat_ms"),
        pl.col("price").str.strip_chars().cast(pl.Float64, strict=False),
        pl.col("size").str.strip_chars().cast(pl.Float64, strict=False),
    )
    valid = (
        pl.col("ts_ms").is_not_null()
        & pl.col("price").is_not_null()
        & pl.col("size").is_not_null()
        & (pl.col("price") > 0)
        & (pl.col("size") > 0)
        & (pl.col("size") == pl.col("size").round(0))
    )
    ticks = _repeated_hour(parsed.filter(valid)).with_columns(pl.col("size").cast(pl.Int64)).select(list(TICK_SCHEMA))
    return TickFile(path, sym, ticks, parsed.height - ticks.height)


def _repeated_hour(ticks: pl.DataFrame) -> pl.DataFrame:
    """The November repeated hour by file order, the replay's rule (streaming/wallclock.py): EDT, then EST."""
    ambiguous = ticks["repeat_ms"] > 0
    if not ambiguous.any():
        return ticks
    flags, _ = second_pass_flags(ticks["ts_ms"].filter(ambiguous).to_list(), RepeatedHour())
    later = pl.Series([False] * ticks.height)
    later = later.scatter(ambiguous.arg_true(), pl.Series(flags, dtype=pl.Boolean))
    return ticks.with_columns(
        ts_ms=pl.when(later).then(pl.col("ts_ms") + pl.col("repeat_ms")).otherwise(pl.col("ts_ms"))
    )


def read_tick_files(paths: list[Path], symbol: str | None = None) -> tuple[pl.DataFrame, list[TickFile]]:
    """All ticks of several files in one frame (seq stays in file order per file)."""
    if symbol and len(paths) > 1:
        raise SourceError("--symbol names the symbol of a single tick file; name the files by symbol instead")
    files = [read_kibot(p, symbol) for p in paths]
    if not files:
        return pl.DataFrame(schema=TICK_SCHEMA), []
    return pl.concat([f.ticks for f in files]), files
