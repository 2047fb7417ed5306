"""Where each day of a request's answer came from: the day's full-text index, a scan of its Parquet, or the hot tier.

Index and scan return the same rows by design, so a day that is scanned where it could be read from its index shows
only as slowness. A `Sources` record is filled while a search or an export reads (no extra query: the choice is made
anyway) and the API reports it: `meta.days` of `/search`, and the counter `firehose_api_search_days_total{endpoint,
via, reason}` for both endpoints. Entries, in the order read (the hot tier first):

- `{"date", "via": "index"}`: a day searched through its index;
- `{"date", "via": "scan", "reason"}`: a day whose Parquet was scanned, and why: `no_text` (a search without text
  scans; no index applies), or the index's own reason (`index.MISSING`, `UNREADABLE`, `OUT_OF_SYNC`);
- `{"date", "via": "hot"}`: a day with posts in the hot tier (not yet flushed), which every search reads.
"""

from __future__ import annotations

import datetime as dt
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from firehose import storage
from firehose.index import MISSING, OUT_OF_SYNC, UNREADABLE
from firehose.params import EPOCH

if TYPE_CHECKING:  # the type only: the OpenAPI document reads the names below without loading the hot tier
    from firehose.hot import HotSnapshot

INDEX, SCAN, HOT = "index", "scan", "hot"  # how a day was read (`via`)
VIA = (INDEX, SCAN, HOT)
NO_TEXT = "no_text"  # a search without text scans: no index applies
SCAN_REASONS = (NO_TEXT, MISSING, UNREADABLE, OUT_OF_SYNC)  # why a day was scanned


@dataclass(frozen=True)
class DaySource:
    """One day read one way."""

    date: str
    via: str
    reason: str | None = None

    def as_json(self) -> dict[str, str]:
        """The `meta.days` entry."""
        entry = {"date": self.date, "via": self.via}
        if self.reason is not None:
            entry["reason"] = self.reason
        return entry


@dataclass
class Sources:
    """The days one request read, in the order read, each (date, via) once."""

    days: list[DaySource] = field(default_factory=list)
    _seen: set[tuple[str, str]] = field(default_factory=set)

    def add(self, date: str, via: str, reason: str | None = None) -> None:
        """Record that `date` was read `via` index, scan or hot (a repeat is ignored)."""
        if (date, via) not in self._seen:
            self._seen.add((date, via))
            self.days.append(DaySource(date, via, reason))

    def scanned(self, windows: Iterator[tuple[list[str], int, int]]) -> Iterator[tuple[list[str], int, int]]:
        """`windows` (scan windows of a search without text), recording the days of each one's files (their
        partition directories) as it is read."""
        for window in windows:
            for partition in dict.fromkeys(os.path.dirname(f) for f in window[0]):
                if match := storage.DATE_RE.match(os.path.basename(partition)):
                    self.add(match.group(1), SCAN, NO_TEXT)
            yield window

    def hot(self, snapshot: HotSnapshot, low: int, high: int) -> None:
        """Record the days of [low, high) that the hot tier's posts span (it is read whole)."""
        if snapshot.oldest_time_us is None or snapshot.newest_time_us is None:
            return
        first, last = max(low, snapshot.oldest_time_us), min(high - 1, snapshot.newest_time_us)
        if first > last:
            return
        day, end = (EPOCH + dt.timedelta(microseconds=first)).date(), (EPOCH + dt.timedelta(microseconds=last)).date()
        while day <= end:
            self.add(day.isoformat(), HOT)
            day += dt.timedelta(days=1)

    def as_json(self) -> list[dict[str, str]]:
        """`meta.days`."""
        return [d.as_json() for d in self.days]
