"""Compaction: merge a finished day's small flush files into a few large files sorted for search.

For each table and each finished day (UTC, older than `--grace-hours` past midnight) whose partition holds more
than one file or any file not yet compacted, DuckDB sorts the day's rows by the table's sort key (out of core,
within a memory limit) and the sorted rows stream into new files in the staging area through the flush's writer,
`storage.write_file`, with the compaction `storage.ParquetPolicy` (one encoding policy). The new directory is
then swapped with the live partition in one `renameat2(RENAME_EXCHANGE)`, so readers see either all old files or
all new ones, never both and never neither. The old files are deleted afterwards; a crash leaves only staging
debris, which the next run removes. Compaction holds the writer lock, so no flush adds a file to a partition
while it is being replaced.
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import duckdb

from firehose import hiding_facts, index, storage
from firehose.config import Settings
from firehose.faults import Failpoint, Failpoints
from firehose.schema import TABLES
from firehose.storage import exchange

log = logging.getLogger("firehose.compact")

COMPACT_PREFIX = "compact-"


@dataclass
class CompactResult:
    """One compacted partition."""

    table: str
    date: str
    files_before: int
    files_after: int
    rows: int
    seconds: float  # the whole partition, the index rebuild included
    index_seconds: float = 0.0  # posts only: rebuilding the day's full-text index


def needs_compaction(files: list[Path]) -> bool:
    """A partition needs compaction when it has several files or any file a flush wrote."""
    return len(files) > 1 or any(not f.name.startswith(COMPACT_PREFIX) for f in files)


def finished_dates(dates: list[str], now: dt.datetime, grace: dt.timedelta) -> list[str]:
    """The dates whose day ended at least `grace` before `now` (late events have had time to arrive)."""
    cutoff = (now - grace).date()
    return [d for d in dates if dt.date.fromisoformat(d) < cutoff]


class Compactor:
    """Compacts partitions of the data directory."""

    def __init__(self, settings: Settings, memory_limit: str = "1GB", threads: int = 1,
                 target_rows_per_file: int = 20_000_000) -> None:
        self.settings = settings
        self.data_dir = settings.data_dir
        self.memory_limit = memory_limit
        self.threads = threads
        self.target_rows = target_rows_per_file
        self.faults = Failpoints(settings.failpoint)

    def run(self, dates: list[str] | None = None, grace: dt.timedelta = dt.timedelta(hours=1),
            now: dt.datetime | None = None) -> list[CompactResult]:
        """Compact the given dates (default: every finished day) of every table."""
        now = now or dt.datetime.now(dt.UTC)
        results = []
        storage.ensure_layout(self.data_dir)
        with storage.writer_lock(self.data_dir):
            self._clean_staging()
            for table in TABLES:
                available = storage.list_dates(self.data_dir, table)
                wanted = [d for d in available if d in dates] if dates else finished_dates(available, now, grace)
                for date in sorted(wanted):
                    files = storage.partition_files(self.data_dir, table, date)
                    if needs_compaction(files):
                        results.append(self.compact_partition(table, date, files))
            # the compacted days' hiding facts now name other files; any day's missing or stale ones are healed
            healed = hiding_facts.ensure(self.data_dir)
            if healed:
                log.info("hiding facts written for %d days (%s..%s)", len(healed), min(healed), max(healed))
        return results

    def compact_partition(self, table: str, date: str, files: list[Path]) -> CompactResult:
        """Rewrite one partition as sorted compacted files and swap it in atomically."""
        started = time.monotonic()
        live = storage.partition_dir(self.data_dir, table, date)
        work = storage.staging_dir(self.data_dir) / f"compact-{table}-{date}"
        new = work / "new"
        new.mkdir(parents=True)
        rows = self._rewrite(table, files, new)  # every file fsynced
        merged = storage.compacted_names(live) | {f.name for f in files if not f.name.startswith(COMPACT_PREFIX)}
        storage.write_compacted_names(new, merged)  # swapped in with the files: a redone flush batch skips these
        storage.fsync_dir(new)
        self.faults.reached(Failpoint.COMPACT_BEFORE_EXCHANGE)
        if table in hiding_facts.TABLES:  # its facts would name the old files by the new files' names
            hiding_facts.remove(self.data_dir, date)
        exchange(new, live)  # `live` now holds the new files; `new` the old ones
        storage.fsync_dir(live.parent)
        self.faults.reached(Failpoint.COMPACT_AFTER_EXCHANGE)
        files_after = len(list(live.glob("*.parquet")))
        shutil.rmtree(work)
        index_seconds = 0.0
        if table == "posts":  # the day's index, rebuilt from the new files and swapped in the same way
            index_started = time.monotonic()
            index.rebuild(self.data_dir, date)
            index_seconds = time.monotonic() - index_started
        result = CompactResult(table, date, len(files), files_after, rows, time.monotonic() - started, index_seconds)
        log.info("compacted %s date=%s: %d files -> %d, %d rows in %.1fs%s", table, date, result.files_before,
                 result.files_after, rows, result.seconds,
                 f" (index rebuilt in {index_seconds:.1f}s)" if table == "posts" else "")
        return result

    def _rewrite(self, table: str, files: list[Path], out_dir: Path) -> int:
        """Write the rows of `files` sorted by the table's sort key into `out_dir`; return how many rows.

        DuckDB reads and sorts (out of core, within `memory_limit`); the sorted rows stream as Arrow batches into
        `storage.write_file`, the flush's writer, with the compaction policy (each file is fsynced there).
        """
        spec = TABLES[table]
        order = ", ".join(spec.sort_key)
        policy = storage.ParquetPolicy.for_compaction(self.settings)
        con = duckdb.connect(config={"memory_limit": self.memory_limit, "threads": self.threads,
                                     "temp_directory": str(out_dir.parent / "spill"),
                                     "preserve_insertion_order": False})
        con.execute("SET enable_progress_bar = false")  # a session option: not allowed in connect()
        try:
            source = "read_parquet($files, hive_partitioning = false, union_by_name = true)"
            params = {"files": [str(f) for f in files]}
            [(rows,)] = con.execute(f"SELECT count(*) FROM {source}", params).fetchall()
            columns = ", ".join(f'"{name}"' for name in spec.schema.names)
            for i, offset in enumerate(range(0, max(rows, 1), self.target_rows)):
                sorted_rows = con.sql(  # a relation streams its result; an execute() result is copied first
                    f"SELECT {columns} FROM {source} ORDER BY {order} LIMIT {self.target_rows} OFFSET {offset}",
                    params=params,
                )
                with sorted_rows.to_arrow_reader(batch_size=policy.row_group_size) as reader:
                    storage.write_file(out_dir / f"{COMPACT_PREFIX}{i:04d}.parquet", spec.schema, reader,
                                       min(self.target_rows, rows - offset), policy)
            return rows
        finally:
            con.close()

    def _clean_staging(self) -> None:
        """Remove what a crashed compaction left in staging (old files already swapped out, or unfinished work)."""
        staging = storage.staging_dir(self.data_dir)
        for leftover in staging.glob("compact-*"):
            log.warning("removing leftover compaction work %s", leftover)
            shutil.rmtree(leftover, ignore_errors=True)


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Flags of `firehose compact`."""
    storage.add_date_option(parser, "compact this day (repeatable; default: every finished day that needs it)")
    parser.add_argument("--grace-hours", type=float, default=1.0,
                        help="a day counts as finished this long after midnight UTC (default 1)")
    parser.add_argument("--memory-limit", default="1GB", help="DuckDB memory limit while sorting (default 1GB)")


def run(args: argparse.Namespace, settings: Settings) -> int:
    """Compact and log what was done."""
    if error := storage.date_error(args.dates):
        log.error("%s", error)
        return 2
    compactor = Compactor(settings, memory_limit=args.memory_limit)
    results = compactor.run(args.dates, grace=dt.timedelta(hours=args.grace_hours))
    log.info("compacted %d partitions", len(results))
    return 0
