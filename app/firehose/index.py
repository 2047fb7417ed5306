"""The full-text index of the posts: one tantivy index per UTC day beside the Parquet, which stays the truth.

Layout: `<data_dir>/index/date=YYYY-MM-DD/` (a tantivy directory). Each document is one row of the day's `posts`
Parquet files and holds only what finds rows: `text` (the post's `matching.tokens`, with positions, for words,
prefixes, phrases and CJK bigrams), `time_us` (a fast field: order and time ranges), `uri_key` (a fast field: a
64-bit hash of the URI, `uri_key()`, which tells the matching post from others at the same time) and `batch`
(the name of the Parquet file the row is in). A search asks the index for the (time, uri_key) of matching posts,
newest first, and reads the rows at those times from the day's Parquet, keeping the ones whose key matches
(`search.Searcher`): the text is never read to answer from the index.

How it stays complete:
- the flush adds each batch's posts to their day's index right after the batch's files are renamed, under the
  writer lock (`add_batch`): it first deletes the batch's documents, then adds them, in one commit, so a redone
  batch never doubles documents and a crash before the commit leaves the index as it was;
- compaction rebuilds the day from the compacted files in staging and swaps the directory in atomically
  (`rebuild`, renameat2 exchange), as it does for the Parquet partition;
- `firehose reindex` rebuilds a day on demand (`--date`, `--all`) or every day whose index is missing or whose
  document count differs from the day's Parquet rows (the default, run by the compaction timer);
- readers (`Indexes.lookup`) use a day's index only while its document count equals the day's Parquet rows;
  otherwise that day is scanned with the same matching rules, and the lookup says why (missing, unreadable, out
  of sync: what `/search` reports in `meta.days` and the API counts in `firehose_api_search_days_total`).
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import os
import shutil
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import tantivy
from prometheus_client import CollectorRegistry, Gauge, write_to_textfile

from firehose import storage
from firehose.config import Settings
from firehose.matching import Needle, index_text

log = logging.getLogger("firehose.index")

INDEX_DIR = "index"
WRITER_HEAP_BYTES = 64_000_000  # tantivy's indexing memory (one thread); larger only adds memory, not speed
READ_BATCH_ROWS = 65_536


def build_schema() -> tantivy.Schema:
    """The index schema (see the module docstring)."""
    builder = tantivy.SchemaBuilder()
    builder.add_text_field("text", tokenizer_name="whitespace", index_option="position")
    builder.add_text_field("batch", tokenizer_name="raw", index_option="basic")
    builder.add_integer_field("time_us", fast=True, indexed=False)
    builder.add_integer_field("uri_key", fast=True, indexed=False)
    return builder.build()


SCHEMA = build_schema()


def index_root(data_dir: Path) -> Path:
    """Directory holding every day's index."""
    return data_dir / INDEX_DIR


def day_dir(data_dir: Path, date: str) -> Path:
    """Directory of one day's index."""
    return index_root(data_dir) / f"date={date}"


def indexed_dates(data_dir: Path) -> list[str]:
    """Dates that have an index directory, newest first."""
    root = index_root(data_dir)
    if not root.is_dir():
        return []
    return sorted((m.group(1) for p in root.iterdir() if (m := storage.DATE_RE.match(p.name))), reverse=True)


def uri_key(uri: str) -> int:
    """A post's key in the index: the first 8 bytes of the BLAKE2b hash of its URI, as a signed integer."""
    return int.from_bytes(hashlib.blake2b(uri.encode(), digest_size=8).digest(), "little", signed=True)


def uri_keys(values: Iterable[str]) -> np.ndarray:
    """`uri_key` of each of `values`, as an int64 array (the same numbers, without a Python int per value)."""
    blake2b = hashlib.blake2b
    return np.frombuffer(b"".join(blake2b(v.encode(), digest_size=8).digest() for v in values), dtype="<i8")


def _documents(table: pa.Table | pa.RecordBatch, batch: str) -> Iterator[tantivy.Document]:
    columns = (table.column("time_us").to_pylist(), table.column("text").to_pylist(), table.column("uri").to_pylist())
    for time_us, text, uri in zip(*columns, strict=True):
        yield tantivy.Document(text=index_text(text), time_us=time_us, uri_key=uri_key(uri), batch=batch)


def _writer(index: tantivy.Index) -> tantivy.IndexWriter:
    return index.writer(heap_size=WRITER_HEAP_BYTES, num_threads=1)


def add_batch(data_dir: Path, date: str, batch: str, table: pa.Table, *, create: bool) -> bool:
    """Put the posts `table` (the Parquet file `batch` of day `date`) into the day's index, replacing whatever an
    earlier attempt of the same batch added. Without an index for the day, one is created only when `create`
    (the day has no other posts files, so the new index is complete); returns whether the index was updated."""
    path = day_dir(data_dir, date)
    if not (path / "meta.json").exists():
        if not create:
            return False
        path.mkdir(parents=True, exist_ok=True)
    index = tantivy.Index(SCHEMA, path=str(path))
    writer = _writer(index)
    writer.delete_documents_by_term("batch", batch)
    for doc in _documents(table, batch):
        writer.add_document(doc)
    writer.commit()
    writer.wait_merging_threads()
    return True


def _build(target: Path, files: Sequence[Path]) -> int:
    """A new index of the posts in `files` at `target` (which must not exist); returns its document count."""
    target.mkdir(parents=True)
    index = tantivy.Index(SCHEMA, path=str(target))
    writer = _writer(index)
    count = 0
    for file in files:
        parquet = pq.ParquetFile(file)
        for batch in parquet.iter_batches(batch_size=READ_BATCH_ROWS, columns=["time_us", "text", "uri"]):
            for doc in _documents(batch, file.name):
                writer.add_document(doc)
            count += batch.num_rows
    writer.commit()
    writer.wait_merging_threads()
    for entry in target.iterdir():
        if entry.is_file():
            with open(entry, "rb") as fh:
                os.fsync(fh.fileno())
    storage.fsync_dir(target)
    return count


def rebuild(data_dir: Path, date: str) -> int:
    """Rebuild day `date`'s index from its posts Parquet files in staging and swap it in atomically; returns the
    document count. The caller holds the writer lock (no flush adds a file meanwhile)."""
    work = storage.staging_dir(data_dir) / f"index-{date}"
    shutil.rmtree(work, ignore_errors=True)
    new = work / "new"
    count = _build(new, storage.partition_files(data_dir, "posts", date))
    live = day_dir(data_dir, date)
    live.parent.mkdir(parents=True, exist_ok=True)
    if live.exists():
        storage.exchange(new, live)
    else:
        new.rename(live)
    storage.fsync_dir(live.parent)
    shutil.rmtree(work, ignore_errors=True)
    return count


def doc_count(data_dir: Path, date: str) -> int | None:
    """Documents in day `date`'s index, or None without a readable index."""
    path = day_dir(data_dir, date)
    if not (path / "meta.json").exists():
        return None
    try:
        return int(tantivy.Index.open(str(path)).searcher().num_docs)
    except ValueError as exc:
        log.warning("the index of %s cannot be opened (%s); `firehose reindex --date %s` rebuilds it", date, exc,
                    date)
        return None


def parquet_rows(data_dir: Path, date: str) -> int:
    """Rows of day `date`'s posts Parquet files (from their footers)."""
    return sum(pq.ParquetFile(f).metadata.num_rows for f in storage.partition_files(data_dir, "posts", date))


@dataclass
class DayCheck:
    """One day's index against its Parquet rows."""

    date: str
    rows: int
    docs: int | None
    rebuilt: bool = False
    seconds: float = 0.0


def verify(data_dir: Path, dates: Sequence[str] | None = None, *, force: bool = False) -> list[DayCheck]:
    """Check the index of `dates` (default: every posts day) and rebuild each one that is missing, unreadable or
    whose document count differs from the Parquet rows (every one when `force`); takes the writer lock. Index
    directories of days without posts are removed."""
    storage.ensure_layout(data_dir)
    checks: list[DayCheck] = []
    with storage.writer_lock(data_dir):
        days = storage.list_dates(data_dir, "posts")
        for stale in set(indexed_dates(data_dir)) - set(days):
            shutil.rmtree(day_dir(data_dir, stale), ignore_errors=True)
        for date in sorted(dates if dates is not None else days):
            check = DayCheck(date, parquet_rows(data_dir, date), doc_count(data_dir, date))
            if force or check.docs != check.rows:
                started = time.monotonic()
                check.docs = rebuild(data_dir, date)
                check.rebuilt, check.seconds = True, time.monotonic() - started
                log.info("indexed %s: %d posts in %.1fs", date, check.docs, check.seconds)
            checks.append(check)
    return checks


def index_bytes(data_dir: Path) -> int:
    """Bytes of every day's index."""
    root = index_root(data_dir)
    return sum(f.stat().st_size for f in root.rglob("*") if f.is_file()) if root.is_dir() else 0


def write_metrics(path: Path, data_dir: Path, checks: Sequence[DayCheck]) -> None:
    """The index's health in the node_exporter textfile format (atomically): size, days, days and posts that the
    index does not cover (the lag the API scans instead), after `checks` (a verify run)."""
    registry = CollectorRegistry()

    def gauge(name: str, doc: str, value: float) -> None:
        Gauge(name, doc, registry=registry).set(value)

    gauge("firehose_index_last_verify_timestamp_seconds", "When `firehose reindex` last checked the index.",
          time.time())
    gauge("firehose_index_bytes", "Bytes of the full-text index (all days).", index_bytes(data_dir))
    gauge("firehose_index_days", "Days with posts.", len(checks))
    gauge("firehose_index_days_out_of_sync", "Days whose index does not hold exactly their Parquet rows.",
          sum(c.docs != c.rows for c in checks))
    gauge("firehose_index_unindexed_posts", "Posts in Parquet but not in the index (searched by scanning).",
          sum(max(0, c.rows - (c.docs or 0)) for c in checks))
    gauge("firehose_index_last_rebuilt_days", "Days the last check rebuilt.", sum(c.rebuilt for c in checks))
    path.parent.mkdir(parents=True, exist_ok=True)
    write_to_textfile(str(path), registry)


def needle_query(needle: Needle) -> tantivy.Query:
    """The index query of one needle: a term, a prefix, or a phrase of consecutive tokens."""
    if needle.prefix:
        return tantivy.Query.phrase_prefix_query(SCHEMA, "text", list(needle.tokens))
    if len(needle.tokens) == 1:
        return tantivy.Query.term_query(SCHEMA, "text", needle.tokens[0])
    return tantivy.Query.phrase_query(SCHEMA, "text", list(needle.tokens))


def text_query(needles: Sequence[Needle], low: int, high: int) -> tantivy.Query:
    """Posts matching every needle with low <= time_us < high."""
    parts = [(tantivy.Occur.Must, needle_query(n)) for n in needles]
    parts.append((tantivy.Occur.Must, tantivy.Query.range_query(
        SCHEMA, "time_us", tantivy.FieldType.Integer, low, high, include_upper=False)))
    return tantivy.Query.boolean_query(parts)


Hit = tuple[int, int]  # (time_us, uri_key) of a matching post


def matching_posts(searcher: tantivy.Searcher, needles: Sequence[Needle], low: int, high: int, limit: int, *,
                   latest: bool) -> tuple[list[Hit], bool]:
    """(time_us, uri_key) of about `limit` posts matching `needles` in [low, high) (fewer when there are no
    more), in sort order of time, and whether that was all of them. Every match at the last time returned is
    included, so the next call can start past that time."""
    if high <= low:
        return [], True
    order = tantivy.Order.Desc if latest else tantivy.Order.Asc
    found = searcher.search(text_query(needles, low, high), limit=limit, count=False, order_by_field="time_us",
                            order=order).hits
    if len(found) < limit:
        return _hits(searcher, found), True
    last = int(found[-1][0])  # the limit may have cut the matches at this time short: take them all
    found = [h for h in found if int(h[0]) != last]
    found += searcher.search(text_query(needles, last, last + 1), limit=1_000_000, count=False).hits
    return _hits(searcher, found), False


def _hits(searcher: tantivy.Searcher, found: list[tuple[Any, tantivy.DocAddress]]) -> list[Hit]:
    addresses = [address for _, address in found]
    if not addresses:
        return []
    times = cast(list[int], searcher.fast_field_values("time_us", addresses))  # i64 fields: ints
    keys = cast(list[int], searcher.fast_field_values("uri_key", addresses))
    return list(zip(times, keys, strict=True))


MISSING, UNREADABLE, OUT_OF_SYNC = "missing", "unreadable", "out_of_sync"  # why a day's index is not used


@dataclass(frozen=True)
class Lookup:
    """A day's index as one reader found it: `searcher` when it holds exactly the day's Parquet rows, else None
    and `reason` (MISSING, UNREADABLE or OUT_OF_SYNC) why the day is scanned instead."""

    searcher: tantivy.Searcher | None
    reason: str | None = None


class Indexes:
    """The per-day indexes as one reader sees them; one per API worker. An opened index is kept while its
    directory (same inode) holds it; a commit is picked up by reloading when `meta.json` changes. Why a day is
    scanned instead is logged (a warning) once per day and reason by each worker."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self._lock = threading.Lock()
        self._open: dict[str, tuple[tuple[int, int], tantivy.Index]] = {}
        self._reported: set[tuple[str, str]] = set()  # (date, reason) already logged

    def lookup(self, date: str, parquet_rows: int) -> Lookup:
        """A searcher over day `date`'s index when its document count equals `parquet_rows`, else why not (the
        day is then scanned)."""
        path = day_dir(self.data_dir, date)
        try:
            stamp = (path.stat().st_ino, (path / "meta.json").stat().st_mtime_ns)
        except FileNotFoundError:
            return self._unusable(date, MISSING, f"{path} holds no index; `firehose reindex` builds it (the "
                                  "compaction timer runs it daily)")
        with self._lock:
            known = self._open.get(date)
        try:
            if known is None or known[0][0] != stamp[0]:
                index = tantivy.Index.open(str(path))
            else:
                index = known[1]
                if known[0] != stamp:
                    index.reload()
            searcher = index.searcher()
        except (ValueError, OSError) as exc:
            return self._unusable(date, UNREADABLE, f"{path} cannot be read ({exc}); tantivy takes a lock file "
                                  "there, so the API needs write access to it; a damaged index is rebuilt by "
                                  f"`firehose reindex --date {date}`")
        with self._lock:
            self._open[date] = (stamp, index)
        if searcher.num_docs != parquet_rows:
            return self._unusable(date, OUT_OF_SYNC, f"the index holds {searcher.num_docs} posts, the Parquet "
                                  f"{parquet_rows} (a flush or compaction in progress catches up; if it lasts, "
                                  f"`firehose reindex --date {date}`)")
        return Lookup(searcher)

    def _unusable(self, date: str, reason: str, detail: str) -> Lookup:
        """The answer for a day whose index cannot be used, logged the first time this worker meets it."""
        with self._lock:
            first = (date, reason) not in self._reported
            self._reported.add((date, reason))
        if first:
            log.warning("scanning %s instead of reading its index (%s; logged once per worker): %s", date, reason,
                        detail)
        return Lookup(None, reason)


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Flags of `firehose reindex`."""
    storage.add_date_option(parser, "rebuild this day's index (repeatable)")
    parser.add_argument("--all", action="store_true", help="rebuild every day's index")


def run(args: argparse.Namespace, settings: Settings) -> int:
    """Rebuild the given days (or all), else every day whose index is missing or disagrees with the Parquet."""
    if error := storage.date_error(args.dates):
        log.error("%s", error)
        return 2
    force = bool(args.dates) or args.all
    checks = verify(settings.data_dir, args.dates, force=force)
    if settings.index_metrics_file and not args.dates:
        write_metrics(settings.index_metrics_file, settings.data_dir, checks)
    rebuilt = [c for c in checks if c.rebuilt]
    log.info("checked %d days, rebuilt %d (%s)", len(checks), len(rebuilt),
             ", ".join(f"{c.date}={c.docs}" for c in rebuilt) or "none needed")
    return 0
