"""Tooling on top of the platform: local broker runner, pipeline supervisor, demo, benchmarks.

The daemons (`streaming`), the Dagster location (`tick_platform`) and the dashboard never
import this package; it imports them.
"""
