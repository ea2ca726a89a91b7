"""Raw Kibot ticks read with polars, independently of the replay's own reader.

The validator must not share the reading code of the stage it checks, so the file
(Date,Time,Price,Bid,Ask,Size; US/Eastern wall clock at one-second resolution) is
decoded, split into lines and fields and its times converted here, on its own. Which
rows count as ticks, however, is one rule for both: the replay's row acceptance rules
(`streaming.sources.kibot.skip_reason` / `shape_rules` and `streaming.sources.frames.checked`,
with the numeric bounds and the symbol pattern) are applied to the rows parsed here, so a
row the replay dead-letters is never expected in the bins, and a row it keeps always is.
The repeated November hour is decided by file order with the replay's pure rule
(streaming/kernel/wallclock.py, applied through `checked`), so both read such a file alike.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

from streaming.kernel.bounds import is_symbol
from streaming.kernel.errors import SourceError
from streaming.sources.files import source_format
from streaming.sources.frames import REPEAT_SHIFT, SKIP_REASONS, checked
from streaming.sources.kibot import shape_rules, skip_reason

KIBOT_COLUMNS = ["date", "time", "price", "bid", "ask", "size"]
EXCHANGE_ZONE = "America/New_York"
# Universal newlines, as a text file is read line by line: CRLF, a lone CR or a lone LF end a line.
LINE_END = re.compile(r"\r\n|\r|\n")

TICK_SCHEMA = {
    "symbol": pl.String,
    "src": pl.Int64,
    "seq": pl.Int64,
    "ts_ms": pl.Int64,
    "price": pl.Float64,
    "size": pl.Int64,
}


@dataclass(frozen=True)
class TickFile:
    """The ticks of one file as a frame (symbol, src, seq, ts_ms, price, size) and the rows left out.

    `rejected` rows are what the replay dead-letters (by reason in `reasons`); `skipped` rows
    (blank lines, headers) are neither ticks nor errors; `lines` = ticks + rejected + skipped.
    """

    path: Path
    symbol: str
    ticks: pl.DataFrame
    rejected: int
    skipped: int = 0
    lines: int = 0
    reasons: dict[str, int] = field(default_factory=dict)


def _named_symbol(path: Path) -> str | None:
    """The symbol before the first `_` of the file name (any case), or None when it is not one."""
    prefix, sep, _ = path.name.partition("_")
    return prefix.upper() if sep and is_symbol(prefix.upper()) else None


def symbol_from_path(path: Path) -> str:
    """The symbol a Kibot file name starts with (`WDC_tickbidask.txt` -> `WDC`), by the contract's pattern."""
    named = _named_symbol(path)
    if named is None:
        raise SourceError(f"cannot tell the symbol from the file name {path.name!r}; pass --symbol")
    return named


def text_lines(data: bytes) -> list[str]:
    """The lines of a text file: UTF-8 (a BOM dropped, bytes that are not UTF-8 replaced), any line end."""
    text = data.decode("utf-8", errors="replace").removeprefix("\ufeff")
    lines = LINE_END.split(text)
    if lines and lines[-1] == "":
        lines.pop()  # the line end of the last line starts no new line
    return lines


def _wall(date: pl.Expr, time: pl.Expr) -> pl.Expr:
    return (date + " " + time).str.strptime(pl.Datetime("ms"), "%m/%d/%Y %H:%M:%S", strict=False)


def _eastern_ms(date: pl.Expr, time: pl.Expr) -> pl.Expr:
    # Null when unparsable or inside the spring DST gap (the replay's `bad_time`); a repeated
    # November hour comes out as its first pass (EDT), `_repeat_ms` says how far the second lies.
    local = _wall(date, time).dt.replace_time_zone(EXCHANGE_ZONE, ambiguous="earliest", non_existent="null")
    return local.dt.epoch("ms")


def _repeat_ms(date: pl.Expr, time: pl.Expr) -> pl.Expr:
    latest = _wall(date, time).dt.replace_time_zone(EXCHANGE_ZONE, ambiguous="latest", non_existent="null")
    return latest.dt.epoch("ms") - _eastern_ms(date, time)


def read_kibot(path: Path, symbol: str | None = None, src: int = 0) -> TickFile:
    """Parse a Kibot tick file; the rows the replay would dead-letter or skip are counted, not kept.

    SourceError (one line) for a missing, binary or non-Kibot file; an empty or blank-only file
    is not an error here: it has no ticks, which the validation reports as a FAIL.
    """
    if not path.is_file():
        raise SourceError(f"no such tick file: {path}")
    fmt = source_format(path)  # the replay's whole-file check: missing, unreadable, binary, format
    if fmt != "kibot":
        raise SourceError(f"{path}: a {fmt} file; validate --ticks reads Kibot Date,Time,Price,Bid,Ask,Size files")
    # The replay's precedence: the file name's symbol, --symbol only for a file without one.
    sym = _named_symbol(path) or symbol or symbol_from_path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise SourceError(f"cannot read {path}: {exc.strerror}") from None
    lines = text_lines(data)
    frame = pl.DataFrame(
        {"line": pl.Series(range(1, len(lines) + 1), dtype=pl.Int64), "payload": pl.Series(lines, dtype=pl.String)}
    ).with_columns(skip_reason(pl.col("payload")).alias("skip"))
    rows = frame.filter(pl.col("skip").is_null())
    parts = pl.col("payload").str.split(",")
    field_of = {name: parts.list.get(i, null_on_oob=True).str.strip_chars() for i, name in enumerate(KIBOT_COLUMNS)}
    candidates = rows.select(
        "line",
        "payload",
        pl.lit(sym, pl.String).alias("symbol"),
        _eastern_ms(field_of["date"], field_of["time"]).alias("ts_ms"),
        _repeat_ms(field_of["date"], field_of["time"]).alias(REPEAT_SHIFT),
        *(field_of[name].cast(pl.Float64, strict=False).alias(name) for name in ("price", "bid", "ask")),
        field_of["size"].cast(pl.Int64, strict=False).alias("size"),
        parts.list.len().cast(pl.Int64).alias("fields"),
    ).with_columns(shape_rules(pl.col("fields"), pl.col("bid"), pl.col("ask"))).drop("fields")
    judged = checked(candidates, str(path), src)
    ticks = judged.ticks.select(
        pl.col("symbol"),
        pl.lit(src, pl.Int64).alias("src"),
        (pl.col("line") - 1).alias("seq"),
        pl.col("ts_ms"),
        pl.col("price"),
        pl.col("size"),
    )
    reasons = dict(judged.rejects.group_by("reason").len().sort("reason").iter_rows())
    skipped = int(frame["skip"].is_in(list(SKIP_REASONS)).sum())
    return TickFile(path, sym, ticks, judged.rejects.height, skipped, len(lines), reasons)


def read_tick_files(paths: list[Path], symbol: str | None = None) -> tuple[pl.DataFrame, list[TickFile]]:
    """All ticks of several files in one frame (`src` = the file's position, seq = its line number - 1)."""
    if symbol and len(paths) > 1:
        raise SourceError("--symbol names the symbol of a single tick file; name the files by symbol instead")
    files = [read_kibot(p, symbol, src) for src, p in enumerate(paths)]
    if not files:
        return pl.DataFrame(schema=TICK_SCHEMA), []
    return pl.concat([f.ticks for f in files]), files
