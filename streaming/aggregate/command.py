"""CLI command(s) of the aggregate stage (filled in by its issue)."""

from __future__ import annotations

from streaming.cli_support import fail


def aggregate() -> None:
    """Not built yet."""
    fail("'aggregate' is not built yet")

