"""Streaming side of the tick platform: sources, replay (10 ms bins), aggregate (1 s bars), validate."""

__version__ = "0.1.0"
