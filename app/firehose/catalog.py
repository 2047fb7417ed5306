"""The partition catalog: what the date-partitioned Parquet files hold, read from their footers, never their data.

- `Catalog.day_chunks(date)`: the row groups of one `posts` partition with their time ranges.
- `Catalog.windows(low, high, ...)`: the (files, low, high) time windows a scan of [low, high) walks, in order.
- `Catalog.stats()`: rows, files and bytes per table per day.
- `Catalog.newest_time_us()`: the newest event time over all tables (the freshness the health check reports).
- `Catalog.identity_files()`: every file of the `identity` table.

The catalog owns three caches, each behind its own lock: row groups per `posts` file (kept per file version,
mtime and size, and dropped when compaction replaces the file), row counts per file (for `stats`), and the last
`stats` and freshness answers (reused for a few seconds). Footers are read through the worker's DuckDB (`meta`
cursor); files only appear by rename, so a footer read once stays true for that file version.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, TypeVar

import duckdb

from firehose import storage
from firehose.database import Database, scalar
from firehose.params import EPOCH
from firehose.schema import TABLE_NAMES

log = logging.getLogger(__name__)

FRESHNESS_FILES_PER_TABLE = 3
STATS_CACHE_SECONDS = 10.0
FRESHNESS_CACHE_SECONDS = 5.0
FIRST_WINDOW_ROWS = 131_072
WINDOW_GROWTH = 4  # each further window holds this many times more rows (2, 8 and 16 measured slower for rare words)
OPEN_END = 253_402_300_800_000_000  # 10000-01-01: later than any time Python's datetime can show
DAY_US = 86_400_000_000

T = TypeVar("T")


@dataclass(frozen=True)
class Chunk:
    """One Parquet row group of `posts`: its file, row count and time range (inclusive, unix microseconds)."""

    path: str
    rows: int
    lo: int
    hi: int


class Remembered(Generic[T]):
    """The last value of `compute()`, reused for `seconds`; computed outside the lock (a slow read blocks nobody)."""

    def __init__(self, seconds: float, compute: Callable[[], T]) -> None:
        self._seconds = seconds
        self._compute = compute
        self._lock = threading.Lock()
        self._last: tuple[float, T] | None = None

    def get(self) -> T:
        """The remembered value while it is younger than `seconds`, else a fresh one."""
        now = time.monotonic()
        with self._lock:
            if self._last is not None and now - self._last[0] < self._seconds:
                return self._last[1]
        value = self._compute()
        with self._lock:
            self._last = (now, value)
        return value


def date_of(time_us: int) -> str:
    """The UTC day (YYYY-MM-DD) of a time in unix microseconds (exact integer arithmetic)."""
    return (EPOCH + dt.timedelta(microseconds=time_us)).strftime("%Y-%m-%d")


def _overlapping(chunks: list[Chunk], low: int, high: int) -> list[str]:
    """The distinct files (in first-seen order) with a row group overlapping [low, high)."""
    return list(dict.fromkeys(c.path for c in chunks if c.hi >= low and c.lo < high))


class Catalog:
    """Footer-level knowledge of `<data_dir>`; one per worker (owned by its `Searcher`)."""

    def __init__(self, data_dir: Path, db: Database) -> None:
        self.data_dir = data_dir
        self.db = db
        self._groups_lock = threading.Lock()  # guards the three row-group fields below
        self._row_groups: dict[str, tuple[tuple[int, int], list[tuple[int, int, int]]]] = {}
        self._unreadable: set[str] = set()
        self._day_files: dict[str, set[str]] = {}
        self._counts_lock = threading.Lock()  # guards _footer_rows
        self._footer_rows: dict[str, tuple[int, int, int]] = {}  # path -> (mtime_ns, size, rows)
        self._stats = Remembered(STATS_CACHE_SECONDS, self._read_stats)
        self._fresh = Remembered(FRESHNESS_CACHE_SECONDS, self._read_newest_time_us)

    # --- row groups and scan windows

    def day_chunks(self, date: str) -> list[Chunk]:
        """Row groups of one `posts` partition with their time ranges from the Parquet statistics (each file's
        footer is read once and cached; a file whose footer cannot be read is skipped with a warning)."""
        paths: list[tuple[str, int, int]] = []
        for file in storage.partition_files(self.data_dir, "posts", date):
            try:
                st = file.stat()
            except FileNotFoundError:
                continue  # replaced by compaction meanwhile
            paths.append((str(file), st.st_mtime_ns, st.st_size))
        with self._groups_lock:
            missing = [p[0] for p in paths if self._row_groups.get(p[0], ((0, 0),))[0] != p[1:]]
        if missing:
            found, unreadable = self._read_row_groups(missing)
            day = int(dt.datetime.fromisoformat(date).replace(tzinfo=dt.UTC).timestamp()) * 1_000_000
            with self._groups_lock:
                self._unreadable |= unreadable
                for path, mtime, size in paths:
                    if path in missing:  # no time statistics: assume the file spans its whole day
                        groups = found.get(path, [(0, day, day + DAY_US - 1)])
                        self._row_groups[path] = ((mtime, size), groups if path not in self._unreadable else [])
        with self._groups_lock:
            current = {p[0] for p in paths}
            for gone in self._day_files.get(date, set()) - current:  # replaced by compaction
                self._row_groups.pop(gone, None)
            self._day_files[date] = current
            return [Chunk(path, rows, lo, hi) for path, *_ in paths for rows, lo, hi in self._row_groups[path][1]]

    def _read_row_groups(self, files: list[str]) -> tuple[dict[str, list[tuple[int, int, int]]], set[str]]:
        """(row groups (rows, lo, hi) per file with time statistics, files whose footer cannot be read)."""
        sql = ("SELECT file_name, row_group_id, any_value(row_group_num_rows), "
               "min(TRY_CAST(stats_min_value AS BIGINT)), max(TRY_CAST(stats_max_value AS BIGINT)) "
               "FROM parquet_metadata(?) WHERE path_in_schema = 'time_us' GROUP BY ALL ORDER BY 1, 2")
        cur = self.db.cursor("meta")
        unreadable: set[str] = set()
        try:
            rows = cur.execute(sql, [files]).fetchall()
        except duckdb.Error:
            rows = []
            for name in files:  # find the unreadable one(s); the rest still count
                try:
                    rows += cur.execute(sql, [[name]]).fetchall()
                except duckdb.Error as exc:
                    log.warning("skipping %s: its Parquet footer cannot be read (%s)", name, exc)
                    unreadable.add(name)
        found: dict[str, list[tuple[int, int, int]]] = {}
        for name, _rg, count, lo, hi in rows:
            if lo is not None and hi is not None:
                found.setdefault(name, []).append((int(count), int(lo), int(hi)))
        return found, unreadable

    def windows(self, low: int, high: int, *, latest: bool, min_chunks: int) -> Iterator[tuple[list[str], int, int]]:
        """(files, low, high) time windows [low, high) in scan order that together cover [low, high).

        Windows follow the data: row groups (time-clustered: the flush writes in arrival order, compaction
        sorts) are taken newest first (`latest`; else oldest first), partition by partition, until they hold
        about FIRST_WINDOW_ROWS rows and at least `min_chunks` row groups (DuckDB parallelises over row groups:
        one per thread keeps them all busy), then WINDOW_GROWTH times as many for each further window. A common
        word fills its page from the first small window; a rare one costs one scan of the range plus a few extra
        statements. Footers of older partitions are not even read while newer ones fill the page. Each window
        lists only the files whose row groups overlap it."""
        if high <= low:
            return
        first_day = date_of(low) if low > 0 else "0000-00-00"
        last_day = date_of(high - 1) if high < OPEN_END else "9999-99-99"
        dates = [d for d in storage.list_dates(self.data_dir, "posts") if first_day <= d <= last_day]
        if not latest:
            dates.reverse()
        pending: list[Chunk] = []
        target, rows, count = FIRST_WINDOW_ROWS, 0, 0
        edge: int | None = None
        for date in dates:
            chunks = [c for c in self.day_chunks(date) if c.hi >= low and c.lo < high]
            if not chunks:
                continue
            chunks.sort(key=(lambda c: -c.hi) if latest else (lambda c: c.lo))
            if edge is None:
                edge = min(high, chunks[0].hi + 1) if latest else max(low, chunks[0].lo)
            pending += chunks
            for chunk in chunks:
                rows += chunk.rows
                count += 1
                if rows < target or count < min_chunks:
                    continue
                cut = max(chunk.lo, low) if latest else min(chunk.hi + 1, high)
                if (cut < edge) if latest else (cut > edge):
                    window = (cut, edge) if latest else (edge, cut)
                    yield _overlapping(pending, *window), *window
                    edge, rows, count, target = cut, 0, 0, target * WINDOW_GROWTH
                    pending = [c for c in pending if (c.lo < edge if latest else c.hi >= edge)]
        if edge is not None and ((edge > low) if latest else (edge < high)):
            window = (low, edge) if latest else (edge, high)
            files = _overlapping(pending, *window)
            if files:
                yield files, *window

    # --- identity

    def identity_files(self) -> list[str]:
        """Every file of the `identity` table."""
        return [str(f) for d in storage.list_dates(self.data_dir, "identity")
                for f in storage.partition_files(self.data_dir, "identity", d)]

    # --- freshness and stats

    def newest_time_us(self) -> int | None:
        """The newest event time over all tables, from the Parquet statistics of the newest files (cached briefly)."""
        return self._fresh.get()

    def _read_newest_time_us(self) -> int | None:
        files: list[str] = []
        for table in TABLE_NAMES:
            dates = storage.list_dates(self.data_dir, table)
            if dates:
                newest = storage.partition_files(self.data_dir, table, dates[0])
                newest.sort(key=lambda p: p.stat().st_mtime_ns if p.exists() else 0)
                files += [str(p) for p in newest[-FRESHNESS_FILES_PER_TABLE:]]
        if not files:
            return None
        sql = ("SELECT max(TRY_CAST(stats_max_value AS BIGINT)) FROM parquet_metadata(?) "
               "WHERE path_in_schema = 'time_us'")
        latest = scalar(self.db.cursor("meta"), sql, [files])
        return int(latest) if latest is not None else None

    def stats(self) -> dict[str, Any]:
        """Rows, files and bytes per table per day, from Parquet footers (each file's footer read once; the answer
        is reused for STATS_CACHE_SECONDS)."""
        return self._stats.get()

    def _read_stats(self) -> dict[str, Any]:
        listing: dict[str, dict[str, list[tuple[str, int, int]]]] = {}
        for table in TABLE_NAMES:
            for date in storage.list_dates(self.data_dir, table):
                for path in storage.partition_files(self.data_dir, table, date):
                    try:
                        st = path.stat()
                    except FileNotFoundError:
                        continue  # replaced by compaction meanwhile
                    day = listing.setdefault(table, {}).setdefault(date, [])
                    day.append((str(path), st.st_mtime_ns, st.st_size))
        files = [f for dates in listing.values() for day in dates.values() for f in day]
        with self._counts_lock:
            unknown = [key for key, mtime, size in files if self._footer_rows.get(key, ())[:2] != (mtime, size)]
        counts = self._count_rows(unknown)
        with self._counts_lock:
            seen = {f[0] for f in files}
            for key in [k for k in self._footer_rows if k not in seen]:
                del self._footer_rows[key]
            for key, mtime, size in files:
                if key in counts:
                    self._footer_rows[key] = (mtime, size, counts[key])
            rows_of = {key: self._footer_rows.get(key, (0, 0, 0))[2] for key, _, _ in files}
        tables: dict[str, Any] = {}
        for table, dates in listing.items():
            days = {date: {"rows": sum(rows_of[f[0]] for f in day), "files": len(day), "bytes": sum(f[2] for f in day)}
                    for date, day in dates.items()}
            tables[table] = {"rows": sum(d["rows"] for d in days.values()),
                             "bytes": sum(d["bytes"] for d in days.values()), "days": days}
        return {"tables": tables}

    def _count_rows(self, files: list[str]) -> dict[str, int]:
        """Rows per file from the footers of `files`; an unreadable footer is logged and left out."""
        if not files:
            return {}
        sql = "SELECT file_name, num_rows FROM parquet_file_metadata(?)"
        try:
            rows = self.db.cursor("meta").execute(sql, [files]).fetchall()
        except duckdb.Error:
            rows = []
            for f in files:  # one unreadable file (being replaced) must not hide the others
                try:
                    rows += self.db.cursor("meta").execute(sql, [f]).fetchall()
                except duckdb.Error as exc:
                    log.warning("cannot read the footer of %s: %s", f, exc)
        return {name: int(n) for name, n in rows}
