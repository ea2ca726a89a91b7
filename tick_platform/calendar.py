"""NYSE regular-session minutes (09:30-16:00 America/New_York, Monday-Friday), pure polars.

Exchange holidays are not excluded (no holiday source offline); a weekday holiday simply
has no facts.
"""

from __future__ import annotations

from datetime import date

import polars as pl

SESSION_OPEN_MIN = 9 * 60 + 30
SESSION_MINUTES = 390  # 09:30 to 16:00
EXCHANGE_TZ = "America/New_York"


def session_minutes(years: list[int]) -> pl.DataFrame:
    """One row per trading minute of the given years, keyed by its UTC start (MINUTE_TS)."""
    if not years:
        return pl.DataFrame(
            schema={
                "MINUTE_TS": pl.Datetime("us"),
                "MINUTE_ET": pl.Datetime("us"),
                "TRADE_DATE": pl.Date(),
                "YEAR": pl.Int64(),
                "WEEKDAY": pl.Int64(),
                "MINUTE_OF_SESSION": pl.Int64(),
                "WINDOW_300S_TS": pl.Datetime("us"),
            }
        )
    days = pl.concat(
        [
            pl.DataFrame({"TRADE_DATE": pl.date_range(date(y, 1, 1), date(y, 12, 31), "1d", eager=True)})
            for y in sorted(set(years))
        ]
    ).filter(pl.col("TRADE_DATE").dt.weekday() <= 5)
    minutes = pl.DataFrame({"MINUTE_OF_SESSION": pl.int_range(0, SESSION_MINUTES, eager=True)})
    local = (
        pl.col("TRADE_DATE").cast(pl.Datetime("us"))
        + pl.duration(minutes=SESSION_OPEN_MIN + pl.col("MINUTE_OF_SESSION"))
    ).alias("MINUTE_ET")
    utc = pl.col("MINUTE_ET").dt.replace_time_zone(EXCHANGE_TZ).dt.convert_time_zone("UTC").dt.replace_time_zone(None)
    return (
        days.join(minutes, how="cross")
        .with_columns(local)
        .with_columns(utc.alias("MINUTE_TS"))
        .with_columns(
            pl.col("TRADE_DATE").dt.year().cast(pl.Int64).alias("YEAR"),
            pl.col("TRADE_DATE").dt.weekday().cast(pl.Int64).alias("WEEKDAY"),
            pl.col("MINUTE_OF_SESSION").cast(pl.Int64),
            pl.col("MINUTE_TS").dt.truncate("5m").alias("WINDOW_300S_TS"),
        )
        .select(["MINUTE_TS", "MINUTE_ET", "TRADE_DATE", "YEAR", "WEEKDAY", "MINUTE_OF_SESSION", "WINDOW_300S_TS"])
        .sort("MINUTE_TS")
    )
