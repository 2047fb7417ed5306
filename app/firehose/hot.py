"""The hot tier: what the buffer holds that the API can serve before the flush writes it to Parquet.

The Redis stream keeps every event until a flush batch has written it and the trim has passed it (plus a recent
tail the flush keeps on purpose). `HotTier` reads the stream incrementally (XRANGE after the last entry it saw),
decodes the events with the flush's own routing (`schema.TableBatch`), and keeps, per stream entry range:

- the posts, as Arrow tables in the `posts` schema (so the query layer runs the same SQL over them as over the
  Parquet files);
- the post URIs that delete events name, and the account and identity events (for the hiding rules and handles).

Entries the flush trimmed are dropped from the tier: by then their rows are in Parquet. A post may for a moment be
in both (written, not yet trimmed); the query layer serves the hot copy and skips the Parquet one, so every post
is served exactly once. `refresh()` returns an immutable `HotSnapshot`; it reads Redis at most once per
`min_interval` seconds per process, and never raises: when Redis cannot be read the previous snapshot is served
and `snapshot.error` says why.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import orjson
import pyarrow as pa
import pyarrow.compute as pc
import redis

from firehose.buffer import EVENT_FIELD, id_tuple, split_events
from firehose.schema import TABLES, TableBatch

log = logging.getLogger(__name__)

POST_COLLECTION = "app.bsky.feed.post"
READ_ENTRIES = 200  # stream entries per XRANGE call (each holds one ingest batch)
SEGMENT_MS = 10_000  # entries are grouped by 10 s of stream time: trimming drops whole groups

StreamId = tuple[int, int]


def post_uri(did: str, rkey: str) -> str:
    """The at:// URI of the post `rkey` of `did`."""
    return f"at://{did}/{POST_COLLECTION}/{rkey}"


@dataclass(frozen=True)
class AccountEvent:
    """One account status change: `active` False means the account's posts are hidden until it is active again."""

    did: str
    time_us: int
    active: bool


@dataclass(frozen=True)
class IdentityEvent:
    """One identity event; `handle` is None when the event carried none (common on the real network)."""

    did: str
    time_us: int
    handle: str | None


@dataclass(frozen=True)
class Segment:
    """What a run of consecutive stream entries holds, by kind."""

    first: StreamId
    last: StreamId
    posts: pa.Table
    deleted_uris: frozenset[str]
    accounts: tuple[AccountEvent, ...]
    identities: tuple[IdentityEvent, ...]


EMPTY_POSTS = TABLES["posts"].schema.empty_table()


@dataclass(frozen=True)
class HotSnapshot:
    """The hot tier at one moment: immutable, safe to share between threads."""

    posts: pa.Table = field(default_factory=lambda: EMPTY_POSTS)
    deleted_uris: frozenset[str] = frozenset()
    accounts: tuple[AccountEvent, ...] = ()
    identities: tuple[IdentityEvent, ...] = ()
    uris: frozenset[str] = frozenset()
    newest_time_us: int | None = None
    oldest_time_us: int | None = None
    read_at: float = 0.0  # time.monotonic() of the last successful read
    error: str | None = None

    @property
    def post_count(self) -> int:
        """Posts in the tier."""
        return self.posts.num_rows


@dataclass
class _State:
    segments: list[Segment] = field(default_factory=list)
    after: bytes | None = None  # the last entry id read
    snapshot: HotSnapshot = field(default_factory=HotSnapshot)
    checked: float = float("-inf")


def decode_entries(entries: Iterable[tuple[bytes, bytes]]) -> Segment | None:
    """A segment holding the posts, post deletions, account and identity events of `entries` (None if empty)."""
    found = _Found()
    first: StreamId | None = None
    last: StreamId | None = None
    for entry_id, blob in entries:
        last = id_tuple(entry_id)
        first = first or last
        for raw in split_events(blob):
            try:
                event = orjson.loads(raw)
            except orjson.JSONDecodeError:
                continue  # the flush files it under `records`; nothing to serve
            if isinstance(event, dict):
                found.add(event, raw, last[0] * 1000)
    if first is None or last is None:
        return None
    posts = [t for (table, _), t in found.batch.tables().items() if table == "posts"]
    table = pa.concat_tables(posts) if posts else EMPTY_POSTS
    return Segment(first, last, table, frozenset(found.deleted), tuple(found.accounts), tuple(found.identities))


@dataclass
class _Found:
    """What `decode_entries` collects while it reads."""

    batch: TableBatch = field(default_factory=TableBatch)
    deleted: set[str] = field(default_factory=set)
    accounts: list[AccountEvent] = field(default_factory=list)
    identities: list[IdentityEvent] = field(default_factory=list)

    def add(self, event: dict, raw: bytes, fallback_us: int) -> None:
        """File one decoded event of interest to the hot tier; ignore the rest (likes, follows, ...)."""
        kind = event.get("kind")
        did = event.get("did")
        time_us = event.get("time_us")
        if not isinstance(did, str) or not isinstance(time_us, int):
            return
        if kind == "commit":
            commit = event.get("commit")
            if not isinstance(commit, dict) or commit.get("collection") != POST_COLLECTION:
                return
            operation = commit.get("operation")
            if operation == "create":
                self.batch.add(event, raw, fallback_us)
            elif operation == "delete" and isinstance(commit.get("rkey"), str):
                self.deleted.add(post_uri(did, commit["rkey"]))
        elif kind == "account":
            body = event.get("account")
            if isinstance(body, dict) and isinstance(body.get("active"), bool):
                self.accounts.append(AccountEvent(did, time_us, body["active"]))
        elif kind == "identity":
            body = event.get("identity")
            handle = body.get("handle") if isinstance(body, dict) else None
            self.identities.append(IdentityEvent(did, time_us, handle.lower() if isinstance(handle, str) else None))


def merge_segments(segments: list[Segment]) -> Segment:
    """One segment holding what consecutive `segments` hold (first post of a URI wins)."""
    posts = _unique_posts([s.posts for s in segments])
    return Segment(
        segments[0].first, segments[-1].last, posts,
        frozenset().union(*(s.deleted_uris for s in segments)),
        tuple(a for s in segments for a in s.accounts),
        tuple(i for s in segments for i in s.identities),
    )


def _unique_posts(tables: list[pa.Table]) -> pa.Table:
    """The rows of `tables` in order, keeping the first row of each URI (a replay delivers a post twice)."""
    tables = [t for t in tables if t.num_rows]
    if not tables:
        return EMPTY_POSTS
    table = pa.concat_tables(tables)
    seen: set[str] = set()
    keep = []
    for i, uri in enumerate(table.column("uri").to_pylist()):
        if uri not in seen:
            seen.add(uri)
            keep.append(i)
    return table if len(keep) == table.num_rows else table.take(keep)


def snapshot_of(segments: list[Segment], read_at: float) -> HotSnapshot:
    """The immutable view of `segments`."""
    if not segments:
        return HotSnapshot(read_at=read_at)
    merged = merge_segments(segments)
    posts = merged.posts
    oldest = newest = None
    if posts.num_rows:
        bounds = pc.min_max(posts.column("time_us"))
        oldest, newest = bounds["min"].as_py(), bounds["max"].as_py()
    return HotSnapshot(posts, merged.deleted_uris, merged.accounts, merged.identities,
                       frozenset(posts.column("uri").to_pylist()), newest_time_us=newest, oldest_time_us=oldest,
                       read_at=read_at)


class HotTier:
    """The hot tier of one API worker: refreshed on demand, at most once per `min_interval` seconds."""

    def __init__(self, client_factory: Callable[[], redis.Redis], stream_key: str, *, min_interval: float = 1.0,
                 max_posts: int = 1_000_000, clock: Callable[[], float] = time.monotonic) -> None:
        self._client_factory = client_factory
        self._client: redis.Redis | None = None
        self._stream = stream_key
        self._min_interval = min_interval
        self._max_posts = max_posts
        self._clock = clock
        self._lock = threading.Lock()
        self._state = _State()

    def refresh(self) -> HotSnapshot:
        """The current snapshot, reading what the stream gained (and lost to trimming) since the last read."""
        with self._lock:
            state = self._state
            now = self._clock()
            if now - state.checked < self._min_interval:
                return state.snapshot
            state.checked = now
            try:
                changed = self._read(state)
            except (redis.RedisError, OSError) as exc:
                log.warning("hot tier: cannot read the buffer (%s); serving what was read before", exc)
                self._client = None
                state.snapshot = dataclasses.replace(state.snapshot, error=f"the buffer cannot be read: {exc}")
                return state.snapshot
            if changed or state.snapshot.error:
                state.snapshot = snapshot_of(state.segments, now)
            else:
                state.snapshot = dataclasses.replace(state.snapshot, read_at=now, error=None)
            return state.snapshot

    def _redis(self) -> redis.Redis:
        if self._client is None:
            self._client = self._client_factory()
        return self._client

    def _read(self, state: _State) -> bool:
        """Drop trimmed segments, append new entries; True when anything changed."""
        client = self._redis()
        oldest = client.xrange(self._stream, count=1)
        changed = False
        if not oldest:  # empty (or deleted) stream: nothing is hot
            changed = bool(state.segments)
            state.segments.clear()
            return changed
        first = id_tuple(oldest[0][0])
        kept = [s for s in state.segments if s.last >= first]
        if len(kept) != len(state.segments):
            state.segments = kept
            changed = True
        if state.after is not None and id_tuple(state.after) < first:
            state.after = None  # everything we had was trimmed
        start = b"(" + state.after if state.after is not None else b"-"
        entries: list[tuple[bytes, bytes]] = []
        while True:
            rows = client.xrange(self._stream, min=start, max="+", count=READ_ENTRIES)
            if not rows:
                break
            entries += [(eid, fields.get(EVENT_FIELD, b"")) for eid, fields in rows]
            start = b"(" + rows[-1][0]
            if len(rows) < READ_ENTRIES:
                break
        if entries:
            state.after = entries[-1][0]
            for group in _by_bucket(entries):
                segment = decode_entries(group)
                if segment is None:
                    continue
                last = state.segments[-1] if state.segments else None
                if last is not None and last.last[0] // SEGMENT_MS == segment.first[0] // SEGMENT_MS:
                    state.segments[-1] = merge_segments([last, segment])
                else:
                    state.segments.append(segment)
                changed = True
        self._cap(state)
        return changed

    def _cap(self, state: _State) -> None:
        """Strip the posts of the oldest segments while the tier holds more than `max_posts` posts (a flush that is
        down). Their deletions, account and identity events stay until the stream is trimmed past them, which the
        flush does only once they are in Parquet: a post deleted during an outage stays hidden."""
        total = sum(s.posts.num_rows for s in state.segments)
        for i, segment in enumerate(state.segments[:-1]):
            if total <= self._max_posts:
                break
            if not segment.posts.num_rows:
                continue
            total -= segment.posts.num_rows
            state.segments[i] = dataclasses.replace(segment, posts=EMPTY_POSTS)
            log.warning("hot tier over %d posts (is the flush running?): dropped the posts up to %d-%d, kept their "
                        "deletions and account events", self._max_posts, *segment.last)


def _by_bucket(entries: list[tuple[bytes, bytes]]) -> list[list[tuple[bytes, bytes]]]:
    """`entries` cut into runs that fall in the same SEGMENT_MS bucket of stream time."""
    groups: list[list[tuple[bytes, bytes]]] = []
    bucket = None
    for entry in entries:
        b = id_tuple(entry[0])[0] // SEGMENT_MS
        if b != bucket:
            groups.append([])
            bucket = b
        groups[-1].append(entry)
    return groups
