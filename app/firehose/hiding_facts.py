"""The hiding facts of each day, on disk: what an API worker needs of the `deletes` and `account` tables to hide
posts, written by the flush and the compaction so that no worker reads those tables' Parquet to start serving.

Layout: `<data_dir>/hiding/date=YYYY-MM-DD.facts`, one file per day that has `deletes` or `account` files. A
day's file holds
- the keys (`index.uri_key`) of the URIs of the posts deleted that day, sorted and unique;
- for each DID with an account event that day, the key of the DID (`uri_key` of the DID string), the `time_us`
  and the `active` flag of its latest such event, sorted by key;
- which Parquet files of `deletes` and `account` it was made from (its cover: each file's name and size).

Readers use a day's file only while its cover names exactly the day's current files; otherwise (no file yet, a
flush or a compaction between the Parquet and the facts, a crash) they complete it from the Parquet files it
lacks, or read the whole day's Parquet when it names a file that is gone (`complete`), so the file only ever
speeds things up. The compaction removes a day's file before it swaps the day's files (its `compact-0000.parquet`
is a new file under an old name) and writes it again after. The file is memory-mapped: the arrays are shared between
the workers through the page cache and cost a worker nothing until a lookup touches them.

Binary layout (little-endian): the magic `FHHIDE01`, a u64 header length, a JSON header
`{"covers": {"deletes": [[name, size], ...], "account": [...]}, "deleted": n, "accounts": m}` padded with spaces
to a multiple of 8 bytes, then `int64[n]` deleted post keys, `int64[m]` DID keys, `int64[m]` times, `uint8[m]`
active flags. The files are derived data: deleting them is safe (`firehose compact` writes any that are missing
or stale). Replace them only by rename (as `write` does): overwriting a mapped file in place can crash a worker.
"""

from __future__ import annotations

import logging
import os
import struct
import uuid
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import orjson
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from firehose import storage
from firehose.index import uri_keys
from firehose.schema import POST_COLLECTION, post_uris

log = logging.getLogger(__name__)

FACTS_DIR = "hiding"
TABLES = ("deletes", "account")
MAGIC = b"FHHIDE01"
_I64 = np.dtype("<i8")
_EMPTY = np.empty(0, dtype=_I64)
_EMPTY_FLAGS = np.empty(0, dtype=np.uint8)

FileId = tuple[str, int]  # a Parquet file of a day's partition: its name and size
Covers = Mapping[str, frozenset[FileId]]  # table -> the Parquet files the facts were made from


@dataclass(frozen=True)
class DayFacts:
    """The hiding facts of one day (arrays may be memory-mapped: treat them as read-only)."""

    covers: Covers
    deleted: np.ndarray = field(default_factory=lambda: _EMPTY)  # int64 post keys, sorted, unique
    account_keys: np.ndarray = field(default_factory=lambda: _EMPTY)  # int64 DID keys, sorted, unique
    account_times: np.ndarray = field(default_factory=lambda: _EMPTY)  # int64 time of each DID's latest event
    account_active: np.ndarray = field(default_factory=lambda: _EMPTY_FLAGS)  # uint8: that event's `active`

    def __post_init__(self) -> None:
        if not (len(self.account_keys) == len(self.account_times) == len(self.account_active)):
            raise ValueError("account arrays of unequal length")

    def merged(self, other: DayFacts) -> DayFacts:
        """These facts and `other`'s (another set of files of the same day) as one."""
        covers = {t: self.covers.get(t, frozenset()) | other.covers.get(t, frozenset()) for t in TABLES}
        deleted = np.union1d(self.deleted, other.deleted).astype(_I64)
        keys, times, active = _latest(np.concatenate([self.account_keys, other.account_keys]),
                                      np.concatenate([self.account_times, other.account_times]),
                                      np.concatenate([self.account_active, other.account_active]))
        return DayFacts(covers, deleted, keys, times, active)

    @property
    def size(self) -> int:
        """Deletions plus account states (for metrics)."""
        return int(self.deleted.size + self.account_keys.size)


def facts_root(data_dir: Path) -> Path:
    """Directory holding every day's facts file."""
    return data_dir / FACTS_DIR


def facts_path(data_dir: Path, date: str) -> Path:
    """The facts file of one day."""
    return facts_root(data_dir) / f"date={date}.facts"


def current_covers(data_dir: Path, date: str) -> dict[str, frozenset[FileId]]:
    """The day's `deletes` and `account` Parquet files now (a file removed while this looks is left out)."""
    return {t: frozenset(_file_ids(storage.partition_files(data_dir, t, date))) for t in TABLES}


def _file_ids(paths: Iterable[Path]) -> Iterator[FileId]:
    for path in paths:
        try:
            yield path.name, path.stat().st_size
        except FileNotFoundError:
            continue


def dates(data_dir: Path) -> list[str]:
    """Days that have `deletes` or `account` files, newest first."""
    return sorted({d for t in TABLES for d in storage.list_dates(data_dir, t)}, reverse=True)


# --- making facts


def facts_of(deletes: pa.Table | None, account: pa.Table | None, covers: Covers) -> DayFacts:
    """The facts of `deletes` and `account` rows (tables with at least the columns read here)."""
    deleted = _EMPTY
    if deletes is not None and deletes.num_rows:
        posts = deletes.filter(pc.and_kleene(pc.equal(deletes["collection"], POST_COLLECTION),
                                             pc.and_kleene(pc.is_valid(deletes["did"]), pc.is_valid(deletes["rkey"]))))
        deleted = np.unique(uri_keys(post_uris(posts["did"], posts["rkey"]).to_pylist()))
    keys, times, active = _EMPTY, _EMPTY, _EMPTY_FLAGS
    if account is not None and account.num_rows:
        known = account.filter(pc.and_kleene(pc.is_valid(account["did"]), pc.and_kleene(
            pc.is_valid(account["time_us"]), pc.is_valid(account["active"]))))
        if known.num_rows:
            keys, times, active = _latest(uri_keys(known["did"].to_pylist()),
                                          known["time_us"].to_numpy().astype(_I64),
                                          known["active"].to_numpy(zero_copy_only=False).astype(np.uint8))
    return DayFacts({t: frozenset(covers.get(t, ())) for t in TABLES}, deleted, keys, times, active)


def build_day(data_dir: Path, date: str) -> DayFacts:
    """The facts of one day read from all its `deletes` and `account` Parquet files."""
    return _read_files(data_dir, date, current_covers(data_dir, date))


def complete(data_dir: Path, date: str, base: DayFacts | None) -> DayFacts:
    """The day's facts now: `base` (its file, or facts read before) when it covers the day's current files; `base`
    plus the facts of the files it lacks when it names no file that is gone (the flush added a batch since);
    else read from all the day's files (a compaction replaced them)."""
    now = current_covers(data_dir, date)
    if base is None or any(not base.covers.get(t, frozenset()) <= now[t] for t in TABLES):
        return _read_files(data_dir, date, now)
    missing = {t: now[t] - base.covers.get(t, frozenset()) for t in TABLES}
    return base.merged(_read_files(data_dir, date, missing)) if any(missing.values()) else base


def _read_files(data_dir: Path, date: str, names: Covers) -> DayFacts:
    """The facts of the given `deletes` and `account` files of one day."""
    columns = {"deletes": ["did", "rkey", "collection"], "account": ["did", "time_us", "active"]}
    tables: dict[str, pa.Table | None] = {}
    for table in TABLES:
        part = storage.partition_dir(data_dir, table, date)
        parts = [pq.read_table(part / name, columns=columns[table]) for name, _ in sorted(names.get(table, ()))]
        tables[table] = pa.concat_tables(parts) if parts else None
    return facts_of(tables["deletes"], tables["account"], names)


def _latest(keys: np.ndarray, times: np.ndarray, active: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per key, the (time, active) of its latest event, sorted by key; of two events at the same time the later in
    input order stands."""
    if not keys.size:
        return _EMPTY, _EMPTY, _EMPTY_FLAGS
    order = np.lexsort((times, keys))  # by key, then time
    keys, times, active = keys[order], times[order], active[order]
    last = np.ones(keys.size, dtype=bool)
    last[:-1] = keys[1:] != keys[:-1]
    return keys[last].astype(_I64), times[last].astype(_I64), active[last].astype(np.uint8)


# --- the file


def write(data_dir: Path, date: str, facts: DayFacts) -> Path:
    """Write the day's facts file atomically (staging, fsync, rename, fsync of the directory)."""
    path = facts_path(data_dir, date)
    covers = {t: sorted([name, size] for name, size in facts.covers.get(t, ())) for t in TABLES}
    header = orjson.dumps({"covers": covers,
                           "deleted": int(facts.deleted.size), "accounts": int(facts.account_keys.size)})
    header += b" " * (-len(header) % 8)
    tmp = storage.staging_dir(data_dir) / f"{path.name}.{uuid.uuid4().hex}.tmp"
    tmp.parent.mkdir(parents=True, exist_ok=True)
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with open(tmp, "xb") as fh:
            fh.write(MAGIC + struct.pack("<Q", len(header)) + header)
            for array, dtype in ((facts.deleted, _I64), (facts.account_keys, _I64), (facts.account_times, _I64),
                                 (facts.account_active, np.uint8)):
                fh.write(np.ascontiguousarray(array, dtype=dtype).tobytes())
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    storage.fsync_dir(path.parent)
    return path


def read(path: Path) -> DayFacts | None:
    """The facts in `path`, memory-mapped; None when there is no such file. A damaged file raises ValueError."""
    try:
        if path.stat().st_size < len(MAGIC) + 8:
            raise ValueError(f"{path} is truncated")
    except FileNotFoundError:
        return None
    buf = np.memmap(path, dtype=np.uint8, mode="r")
    if bytes(buf[:8]) != MAGIC:
        raise ValueError(f"{path} is not a hiding facts file (bad magic)")
    (length,) = struct.unpack("<Q", bytes(buf[8:16]))
    try:
        header = orjson.loads(bytes(buf[16:16 + length]))
        n, m = int(header["deleted"]), int(header["accounts"])
        covers = {t: frozenset((str(name), int(size)) for name, size in header["covers"][t]) for t in TABLES}
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise ValueError(f"{path}: unreadable header ({exc})") from exc
    start = 16 + length
    if buf.size != start + 8 * n + 17 * m:
        raise ValueError(f"{path} is {buf.size} bytes, its header says {start + 8 * n + 17 * m}")

    def part(offset: int, count: int, dtype: np.dtype) -> np.ndarray:
        return buf[offset:offset + count * dtype.itemsize].view(dtype) if count else np.empty(0, dtype=dtype)

    return DayFacts(covers, part(start, n, _I64), part(start + 8 * n, m, _I64), part(start + 8 * (n + m), m, _I64),
                    part(start + 8 * (n + 2 * m), m, np.dtype(np.uint8)))


# --- what the writers call


def add_files(data_dir: Path, date: str, written: Mapping[str, tuple[str, pa.Table]]) -> DayFacts:
    """After the flush wrote `written` (table -> (file name, its rows)) into the day: the day's facts file brought
    up to date: the old file plus these rows when the old file covered all other files of the day, else completed
    from the day's Parquet (`complete`). Returns the facts written."""
    now = current_covers(data_dir, date)
    new = {t: frozenset(_file_ids([storage.partition_dir(data_dir, t, date) / written[t][0]])) if t in written
           else frozenset() for t in TABLES}
    try:
        old = read(facts_path(data_dir, date))
    except ValueError as exc:
        log.warning("hiding facts of %s: %s; rebuilding them from the Parquet", date, exc)
        old = None
    if old is not None and all(old.covers.get(t, frozenset()) | new[t] == now[t] for t in TABLES):
        facts = old.merged(facts_of(written.get("deletes", (None, None))[1],
                                    written.get("account", (None, None))[1], new))
    else:  # an earlier batch's facts were not written (a crash), or a compaction replaced the files
        facts = complete(data_dir, date, old)
    write(data_dir, date, facts)
    return facts


def remove(data_dir: Path, date: str) -> None:
    """Remove the day's facts file (the compaction, before it swaps the day's files; `ensure` writes it again)."""
    path = facts_path(data_dir, date)
    if path.exists():
        path.unlink()
        storage.fsync_dir(path.parent)


def _sorted(facts: DayFacts) -> bool:
    """Whether the file's keys are strictly increasing, as written (a damaged file that kept its size is not)."""
    return all(bool(np.all(keys[1:] > keys[:-1])) for keys in (facts.deleted, facts.account_keys))


def ensure(data_dir: Path, dates_: Iterable[str] | None = None) -> list[str]:
    """Write the facts file of every day (or of `dates_`) whose file is missing, damaged (also: keys out of order)
    or stale; returns those days. What `firehose compact` runs after compacting, and what heals an archive
    restored or upgraded without them."""
    rebuilt = []
    known = dates(data_dir)
    if dates_ is None:
        for orphan in facts_root(data_dir).glob("date=*.facts"):  # a day whose files were removed
            if orphan.name[5:15] not in known:
                orphan.unlink(missing_ok=True)
    for date in dates_ if dates_ is not None else known:
        try:
            facts = read(facts_path(data_dir, date))
        except ValueError as exc:
            log.warning("hiding facts of %s: %s; rebuilding them", date, exc)
            facts = None
        if facts is not None and dict(facts.covers) == current_covers(data_dir, date) and _sorted(facts):
            continue
        write(data_dir, date, build_day(data_dir, date))
        rebuilt.append(date)
    return rebuilt
