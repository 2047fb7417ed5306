"""The pipeline's stages for tests: run the real CLI stages as subprocesses (or build their settings in process),
append events the way the ingester does, and read back the Parquet."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import duckdb

from firehose.buffer import Buffer
from firehose.config import Settings
from firehose.schema import TABLE_NAMES
from tests.support.services import RedisServer

CLI = [sys.executable, "-m", "firehose.cli"]


def stage_env(redis_url: str, data_dir: Path, **extra: str) -> dict[str, str]:
    """Environment for a stage process pointed at a test Redis and data directory."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("FIREHOSE_")}
    env.update({"FIREHOSE_REDIS_URL": redis_url, "FIREHOSE_DATA_DIR": str(data_dir),
                "FIREHOSE_INGEST_METRICS_PORT": "0", "FIREHOSE_PLC_URL": "",
                "FIREHOSE_DNS_ENABLED": "false", "FIREHOSE_WELLKNOWN_ENABLED": "false"})
    env.update(extra)
    return env


def run_stage(args: list[str], env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess:
    """Run `firehose <args>` to completion."""
    return subprocess.run([*CLI, *args], env=env, capture_output=True, text=True, timeout=timeout, check=False)


def table_rows(data_dir: Path, table: str) -> list[dict[str, Any]]:
    """All rows of a table (every partition), sorted for comparison."""
    files = sorted(str(p) for p in (data_dir / table).glob("date=*/*.parquet"))
    if not files:
        return []
    con = duckdb.connect()
    cur = con.execute("SELECT * FROM read_parquet($f, hive_partitioning = false)", {"f": files})
    names = [d[0] for d in cur.description]
    rows = [dict(zip(names, r, strict=True)) for r in cur.fetchall()]
    return sorted(rows, key=lambda r: (r["time_us"] or 0, str(r)))


def all_rows(data_dir: Path) -> dict[str, list[dict[str, Any]]]:
    """Rows of every table."""
    return {t: table_rows(data_dir, t) for t in TABLE_NAMES}


def row_count(data_dir: Path) -> int:
    """Rows over every table."""
    return sum(len(v) for v in all_rows(data_dir).values())


def stage_settings(redis_server: RedisServer, data_dir: Path, **env: str) -> Settings:
    """In-process `Settings` for a stage (buffer, flush, compaction) on a test Redis and data directory."""
    return Settings.from_env({"FIREHOSE_REDIS_URL": redis_server.url, "FIREHOSE_DATA_DIR": str(data_dir), **env})


def append(buffer: Buffer, events: list[bytes], per_entry: int = 100) -> None:
    """Append events the way the ingester does: batches of `per_entry` events, one stream entry each."""
    for start in range(0, len(events), per_entry):
        buffer.append(events[start:start + per_entry], 1)
