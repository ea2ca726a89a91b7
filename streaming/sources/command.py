"""CLI command(s) of the sources stage (filled in by its issue)."""

from __future__ import annotations

from streaming.cli_support import fail


def synth() -> None:
    """Not built yet."""
    fail("'synth' is not built yet")


def api() -> None:
    """Not built yet."""
    fail("'api' is not built yet")

