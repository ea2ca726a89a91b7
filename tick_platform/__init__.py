"""The Dagster code location of the tick platform (warehouse side)."""
