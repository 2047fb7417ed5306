"""The hiding rules: which archived posts `/search` and `/export` never serve.

A post is hidden when
- a delete event for it is archived (the `deletes` table, collection `app.bsky.feed.post`) or still in the
  buffer (the hot tier), or
- the latest account event of its author (by `time_us`, archived or buffered) says the account is not active
  (`deactivated`, `takendown`, `suspended`, `deleted`, ...). A later event with `active: true` shows it again.

The Parquet files keep everything; researchers still read the `deletes` and `account` tables. The query layer
applies the rules to candidate rows before it counts them into a page, so pages stay full.

Archived deletions are kept per worker as a sorted array of DuckDB `hash(uri)` values (8 bytes a deletion; the
query layer computes the same hash for each candidate row in the same process), rebuilt per day only when that
day's files change. A 64-bit hash collision could hide a post wrongly: about one chance in 10^7 for a million
deletions against a million candidates. Deletions still in the buffer are compared as strings.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Generic, TypeVar

import duckdb
import numpy as np

from firehose import storage
from firehose.hot import POST_COLLECTION, HotSnapshot

log = logging.getLogger(__name__)

Signature = tuple[tuple[str, int, int], ...]
CursorFactory = Callable[[], duckdb.DuckDBPyConnection]
T = TypeVar("T")

_DELETED_SQL = (
    "SELECT DISTINCT hash('at://' || did || '/" + POST_COLLECTION + "/' || rkey) AS h "
    "FROM read_parquet(?, hive_partitioning = false) WHERE collection = '" + POST_COLLECTION + "' ORDER BY h"
)
_ACCOUNT_SQL = (
    "SELECT did, max(time_us), arg_max(active, time_us) FROM read_parquet(?, hive_partitioning = false) "
    "WHERE active IS NOT NULL GROUP BY did"
)
NO_HASHES = np.empty(0, dtype=np.uint64)


@dataclass(frozen=True)
class HiddenSet:
    """The rules at one moment: immutable, shared between threads."""

    deleted_hashes: np.ndarray = field(default_factory=lambda: NO_HASHES)  # sorted, unique
    deleted_uris: frozenset[str] = frozenset()
    inactive_dids: frozenset[str] = frozenset()

    def keep_mask(self, uris: Sequence[str], dids: Sequence[str], hashes: Sequence[int]) -> list[bool]:
        """For each candidate row (its uri, did and DuckDB `hash(uri)`), whether it may be served."""
        if not uris:
            return []
        deleted = np.zeros(len(uris), dtype=bool)
        if self.deleted_hashes.size:
            values = np.asarray(hashes, dtype=np.uint64)
            at = np.searchsorted(self.deleted_hashes, values)
            at[at >= self.deleted_hashes.size] = 0
            deleted = self.deleted_hashes[at] == values
        return [not (deleted[i] or uri in self.deleted_uris or did in self.inactive_dids)
                for i, (uri, did) in enumerate(zip(uris, dids, strict=True))]

    @property
    def size(self) -> int:
        """Deletions and inactive accounts known (for metrics)."""
        return int(self.deleted_hashes.size) + len(self.deleted_uris) + len(self.inactive_dids)


@dataclass
class _Day(Generic[T]):
    """What was read from one day's files, and which files (paths, mtimes, sizes) it was read from."""

    signature: Signature
    value: T


class Hiding:
    """Builds the `HiddenSet` of one worker from the archive and the hot tier; archive reads are cached per day."""

    def __init__(self, data_dir: Path, cursor: CursorFactory, *, min_interval: float = 1.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._data_dir = data_dir
        self._cursor = cursor
        self._min_interval = min_interval
        self._clock = clock
        self._lock = threading.Lock()
        self._deleted_days: dict[str, _Day[np.ndarray]] = {}
        self._account_days: dict[str, _Day[dict[str, tuple[int, bool]]]] = {}
        self._deleted: np.ndarray = NO_HASHES
        self._accounts: dict[str, tuple[int, bool]] = {}
        self._checked = float("-inf")
        self._last: tuple[int, HotSnapshot | None, HiddenSet] | None = None
        self._version = 0
        self._cut: tuple[int, int] | None = None

    def current(self, hot: HotSnapshot) -> HiddenSet:
        """The rules for archived data as of now plus `hot`. The archive is re-read at most every `min_interval` s,
        and at once when `hot` was read after another flush batch committed: the tier no longer holds that batch's
        deletions and account events, so the rules must have them from its files before a request is served."""
        with self._lock:
            now = self._clock()
            if now - self._checked >= self._min_interval or hot.flushed_through != self._cut:
                self._cut = hot.flushed_through
                self._checked = now
                if self._reload_archive():
                    self._version += 1
            if self._last is not None and self._last[0] == self._version and self._last[1] is hot:
                return self._last[2]
            rules = self._combine(hot)
            self._last = (self._version, hot, rules)
            return rules

    def _combine(self, hot: HotSnapshot) -> HiddenSet:
        latest = dict(self._accounts)
        for event in hot.accounts:
            seen = latest.get(event.did)
            if seen is None or event.time_us >= seen[0]:
                latest[event.did] = (event.time_us, event.active)
        inactive = frozenset(did for did, (_, active) in latest.items() if not active)
        return HiddenSet(self._deleted, hot.deleted_uris, inactive)

    def _reload_archive(self) -> bool:
        """Re-read the days whose `deletes` or `account` files changed; True when anything changed."""
        deleted_changed = _refresh_days(self._data_dir, "deletes", self._deleted_days, self._read_deleted)
        accounts_changed = _refresh_days(self._data_dir, "account", self._account_days, self._read_accounts)
        if deleted_changed:
            arrays = [d.value for d in self._deleted_days.values()]
            self._deleted = np.unique(np.concatenate(arrays)) if arrays else NO_HASHES
        if accounts_changed:
            latest: dict[str, tuple[int, bool]] = {}
            for day in self._account_days.values():
                for did, (time_us, active) in day.value.items():
                    seen = latest.get(did)
                    if seen is None or time_us >= seen[0]:
                        latest[did] = (time_us, active)
            self._accounts = latest
        return deleted_changed or accounts_changed

    def _read_deleted(self, files: list[str]) -> np.ndarray:
        rows = self._cursor().execute(_DELETED_SQL, [files]).fetchnumpy()
        return np.asarray(rows["h"], dtype=np.uint64)

    def _read_accounts(self, files: list[str]) -> dict[str, tuple[int, bool]]:
        rows = self._cursor().execute(_ACCOUNT_SQL, [files]).fetchall()
        return {did: (int(t), bool(active)) for did, t, active in rows}


def _refresh_days(data_dir: Path, table: str, days: dict[str, _Day[T]], read: Callable[[list[str]], T]) -> bool:
    """Bring `days` (date -> what `read` made of that day's files) up to date with the files of `table`."""
    changed = False
    dates = set(storage.list_dates(data_dir, table))
    for gone in set(days) - dates:
        del days[gone]
        changed = True
    for date in dates:
        signature = _signature(storage.partition_files(data_dir, table, date))
        day = days.get(date)
        if day is not None and day.signature == signature:
            continue
        if not signature:  # the day's files vanished between listing and stat
            changed |= days.pop(date, None) is not None
            continue
        try:
            value = read([path for path, _, _ in signature])
        except duckdb.Error as exc:  # a file being replaced by compaction: try again on the next refresh
            log.warning("hiding rules: cannot read %s of %s yet (%s)", table, date, exc)
            continue
        days[date] = _Day(signature, value)
        changed = True
    return changed


def _signature(paths: list[Path]) -> Signature:
    entries = []
    for path in paths:
        try:
            st = path.stat()
        except FileNotFoundError:
            continue
        entries.append((str(path), st.st_mtime_ns, st.st_size))
    return tuple(sorted(entries))
