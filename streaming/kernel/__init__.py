"""The kernel every part imports: contracts (records), settings, errors, bounds, atomic outputs, Kafka I/O
and the warehouse seam (`warehouse/`: dialects, schema and fact registry, connection, targets).

It imports nothing of the daemons, the Dagster location, the dashboard or the tooling.
"""
