"""Export: every match of a search as Arrow record batches in sort order, for `/export`'s CSV.

The archive is read window by window (or day by day through a day's index for text), merged with the hot tier's
matches (`serving.Merger`), with the hiding rules applied to every batch. The first batch is computed under the
query budget (so the API can still answer with a status); the rest streams under the export budget. One row more
than asked for is read, so an `ExportStream` knows whether its row cap cut the result or the result fits.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Generator, Iterator
from typing import Any, Literal

import duckdb
import pyarrow as pa

from firehose.database import Watchdog
from firehose.filters import Filters, order_by, where_clause
from firehose.index import uri_key
from firehose.params import Position
from firehose.search import (
    EXPORT_BATCH_ROWS,
    EXPORT_SELECT,
    BudgetSpent,
    QueryTimeout,
    Searcher,
    matching_batch,
    overfetch,
    search_span,
)
from firehose.serving import HOT_VIEW, View, hot_view
from firehose.serving import Merger as _Merger
from firehose.sources import Sources

log = logging.getLogger(__name__)


CutReason = Literal["limit", "timeout", "error"]


class ExportStream:
    """The record batches of one export in sort order, to be iterated once. When the iteration has ended, `cut`
    says why it ended before every match was streamed: "limit" (more posts match than the export's `max_rows`),
    "timeout" (it streamed for FIREHOSE_API_EXPORT_TIMEOUT), "error" (a query failed; logged); None when every
    match was streamed. It arms the export's watchdog when the iteration starts."""

    def __init__(self, cur: duckdb.DuckDBPyConnection, first: pa.RecordBatch | None,
                 batches: Generator[pa.RecordBatch, None, None], dogs: list[Watchdog], *, max_rows: int,
                 timeout: float) -> None:
        self.cut: CutReason | None = None
        self._batches = batches
        self._stream = self._run(cur, first, dogs, max_rows, timeout)

    def __iter__(self) -> Iterator[pa.RecordBatch]:
        return self._stream

    def close(self) -> None:
        """Stop the export and give its cursor back (also when it was never iterated)."""
        self._stream.close()
        self._batches.close()

    def _run(self, cur: duckdb.DuckDBPyConnection, first: pa.RecordBatch | None, dogs: list[Watchdog],
             max_rows: int, timeout: float) -> Generator[pa.RecordBatch, None, None]:
        """Up to `max_rows` rows of `first` and the batches after it; `batches` is asked for one row more, so a
        row past `max_rows` tells a cut result from one that fits exactly."""
        dogs[0] = Watchdog(cur, timeout)  # armed only once the stream really starts
        left = max_rows
        try:
            for batch in itertools.chain([first] if first is not None else [], self._batches):
                if batch.num_rows > left:
                    if left:
                        yield batch.slice(0, left)
                    self.cut = "limit"
                    return
                left -= batch.num_rows
                yield batch
        except (duckdb.InterruptException, BudgetSpent):
            self.cut = "timeout"
            log.warning("export cut off after %g s (FIREHOSE_API_EXPORT_TIMEOUT) and %d rows; the CSV ends with "
                        "a truncation row", timeout, max_rows - left)
        except duckdb.Error:
            self.cut = "error"
            log.exception("export failed after the response started and %d rows; the CSV ends with a truncation "
                          "row", max_rows - left)
        finally:
            dogs[0].close()
            self._batches.close()


class Exporter:
    """One export over a `Searcher`'s tiers; the days it reads, and how, go into `sources`."""

    def __init__(self, searcher: Searcher, sources: Sources) -> None:
        self.searcher = searcher
        self.sources = sources

    def export(self, filters: Filters, max_rows: int) -> ExportStream:
        """Record batches (EXPORT_COLUMNS minus username, plus time_us) of up to `max_rows` matches in sort order,
        and once they are read, why they ended early if they did (`ExportStream.cut`). The first batch is
        computed before this returns, under `api_query_timeout` (QueryTimeout and DuckDB errors surface here, so
        the API can still answer with a status); the rest streams under `api_export_timeout`."""
        cur = self.searcher.db.cursor("query")
        dogs = [Watchdog(cur, self.searcher.settings.api_query_timeout)]
        batches = self._export_batches(cur, self.searcher.view(), filters, max_rows + 1, dogs)
        try:
            first = next(batches, None)
        except (duckdb.InterruptException, BudgetSpent) as exc:
            batches.close()
            budget = self.searcher.settings.api_query_timeout
            raise QueryTimeout(f"the export's first rows took longer than {budget:g} s and it was cancelled; "
                               "narrow the filters (dates, author, words)") from exc
        finally:
            dogs[0].close()
        return ExportStream(cur, first, batches, dogs, max_rows=max_rows,
                            timeout=self.searcher.settings.api_export_timeout)

    def _export_batches(self, cur: duckdb.DuckDBPyConnection, view: View, filters: Filters, max_rows: int,
                        dogs: list[Watchdog]) -> Generator[pa.RecordBatch, None, None]:
        """Batches in sort order: the archive window by window, merged with the hot tier's matches; hidden rows
        dropped. `dogs[0]` is the watchdog currently in charge (checked between statements, where an interrupt
        would be lost)."""
        with hot_view(cur, view.hot):  # read whole before the archive streams: the view ends with the block
            hot = self._hot_export(cur, view, filters, max_rows)
        merger = _Merger(hot, filters.query.sort, max_rows)
        for batch in self._archive_batches(cur, view, filters, max_rows, dogs):
            yield from merger.add(batch)
            if merger.left <= 0:
                return
        yield from merger.rest()

    def _hot_export(self, cur: duckdb.DuckDBPyConnection, view: View, filters: Filters, limit: int) -> pa.Table:
        """The hot tier's servable matches as one export table in sort order."""
        if not view.hot.post_count:
            return pa.table({})
        self.sources.hot(view.hot, *search_span(filters, None))
        where, params = where_clause(filters, None)
        table = cur.sql(f"SELECT {EXPORT_SELECT} FROM {HOT_VIEW} WHERE {where} ORDER BY {order_by(filters.query.sort)}",
                        params=params).to_arrow_table()
        kept = [view.keep_batch(matching_batch(b, filters.needles), hot=True) for b in table.to_batches()]
        return pa.Table.from_batches(kept, schema=table.schema).slice(0, limit)

    def _archive_batches(self, cur: duckdb.DuckDBPyConnection, view: View, filters: Filters, max_rows: int,
                         dogs: list[Watchdog]) -> Iterator[pa.RecordBatch]:
        """Servable archive rows in sort order: scanned without text, else day by day through the day's index
        where it is complete (the same split as `_parquet_keys`)."""
        if not filters.needles:
            windows = self.sources.scanned(self.searcher.windows(filters, None))
            yield from self._scan_batches(cur, view, filters, windows=windows, max_rows=max_rows, dogs=dogs)
            return
        left = max_rows
        for date, low, high in self.searcher.days(filters, None):
            indexed = self.searcher.day_index(date, self.sources)
            batches = (self._scan_batches(cur, view, filters, windows=self.searcher.day_windows(filters, low, high),
                                          max_rows=left, dogs=dogs)
                       if indexed is None else self._index_batches(cur, view, filters, indexed=indexed,
                                                                   span=(low, high), max_rows=left, dogs=dogs))
            for batch in batches:
                left -= batch.num_rows
                yield batch
            if left <= 0:
                return

    def _index_batches(self, cur: duckdb.DuckDBPyConnection, view: View, filters: Filters, *,
                       indexed: tuple[Any, list[str]], span: tuple[int, int], max_rows: int,
                       dogs: list[Watchdog]) -> Iterator[pa.RecordBatch]:
        """Up to `max_rows` servable rows of one indexed day within `span`, in sort order (as `_index_keys`)."""
        files = indexed[1]
        where, params = where_clause(filters.without_text(), None)
        left = max_rows
        for hits in self.searcher._index_rounds(indexed[0], filters, span, min(max_rows, EXPORT_BATCH_ROWS)):
            if dogs[0].fired:
                raise BudgetSpent
            times = sorted({t for t, _ in hits})
            table = cur.sql(
                f"SELECT {EXPORT_SELECT} FROM read_parquet(?, hive_partitioning = false) WHERE time_us >= ? "
                f"AND time_us <= ? AND time_us IN (SELECT unnest(?::BIGINT[])) AND {where} "
                f"ORDER BY {order_by(filters.query.sort)}", params=[files, times[0], times[-1], times, *params],
            ).to_arrow_table()
            wanted = set(hits)
            for batch in table.to_batches(EXPORT_BATCH_ROWS):
                keys = zip(batch.column("time_us").to_pylist(), batch.column("uri").to_pylist(), strict=True)
                mask = pa.array([(t, uri_key(u)) in wanted for t, u in keys], pa.bool_())
                kept = view.keep_batch(batch.filter(mask), hot=False).slice(0, left)
                left -= kept.num_rows
                if kept.num_rows:
                    yield kept
                if left <= 0:
                    return

    def _scan_batches(self, cur: duckdb.DuckDBPyConnection, view: View, filters: Filters, *,
                      windows: Iterator[tuple[list[str], int, int]], max_rows: int,
                      dogs: list[Watchdog]) -> Iterator[pa.RecordBatch]:
        """Up to `max_rows` servable rows of `windows` in sort order, each window read on past hidden and
        non-matching rows."""
        left = max_rows
        for files, low, high in windows:
            position: Position | None = None
            while left > 0:
                if dogs[0].fired:
                    raise BudgetSpent
                where, params = where_clause(filters, position)
                sql = (f"SELECT {EXPORT_SELECT} FROM read_parquet(?, hive_partitioning = false) WHERE time_us >= ? "
                       f"AND time_us < ? AND {where} ORDER BY {order_by(filters.query.sort)} LIMIT ?")
                asked, got = overfetch(left), 0
                reader = cur.sql(sql, params=[files, low, high, *params, asked]).to_arrow_reader(EXPORT_BATCH_ROWS)
                for batch in _read(reader, dogs):
                    if not batch.num_rows:
                        continue
                    got += batch.num_rows
                    position = Position(batch.column("time_us")[-1].as_py(), batch.column("uri")[-1].as_py(), 0)
                    kept = view.keep_batch(matching_batch(batch, filters.needles), hot=False).slice(0, left)
                    left -= kept.num_rows
                    if kept.num_rows:
                        yield kept
                if dogs[0].fired:  # it went off just before or during this statement: the result may be cut short
                    raise BudgetSpent
                if got < asked:
                    break  # this window has no more matches
            if left <= 0:
                return



def _read(reader: pa.RecordBatchReader, dogs: list[Watchdog]) -> Iterator[pa.RecordBatch]:
    """The batches of `reader`; an interrupt by the watchdog in charge is BudgetSpent (pyarrow's reader reports
    DuckDB's interrupt as an OSError, not as duckdb.InterruptException)."""
    while True:
        try:
            batch = reader.read_next_batch()
        except StopIteration:
            return
        except OSError as exc:
            if dogs[0].fired:
                raise BudgetSpent from exc
            raise
        yield batch
