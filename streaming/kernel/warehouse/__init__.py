"""The warehouse seam shared by the Dagster location (writer) and the dashboard (reader).

- `dialect`: what differs between targets, as data (column types, placeholder, transaction
  statements, bulk insert method, identifier rule). A new target is one more `Dialect`.
- `schema`: the tables and views once (rendered per dialect) and the fact registry (`FactSpec`).
- `connection`: `WarehouseConnection`, dialect-neutral SQL over a DB-API connection.
- `targets`: `Warehouse`, one class per target (`DuckDBFile`, `SnowflakeAccount`) behind one `connect()`.

Importing this package (or `dialect`, `schema`) loads neither polars nor a database driver:
`streaming/kernel/settings.py` reads the fact windows from `schema` on every start.
"""
