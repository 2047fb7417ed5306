"""The archive for tests: Parquet `posts` and `identity` partitions written the way the flush writes them, and the
search settings over them, so every layer (unit and integration) searches the same kind of fixture data.

`post_row` is one `posts` row (not a Jetstream event: those are in tests/support/events.py); `write_posts` writes
rows into their date partitions; `bulk_posts` writes many at once; `search_settings` reads a data directory with
nothing on the network and no hot tier.
"""

from __future__ import annotations

import datetime as dt
import itertools
from pathlib import Path
from typing import Any

import pyarrow as pa

from firehose import schema, storage
from firehose.config import Settings

DAY1, DAY2, DAY3 = "2024-05-01", "2024-05-02", "2024-05-03"
_seq = itertools.count()


def us(date: str, seconds: int = 0) -> int:
    """Unix microseconds of `seconds` after midnight UTC of `date`."""
    day = dt.datetime.fromisoformat(date).replace(tzinfo=dt.UTC)
    return int(day.timestamp()) * 1_000_000 + seconds * 1_000_000


def post_row(text: str, date: str = DAY1, seconds: int | None = None, did: str = "did:plc:alice",
             **extra: Any) -> dict:
    """One `posts` row; time defaults to a unique second of `date`."""
    n = next(_seq)
    rkey = extra.pop("rkey", f"3k{n:08d}")
    row = {
        "did": did, "time_us": us(date, n % 86_000 if seconds is None else seconds), "rev": "r1",
        "operation": "create", "rkey": rkey, "cid": f"bafy{n}", "uri": f"at://{did}/app.bsky.feed.post/{rkey}",
        "created_at": f"{date}T00:00:00.000Z", "text": text, "langs": ["en"], "mentions": [], "links": [], "tags": [],
    }
    row.update(extra)
    return row


def write_posts(data_dir: Path, rows: list[dict], name: str = "part-0") -> None:
    """Write `rows` into their date partitions (one file per date per call)."""
    by_date: dict[str, list[dict]] = {}
    for row in rows:
        by_date.setdefault(schema.partition_date(row["time_us"]), []).append(row)
    for date, part in by_date.items():
        path = storage.partition_dir(data_dir, "posts", date) / f"{name}.parquet"
        storage.write_parquet(data_dir, schema.to_arrow("posts", part), path, storage.ParquetPolicy(1, 100_000))


def write_identity(data_dir: Path, entries: list[tuple[str, str, int]]) -> None:
    """Write identity rows (did, handle, time_us)."""
    rows = [{"did": d, "handle": h, "time_us": t, "seq": i} for i, (d, h, t) in enumerate(entries)]
    date = schema.partition_date(entries[0][2])
    path = storage.partition_dir(data_dir, "identity", date) / "identity-0.parquet"
    storage.write_parquet(data_dir, schema.to_arrow("identity", rows), path, storage.ParquetPolicy(1, 100_000))


def bulk_posts(data_dir: Path, date: str, count: int, *, text: str = "filler post number", name: str = "bulk",
               did: str = "did:plc:bulk", step_us: int = 1000, start_us: int | None = None,
               row_group_size: int = 100_000) -> None:
    """`count` posts on `date` built column-wise (fast), every second pair sharing a time_us (ties on time)."""
    start = us(date, 3600) if start_us is None else start_us
    cols: dict[str, Any] = {name_: [None] * count for name_ in schema.TABLES["posts"].schema.names}
    cols["did"] = [did] * count
    cols["time_us"] = [start + (i // 2) * step_us for i in range(count)]
    cols["rkey"] = [f"{name}{i:07d}" for i in range(count)]
    cols["uri"] = [f"at://{did}/app.bsky.feed.post/{name}{i:07d}" for i in range(count)]
    cols["text"] = [f"{text} {i}" for i in range(count)]
    cols["operation"] = ["create"] * count
    for list_col in ("langs", "mentions", "links", "tags"):
        cols[list_col] = [[] for _ in range(count)]
    table = pa.table({f.name: pa.array(cols[f.name], f.type) for f in schema.TABLES["posts"].schema},
                     schema=schema.TABLES["posts"].schema)
    path = storage.partition_dir(data_dir, "posts", date) / f"{name}.parquet"
    storage.write_parquet(data_dir, table, path, storage.ParquetPolicy(1, row_group_size))


def search_settings(data_dir: Path, **overrides: Any) -> Settings:
    """Settings for tests: this data dir; no hot tier (no Redis) and no identity resolver on the network (PLC, DNS,
    well-known) unless given: nothing leaves the machine."""
    values: dict[str, Any] = {"data_dir": data_dir, "plc_url": "", "api_cursor_secret": "test-secret",
                              "api_hot_tier": False, "dns_enabled": False, "wellknown_enabled": False}
    values.update(overrides)
    return Settings(**values)
