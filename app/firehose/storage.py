"""The on-disk layout of the Parquet tables, and the one way files get into it.

Layout: `<data_dir>/<table>/date=YYYY-MM-DD/<name>.parquet` (hive partitioning, so DuckDB prunes by date),
with work in progress under `<data_dir>/.staging/` (never matched by `<table>/**/*.parquet`). Files appear only
by `rename()` of a complete, fsynced temporary file, so readers never see a partial file. Writers (flush and
compaction) serialise on `<data_dir>/.lock`.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import uuid
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from firehose.schema import TABLE_NAMES

DATE_RE = re.compile(r"^date=(\d{4}-\d{2}-\d{2})$")
STAGING = ".staging"


def table_dir(data_dir: Path, table: str) -> Path:
    """Directory of one table."""
    return data_dir / table


def partition_dir(data_dir: Path, table: str, date: str) -> Path:
    """Directory of one day of one table."""
    return data_dir / table / f"date={date}"


def staging_dir(data_dir: Path) -> Path:
    """Scratch directory on the same filesystem as the tables (for atomic renames)."""
    return data_dir / STAGING


def list_dates(data_dir: Path, table: str) -> list[str]:
    """The dates (YYYY-MM-DD) that have a partition directory for `table`, newest first."""
    root = table_dir(data_dir, table)
    if not root.is_dir():
        return []
    dates = [m.group(1) for p in root.iterdir() if p.is_dir() and (m := DATE_RE.match(p.name))]
    return sorted(dates, reverse=True)


def partition_files(data_dir: Path, table: str, date: str) -> list[Path]:
    """The Parquet files of one partition, in name order."""
    part = partition_dir(data_dir, table, date)
    return sorted(part.glob("*.parquet")) if part.is_dir() else []


def ensure_layout(data_dir: Path) -> None:
    """Create the data directory, every table directory and the staging directory."""
    for table in TABLE_NAMES:
        table_dir(data_dir, table).mkdir(parents=True, exist_ok=True)
    staging_dir(data_dir).mkdir(parents=True, exist_ok=True)


def write_parquet(table: pa.Table, path: Path, *, zstd_level: int, row_group_size: int) -> int:
    """Write `table` to `path` atomically (temp file in staging, fsync, rename, fsync dir); return its size."""
    data_dir = path.parent.parent.parent
    tmp = staging_dir(data_dir) / f"{path.stem}.{uuid.uuid4().hex}.tmp"
    tmp.parent.mkdir(parents=True, exist_ok=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with open(tmp, "wb") as fh:
            encodings = column_encodings(table.schema)
            pq.write_table(
                table,
                fh,
                compression="zstd",
                compression_level=zstd_level,
                row_group_size=row_group_size,
                use_dictionary=[name for name in table.schema.names if name not in encodings],
                column_encoding=encodings,
                write_statistics=True,
            )
            fh.flush()
            os.fsync(fh.fileno())
        size = tmp.stat().st_size
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)
    return size


DELTA_INTEGERS = frozenset({"time_us", "seq"})
DELTA_STRINGS = frozenset({"rev", "rkey", "created_at", "time"})


def column_encodings(schema: pa.Schema) -> dict[str, str]:
    """Parquet encodings that beat dictionary + zstd for time-ordered columns (measured: about 5% smaller)."""
    out = {}
    for field in schema:
        if field.name in DELTA_INTEGERS and pa.types.is_integer(field.type):
            out[field.name] = "DELTA_BINARY_PACKED"
        elif field.name in DELTA_STRINGS and pa.types.is_string(field.type):
            out[field.name] = "DELTA_BYTE_ARRAY"
    return out


def fsync_dir(path: Path) -> None:
    """Make a rename or unlink inside `path` durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def writer_lock(data_dir: Path) -> Iterator[None]:
    """Hold the data directory's writer lock (flush and compaction never interleave)."""
    data_dir.mkdir(parents=True, exist_ok=True)
    with open(data_dir / ".lock", "a+b") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)
