"""What the contracts can hold exactly: the numeric bounds and the symbol pattern (docs/contracts.md).

Every source (file name, CSV/Parquet column, `--symbol`, the mock API) and every stage checks
input against these, so a value beyond them becomes a DLQ record with its reason and position,
or a one-line error, never a wrapped integer or invalid JSON. Written once here, read by the
replay's readers, the aggregator, the mock API and the validator alike.
"""

from __future__ import annotations

import re
from typing import Final

# Prices are fixed point: rounded half away from zero to 6 decimals (micro-dollars) where they
# are read, so OHLC, notional and VWAP all see the same number. Notional is summed in these units
# as an exact int64.
PRICE_DECIMALS: Final = 6
PRICE_SCALE: Final = 10**PRICE_DECIMALS

# One tick: 0 < price <= MAX_PRICE dollars, 0 <= size <= MAX_SIZE shares, price * size <= MAX_NOTIONAL.
MAX_PRICE: Final = 1_000_000.0
MAX_SIZE: Final = 1_000_000_000
# A bin's or a bar's sums: volume stays exact in every JSON reader's double (2**53 - 1); notional
# in micro-dollars stays inside int64 with room for the rounding of a float running sum.
MAX_VOLUME: Final = 2**53 - 1
MAX_NOTIONAL: Final = 9.0e12
MAX_NOTIONAL_UNITS: Final = 9 * 10**18

# One documented symbol pattern: an upper-case letter, then up to 15 of A-Z, 0-9, '.', '-'
# (WDC, BRK.A, BF-B). Nothing in it needs escaping in JSON, a Kafka key or a file name.
SYMBOL_REGEX: Final = r"^[A-Z][A-Z0-9.\-]{0,15}$"
SYMBOL_PATTERN: Final = re.compile(SYMBOL_REGEX)
SYMBOL_RULE: Final = "an upper-case letter, then up to 15 of A-Z, 0-9, '.', '-'"


def is_symbol(text: str) -> bool:
    """True when `text` matches the contract's symbol pattern exactly."""
    return SYMBOL_PATTERN.fullmatch(text) is not None
