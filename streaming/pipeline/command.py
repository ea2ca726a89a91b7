"""CLI command(s) of the pipeline stage (filled in by its issue)."""

from __future__ import annotations

from streaming.cli_support import fail


def pipeline() -> None:
    """Not built yet."""
    fail("'pipeline' is not built yet")


def demo() -> None:
    """Not built yet."""
    fail("'demo' is not built yet")

