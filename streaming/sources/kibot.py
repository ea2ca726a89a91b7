"""Kibot tick-with-bid/ask files: `Date,Time,Price,Bid,Ask,Size`, US/Eastern wall clock, 1 s resolution."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import polars as pl

from streaming.sources.frames import REPEAT_SHIFT, TickChunk, WallClock, checked, skipped_rows
from streaming.sources.lines import line_chunks

KIBOT_FIELDS = ["date", "time", "price", "bid", "ask", "size"]
# Kibot's own header, compared without case and spaces. Only this exact order is read by position:
# any other header (`Date,Time,Bid,Ask,Price,Size`) is a generic CSV read by the column names.
KIBOT_HEADER = ",".join(KIBOT_FIELDS)
EXCHANGE_TZ = "America/New_York"


def is_kibot_header(line: str) -> bool:
    """Whether a line is Kibot's own `Date,Time,Price,Bid,Ask,Size` header (any case, spaces ignored)."""
    return line.strip().lower().replace(" ", "") == KIBOT_HEADER


def _kibot_stamp(date: pl.Expr, time: pl.Expr) -> pl.Expr:
    return pl.concat_str([date, time], separator=" ").str.strptime(pl.Datetime("ms"), "%m/%d/%Y %H:%M:%S", strict=False)


def local_to_epoch_ms(stamp: pl.Expr) -> pl.Expr:
    """A naive US/Eastern wall-clock datetime -> UTC epoch ms, a repeated hour read as its first pass (EDT).

    Null in the spring gap. `local_repeat_shift_ms` says how far the second pass lies later.
    """
    return stamp.dt.replace_time_zone(EXCHANGE_TZ, ambiguous="earliest", non_existent="null").dt.epoch("ms")


def local_repeat_shift_ms(stamp: pl.Expr) -> pl.Expr:
    """The ms from the first to the second pass of a repeated hour (3,600,000), 0 for an unambiguous time."""
    latest = stamp.dt.replace_time_zone(EXCHANGE_TZ, ambiguous="latest", non_existent="null").dt.epoch("ms")
    return latest - local_to_epoch_ms(stamp)


def eastern_to_epoch_ms(date: pl.Expr, time: pl.Expr) -> pl.Expr:
    """`MM/DD/YYYY` + `HH:MM:SS` US/Eastern wall clock -> UTC epoch ms (null when unparsable or in a DST gap).

    The repeated hour in November comes out as its first (EDT) pass; readers add
    `eastern_repeat_shift_ms` as `REPEAT_SHIFT`, and `checked` moves the second pass on by file order.
    """
    return local_to_epoch_ms(_kibot_stamp(date, time))


def eastern_repeat_shift_ms(date: pl.Expr, time: pl.Expr) -> pl.Expr:
    """`local_repeat_shift_ms` of a Kibot date and time."""
    return local_repeat_shift_ms(_kibot_stamp(date, time))


def skip_reason(payload: pl.Expr) -> pl.Expr:
    """"blank" or "header" for a Kibot line that is no tick and no error (counted as skipped), else null.

    One of the row acceptance rules of a Kibot file, shared by the replay and the validator.
    """
    blank = payload.str.strip_chars() == ""
    # The same test as is_kibot_header: a header in another order inside the file is not skipped
    # (its fields do not parse, so it is dead-lettered as malformed with its line).
    header = payload.str.to_lowercase().str.replace_all(" ", "", literal=True).str.strip_chars() == KIBOT_HEADER
    return pl.when(blank).then(pl.lit("blank")).when(header).then(pl.lit("header"))


def shape_rules(field_count: pl.Expr, bid: pl.Expr, ask: pl.Expr) -> list[pl.Expr]:
    """`reason` and `detail` of a Kibot row refused for its shape, before the value checks of `checked`.

    A row must have exactly the six fields, and bid/ask (already cast, null when not a number)
    must be numbers. Shared by the replay and the validator, so both accept the same rows.
    """
    wrong_count = field_count != len(KIBOT_FIELDS)
    return [
        pl.when(wrong_count | bid.is_null() | ask.is_null()).then(pl.lit("malformed")).alias("reason"),
        pl.when(wrong_count)
        .then(pl.format("expected 6 fields (Date,Time,Price,Bid,Ask,Size), got {}", field_count))
        .when(bid.is_null())
        .then(pl.lit("bid is not a number"))
        .when(ask.is_null())
        .then(pl.lit("ask is not a number"))
        .alias("detail"),
    ]


def parse_kibot_lines(
    numbers: pl.Series, raw: pl.Series, symbol: str | None, file: str, src: int, clock: WallClock | None = None
) -> TickChunk:
    """Parse one chunk of Kibot lines vectorised; bad rows become rejects with reason and detail.

    `clock` is the file's repeated-hour state (a fresh one when None: a chunk on its own).
    """
    frame = pl.DataFrame([numbers.alias("line"), raw.alias("payload")]).with_columns(
        skip_reason(pl.col("payload")).alias("skip")
    )
    skipped = frame.filter(pl.col("skip") == "blank")
    headers = frame.filter(pl.col("skip") == "header")
    rows = frame.filter(pl.col("skip").is_null()).drop("skip")
    fields = rows["payload"].str.split_exact(",", len(KIBOT_FIELDS) - 1).struct.rename_fields(KIBOT_FIELDS)
    commas = rows["payload"].str.count_matches(",", literal=True)
    parsed = rows.with_columns(*fields.struct.unnest(), (commas + 1).alias("fields")).with_columns(
        pl.col(name).str.strip_chars() for name in KIBOT_FIELDS
    )
    candidates = parsed.select(
        "line",
        "payload",
        pl.lit(symbol, pl.String).alias("symbol"),
        eastern_to_epoch_ms(pl.col("date"), pl.col("time")).alias("ts_ms"),
        eastern_repeat_shift_ms(pl.col("date"), pl.col("time")).alias(REPEAT_SHIFT),
        pl.col("price").cast(pl.Float64, strict=False),
        pl.col("bid").cast(pl.Float64, strict=False),
        pl.col("ask").cast(pl.Float64, strict=False),
        pl.col("size").cast(pl.Int64, strict=False),
        "fields",
    ).with_columns(shape_rules(pl.col("fields"), pl.col("bid"), pl.col("ask"))).drop("fields")
    chunk = checked(candidates, file, src, clock)
    extra = [
        skipped_rows(skipped["line"], skipped["payload"], "blank", file, src),
        skipped_rows(headers["line"], headers["payload"], "header", file, src),
    ]
    return TickChunk(chunk.ticks, pl.concat([chunk.rejects, *extra]).sort("line"))


def read_kibot(path: Path, symbol: str | None, chunk_rows: int, src: int = 0) -> Iterator[TickChunk]:
    """A Kibot file in chunks of `chunk_rows` lines, at constant memory."""
    clock = WallClock()  # one per file: the repeated hour is decided by this file's own order
    for numbers, raw in line_chunks(path, chunk_rows):
        yield parse_kibot_lines(numbers, raw, symbol, str(path), src, clock)
