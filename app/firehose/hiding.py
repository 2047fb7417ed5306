"""The hiding rules: which archived posts `/search` and `/export` never serve.

A post is hidden when
- a delete event for it is archived (the `deletes` table, collection `app.bsky.feed.post`) or still in the
  buffer (the hot tier), or
- the latest account event of its author (by `time_us`, archived or buffered) says the account is not active
  (`deactivated`, `takendown`, `suspended`, `deleted`, ...). A later event with `active: true` shows it again.

The Parquet files keep everything; researchers still read the `deletes` and `account` tables. The query layer
applies the rules to candidate rows before it counts them into a page, so pages stay full.

What a worker holds: the archive's rules are the per-day facts files the flush and the compaction write
(`hiding_facts`), memory-mapped, so a fresh worker starts serving after a stat of each day's directories and the
page cache shares the arrays between workers; only a day whose facts file is missing or stale (the moment between
a flush's Parquet and its facts, or an archive restored without them) is completed from the Parquet files its
facts lack (all of the day's when a file it names is gone) into the worker's own memory, until its file is
current again. A candidate row is looked up in each day's sorted arrays (a binary
search per day: the cost of a lookup grows with the log of a day's deletions and linearly with the days, not
with their rows). Posts are told apart by `index.uri_key`, a 64-bit hash of the URI: a collision could hide a
post wrongly, about one chance in 10^7 for a million deletions against a million candidates; accounts likewise
by the hash of the DID. Deletions and account events still in the buffer are compared as strings.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa

from firehose import hiding_facts, storage
from firehose.hiding_facts import DayFacts
from firehose.hot import HotSnapshot
from firehose.index import uri_keys

log = logging.getLogger(__name__)

Signature = tuple[tuple[int, int, int] | None, ...]
RACY_NS = 2_000_000_000  # a directory changed this recently may change again within its mtime's granularity


@dataclass(frozen=True)
class HiddenSet:
    """The rules at one moment: immutable, shared between threads."""

    days: tuple[DayFacts, ...] = ()  # the archive's facts, newest day first
    deleted_uris: frozenset[str] = frozenset()  # deletions in the hot tier
    accounts: Mapping[str, tuple[int, bool]] = field(default_factory=dict)  # hot tier: did -> (time_us, active)

    def keep_mask(self, uris: Sequence[str], dids: Sequence[str]) -> list[bool]:
        """For each candidate row (its uri and did), whether it may be served."""
        if not uris:
            return []
        deleted = np.zeros(len(uris), dtype=bool)
        if any(day.deleted.size for day in self.days):
            keys = uri_keys(uris)
            for day in self.days:
                deleted |= _member(day.deleted, keys)
        active = self.active(dids)
        return [not (deleted[i] or uri in self.deleted_uris) and active[did]
                for i, (uri, did) in enumerate(zip(uris, dids, strict=True))]

    def active(self, dids: Sequence[str]) -> dict[str, bool]:
        """Whether each of `dids` is active: its latest account event, in the hot tier or the newest archived day
        that has one, says so (or it has none)."""
        unique = list(dict.fromkeys(dids))
        times = np.full(len(unique), -1, dtype=np.int64)
        active = np.ones(len(unique), dtype=bool)
        if any(day.account_keys.size for day in self.days):
            keys = uri_keys(unique)
            todo = np.ones(len(unique), dtype=bool)
            for day in self.days:  # newest first: a day's events are all later than an older day's
                if not day.account_keys.size:
                    continue
                at = np.minimum(np.searchsorted(day.account_keys, keys), day.account_keys.size - 1)
                hit = todo & (day.account_keys[at] == keys)
                times[hit] = day.account_times[at[hit]]
                active[hit] = day.account_active[at[hit]] != 0
                todo &= ~hit
                if not todo.any():
                    break
        states = {}
        for i, did in enumerate(unique):
            hot = self.accounts.get(did)
            states[did] = hot[1] if hot is not None and hot[0] >= times[i] else bool(active[i])
        return states

    def is_inactive(self, did: str) -> bool:
        """Whether every post of `did` is hidden now."""
        return not self.active([did])[did]

    @property
    def size(self) -> int:
        """Archived deletions and account states plus the hot tier's (for metrics)."""
        return sum(day.size for day in self.days) + len(self.deleted_uris) + len(self.accounts)


def _member(sorted_keys: np.ndarray, keys: np.ndarray) -> np.ndarray:
    """For each of `keys`, whether it is in `sorted_keys`."""
    if not sorted_keys.size:
        return np.zeros(keys.size, dtype=bool)
    at = np.minimum(np.searchsorted(sorted_keys, keys), sorted_keys.size - 1)
    return np.asarray(sorted_keys[at] == keys)


@dataclass
class _Day:
    """One day's facts, and the state of its directories and facts file they were taken at (None: check again)."""

    signature: Signature | None
    facts: DayFacts


class Hiding:
    """Builds the `HiddenSet` of one worker from the archive's facts files and the hot tier."""

    def __init__(self, data_dir: Path, *, min_interval: float = 1.0,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._data_dir = data_dir
        self._min_interval = min_interval
        self._clock = clock
        self._lock = threading.Lock()
        self._days: dict[str, _Day] = {}
        self._archive: tuple[DayFacts, ...] = ()
        self._checked = float("-inf")
        self._last: tuple[int, HotSnapshot | None, HiddenSet] | None = None
        self._version = 0
        self._cut: tuple[int, int] | None = None

    def current(self, hot: HotSnapshot) -> HiddenSet:
        """The rules for archived data as of now plus `hot`. The archive is re-checked at most every
        `min_interval` s, and at once when `hot` was read after another flush batch committed: the tier no longer
        holds that batch's deletions and account events, so the rules must have them from its files before a
        request is served."""
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
        latest: dict[str, tuple[int, bool]] = {}
        for event in hot.accounts:
            seen = latest.get(event.did)
            if seen is None or event.time_us >= seen[0]:
                latest[event.did] = (event.time_us, event.active)
        return HiddenSet(self._archive, hot.deleted_uris, latest)

    def _reload_archive(self) -> bool:
        """Bring the days whose directories or facts file changed up to date; True when anything changed."""
        changed = False
        dates = hiding_facts.dates(self._data_dir)
        for gone in set(self._days) - set(dates):
            del self._days[gone]
            changed = True
        for date in dates:
            signature = self._signature(date)
            day = self._days.get(date)
            if day is not None and day.signature is not None and day.signature == signature:
                continue
            facts = self._load(date)
            if facts is None:
                continue
            racy = any(s is not None and s[1] > time.time_ns() - RACY_NS for s in signature)
            if day is None or facts is not day.facts:
                changed = True
            self._days[date] = _Day(None if racy else signature, facts)
        if changed:
            self._archive = tuple(self._days[d].facts for d in sorted(self._days, reverse=True))
        return changed

    def _signature(self, date: str) -> Signature:
        paths = [storage.partition_dir(self._data_dir, t, date) for t in hiding_facts.TABLES]
        return tuple(_stat(p) for p in [*paths, hiding_facts.facts_path(self._data_dir, date)])

    def _load(self, date: str) -> DayFacts | None:
        """The day's facts: its file when that covers the day's current files, else the file (or what this worker
        read before) completed from the Parquet files it lacks, else read from all the day's Parquet."""
        try:
            facts = hiding_facts.read(hiding_facts.facts_path(self._data_dir, date))
        except (ValueError, OSError) as exc:
            log.warning("hiding facts of %s: %s; reading its Parquet instead", date, exc)
            facts = None
        day = self._days.get(date)
        if facts is None and day is not None:
            facts = day.facts
        try:
            complete = hiding_facts.complete(self._data_dir, date, facts)
        except (OSError, pa.ArrowException) as exc:  # a file replaced by compaction meanwhile: try again next time
            log.warning("hiding rules: cannot read the deletes and accounts of %s yet (%s)", date, exc)
            return None
        if complete is not facts:
            log.info("hiding facts of %s are missing or stale: completed from its Parquet (%d facts)", date,
                     complete.size)
        return complete


def _stat(path: Path) -> tuple[int, int, int] | None:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    return (st.st_ino, st.st_mtime_ns, st.st_size)
