"""Tick sources: Kibot, generic CSV and Parquet readers, the synthetic generator and the mock tick API."""

from streaming.sources.files import read_ticks, tick_stream
from streaming.sources.naming import symbol_from_filename

__all__ = ["read_ticks", "symbol_from_filename", "tick_stream"]
