"""Serving the hot tier next to the archive: what a request may serve, the DuckDB view of the hot posts, and the
export merge.

- `View` is what one request serves from: the hot tier's snapshot and the hiding rules, and which rows they keep.
- `hot_view(cur, snapshot)` registers the hot tier's posts (an Arrow table in the `posts` schema) as the view
  `HOT_VIEW` on one DuckDB cursor for the length of a request, so the same SQL runs over it as over Parquet.
- `Merger` interleaves the hot tier's export rows (one small sorted table) with the archive's sorted record
  batches, so an export is in one sort order whatever tier a row came from.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import duckdb
import pyarrow as pa

from firehose.hiding import HiddenSet
from firehose.hot import HotSnapshot

HOT_VIEW = "hot_posts"


@dataclass(frozen=True)
class View:
    """What one request serves from: the hot tier and the hiding rules, both taken before the Parquet files are
    listed (a post flushed in between is then in both, and served once, from the hot tier)."""

    hot: HotSnapshot
    rules: HiddenSet

    def keep(self, rows: list[tuple[Any, ...]], *, hot: bool) -> list[tuple[Any, ...]]:
        """The rows (time_us, uri, ...) that may be served: not hidden, and for Parquet rows not served from the hot
        tier instead. The author is read from the URI (at://<did>/...) for these few rows: selecting `did` in the
        scan itself made a common-word search slower."""
        if not rows:
            return rows
        uris = [r[1] for r in rows]
        mask = self.rules.keep_mask(uris, [_author(u) for u in uris])
        served_hot = self.hot.uris
        return [r for r, ok in zip(rows, mask, strict=True) if ok and (hot or r[1] not in served_hot)]

    def keep_batch(self, batch: pa.RecordBatch, *, hot: bool) -> pa.RecordBatch:
        """`batch` (an export batch with uri and did) without the rows `keep` would drop."""
        uris = batch.column("uri").to_pylist()
        mask = self.rules.keep_mask(uris, batch.column("did").to_pylist())
        if not hot and self.hot.uris:
            mask = [ok and u not in self.hot.uris for u, ok in zip(uris, mask, strict=True)]
        return batch if all(mask) else batch.filter(pa.array(mask, pa.bool_()))


def _author(uri: str) -> str:
    """The DID of a post from its at:// URI (at://<did>/app.bsky.feed.post/<rkey>)."""
    return uri[5:].split("/", 1)[0]


@contextlib.contextmanager
def hot_view(cur: duckdb.DuckDBPyConnection, snapshot: HotSnapshot) -> Iterator[None]:
    """`HOT_VIEW` on `cur` shows `snapshot`'s posts until the block ends (nothing to register when it has none:
    the view is then never read)."""
    if not snapshot.post_count:
        yield
        return
    cur.register(HOT_VIEW, snapshot.posts)
    try:
        yield
    finally:
        # fails only while a result is still open after an error; the next register replaces the view anyway
        with contextlib.suppress(duckdb.Error):
            cur.unregister(HOT_VIEW)


class Merger:
    """Merges a sorted table of hot rows into sorted archive batches, and cuts the whole at `max_rows` rows."""

    def __init__(self, hot: pa.Table, sort: str, max_rows: int) -> None:
        self.left = max_rows
        self._hot = hot
        self._latest = sort == "latest"
        self._keys = (list(zip(hot.column("time_us").to_pylist(), hot.column("uri").to_pylist(), strict=True))
                      if hot.num_rows else [])
        self._taken = 0
        direction = "descending" if self._latest else "ascending"
        self._order = [("time_us", direction), ("uri", direction)]

    def add(self, batch: pa.RecordBatch) -> Iterator[pa.RecordBatch]:
        """`batch` with the hot rows that sort before its end (or level with it) merged in."""
        last = (batch.column("time_us")[-1].as_py(), batch.column("uri")[-1].as_py())
        end = self._taken
        while end < len(self._keys) and ((self._keys[end] >= last) if self._latest else (self._keys[end] <= last)):
            end += 1
        table = pa.Table.from_batches([batch])
        if end > self._taken:
            hot = self._hot.slice(self._taken, end - self._taken)
            table = pa.concat_tables([table, hot.cast(table.schema)]).sort_by(self._order)
            self._taken = end
        yield from self._emit(table)

    def rest(self) -> Iterator[pa.RecordBatch]:
        """The hot rows that sort after every archive row."""
        if self._taken < len(self._keys):
            rest = self._hot.slice(self._taken)
            self._taken = len(self._keys)
            yield from self._emit(rest)

    def _emit(self, table: pa.Table) -> Iterator[pa.RecordBatch]:
        table = table.slice(0, max(self.left, 0))
        self.left -= table.num_rows
        for batch in table.to_batches():
            if batch.num_rows:
                yield batch
