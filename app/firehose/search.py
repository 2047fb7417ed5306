"""Search and export: a validated `SearchQuery` becomes `Filters`, then SQL over the posts the catalog points at.

- `Searcher.filters(query, did_for)` translates a `SearchQuery` into `Filters`: handles resolved to DIDs (through
  `identity.IdentityResolver.did_for`), the text as `matching.Needle`s, tags lower-cased the way DuckDB folds
  text, and warnings when a handle cannot be resolved (then nothing can match) or a word cannot match.
- `Searcher.search(...)` returns one keyset `Page`; `Searcher.export(...)` streams Arrow record batches.
- `Searcher.identity_handles` / `identity_did` are the identity-table lookups (archive and hot tier) that
  `IdentityResolver` tries before the network.

Where candidate rows come from: without text, (files, low, high) time windows in scan order from the catalog's
Parquet row groups (`Searcher.windows`, `catalog.Catalog.windows`). With text, day by day in scan order: a day
whose full-text index holds exactly the day's Parquet rows (`index.Indexes`) gives the event times of matching
posts, newest first, in growing rounds, and only the rows at those times are read; any other day (not yet
indexed, being rebuilt) is scanned window by window (`sources.Sources` records which way each day was read).
Both paths end in the same check of the text (`matching.matches`), so they return the same rows
(tests/unit/test_matching.py proves it on random queries).

Every user value reaches DuckDB as a bound parameter; the only SQL text built at run time
is fixed fragments chosen by which filters are present. Each window is queried with `ORDER BY time_us, uri LIMIT
n`, and a search stops as soon as its page is full. Each call runs under a time budget: a `Watchdog` interrupts
the thread's DuckDB cursor, which cancels the running statement and leaves the connection usable; the caller gets
`QueryTimeout`.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import duckdb
import pyarrow as pa

from firehose import storage
from firehose.catalog import DAY_US, OPEN_END, Catalog
from firehose.config import Settings
from firehose.database import Database, Watchdog, scalar
from firehose.filters import Filters, order_by, where_clause
from firehose.hiding import Hiding
from firehose.hot import HotSnapshot, HotTier
from firehose.index import Hit, Indexes, matching_posts, uri_key
from firehose.matching import Needle, matches, needles_of
from firehose.params import EPOCH, Position, SearchQuery
from firehose.serving import HOT_VIEW, View, hot_view
from firehose.sources import INDEX, SCAN, Sources

if TYPE_CHECKING:
    from firehose.export import ExportStream  # export builds on this module

log = logging.getLogger(__name__)

EXPORT_BATCH_ROWS = 50_000
INDEX_FIRST_HITS = 256  # hits asked of a day's index in the first round (at least twice the keys still needed)
INDEX_GROWTH = 8  # each further round asks for this many times more

# Columns of a search result, in the order they are selected.
RESULT_COLUMNS = (
    "time_us", "did", "uri", "cid", "text", "langs", "reply_parent_uri", "reply_root_uri", "embed_type",
    "embed_uri", "mentions", "links", "tags", "created_at",
)
RESULT_SELECT = ", ".join(RESULT_COLUMNS)
# Columns of an export, in CSV order; `username` is added per batch from the DID.
EXPORT_COLUMNS = (
    "timestamp", "username", "text", "uri", "did", "cid", "created_at", "langs", "reply_parent_uri",
    "reply_root_uri", "embed_type", "embed_uri", "mentions", "links", "tags",
)
EXPORT_SELECT = (
    "strftime(make_timestamp(time_us), '%Y-%m-%dT%H:%M:%S.%fZ') AS timestamp, text, uri, did, cid, created_at, "
    "to_json(langs)::VARCHAR AS langs, reply_parent_uri, reply_root_uri, embed_type, embed_uri, "
    "to_json(mentions)::VARCHAR AS mentions, to_json(links)::VARCHAR AS links, to_json(tags)::VARCHAR AS tags, "
    "time_us"
)


class QueryTimeout(RuntimeError):
    """A query ran past its time budget and was cancelled."""


class BudgetSpent(Exception):
    """The watchdog fired between two statements (where DuckDB could not be interrupted)."""


@dataclass
class Page:
    """One page of search results and where the next one starts (None when there is none)."""

    rows: list[dict[str, Any]] = field(default_factory=list)
    next_position: Position | None = None


def utc_timestamp(time_us: int) -> str:
    """A result's `timestamp`: unix microseconds as ISO 8601 UTC with microseconds (as EXPORT_SELECT writes it)."""
    return (EPOCH + dt.timedelta(microseconds=time_us)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


Key = tuple[int, str, "tuple[str, ...] | None"]  # (time_us, uri, the files it came from; None = the hot tier)
Fetched = dict[tuple[int, str], tuple[Any, ...]]  # result rows (RESULT_COLUMNS) already read, by (time_us, uri)


def overfetch(n: int) -> int:
    """How many rows to ask a window for when `n` servable ones are wanted: some of them may be hidden, and a
    second statement over the same window costs as much as the first (a few percent of posts are deleted)."""
    return n + max(16, n // 4)


def _key_select(filters: Filters) -> str:
    """The columns a key query reads: the key, and the text when it has to be checked (hiding needs only the URI:
    reading `did` and hashing every candidate in the scan made a common-word search ~1.4x slower)."""
    return "time_us, uri" + (", text" if filters.needles else "")


def _matching(rows: list[tuple[Any, ...]], needles: Sequence[Needle]) -> list[tuple[Any, ...]]:
    """The key rows (text third) whose text matches every needle (all of them without needles)."""
    return [r for r in rows if matches(needles, r[2])] if needles else rows


def matching_batch(batch: pa.RecordBatch, needles: Sequence[Needle]) -> pa.RecordBatch:
    """The rows of an export batch whose text matches every needle."""
    if not needles or not batch.num_rows:
        return batch
    mask = [matches(needles, t) for t in batch.column("text").to_pylist()]
    return batch if all(mask) else batch.filter(pa.array(mask, pa.bool_()))


def search_span(filters: Filters, after: Position | None) -> tuple[int, int]:
    """The time range [low, high) a search covers past `after`."""
    query = filters.query
    low = query.since_us if query.since_us is not None else 0
    high = query.until_us if query.until_us is not None else OPEN_END
    if after is not None:
        if query.sort == "latest":
            high = min(high, after.time_us + 1)
        else:
            low = max(low, after.time_us)
    return low, high


def _merged(first: list[Key], second: list[Key], sort: str) -> list[Key]:
    """Two sorted key lists (no key in both) as one, in the order of `sort`."""
    if not first or not second:
        return first or second
    return sorted(first + second, key=lambda k: (k[0], k[1]), reverse=sort == "latest")


class Searcher:
    """Searches, exports and identity lookups over `<data_dir>` and the hot tier; one per worker."""

    def __init__(self, settings: Settings, database: Database | None = None, catalog: Catalog | None = None,
                 hot: HotTier | None = None) -> None:
        self.settings = settings
        self.db = database or Database(settings.api_duckdb_threads, settings.api_duckdb_memory)
        self.catalog = catalog or Catalog(Path(settings.data_dir), self.db)
        self.indexes = Indexes(Path(settings.data_dir))
        self.hot = hot
        self.hiding = Hiding(Path(settings.data_dir), min_interval=settings.api_hot_refresh_seconds)

    def view(self) -> View:
        """The hot tier (refreshed if due) and the hiding rules for one request."""
        snapshot = self.hot.refresh() if self.hot is not None else HotSnapshot()
        return View(snapshot, self.hiding.current(snapshot))

    # --- query translation

    def filters(self, query: SearchQuery, did_for: Callable[[str], str | None]) -> tuple[Filters | None, list[str]]:
        """The SQL filters for `query` (handles resolved to DIDs by `did_for`), or None when nothing can match,
        and warnings saying why."""
        warnings: list[str] = []
        author_did = mentions_did = None
        if query.author:
            author_did = did_for(query.author)
            if author_did is None:
                warnings.append(f"username {query.author!r} could not be resolved to an account (not in this "
                                "archive's identity events, nor via DNS, https or the resolver service); "
                                "search by DID (did:plc:...) instead")
            elif self.view().rules.is_inactive(author_did):  # every post hidden: answer without a scan
                warnings.append(f"the account {query.author!r} is not active (its latest account event says "
                                "deactivated, suspended, taken down or deleted): its posts are not served")
        if query.mentions:
            mentions_did = did_for(query.mentions)
            if mentions_did is None:
                warnings.append(f"mentions {query.mentions!r} could not be resolved to an account; use the DID")
        if warnings:
            return None, warnings
        needles, ignored = needles_of(query.text, query.words, query.exact)
        warnings += [f"{word!r} has no letters or digits and was ignored: words match whole words (see Matching "
                     "in docs/api.md)" for word in ignored]
        tags = self.lowercase(list(query.tags))
        return Filters(query, needles, author_did=author_did, mentions_did=mentions_did, tags=tags), warnings

    # --- candidate rows

    def windows(self, filters: Filters, after: Position | None) -> Iterator[tuple[list[str], int, int]]:
        """(files, low, high) time windows [low, high) in scan order covering the search range past `after`:
        where archived candidate rows come from (row groups of the date partitions, see `Catalog.windows`)."""
        low, high = search_span(filters, after)
        return self.catalog.windows(low, high, latest=filters.query.sort == "latest",
                                    min_chunks=self.settings.api_duckdb_threads)

    def days(self, filters: Filters, after: Position | None) -> Iterator[tuple[str, int, int]]:
        """(date, low, high): the posts days in scan order with the part [low, high) of each that the search
        covers past `after`."""
        latest = filters.query.sort == "latest"
        low, high = search_span(filters, after)
        dates = storage.list_dates(Path(self.settings.data_dir), "posts")
        for date in dates if latest else reversed(dates):
            start = int(dt.datetime.fromisoformat(date).replace(tzinfo=dt.UTC).timestamp()) * 1_000_000
            day_low, day_high = max(low, start), min(high, start + DAY_US)
            if day_low < day_high:
                yield date, day_low, day_high

    def day_index(self, date: str, sources: Sources | None = None) -> tuple[Any, list[str]] | None:
        """(a searcher over the day's index, the day's posts files) when the index holds exactly the day's
        Parquet rows; None when the day has to be scanned. Which of the two (and why a scan) goes into `sources`."""
        chunks = self.catalog.day_chunks(date)
        files = list(dict.fromkeys(c.path for c in chunks))
        if not files:
            return None
        found = self.indexes.lookup(date, sum(c.rows for c in chunks))
        if sources is not None:
            sources.add(date, INDEX if found.searcher is not None else SCAN, found.reason)
        return (found.searcher, files) if found.searcher is not None else None

    def day_windows(self, filters: Filters, low: int, high: int) -> Iterator[tuple[list[str], int, int]]:
        """The catalog's scan windows over [low, high) (one day's part) in the order of `filters.query.sort`."""
        return self.catalog.windows(low, high, latest=filters.query.sort == "latest",
                                    min_chunks=self.settings.api_duckdb_threads)

    def lowercase(self, words: Sequence[str]) -> tuple[str, ...]:
        """Lower-case `words` with DuckDB's own lower(), so needle and text are folded the same way."""
        if not words:
            return ()
        lowered = scalar(self.db.cursor("meta"), "SELECT list_transform(?::VARCHAR[], lambda w: lower(w))",
                         [list(words)])
        return tuple(lowered) if lowered is not None else tuple(w.lower() for w in words)

    # --- search

    def search(self, filters: Filters, limit: int, after: Position | None, *, cap: int,
               budget: float | None = None, sources: Sources | None = None) -> Page:
        """Up to `limit` results after `after` (newest first for sort=latest), at most `cap` over all pages; the
        days read, and how, go into `sources` as they are read (also when the search then times out)."""
        served = after.served if after else 0
        want = min(limit, cap - served)
        if want <= 0:
            return Page()
        view = self.view()
        sources = sources if sources is not None else Sources()
        cur = self.db.cursor("query")
        seconds = budget or self.settings.api_query_timeout
        timeout = QueryTimeout(f"the search ran past its {seconds:g} s budget and was cancelled")
        # Two phases: find the page's keys reading only the filter and key columns, then fetch the full rows of
        # those few keys (decoding every result column of every scanned row doubled the cost of a rare word).
        # The interrupt can land in any statement, registering the hot view included: all are inside the try.
        with Watchdog(cur, seconds) as dog:
            try:
                with hot_view(cur, view.hot):
                    hot_keys = self._hot_keys(cur, view, filters, after, sources)[:want + 1]
                    fetched: Fetched = {}
                    archive_keys = self._parquet_keys(cur, view, filters, after, need=want + 1, dog=dog,
                                                      fetched=fetched, sources=sources)
                    keys = _merged(hot_keys, archive_keys, filters.query.sort)[:want + 1]
                    rows = self._fetch_rows(cur, keys[:want], fetched)
                if dog.fired:
                    raise timeout
            except (duckdb.InterruptException, BudgetSpent) as exc:
                raise timeout from exc
            except duckdb.Error:
                if dog.fired:
                    raise timeout from None
                raise
        page = Page(rows=[self._row(r) for r in rows])
        if len(keys) > want and served + want < cap:  # one key past the page: there is a next page
            last = page.rows[-1]
            page.next_position = Position(last["time_us"], last["uri"], served + want)
        return page

    @staticmethod
    def _hot_keys(cur: duckdb.DuckDBPyConnection, view: View, filters: Filters, after: Position | None,
                  sources: Sources) -> list[Key]:
        """Every servable key of the hot tier that matches, in sort order (the tier is small)."""
        if not view.hot.post_count:
            return []
        sources.hot(view.hot, *search_span(filters, after))
        where, params = where_clause(filters, after)
        found = cur.execute(f"SELECT {_key_select(filters)} FROM {HOT_VIEW} WHERE {where} "
                            f"ORDER BY {order_by(filters.query.sort)}", params).fetchall()
        return [(r[0], r[1], None) for r in view.keep(_matching(found, filters.needles), hot=True)]

    def _parquet_keys(self, cur: duckdb.DuckDBPyConnection, view: View, filters: Filters, after: Position | None,
                      *, need: int, dog: Watchdog, fetched: Fetched, sources: Sources) -> list[Key]:
        """The first `need` servable keys of the archive in sort order: scanned window by window without text,
        else day by day, through the day's index where it is complete (whose rows land in `fetched`)."""
        if not filters.needles:
            return self._scan_keys(cur, view, filters, after, sources.scanned(self.windows(filters, after)),
                                   need=need, dog=dog)
        keys: list[Key] = []
        for date, low, high in self.days(filters, after):
            indexed = self.day_index(date, sources)
            if indexed is None:
                keys += self._scan_keys(cur, view, filters, after, self.day_windows(filters, low, high),
                                        need=need - len(keys), dog=dog)
            else:
                keys += self._index_keys(cur, view, filters, after, indexed=indexed, span=(low, high),
                                         need=need - len(keys), dog=dog, fetched=fetched)
            if len(keys) >= need:
                return keys[:need]
        return keys

    def _index_keys(self, cur: duckdb.DuckDBPyConnection, view: View, filters: Filters, after: Position | None, *,
                    indexed: tuple[Any, list[str]], span: tuple[int, int], need: int, dog: Watchdog,
                    fetched: Fetched) -> list[Key]:
        """The first `need` servable keys of one indexed day within `span`: the index gives the times of matching
        posts in sort order; the rows at those times are read, checked and filtered like scanned ones, a few more
        times than still needed at a time. Hits can be scattered over the whole day, so their result columns are
        read in the same statement (into `fetched`): a second pass over the same row groups cost as much again."""
        files = indexed[1]
        where, params = where_clause(filters.without_text(), after)
        keys: list[Key] = []
        for hits in self._index_rounds(indexed[0], filters, span, need):
            wanted = set(hits)
            times = sorted({t for t, _ in hits}, reverse=filters.query.sort == "latest")
            while times:
                n = overfetch(need - len(keys))
                part, times = times[:n], times[n:]
                found = cur.execute(
                    f"SELECT time_us, uri, {RESULT_SELECT} FROM read_parquet(?, hive_partitioning = false) "
                    f"WHERE time_us >= ? AND time_us <= ? AND time_us IN (SELECT unnest(?::BIGINT[])) AND {where} "
                    f"ORDER BY {order_by(filters.query.sort)}", [files, min(part), max(part), part, *params]
                ).fetchall()
                found = [r for r in found if (r[0], uri_key(r[1])) in wanted]
                for r in view.keep(found, hot=False):
                    fetched[(r[0], r[1])] = r[2:]
                    keys.append((r[0], r[1], tuple(files)))
                if len(keys) >= need:
                    return keys[:need]
                if dog.fired:
                    raise BudgetSpent
        return keys

    @staticmethod
    def _index_rounds(searcher: Any, filters: Filters, span: tuple[int, int], need: int) -> Iterator[list[Hit]]:
        """(time_us, uri_key) of matching posts in sort order of time, round after round (each asks for
        INDEX_GROWTH times more than the last), until the index has no more; a round holds every match at each
        of its times, and the next one starts past them."""
        latest = filters.query.sort == "latest"
        low, high = span
        limit = max(2 * need, INDEX_FIRST_HITS)
        while low < high:
            hits, complete = matching_posts(searcher, filters.needles, low, high, limit, latest=latest)
            if hits:
                yield hits
            if complete or not hits:
                return
            if latest:
                high = min(t for t, _ in hits)
            else:
                low = max(t for t, _ in hits) + 1
            limit *= INDEX_GROWTH

    def _scan_keys(self, cur: duckdb.DuckDBPyConnection, view: View, filters: Filters, after: Position | None,
                   windows: Iterator[tuple[list[str], int, int]], *, need: int, dog: Watchdog) -> list[Key]:
        """The first `need` servable keys of `windows` in sort order. Hidden and non-matching rows are dropped
        before they count, and a window is read on past them, so a page is never short while more matches
        exist."""
        keys: list[Key] = []
        for files, low, high in windows:
            position = after
            while True:
                where, params = where_clause(filters, position)
                n = overfetch(need - len(keys))
                found = cur.execute(
                    f"SELECT {_key_select(filters)} FROM read_parquet(?, hive_partitioning = false) "
                    f"WHERE time_us >= ? AND time_us < ? AND {where} ORDER BY {order_by(filters.query.sort)} LIMIT ?",
                    [files, low, high, *params, n]).fetchall()
                kept = view.keep(_matching(found, filters.needles), hot=False)
                keys += [(r[0], r[1], tuple(files)) for r in kept]
                if len(keys) >= need:
                    return keys[:need]
                if dog.fired:  # the timer went off between two statements
                    raise BudgetSpent
                if len(found) < n:
                    break  # this window has no more matches
                position = Position(found[-1][0], found[-1][1], 0)
        return keys

    @staticmethod
    def _fetch_rows(cur: duckdb.DuckDBPyConnection, keys: list[Key], fetched: Fetched) -> list[tuple[Any, ...]]:
        """The result columns of the posts `keys` names, in the order of `keys` (those not in `fetched` read now,
        row groups pruned by time)."""
        by_source: dict[tuple[str, ...] | None, list[tuple[int, str]]] = {}
        for time_us, uri, source in keys:
            if (time_us, uri) not in fetched:
                by_source.setdefault(source, []).append((time_us, uri))
        found = dict(fetched)
        for source, wanted in by_source.items():
            times = [t for t, _ in wanted]
            origin, args = (HOT_VIEW, []) if source is None else (
                "read_parquet(?, hive_partitioning = false)", [list(source)])
            rows = cur.execute(
                f"SELECT {RESULT_SELECT} FROM {origin} "
                "WHERE time_us >= ? AND time_us <= ? AND uri IN (SELECT unnest(?::VARCHAR[]))",
                [*args, min(times), max(times), [u for _, u in wanted]],
            ).fetchall()
            wanted_set = set(wanted)
            for row in rows:
                key = (row[0], row[2])
                if key in wanted_set:
                    found[key] = row
        return [found[(t, u)] for t, u, _ in keys]

    @staticmethod
    def _row(values: tuple[Any, ...]) -> dict[str, Any]:
        row = dict(zip(RESULT_COLUMNS, values, strict=True))
        row["timestamp"] = utc_timestamp(row["time_us"])
        return row

    # --- export

    def export(self, filters: Filters, max_rows: int, sources: Sources | None = None) -> ExportStream:
        """Record batches of up to `max_rows` matches in sort order, and why they ended early if they did (see
        `export.Exporter.export`); the days read go into `sources` as the stream reads them."""
        from firehose.export import Exporter  # export builds on this module

        return Exporter(self, sources if sources is not None else Sources()).export(filters, max_rows)

    # --- identity

    def identity_handles(self, dids: list[str]) -> dict[str, str]:
        """The newest non-null handle of each DID in `dids` according to the identity events (buffered ones are
        newer than archived ones)."""
        if not dids:
            return {}
        rows = self._identity_rows("SELECT did, arg_max(handle, time_us) FROM read_parquet(?, hive_partitioning = "
                                   "false) WHERE handle IS NOT NULL AND did = ANY(?) GROUP BY did", dids)
        found = {did: handle.lower() for did, handle in rows if handle}
        hot = self._hot_handles()
        found.update({did: hot[did] for did in dids if did in hot})
        return found

    def identity_did(self, handle: str) -> str | None:
        """The DID that most recently announced `handle` in the identity events, or None."""
        hot = [did for did, known in self._hot_handles().items() if known == handle]
        if hot:
            return hot[-1]
        rows = self._identity_rows("SELECT did FROM read_parquet(?, hive_partitioning = false) "
                                   "WHERE lower(handle) = ? ORDER BY time_us DESC LIMIT 1", handle)
        return rows[0][0] if rows else None

    def _hot_handles(self) -> dict[str, str]:
        """DID -> handle from the identity events still in the buffer that carry one (the newest wins)."""
        if self.hot is None:
            return {}
        events = sorted((e for e in self.hot.refresh().identities if e.handle), key=lambda e: e.time_us)
        return {e.did: e.handle for e in events if e.handle}

    def _identity_rows(self, sql: str, value: Any) -> list[tuple[Any, ...]]:
        """Rows of `sql` over every identity file with `value` bound after the file list; none (logged) when there
        are no identity files or DuckDB fails, so a lookup never fails a request."""
        files = self.catalog.identity_files()
        if not files:
            return []
        try:
            return self.db.cursor("handles").execute(sql, [files, value]).fetchall()
        except duckdb.Error as exc:
            log.warning("identity lookup failed: %s", exc)
            return []
