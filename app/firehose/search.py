"""Search and export: a validated `SearchQuery` becomes `Filters`, then SQL over the posts the catalog points at.

- `Searcher.filters(query, did_for)` translates a `SearchQuery` into the `Filters` the SQL uses: handles resolved
  to DIDs (through `identity.IdentityResolver.did_for`), needles and tags lower-cased the way DuckDB folds text,
  and warnings when a handle cannot be resolved (then nothing can match).
- `Searcher.search(...)` returns one keyset `Page`; `Searcher.export(...)` streams Arrow record batches.
- `Searcher.identity_handles` / `identity_did` are the identity-table lookups (archive and hot tier) that
  `IdentityResolver` tries before the network.

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
from collections.abc import Callable, Generator, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa

from firehose.catalog import OPEN_END, Catalog
from firehose.config import Settings
from firehose.database import Database, Watchdog
from firehose.filters import Filters, order_by, where_clause
from firehose.hiding import HiddenSet, Hiding
from firehose.hot import HotSnapshot, HotTier
from firehose.params import EPOCH, Position, SearchQuery
from firehose.serving import HOT_VIEW, hot_view
from firehose.serving import Merger as _Merger

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
    "time_us, hash(uri) AS uri_hash"
)
class QueryTimeout(RuntimeError):
    """A query ran past its time budget and was cancelled."""


class _BudgetSpent(Exception):
    """The watchdog fired between two statements (where DuckDB could not be interrupted)."""


@dataclass
class Page:
    """One page of search results and where the next one starts (None when there is none)."""

    rows: list[dict[str, Any]] = field(default_factory=list)
    next_position: Position | None = None


def _iso(time_us: int) -> str:
    return (EPOCH + dt.timedelta(microseconds=time_us)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


Key = tuple[int, str, "tuple[str, ...] | None"]  # (time_us, uri, the files it came from; None = the hot tier)


@dataclass(frozen=True)
class View:
    """What one request serves from: the hot tier and the hiding rules, both taken before the Parquet files are
    listed (a post flushed in between is then in both, and served once, from the hot tier)."""

    hot: HotSnapshot
    rules: HiddenSet

    def keep(self, rows: list[tuple[Any, ...]], *, hot: bool) -> list[tuple[Any, ...]]:
        """The rows (time_us, uri, did, hash(uri), ...) that may be served: not hidden, and for Parquet rows not
        served from the hot tier instead."""
        if not rows:
            return rows
        mask = self.rules.keep_mask([r[1] for r in rows], [r[2] for r in rows], [r[3] for r in rows])
        uris = self.hot.uris
        return [r for r, ok in zip(rows, mask, strict=True) if ok and (hot or r[1] not in uris)]

    def keep_batch(self, batch: pa.RecordBatch, *, hot: bool) -> pa.RecordBatch:
        """`batch` (an export batch with uri, did and uri_hash) without the rows `keep` would drop."""
        uris = batch.column("uri").to_pylist()
        mask = self.rules.keep_mask(uris, batch.column("did").to_pylist(), batch.column("uri_hash").to_pylist())
        if not hot and self.hot.uris:
            mask = [ok and u not in self.hot.uris for u, ok in zip(uris, mask, strict=True)]
        return batch if all(mask) else batch.filter(pa.array(mask, pa.bool_()))


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
        self.hot = hot
        self.hiding = Hiding(Path(settings.data_dir), lambda: self.db.cursor("hiding"),
                             min_interval=settings.api_hot_refresh_seconds)

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
        if query.mentions:
            mentions_did = did_for(query.mentions)
            if mentions_did is None:
                warnings.append(f"mentions {query.mentions!r} could not be resolved to an account; use the DID")
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
        where archived candidate rows come from (row groups of the date partitions, see `Catalog.windows`)."""
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
        view = self.view()
        cur = self.db.cursor("query")
        seconds = budget or self.settings.api_query_timeout
        timeout = QueryTimeout(f"the search ran past its {seconds:g} s budget and was cancelled")
        # Two phases: find the page's keys reading only the filter and key columns, then fetch the full rows of
        # those few keys (decoding every result column of every scanned row doubled the cost of a rare word).
        with Watchdog(cur, seconds) as dog:
            try:
                with hot_view(cur, view.hot):
                    hot_keys = self._hot_keys(cur, view, filters, after)[:want + 1]
                    archive_keys = self._parquet_keys(cur, view, filters, after, need=want + 1, dog=dog)
                    keys = _merged(hot_keys, archive_keys, filters.sort)[:want + 1]
                    rows = self._fetch_rows(cur, keys[:want])
                if dog.fired:
                    raise timeout
            except (duckdb.InterruptException, _BudgetSpent) as exc:
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
    def _hot_keys(cur: duckdb.DuckDBPyConnection, view: View, filters: Filters, after: Position | None) -> list[Key]:
        """Every servable key of the hot tier that matches, in sort order (the tier is small)."""
        if not view.hot.post_count:
            return []
        where, params = where_clause(filters, after)
        found = cur.execute(f"SELECT time_us, uri, did, hash(uri) FROM {HOT_VIEW} WHERE {where} "
                            f"ORDER BY {order_by(filters.sort)}", params).fetchall()
        return [(r[0], r[1], None) for r in view.keep(found, hot=True)]

    def _parquet_keys(self, cur: duckdb.DuckDBPyConnection, view: View, filters: Filters, after: Position | None,
                      *, need: int, dog: Watchdog) -> list[Key]:
        """The first `need` servable keys of the archive in sort order. Hidden rows are dropped before they count,
        and a window is read on past them, so a page is never short while more matches exist."""
        keys: list[Key] = []
        for files, low, high in self.windows(filters, after):
            position = after
            while True:
                where, params = where_clause(filters, position)
                n = need - len(keys)
                found = cur.execute(
                    "SELECT time_us, uri, did, hash(uri) FROM read_parquet(?, hive_partitioning = false) "
                    f"WHERE time_us >= ? AND time_us < ? AND {where} ORDER BY {order_by(filters.sort)} LIMIT ?",
                    [files, low, high, *params, n]).fetchall()
                keys += [(r[0], r[1], tuple(files)) for r in view.keep(found, hot=False)]
                if len(keys) >= need:
                    return keys[:need]
                if dog.fired:  # the timer went off between two statements
                    raise _BudgetSpent
                if len(found) < n:
                    break  # this window has no more matches
                position = Position(found[-1][0], found[-1][1], 0)
        return keys

    @staticmethod
    def _fetch_rows(cur: duckdb.DuckDBPyConnection, keys: list[Key]) -> list[tuple[Any, ...]]:
        """The result columns of the posts `keys` names, in the order of `keys` (row groups pruned by time)."""
        by_source: dict[tuple[str, ...] | None, list[tuple[int, str]]] = {}
        for time_us, uri, source in keys:
            by_source.setdefault(source, []).append((time_us, uri))
        found: dict[tuple[int, str], tuple[Any, ...]] = {}
        select = ", ".join(RESULT_COLUMNS)
        for source, wanted in by_source.items():
            times = [t for t, _ in wanted]
            origin, args = (HOT_VIEW, []) if source is None else (
                "read_parquet(?, hive_partitioning = false)", [list(source)])
            rows = cur.execute(
                f"SELECT {select} FROM {origin} "
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
        batches = self._export_batches(cur, self.view(), filters, max_rows, dogs)
        try:
            first = next(batches, None)
        except (duckdb.InterruptException, _BudgetSpent) as exc:
            batches.close()
            raise QueryTimeout(f"the export's first rows took longer than {self.settings.api_query_timeout:g} s "
                               "and it was cancelled; narrow the filters (dates, author, words)") from exc
        finally:
            dogs[0].close()
        return self._stream(cur, first, batches, dogs)

    def _stream(self, cur: duckdb.DuckDBPyConnection, first: pa.RecordBatch | None,
                batches: Generator[pa.RecordBatch, None, None], dogs: list[Watchdog]) -> Iterator[pa.RecordBatch]:
        dogs[0] = Watchdog(cur, self.settings.api_export_timeout)  # armed only once the stream really starts
        try:
            if first is None:
                return
            yield first
            yield from batches
        except (duckdb.InterruptException, _BudgetSpent):
            log.warning("export cut off after %s s (FIREHOSE_API_EXPORT_TIMEOUT)", self.settings.api_export_timeout)
        except duckdb.Error:
            log.exception("export failed after the response started; the CSV is truncated")
        finally:
            dogs[0].close()
            batches.close()

    def _export_batches(self, cur: duckdb.DuckDBPyConnection, view: View, filters: Filters, max_rows: int,
                        dogs: list[Watchdog]) -> Generator[pa.RecordBatch, None, None]:
        """Batches in sort order: the archive window by window, merged with the hot tier's matches; hidden rows
        dropped. `dogs[0]` is the watchdog currently in charge (checked between statements, where an interrupt
        would be lost)."""
        with hot_view(cur, view.hot):  # read whole before the archive streams: the view ends with the block
            hot = self._hot_export(cur, view, filters, max_rows)
        merger = _Merger(hot, filters.sort, max_rows)
        for batch in self._archive_batches(cur, view, filters, max_rows, dogs):
            yield from merger.add(batch)
            if merger.left <= 0:
                return
        yield from merger.rest()

    def _hot_export(self, cur: duckdb.DuckDBPyConnection, view: View, filters: Filters, limit: int) -> pa.Table:
        """The hot tier's servable matches as one export table in sort order."""
        if not view.hot.post_count:
            return pa.table({})
        where, params = where_clause(filters, None)
        table = cur.sql(f"SELECT {_EXPORT_SELECT} FROM {HOT_VIEW} WHERE {where} ORDER BY {order_by(filters.sort)}",
                        params=params).to_arrow_table()
        kept = [view.keep_batch(b, hot=True) for b in table.to_batches()]
        return pa.Table.from_batches(kept, schema=table.schema).slice(0, limit)

    def _archive_batches(self, cur: duckdb.DuckDBPyConnection, view: View, filters: Filters, max_rows: int,
                         dogs: list[Watchdog]) -> Iterator[pa.RecordBatch]:
        """Servable archive rows in sort order, window by window, each window read on past hidden rows."""
        left = max_rows
        for files, low, high in self.windows(filters, None):
            position: Position | None = None
            while left > 0:
                if dogs[0].fired:
                    raise _BudgetSpent
                where, params = where_clause(filters, position)
                sql = (f"SELECT {_EXPORT_SELECT} FROM read_parquet(?, hive_partitioning = false) WHERE time_us >= ? "
                       f"AND time_us < ? AND {where} ORDER BY {order_by(filters.sort)} LIMIT ?")
                asked, got = left, 0
                for batch in cur.sql(sql, params=[files, low, high, *params, asked]).to_arrow_reader(
                        EXPORT_BATCH_ROWS):
                    if not batch.num_rows:
                        continue
                    got += batch.num_rows
                    position = Position(batch.column("time_us")[-1].as_py(), batch.column("uri")[-1].as_py(), 0)
                    kept = view.keep_batch(batch, hot=False)
                    left -= kept.num_rows
                    if kept.num_rows:
                        yield kept
                if dogs[0].fired:  # it went off just before or during this statement: the result may be cut short
                    raise _BudgetSpent
                if got < asked:
                    break  # this window has no more matches
            if left <= 0:
                return

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
