"""A deterministic synthetic tick generator writing Kibot-format files (one per symbol).

Realistic enough for demos and benchmarks: a U-shaped intraday volume curve, bursts of many
ticks in one second, bid <= price <= ask for almost every print (a few prints outside the
spread), round and odd lots, the odd sub-penny price. Fully vectorised (numpy + polars).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date as Date
from pathlib import Path

import numpy as np
import polars as pl

from streaming.kernel.outputs import AtomicFile, write_atomic

SESSION_START_S = 9 * 3600 + 30 * 60
SESSION_S = 6 * 3600 + 30 * 60
KNOWN_SYMBOLS = [
    "AAPL", "MSFT", "WDC", "IBM", "INTC", "ORCL", "CSCO", "AMD", "NVDA", "QCOM",
    "TXN", "HPQ", "STX", "MU", "ADBE", "EBAY", "AMZN", "GOOG", "XOM", "JPM",
]


@dataclass(frozen=True)
class SynthFile:
    """One written file."""

    symbol: str
    path: Path
    ticks: int


def synth_symbols(count: int) -> list[str]:
    """`count` distinct symbols: well-known tickers first, then S + three letters."""
    names = KNOWN_SYMBOLS[:count]
    index = 0
    while len(names) < count:
        a, rest = divmod(index, 26 * 26)
        b, c = divmod(rest, 26)
        names.append("S" + chr(65 + a % 26) + chr(65 + b) + chr(65 + c))
        index += 1
    return names


def synth_ticks(symbol_index: int, ticks: int, seed: int) -> pl.DataFrame:
    """One symbol's day: seconds after midnight, price, bid, ask, size (in trade order)."""
    rng = np.random.default_rng([seed, symbol_index])
    # Bursts: a sixth of the ticks arrive in clusters sharing one second (up to a few hundred).
    burst_ticks = ticks // 6
    sizes = np.minimum(rng.geometric(1 / 25, size=max(1, burst_ticks // 10)), 300)
    sizes = sizes[np.cumsum(sizes) <= burst_ticks]
    burst_ticks = int(sizes.sum())
    lone = ticks - burst_ticks
    # U-shaped activity: Beta(0.6, 0.6) over the session is dense at the open and the close.
    lone_s = rng.beta(0.6, 0.6, size=lone)
    burst_s = np.repeat(rng.beta(0.6, 0.6, size=len(sizes)), sizes)
    seconds = np.sort((np.concatenate([lone_s, burst_s]) * (SESSION_S - 1)).astype(np.int64)) + SESSION_START_S
    start = rng.uniform(10, 300)
    mid = start * np.exp(np.cumsum(rng.normal(0, 0.0004, size=ticks)))
    spread = 0.01 * (1 + rng.geometric(0.6, size=ticks) - 1 + (mid > 100))
    bid = np.round(mid - spread / 2, 2)
    ask = np.round(bid + spread, 2)
    where = rng.random(ticks)
    price = np.where(where < 0.4, bid, np.where(where < 0.8, ask, np.round(bid + (ask - bid) * rng.random(ticks), 2)))
    # A few sub-penny prints inside the spread, and a few prints outside it (late reports, odd venues).
    subpenny = rng.random(ticks) < 0.05
    price = np.where(subpenny, np.clip(np.round(price + rng.uniform(-0.005, 0.005, ticks), 4), bid, ask), price)
    outside = rng.random(ticks) < 0.004
    price = np.where(outside, np.where(rng.random(ticks) < 0.5, bid - 0.01 * rng.integers(1, 5, ticks),
                                       ask + 0.01 * rng.integers(1, 5, ticks)), price)
    price = np.round(price, 4)
    size = np.where(
        rng.random(ticks) < 0.25, rng.integers(1, 100, ticks), 100 * rng.geometric(0.35, size=ticks)
    )
    size = np.where(rng.random(ticks) < 0.002, size * 50, size)
    return pl.DataFrame({"second": seconds, "price": price, "bid": bid, "ask": ask, "size": size.astype(np.int64)})


def kibot_frame(ticks: pl.DataFrame, day: Date) -> pl.DataFrame:
    """The Kibot columns Date,Time,Price,Bid,Ask,Size as text-ready values."""
    return ticks.select(
        pl.lit(day.strftime("%m/%d/%Y")).alias("date"),
        pl.from_epoch(pl.col("second"), time_unit="s").dt.strftime("%H:%M:%S").alias("time"),
        "price", "bid", "ask", "size",
    )


def write_synth(symbols: int, ticks_per_symbol: int, seed: int, day: Date, out_dir: Path) -> list[SynthFile]:
    """Write one `<SYM>_tickbidask.txt` per symbol; the same arguments always give the same bytes."""
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for index, symbol in enumerate(synth_symbols(symbols)):
        path = out_dir / f"{symbol}_tickbidask.txt"
        frame = kibot_frame(synth_ticks(index, ticks_per_symbol, seed), day)
        write_atomic(path, frame.write_csv(include_header=False).encode())
        written.append(SynthFile(symbol, path, frame.height))
    return written


def merge_files(files: list[SynthFile], out_path: Path) -> int:
    """Concatenate per-symbol files into one multi-symbol CSV (header, symbol column), time-sorted."""
    frames = [
        pl.scan_csv(f.path, has_header=False, new_columns=["date", "time", "price", "bid", "ask", "size"],
                    schema_overrides={"date": pl.String, "time": pl.String}).with_columns(symbol=pl.lit(f.symbol))
        for f in files
    ]
    merged = pl.concat(frames).sort("time", maintain_order=True).select(
        "symbol", "date", "time", "price", "bid", "ask", "size"
    )
    with AtomicFile(out_path) as out:
        # polars streams into the temporary name; the rename publishes the file only when it is complete.
        merged.sink_csv(out.tmp_path)
    return sum(f.ticks for f in files)
