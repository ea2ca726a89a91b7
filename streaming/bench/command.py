"""CLI command(s) of the bench stage (filled in by its issue)."""

from __future__ import annotations

from streaming.cli_support import fail


def bench() -> None:
    """Not built yet."""
    fail("'bench' is not built yet")

