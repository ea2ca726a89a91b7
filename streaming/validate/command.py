"""CLI command(s) of the validate stage (filled in by its issue)."""

from __future__ import annotations

from streaming.cli_support import fail


def validate() -> None:
    """Not built yet."""
    fail("'validate' is not built yet")

