"""The partition catalog: what the date-partitioned Parquet files hold, read from their footers, never their data.

- `Catalog.day_chunks(date)`: the row groups of one `posts` partition with their time ranges.
- `Catalog.windows(low, high, ...)`: the (files, low, high) time windows a scan of [low, high) walks, in order.
- `Catalog.stats()`: rows, files and bytes per table per day.
- `Catalog.newest_time_us()`: the newest event time over all tables (the freshness the health check reports).
- `Catalog.identity_files()`: every file of the `identity` table.

The catalog owns three caches, each behind its own lock: row groups per `posts` file (kept per file version,
mtime and size, and dropped when compaction replaces the file), row counts per partition and file (for `stats`,
kept while the partition directory is unchanged), and the last freshness answer (reused for a few seconds).
Footers are read through the worker's DuckDB (`meta` cursor); files only appear by rename, so a footer read once
stays true for that file version.
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
RACY_NS = 2_000_000_000  # a directory changed more recently than this is listed again on the next stats call
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


@dataclass(frozen=True)
class _Partition:
    """What `stats` listed in one partition directory: its mtime then (-1: list again), each file's (mtime_ns, size,
    rows) and the partition's totals."""

    mtime_ns: int
    files: dict[str, tuple[int, int, int]]
    summary: dict[str, int]


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
        self._counts_lock = threading.Lock()  # guards _partitions
        self._partitions: dict[str, _Partition] = {}  # partition directory -> what `stats` last listed there
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
        """Rows, files and bytes per table per day, current at the call (no answer is reused). A partition is listed
        again only when its directory changed (files appear, go and are replaced only by renames, which change the
        directory's mtime), and each file's footer is read once (all new ones in one statement), so a call costs
        one stat per partition."""
        partitions = [(table, date, path, mtime_ns) for table in TABLE_NAMES
                      for date, path, mtime_ns in storage.partition_dirs(self.data_dir, table)]
        with self._counts_lock:
            known = {p[2]: self._partitions.get(p[2]) for p in partitions}
        changed = {path: storage.parquet_file_stats(path) for _, _, path, mtime_ns in partitions
                   if (k := known[path]) is None or k.mtime_ns != mtime_ns}
        rows: dict[str, dict[str, int]] = {}
        for path, files in changed.items():
            old = k.files if (k := known[path]) is not None else {}
            rows[path] = {f: old[f][2] for f, stat in files.items() if f in old and old[f][:2] == stat}
        counts = self._count_rows([f for path, files in changed.items() for f in files if f not in rows[path]])
        now = time.time_ns()
        tables: dict[str, Any] = {}
        with self._counts_lock:
            for table, date, path, mtime_ns in partitions:
                if path in changed:
                    files = changed[path]
                    day_rows = rows[path] | {f: counts[f] for f in files if f in counts}  # unreadable footers stay out
                    summary = {"rows": sum(day_rows.values()), "files": len(files),
                               "bytes": sum(size for _, size in files.values())}
                    # a directory changed within RACY_NS may change again within the same mtime tick, and a footer
                    # that could not be read is tried again: either way the partition is listed again next call
                    settled = now - mtime_ns > RACY_NS and len(day_rows) == len(files)
                    self._partitions[path] = _Partition(mtime_ns if settled else -1,
                                                        {f: (*files[f], n) for f, n in day_rows.items()}, summary)
                else:
                    summary = self._partitions[path].summary
                if summary["files"]:
                    tables.setdefault(table, {"rows": 0, "bytes": 0, "days": {}})["days"][date] = summary
            for gone in set(self._partitions) - set(known):
                del self._partitions[gone]
        for table in tables.values():
            table["days"] = {date: table["days"][date] for date in sorted(table["days"], reverse=True)}
            table["rows"] = sum(d["rows"] for d in table["days"].values())
            table["bytes"] = sum(d["bytes"] for d in table["days"].values())
        return {"tables": {t: tables[t] for t in TABLE_NAMES if t in tables}}

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
