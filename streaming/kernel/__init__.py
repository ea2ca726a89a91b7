"""The kernel every part imports: contracts (records), settings, errors, bounds, atomic outputs and Kafka I/O.

It imports nothing of the daemons, the Dagster location, the dashboard or the tooling.
"""
