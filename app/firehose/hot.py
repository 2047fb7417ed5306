"""The hot tier: what the buffer holds that the API can serve before the flush writes it to Parquet.

The Redis stream keeps every event until a flush batch has written it and the trim has passed it (plus a recent
tail the flush keeps on purpose, for the ingester's replay dedupe). The hot tier serves only the entries after
the last committed flush batch (`buffer.flushed_through`): everything up to it is in Parquet, with its deletions
and account events, so a worker neither reads nor holds the retained tail twice. `HotTier` reads the stream
incrementally (XRANGE after the last entry it saw, from the flushed cut for a fresh worker), decodes the events
with the flush's own routing (`schema.TableBatch`), and keeps, per 10 s of stream time:

- the posts, as Arrow tables in the `posts` schema (so the query layer runs the same SQL over them as over the
  Parquet files), each URI once (a replay delivers a post twice);
- the post URIs that delete events name, and the account and identity events (for the hiding rules and handles).

Only the flush batch in flight (written, not yet committed) and the rest of the 10 s segment a committed batch
ended in can put a post in both tiers for a moment; the query layer serves the hot copy and skips the Parquet
one, so every post is served exactly once. Events are filtered on
their bytes before they are parsed (`buffer.events_containing`): likes, follows and reposts (most of the
firehose) are never split out of their entry, let alone parsed. `refresh()` returns an immutable `HotSnapshot`; it
reads Redis at most once per `min_interval` seconds per process and for at most `read_budget` seconds (a backlog,
a catch-up after an outage or a fresh worker's first read, is read over several refreshes, `snapshot.behind`
saying so meanwhile, instead of holding a request past its time budget), and it never raises: when Redis cannot
be read the previous snapshot is served and `snapshot.error` says why.
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

from firehose.buffer import Keys, entries_from, events_containing, flushed_through, id_tuple
from firehose.schema import POST_COLLECTION, TABLES, TableBatch, post_uri

log = logging.getLogger(__name__)

READ_ENTRIES = 16  # stream entries per XRANGE call (each holds one ingest batch: up to FIREHOSE_INGEST_BATCH events)
SEGMENT_MS = 10_000  # entries are grouped by 10 s of stream time: trimming drops whole groups

StreamId = tuple[int, int]
# the bytes one of the events the tier keeps must contain (compact or not, Jetstream writes these JSON strings)
_WANTED = (b'"app.bsky.feed.post"', b'"account"', b'"identity"')


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
    posts: pa.Table  # each URI once, and none that an older segment of the tier holds
    deleted_uris: frozenset[str]
    accounts: tuple[AccountEvent, ...]
    identities: tuple[IdentityEvent, ...]

    @property
    def uris(self) -> list[str]:
        """The URIs of the segment's posts."""
        return self.posts.column("uri").to_pylist()


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
    flushed_through: StreamId | None = None  # the buffer's flushed cut when read: the tier holds what is after it
    behind: bool = False  # entries after what the tier holds were left for later reads (a backlog)

    @property
    def post_count(self) -> int:
        """Posts in the tier."""
        return self.posts.num_rows


@dataclass
class _State:
    segments: list[Segment] = field(default_factory=list)
    uris: set[str] = field(default_factory=set)  # the URIs of every segment's posts
    after: bytes | None = None  # the last entry id read
    cut: StreamId | None = None  # the flushed cut of the last read
    behind: bool = False  # the last read stopped at its time budget with entries left to read
    snapshot: HotSnapshot = field(default_factory=HotSnapshot)
    checked: float = float("-inf")

    def drop(self, keep: Callable[[Segment], bool]) -> bool:
        """Drop the segments `keep` refuses (and their URIs); True when any was dropped."""
        kept = [s for s in self.segments if keep(s)]
        if len(kept) == len(self.segments):
            return False
        for segment in self.segments:
            if not keep(segment):
                self.uris.difference_update(segment.uris)
        self.segments = kept
        return True

    def add(self, segment: Segment) -> None:
        """Append `segment` without the posts an older segment holds (merged into the newest segment when both fall
        in the same SEGMENT_MS of stream time)."""
        segment = _without(segment, self.uris)
        self.uris.update(segment.uris)
        last = self.segments[-1] if self.segments else None
        if last is not None and last.last[0] // SEGMENT_MS == segment.first[0] // SEGMENT_MS:
            self.segments[-1] = merge_segments([last, segment])
        else:
            self.segments.append(segment)


def decode_entries(entries: Iterable[tuple[bytes, bytes]]) -> Segment | None:
    """A segment holding the posts, post deletions, account and identity events of `entries` (None if empty)."""
    found = _Found()
    first: StreamId | None = None
    last: StreamId | None = None
    for entry_id, blob in entries:
        last = id_tuple(entry_id)
        first = first or last
        for raw in events_containing(blob, _WANTED):  # likes, follows, reposts, ...: never even split out
            try:
                event = orjson.loads(raw)
            except orjson.JSONDecodeError:
                continue  # the flush files it under `records`; nothing to serve
            if isinstance(event, dict):
                found.add(event, raw, last[0] * 1000)
    if first is None or last is None:
        return None
    posts = [t for (table, _), t in found.batch.tables().items() if table == "posts"]
    table = _unique_posts(posts)
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
    """One segment holding what consecutive `segments` (no URI in two of them) hold."""
    tables = [s.posts for s in segments if s.posts.num_rows]
    posts = pa.concat_tables(tables) if tables else EMPTY_POSTS
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


def _without(segment: Segment, uris: set[str]) -> Segment:
    """`segment` without the posts whose URI is in `uris`."""
    if not uris or not segment.posts.num_rows:
        return segment
    mask = [u not in uris for u in segment.uris]
    if all(mask):
        return segment
    return dataclasses.replace(segment, posts=segment.posts.filter(pa.array(mask, pa.bool_())))


def snapshot_of(state: _State, read_at: float) -> HotSnapshot:
    """The immutable view of what `state` holds."""
    if not state.segments:
        return HotSnapshot(read_at=read_at, flushed_through=state.cut, behind=state.behind)
    merged = merge_segments(state.segments)
    posts = merged.posts
    oldest = newest = None
    if posts.num_rows:
        bounds = pc.min_max(posts.column("time_us"))
        oldest, newest = bounds["min"].as_py(), bounds["max"].as_py()
    return HotSnapshot(posts, merged.deleted_uris, merged.accounts, merged.identities, frozenset(state.uris),
                       newest_time_us=newest, oldest_time_us=oldest, read_at=read_at, flushed_through=state.cut,
                       behind=state.behind)


class HotTier:
    """The hot tier of one API worker: refreshed on demand, at most once per `min_interval` seconds."""

    def __init__(self, client_factory: Callable[[], redis.Redis], keys: Keys, *, min_interval: float = 1.0,
                 max_posts: int = 1_000_000, read_budget: float = 0.25,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self._client_factory = client_factory
        self._client: redis.Redis | None = None
        self._keys = keys
        self._stream = keys.stream
        self._min_interval = min_interval
        self._max_posts = max_posts
        self._read_budget = read_budget
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
                state.snapshot = snapshot_of(state, now)
            else:
                state.snapshot = dataclasses.replace(state.snapshot, read_at=now, error=None, behind=state.behind)
            return state.snapshot

    def _redis(self) -> redis.Redis:
        if self._client is None:
            self._client = self._client_factory()
        return self._client

    def _read(self, state: _State) -> bool:
        """Drop what the flush committed or trimmed, append new entries; True when anything changed."""
        client = self._redis()
        cut = flushed_through(client, self._keys)  # read before the stream: what it names is in Parquet by now
        oldest = client.xrange(self._stream, count=1)
        changed = cut != state.cut
        state.cut = cut
        if not oldest:  # empty (or deleted) stream: nothing is hot
            changed |= bool(state.segments)
            state.segments.clear()
            state.uris.clear()
            state.after = None
            return changed
        floor = id_tuple(oldest[0][0])
        if cut is not None:
            floor = max(floor, (cut[0], cut[1] + 1))
        # a segment reaching past the cut stays whole: its flushed posts are the in-flight overlap `View` skips
        changed |= state.drop(lambda s: s.last >= floor)
        if state.after is not None and id_tuple(state.after) < floor:
            state.after = None  # everything read so far is flushed or trimmed
        start = b"(" + state.after if state.after is not None else f"{floor[0]}-{floor[1]}".encode()
        until = self._clock() + self._read_budget
        state.behind = False
        while True:
            rows = client.xrange(self._stream, min=start, max="+", count=READ_ENTRIES)
            if not rows:
                break
            entries = entries_from(rows)
            state.after = entries[-1][0]
            start = b"(" + state.after
            for group in _by_bucket(entries):
                segment = decode_entries(group)
                if segment is not None:
                    state.add(segment)
                    changed = True
            if len(rows) < READ_ENTRIES:
                break
            if self._clock() > until:  # a backlog (a catch-up, a fresh worker): the rest on the next refreshes
                state.behind = True
                break
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
            state.uris.difference_update(segment.uris)
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
