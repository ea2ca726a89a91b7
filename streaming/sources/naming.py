"""The symbol of a tick file from its name: `WDC_tickbidask.txt` -> WDC."""

from __future__ import annotations

from pathlib import Path

from streaming.kernel.bounds import is_symbol


def symbol_from_filename(path: str | Path) -> str | None:
    """The part of the file name before its first `_`, when it is a symbol (streaming.kernel.bounds); else None.

    A name whose prefix is outside the pattern (`BAD"X_ticks.txt`, `wdc_ticks.txt`) names no symbol:
    the file then needs a symbol column or `--symbol`, and a Kibot file without either is refused.
    """
    prefix, sep, _ = Path(path).name.partition("_")
    return prefix if sep and is_symbol(prefix) else None
