"""Bluesky firehose appliance: Jetstream -> Redis Stream -> Parquet -> DuckDB -> Bottle API.

One module per pipeline stage, data moving one way:
Jetstream -> `ingest` -> `buffer` (Redis Stream) -> `flush` (+ `schema`) -> Parquet
-> `params` + `catalog` + `search` (DuckDB, via `database`) -> `api` (Bottle under Gunicorn). `config` holds every
setting; `cli` is the one entry point. The subpackage `simulator` (a local Jetstream, `firehose simulate`) stands
apart: no pipeline module imports it.
"""

__version__ = "0.1.0"
