"""CLI command(s) of the replay stage (filled in by its issue)."""

from __future__ import annotations

from streaming.cli_support import fail


def replay() -> None:
    """Not built yet."""
    fail("'replay' is not built yet")

