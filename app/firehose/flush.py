"""Flush: Redis Stream -> date-partitioned Parquet, exactly once.

One run (`firehose flush`, started by a systemd timer) drains the buffer in bounded batches:

1. record the batch's stream-id range in Redis (`Buffer.begin_batch`) before any file is written;
2. decode, drop replays (`schema.event_key`), route each event to its table (`schema.route`), and write one
   Parquet file per (table, date) named after the batch's id range, via temp file + fsync + rename;
3. acknowledge the batch, clear the range record, then trim what is safely behind.

A crash at any point is repaired by the next run: a recorded range is redone with exactly the same entries
(same rows, same file names, so renames overwrite), and entries read but never recorded are still pending in
the consumer group. Nothing is lost and nothing is doubled. Flush and compaction hold the data directory's
writer lock, so they never interleave.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import logging
import time
from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import orjson
import pyarrow as pa
from prometheus_client import CollectorRegistry, Gauge, write_to_textfile
from prometheus_client.parser import text_string_to_metric_families

from firehose import hiding_facts, index, storage
from firehose.buffer import SEPARATOR, Buffer, Entry, id_ms, id_tuple, split_events
from firehose.config import Settings
from firehose.faults import Failpoint, Failpoints
from firehose.schema import TABLE_NAMES, TableBatch

log = logging.getLogger("firehose.flush")

FACT_TABLES = hiding_facts.TABLES  # the tables whose rows make the hiding facts
READ_ENTRIES = 500  # most stream entries per XREADGROUP (each holds one ingest batch of events)


@dataclass
class BatchResult:
    """What one batch wrote."""

    entries: int = 0
    events: int = 0
    duplicates: int = 0
    rows: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    files: list[Path] = field(default_factory=list)
    bytes_written: int = 0
    raw_bytes: int = 0
    indexed: int = 0
    seconds: float = 0.0


@dataclass
class FlushResult:
    """What one flush run did (all batches)."""

    batches: list[BatchResult] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def events(self) -> int:
        return sum(b.events for b in self.batches)

    def rows(self) -> dict[str, int]:
        total: dict[str, int] = defaultdict(int)
        for batch in self.batches:
            for table, n in batch.rows.items():
                total[table] += n
        return dict(total)


def file_name(first: bytes, last: bytes) -> str:
    """The Parquet file name of a batch: its first and last stream ids (stable across redos)."""
    return f"{first.decode()}_{last.decode()}.parquet"


def build_tables(entries: Sequence[Entry]) -> tuple[dict[tuple[str, str], pa.Table], int, int]:
    """Turn stream entries into Arrow tables keyed by (table, date); return them, duplicates and raw bytes.


    Events are de-duplicated by `event_key` (first one wins) and sorted by time_us within each file; an entry
    that is not JSON, or has no usable time_us, is dated by its stream id.
    """
    with paused_gc():
        return _build_tables(entries)


def _more_facts(tables: dict[tuple[str, str], pa.Table], table: str, date: str) -> bool:
    """Whether the batch still has a hiding table of `date` to write after `table` (they are written in order)."""
    return any((later, date) in tables for later in FACT_TABLES if later > table)


@contextlib.contextmanager
def paused_gc() -> Iterator[None]:
    """Pause the cyclic garbage collector while building many small objects (none of them form cycles).

    Without this, building a 200k-event batch spends about a third of its time in collections.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _build_tables(entries: Sequence[Entry]) -> tuple[dict[tuple[str, str], pa.Table], int, int]:
    batch = TableBatch()
    raw_bytes = 0
    loads, decode_error = orjson.loads, orjson.JSONDecodeError
    for entry_id, blob in entries:
        fallback_us = id_ms(entry_id) * 1000
        events = split_events(blob)
        raw_bytes += len(blob) - len(events) + 1 if events else 0
        for raw in events:
            try:
                event = loads(raw)
            except decode_error:
                event = None
            batch.add(event, raw, fallback_us)
    return batch.tables(), batch.duplicates, raw_bytes


class Flusher:
    """Drains the buffer into Parquet. Stateless between runs; all state is in Redis and on disk."""

    def __init__(self, settings: Settings, buffer: Buffer) -> None:
        self.settings = settings
        self.buffer = buffer
        self.data_dir = settings.data_dir
        self.consumer = settings.flush_consumer
        self.policy = storage.ParquetPolicy.for_flush(settings)
        self.faults = Failpoints(settings.failpoint)

    def run_once(self, max_batches: int | None = None) -> FlushResult:
        """Flush everything buffered (or `max_batches` batches), holding the writer lock."""
        started = time.monotonic()
        result = FlushResult()
        storage.ensure_layout(self.data_dir)
        with storage.writer_lock(self.data_dir):
            self.buffer.ensure_group()
            inflight = self.buffer.inflight()
            if inflight is not None:
                log.info("redoing the unfinished batch %s..%s", inflight[0].decode(), inflight[1].decode())
                result.batches.append(self._write_batch(self.buffer.range(*inflight), recorded=True))
            claimed = self.buffer.claim_stale(self.consumer, self.settings.flush_chunk)
            if claimed:
                log.info("took over %d entries left pending by another consumer", claimed)
            stop_at = self.buffer.newest_id()  # entries added while this run works wait for the next run
            pending_after: bytes | None = b"0"  # first this consumer's unacknowledged entries, then new ones
            while max_batches is None or len(result.batches) < max_batches:
                entries, pending_after = self._read_batch(pending_after)
                if not entries:
                    break
                result.batches.append(self._write_batch(entries, recorded=False))
                if pending_after is None and stop_at is not None and id_tuple(entries[-1][0]) >= id_tuple(stop_at):
                    break
        result.seconds = time.monotonic() - started
        return result

    def _read_batch(self, pending_after: bytes | None) -> tuple[list[Entry], bytes | None]:
        """Read consecutive entries holding up to `flush_chunk` events (at least one entry).

        Returns the entries and where the next read starts: an id while re-reading pending entries, None once
        reading new ones.
        """
        entries: list[Entry] = []
        events = 0
        while events < self.settings.flush_chunk:
            # an entry holds at most `ingest_batch` events: this count never overshoots the chunk by a whole read
            count = min(READ_ENTRIES, max(1, (self.settings.flush_chunk - events) // self.settings.ingest_batch))
            got = self.buffer.read_group(self.consumer, count, pending_after)
            if not got and pending_after is not None:
                pending_after = None  # pending entries done: continue with new ones
                if entries:
                    break  # keep a batch within one kind of read
                continue
            if not got:
                break
            entries.extend(got)
            events += sum(blob.count(SEPARATOR) + 1 for _, blob in got)
            if pending_after is not None:
                pending_after = got[-1][0]
        return entries, pending_after

    def _write_batch(self, entries: list[Entry], recorded: bool) -> BatchResult:
        started = time.monotonic()
        batch = BatchResult(entries=len(entries))
        if not entries:
            return batch
        first, last = entries[0][0], entries[-1][0]
        if not recorded:
            self.buffer.begin_batch(first, last)
        self.faults.reached(Failpoint.FLUSH_AFTER_BEGIN)
        tables, batch.duplicates, batch.raw_bytes = build_tables(entries)
        batch.events = sum(t.num_rows for t in tables.values()) + batch.duplicates
        name = file_name(first, last)
        if recorded:  # only a redone batch can have files that a compaction merged since
            tables = self._not_compacted(tables, name)
        # the hiding tables first, then their day's facts file: readers fall back to these Parquet files only
        # for the moment in between
        for (table, date), arrow_table in sorted(tables.items(), key=lambda kv: (kv[0][0] not in FACT_TABLES, kv[0])):
            path = storage.partition_dir(self.data_dir, table, date) / name
            batch.bytes_written += storage.write_parquet(self.data_dir, arrow_table, path, self.policy)
            batch.rows[table] += arrow_table.num_rows
            batch.files.append(path)
            self.faults.reached(Failpoint.FLUSH_AFTER_RENAME)
            if table in FACT_TABLES and not _more_facts(tables, table, date):
                hiding_facts.add_files(self.data_dir, date, {t: (name, tables[t, date]) for t in FACT_TABLES
                                                              if (t, date) in tables})
        for (table, date), arrow_table in sorted(tables.items()):
            if table == "posts":
                batch.indexed += self._index(date, name, arrow_table)
        self.faults.reached(Failpoint.FLUSH_BEFORE_COMMIT)
        self.buffer.commit_batch([eid for eid, _ in entries], batch.events, self._trim_below(last))
        self.faults.reached(Failpoint.FLUSH_AFTER_COMMIT)
        batch.seconds = time.monotonic() - started
        log.info("batch %s..%s: %d events, %d duplicates, %d files, %.1f KiB in %.2fs", first.decode(),
                 last.decode(), batch.events, batch.duplicates, len(batch.files), batch.bytes_written / 1024,
                 batch.seconds)
        return batch

    def _not_compacted(self, tables: dict[tuple[str, str], pa.Table], name: str) -> dict[tuple[str, str], pa.Table]:
        """Drop the (table, date) files of batch `name` that a compaction already merged (a redo after a crash
        between writing them and acknowledging the batch): their rows are in the partition's compacted files,
        and the day's index was rebuilt from those. One small file read per (table, date), no per-row work."""
        kept = {}
        for (table, date), arrow_table in tables.items():
            if name in storage.compacted_names(storage.partition_dir(self.data_dir, table, date)):
                log.info("batch %s of %s date=%s is already compacted: not written again", name, table, date)
            else:
                kept[table, date] = arrow_table
        return kept

    def _index(self, date: str, name: str, posts: pa.Table) -> int:
        """Add a batch's posts of one day to that day's full-text index (replacing an earlier attempt's); returns
        how many were indexed. A day with other posts files but no index is left to `firehose reindex`."""
        started = time.monotonic()
        alone = [f.name for f in storage.partition_files(self.data_dir, "posts", date)] == [name]
        try:
            updated = index.add_batch(self.data_dir, date, name, posts, create=alone)
        except (ValueError, OSError) as exc:  # the Parquet is what counts: a broken index must not stop the flush
            log.warning("posts of %s are not indexed: the day's index failed (%s); `firehose reindex --date %s` "
                        "rebuilds it, and searches scan that day meanwhile", date, exc, date)
            return 0
        if not updated:
            log.warning("posts of %s are not indexed: the day has no index yet; `firehose reindex` (the compaction "
                        "timer) builds it, and searches scan that day meanwhile", date)
            return 0
        self.faults.reached(Failpoint.FLUSH_AFTER_INDEX)
        log.debug("indexed %d posts of %s in %.2fs", posts.num_rows, date, time.monotonic() - started)
        return posts.num_rows

    def _trim_below(self, last: bytes) -> bytes | None:
        """The MINID to trim to: behind this batch, behind anything still pending, and keeping a recent tail."""
        newest = self.buffer.newest_id()
        if newest is None:
            return None
        keep_ms = int(self.settings.flush_trim_keep_seconds * 1000)
        ms, _, seq = last.partition(b"-")
        floor = (int(ms), int(seq) + 1)
        if keep_ms > 0:
            floor = min(floor, (id_ms(newest) - keep_ms, 0))
        return f"{floor[0]}-{floor[1]}".encode() if floor[0] > 0 else None


def write_textfile_metrics(path: Path, result: FlushResult | None, unflushed: int | None, ok: bool) -> None:
    """Write flush metrics in the node_exporter textfile format, atomically (keeps the last success time).

    Without `result` (a failed run) only the run/success gauges are written; without `unflushed`, no backlog.
    """
    now = time.time()
    registry = CollectorRegistry()

    def gauge(name: str, doc: str, value: float) -> None:
        Gauge(name, doc, registry=registry).set(value)

    gauge("firehose_flush_last_run_timestamp_seconds", "When the flush last ran.", now)
    gauge("firehose_flush_last_success_timestamp_seconds", "When the flush last finished without error.",
          now if ok else _previous_value(path, "firehose_flush_last_success_timestamp_seconds"))
    gauge("firehose_flush_last_run_success", "1 if the last run succeeded, else 0.", 1 if ok else 0)
    if result is not None:
        gauge("firehose_flush_last_duration_seconds", "Duration of the last run.", result.seconds)
        gauge("firehose_flush_last_batch_max_seconds", "Longest batch of the last run.",
              max((b.seconds for b in result.batches), default=0))
        gauge("firehose_flush_last_events", "Events flushed by the last run (duplicates included).", result.events)
        gauge("firehose_flush_last_duplicates", "Replayed events dropped by the last run.",
              sum(b.duplicates for b in result.batches))
        rows = result.rows()
        per_table = Gauge("firehose_flush_last_rows", "Rows written per table by the last run.", ["table"],
                          registry=registry)
        for table in TABLE_NAMES:
            per_table.labels(table).set(rows.get(table, 0))
        gauge("firehose_flush_last_bytes", "Parquet bytes written by the last run.",
              sum(b.bytes_written for b in result.batches))
    if result is not None:
        gauge("firehose_flush_last_indexed_posts", "Posts the last run added to the full-text index.",
              sum(b.indexed for b in result.batches))
        gauge("firehose_flush_last_unindexed_posts", "Posts the last run wrote to Parquet but not to the index "
              "(a day without an index: `firehose reindex` builds it; searches scan it meanwhile).",
              sum(b.rows.get("posts", 0) - b.indexed for b in result.batches))
    if unflushed is not None:
        gauge("firehose_flush_unflushed_events", "Events buffered but not yet in Parquet after the last run.",
              unflushed)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_to_textfile(str(path), registry)  # a temporary file renamed into place


def _previous_value(path: Path, metric: str) -> float:
    """The value of an unlabelled sample in the textfile written last time (0 when there is none)."""
    try:
        for family in text_string_to_metric_families(path.read_text()):
            for sample in family.samples:
                if sample.name == metric and not sample.labels:
                    return float(sample.value)
    except (OSError, ValueError):
        pass
    return 0.0


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Flags of `firehose flush`."""
    parser.add_argument("--loop", type=float, default=0, metavar="SECONDS",
                        help="run again every SECONDS until interrupted (default: once, as under a systemd timer)")
    parser.add_argument("--max-batches", type=int, default=None, help="stop after this many batches per run")


def run(args: argparse.Namespace, settings: Settings) -> int:
    """Flush once (or every --loop seconds); exit 1 if a run failed."""
    buffer = Buffer.connect(settings)
    flusher = Flusher(settings, buffer)
    while True:
        status = flush_and_report(flusher, settings, buffer, args.max_batches)
        if not args.loop:
            return status
        try:
            time.sleep(args.loop)
        except KeyboardInterrupt:
            return status


def flush_and_report(flusher: Flusher, settings: Settings, buffer: Buffer, max_batches: int | None) -> int:
    """One flush run with logging and textfile metrics; 0 on success, 1 on failure."""
    try:
        result = flusher.run_once(max_batches)
    except Exception:
        log.exception("flush failed; the next run redoes the unfinished batch")
        if settings.flush_metrics_file:
            write_textfile_metrics(settings.flush_metrics_file, None, None, ok=False)
        return 1
    unflushed = buffer.unflushed_events()
    log.info("flushed %d events in %d batches in %.2fs (%s); %d events wait for the next run", result.events,
             len(result.batches), result.seconds, ", ".join(f"{t}={n}" for t, n in sorted(result.rows().items())),
             unflushed)
    if settings.flush_metrics_file:
        write_textfile_metrics(settings.flush_metrics_file, result, unflushed, ok=True)
    return 0
