"""Search and export: a validated `SearchQuery` becomes `Filters`, then SQL over the posts the catalog points at.

- `Searcher.filters(query, did_for)` translates a `SearchQuery` into the `Filters` the SQL uses: handles resolved
  to DIDs (through `handles.HandleBook.did_for`), needles and tags lower-cased the way DuckDB folds text, and
  warnings when a handle is unknown (then nothing can match).
- `Searcher.search(...)` returns one keyset `Page`; `Searcher.export(...)` streams Arrow record batches.
- `Searcher.identity_handles` / `identity_did` are the identity-table lookups `HandleBook` falls back on.

Where candidate rows come from is one seam, `Searcher.windows(filters, after)`: (files, low, high) time windows
in scan order, today from the catalog's Parquet row groups (`catalog.Catalog.windows`). Search and export only
consume those windows. Every user value reaches DuckDB as a bound parameter; the only SQL text built at run time
is fixed fragments chosen by which filters are present. Each window is queried with `ORDER BY time_us, uri LIMIT
n`, and a search stops as soon as its page is full. Each call runs under a time budget: a `Watchdog` interrupts
the thread's DuckDB cursor, which cancels the running statement and leaves the connection usable; the caller gets
`QueryTimeout`.
"""

from __future__ import annotations

import datetime as dt
import logging
import string
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa

from firehose.catalog import OPEN_END, Catalog
from firehose.config import Settings
from firehose.database import Database, Watchdog
from firehose.params import EPOCH, Position, SearchQuery

log = logging.getLogger(__name__)

EXPORT_BATCH_ROWS = 50_000

# Columns of a search result, in the order they are selected.
RESULT_COLUMNS = (
    "time_us", "did", "uri", "cid", "text", "langs", "reply_parent_uri", "reply_root_uri", "embed_type",
    "embed_uri", "mentions", "links", "tags", "created_at",
)
# Columns of an export, in CSV order; `username` is added per batch from the DID.
EXPORT_COLUMNS = (
    "timestamp", "username", "text", "uri", "did", "cid", "created_at", "langs", "reply_parent_uri",
    "reply_root_uri", "embed_type", "embed_uri", "mentions", "links", "tags",
)
_EXPORT_SELECT = (
    "strftime(make_timestamp(time_us), '%Y-%m-%dT%H:%M:%S.%fZ') AS timestamp, text, uri, did, cid, created_at, "
    "to_json(langs)::VARCHAR AS langs, reply_parent_uri, reply_root_uri, embed_type, embed_uri, "
    "to_json(mentions)::VARCHAR AS mentions, to_json(links)::VARCHAR AS links, to_json(tags)::VARCHAR AS tags, "
    "time_us"
)
# Host of a URL (scheme://[userinfo@]host[:port]...). A constant: a regex passed as a parameter is slow.
_HOST_RE_SQL = r"'^[A-Za-z][A-Za-z0-9+.-]*://(?:[^/?#@]*@)?([^/?#:]+)'"


class QueryTimeout(RuntimeError):
    """A query ran past its time budget and was cancelled."""


@dataclass(frozen=True)
class Filters:
    """What the SQL filters on: a `SearchQuery` with handles resolved to DIDs and needles lower-cased."""

    needles: tuple[str, ...] = ()
    author_did: str | None = None
    since_us: int | None = None
    until_us: int | None = None
    lang: str | None = None
    mentions_did: str | None = None
    domain: str | None = None
    url: str | None = None
    tags: tuple[str, ...] = ()
    sort: str = "latest"


@dataclass
class Page:
    """One page of search results and where the next one starts (None when there is none)."""

    rows: list[dict[str, Any]] = field(default_factory=list)
    next_position: Position | None = None


def _iso(time_us: int) -> str:
    return (EPOCH + dt.timedelta(microseconds=time_us)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


_RE2_PUNCTUATION = frozenset(string.punctuation)


def re2_literal(text: str) -> str:
    """`text` as an RE2 pattern matching exactly itself (every ASCII punctuation escaped; %, _ and \\ too)."""
    return "".join("\\" + ch if ch in _RE2_PUNCTUATION else ch for ch in text)


def where_clause(filters: Filters, after: Position | None) -> tuple[str, list[Any]]:
    """The WHERE clause (fixed SQL fragments) and its bound parameters for `filters` after `after`."""
    conds: list[str] = []
    params: list[Any] = []
    for needle in filters.needles:
        # RE2's case-insensitive match of an escaped literal: Unicode-aware like lower(), ~40% cheaper per row
        # (it folds while it scans instead of building a lower-cased copy of every text)
        conds.append("regexp_matches(text, ?)")
        params.append("(?i)" + re2_literal(needle))
    if filters.author_did is not None:
        conds.append("did = ?")
        params.append(filters.author_did)
    if filters.since_us is not None:
        conds.append("time_us >= ?")
        params.append(filters.since_us)
    if filters.until_us is not None:
        conds.append("time_us < ?")
        params.append(filters.until_us)
    if filters.lang is not None:
        conds.append("len(list_filter(langs, lambda x: lower(x) = ? OR starts_with(lower(x), ?))) > 0")
        params += [filters.lang, filters.lang + "-"]
    if filters.mentions_did is not None:
        conds.append("list_contains(mentions, ?)")
        params.append(filters.mentions_did)
    if filters.domain is not None:
        conds.append(
            f"len(list_filter(list_transform(links, lambda l: lower(regexp_extract(l, {_HOST_RE_SQL}, 1))), "
            "lambda h: h = ? OR ends_with(h, ?))) > 0"
        )
        params += [filters.domain, "." + filters.domain]
    if filters.url is not None:
        conds.append("len(list_filter(links, lambda l: starts_with(l, ?))) > 0")
        params.append(filters.url)
    for tag in filters.tags:
        conds.append("len(list_filter(tags, lambda t: lower(t) = ?)) > 0")
        params.append(tag)
    if after is not None:
        op = "<" if filters.sort == "latest" else ">"
        conds.append(f"(time_us {op} ? OR (time_us = ? AND uri {op} ?))")
        params += [after.time_us, after.time_us, after.uri]
    return (" AND ".join(conds) or "TRUE"), params


def _order(sort: str) -> str:
    return "time_us DESC, uri DESC" if sort == "latest" else "time_us ASC, uri ASC"


class Searcher:
    """Searches, exports and identity lookups over `<data_dir>`; one per worker (created by the API app)."""

    def __init__(self, settings: Settings, database: Database | None = None, catalog: Catalog | None = None) -> None:
        self.settings = settings
        self.db = database or Database(settings.api_duckdb_threads, settings.api_duckdb_memory)
        self.catalog = catalog or Catalog(Path(settings.data_dir), self.db)

    # --- query translation

    def filters(self, query: SearchQuery, did_for: Callable[[str], str | None]) -> tuple[Filters | None, list[str]]:
        """The SQL filters for `query` (handles resolved to DIDs by `did_for`), or None when nothing can match,
        and warnings saying why."""
        warnings: list[str] = []
        author_did = mentions_did = None
        if query.author:
            author_did = did_for(query.author)
            if author_did is None:
                warnings.append(f"username {query.author!r} is not known to this archive (no identity event seen); "
                                "search by DID (did:plc:...) instead")
        if query.mentions:
            mentions_did = did_for(query.mentions)
            if mentions_did is None:
                warnings.append(f"mentions {query.mentions!r} is not known to this archive; use the DID instead")
        if warnings:
            return None, warnings
        needles = self.lowercase([query.text] if query.exact and query.text else list(query.words))
        tags = self.lowercase(list(query.tags))
        return Filters(needles=needles, author_did=author_did, since_us=query.since_us, until_us=query.until_us,
                       lang=query.lang, mentions_did=mentions_did, domain=query.domain, url=query.url,
                       tags=tags, sort=query.sort), warnings

    # --- candidate rows

    def windows(self, filters: Filters, after: Position | None) -> Iterator[tuple[list[str], int, int]]:
        """(files, low, high) time windows [low, high) in scan order covering the search range past `after`:
        where candidate rows come from (row groups of the date partitions, see `Catalog.windows`)."""
        latest = filters.sort == "latest"
        low = filters.since_us if filters.since_us is not None else 0
        high = filters.until_us if filters.until_us is not None else OPEN_END
        if after is not None:
            if latest:
                high = min(high, after.time_us + 1)
            else:
                low = max(low, after.time_us)
        return self.catalog.windows(low, high, latest=latest, min_chunks=self.settings.api_duckdb_threads)

    def lowercase(self, words: Sequence[str]) -> tuple[str, ...]:
        """Lower-case `words` with DuckDB's own lower(), so needle and text are folded the same way."""
        if not words:
            return ()
        row = self.db.cursor("meta").execute("SELECT list_transform(?::VARCHAR[], lambda w: lower(w))",
                                             [list(words)]).fetchone()
        return tuple(row[0]) if row else tuple(w.lower() for w in words)

    # --- search

    def search(self, filters: Filters, limit: int, after: Position | None, *, cap: int,
               budget: float | None = None) -> Page:
        """Up to `limit` results after `after` (newest first for sort=latest), at most `cap` over all pages."""
        served = after.served if after else 0
        want = min(limit, cap - served)
        if want <= 0:
            return Page()
        cur = self.db.cursor("query")
        keys: list[tuple[int, str, tuple[str, ...]]] = []  # (time_us, uri, files it came from), in page order
        seconds = budget or self.settings.api_query_timeout
        timeout = QueryTimeout(f"the search ran past its {seconds:g} s budget and was cancelled")
        where, params = where_clause(filters, after)
        # Two phases: find the page's keys reading only the filter and key columns, then fetch the full rows of
        # those few keys (decoding every result column of every scanned row doubled the cost of a rare word).
        sql = (f"SELECT time_us, uri FROM read_parquet(?, hive_partitioning = false) "
               f"WHERE time_us >= ? AND time_us < ? AND {where} ORDER BY {_order(filters.sort)} LIMIT ?")
        with Watchdog(cur, seconds) as dog:
            try:
                for files, low, high in self.windows(filters, after):
                    found = cur.execute(sql, [files, low, high, *params, want + 1 - len(keys)]).fetchall()
                    keys += [(t, u, tuple(files)) for t, u in found]
                    if len(keys) > want:
                        break
                    if dog.fired:  # the timer went off between two statements
                        raise timeout
                rows = self._fetch_rows(cur, keys[:want])
                if dog.fired:
                    raise timeout
            except duckdb.InterruptException as exc:
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
    def _fetch_rows(cur: duckdb.DuckDBPyConnection, keys: list[tuple[int, str, tuple[str, ...]]]
                    ) -> list[tuple[Any, ...]]:
        """The result columns of the posts `keys` names, in the order of `keys` (row groups pruned by time)."""
        by_files: dict[tuple[str, ...], list[tuple[int, str]]] = {}
        for time_us, uri, files in keys:
            by_files.setdefault(files, []).append((time_us, uri))
        found: dict[tuple[int, str], tuple[Any, ...]] = {}
        select = ", ".join(RESULT_COLUMNS)
        for files, wanted in by_files.items():
            times = [t for t, _ in wanted]
            rows = cur.execute(
                f"SELECT {select} FROM read_parquet(?, hive_partitioning = false) "
                "WHERE time_us >= ? AND time_us <= ? AND uri IN (SELECT unnest(?::VARCHAR[]))",
                [list(files), min(times), max(times), [u for _, u in wanted]],
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
        row["timestamp"] = _iso(row["time_us"])
        return row

    # --- export

    def export(self, filters: Filters, max_rows: int) -> Iterator[pa.RecordBatch]:
        """Record batches (EXPORT_COLUMNS minus username, plus time_us) of up to `max_rows` matches in sort order.
        The first batch is computed before this returns, under `api_query_timeout` (QueryTimeout and DuckDB errors
        surface here, so the API can still answer with a status); the rest streams under `api_export_timeout`,
        after which the stream just ends (logged)."""
        cur = self.db.cursor("query")
        dogs = [Watchdog(cur, self.settings.api_query_timeout)]
        batches = self._export_batches(cur, filters, max_rows, dogs)
        try:
            first = next(batches, None)
        except duckdb.InterruptException as exc:
            raise QueryTimeout(f"the export's first rows took longer than {self.settings.api_query_timeout:g} s "
                               "and it was cancelled; narrow the filters (dates, author, words)") from exc
        finally:
            dogs[0].close()
        return self._stream(cur, first, batches, dogs)

    def _stream(self, cur: duckdb.DuckDBPyConnection, first: pa.RecordBatch | None,
                batches: Iterator[pa.RecordBatch], dogs: list[Watchdog]) -> Iterator[pa.RecordBatch]:
        dogs[0] = Watchdog(cur, self.settings.api_export_timeout)  # armed only once the stream really starts
        try:
            if first is None:
                return
            yield first
            yield from batches
        except duckdb.InterruptException:
            log.warning("export cut off after %s s (FIREHOSE_API_EXPORT_TIMEOUT)", self.settings.api_export_timeout)
        except duckdb.Error:
            log.exception("export failed after the response started; the CSV is truncated")
        finally:
            dogs[0].close()
            batches.close()

    def _export_batches(self, cur: duckdb.DuckDBPyConnection, filters: Filters, max_rows: int,
                        dogs: list[Watchdog]) -> Iterator[pa.RecordBatch]:
        """Batches window by window; `dogs[0]` is the watchdog currently in charge (checked between statements,
        where an interrupt would be lost)."""
        left = max_rows
        where, params = where_clause(filters, None)
        sql = (f"SELECT {_EXPORT_SELECT} FROM read_parquet(?, hive_partitioning = false) "
               f"WHERE time_us >= ? AND time_us < ? AND {where} ORDER BY {_order(filters.sort)} LIMIT ?")
        for files, low, high in self.windows(filters, None):
            if dogs[0].fired:
                raise duckdb.InterruptException("time budget used up")
            reader = cur.sql(sql, params=[files, low, high, *params, left]).to_arrow_reader(EXPORT_BATCH_ROWS)
            for batch in reader:
                if batch.num_rows:
                    left -= batch.num_rows
                    yield batch
            if dogs[0].fired:  # it went off just before or during this statement: the result may be cut short
                raise duckdb.InterruptException("time budget used up")
            if left <= 0:
                return

    # --- identity

    def identity_handles(self, dids: list[str]) -> dict[str, str]:
        """The newest non-null handle of each DID in `dids` according to the identity table."""
        if not dids:
            return {}
        rows = self._identity_rows("SELECT did, arg_max(handle, time_us) FROM read_parquet(?, hive_partitioning = "
                                   "false) WHERE handle IS NOT NULL AND did = ANY(?) GROUP BY did", dids)
        return {did: handle.lower() for did, handle in rows if handle}

    def identity_did(self, handle: str) -> str | None:
        """The DID that most recently announced `handle` in the identity table, or None."""
        rows = self._identity_rows("SELECT did FROM read_parquet(?, hive_partitioning = false) "
                                   "WHERE lower(handle) = ? ORDER BY time_us DESC LIMIT 1", handle)
        return rows[0][0] if rows else None

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
