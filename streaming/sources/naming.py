"""The symbol of a tick file from its name: `WDC_tickbidask.txt` -> WDC."""

from __future__ import annotations

import re
from pathlib import Path

_LEADING_SYMBOL = re.compile(r"^([A-Z.]+)_")


def symbol_from_filename(path: str | Path) -> str | None:
    """The leading [A-Z.]+ before the first `_` of the file name, or None when there is none."""
    match = _LEADING_SYMBOL.match(Path(path).name)
    return match.group(1) if match else None
