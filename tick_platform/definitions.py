"""The tick platform's Dagster code location (workspace.yaml): one Definitions, `defs`.

The only module that reads the settings when it is imported: Dagster loads `defs` from here.
Everything else builds from settings it is given (tick_platform.code_location.build_definitions).
"""

from __future__ import annotations

from tick_platform.code_location import build_definitions

defs = build_definitions()
