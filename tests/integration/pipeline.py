"""Helpers for the pipeline tests: run the real CLI stages as subprocesses and read back the Parquet."""

from __future__ import annotations

import datetime as dt
import os
import random
import subprocess
import sys
from pathlib import Path
from typing import Any

import duckdb
import orjson

from firehose.buffer import Buffer
from firehose.config import Settings
from firehose.schema import TABLE_NAMES
from tests.conftest import GOLDEN, RedisServer

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


GOLDEN_LINES = GOLDEN.read_bytes().splitlines()


def settings_for(redis_server: RedisServer, data_dir: Path, **env: str) -> Settings:
    return Settings.from_env({"FIREHOSE_REDIS_URL": redis_server.url, "FIREHOSE_DATA_DIR": str(data_dir), **env})


def synthetic_events(n: int, seed: int = 3, days: int = 2) -> list[bytes]:
    """`n` distinct small events of every kind spread over `days` UTC days."""
    rng = random.Random(seed)
    start = int(dt.datetime(2026, 5, 24, tzinfo=dt.UTC).timestamp() * 1_000_000)
    out = []
    for i in range(n):
        base = orjson.loads(GOLDEN_LINES[i % len(GOLDEN_LINES)])
        base["time_us"] = start + rng.randrange(days * 86_400_000_000)
        base["did"] = f"did:plc:{i:024d}"
        out.append(orjson.dumps(base))
    return out


def post_event(text: str, time_us: int, did: str, rkey: str) -> bytes:
    """A Jetstream create-post event (the golden one, re-dated) with this text, time, author and record key."""
    template = next(line for line in GOLDEN_LINES if b'"app.bsky.feed.post"' in line
                    and b'"operation":"create"' in line.replace(b" ", b""))
    event = orjson.loads(template)
    event.update(time_us=time_us, did=did)
    event["commit"]["rkey"] = rkey
    event["commit"]["record"]["text"] = text
    return orjson.dumps(event)


def append(buffer: Buffer, events: list[bytes], per_entry: int = 100) -> None:
    """Append events the way the ingester does: batches of `per_entry` events, one stream entry each."""
    for start in range(0, len(events), per_entry):
        buffer.append(events[start:start + per_entry], 1)
