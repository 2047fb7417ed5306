"""Bluesky firehose appliance: Jetstream -> Redis Stream -> Parquet -> DuckDB -> Bottle API.

One module per pipeline stage, data moving one way:
Jetstream -> `ingest` -> `buffer` (Redis Stream) -> `flush` (+ `schema`) -> Parquet
-> `params` + `catalog` + `search` (DuckDB, via `database`) -> `api` (Bottle under Gunicorn). `config` holds every
setting; `cli` is the one entry point. The subpackage `simulator` (a local Jetstream, `firehose simulate`) stands
apart: no pipeline module imports it.
"""

from importlib.metadata import PackageNotFoundError, version


def _installed_version() -> str:
    """The version of the installed `firehose` distribution: app/pyproject.toml is the one place it is set."""
    try:
        return version("firehose")
    except PackageNotFoundError:  # imported from a bare source tree: install it (`make venv`) to get a version
        return "0+unknown"


__version__ = _installed_version()
