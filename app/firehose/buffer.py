"""The durable buffer between ingest and flush: a Redis Stream, its resume cursor and its dead-letter stream.

Layout in Redis (key names from `Settings`):
- `stream_key`: one entry per ingest batch: field `n` = how many events, field `e` = their JSON exactly as
  received (decompressed), joined by newlines (compact JSON has none; the ingester re-serialises the rare
  event that does). One entry per batch instead of per event makes both ends several times cheaper.
- `cursor_key`: a hash `{time_us, updated_us, events_in, events_out, batch, batch_id, flushed_id}`: the resume
  cursor, written atomically with the events it covers, event counters (`events_in - events_out` = events not yet
  flushed), the token and entry id of the last appended batch (so a retried append is not applied twice), and
  the id of the newest entry a committed flush batch holds (`flushed_id`: every entry up to it is in Parquet;
  the API's hot tier serves only what comes after it).
- `deadletter_key`: frames that are not valid events, fields `reason`, `frame`, `at_us`.
- consumer group `flush_group` on `stream_key`, used by the flush; `<stream_key>:flush` holds the flush's
  in-flight batch range so a crashed batch is redone with exactly the same entries.

The ingester uses `IngestBuffer` (redis.asyncio: a slow Redis never blocks its event loop); the flush, tests and
tools use `Buffer` (redis-py). Both run the same append script on the same layout (`Keys`).

Entries are never trimmed with MAXLEN (that would drop unacknowledged events): the flush trims with
`XTRIM MINID` after its files are renamed into place, keeping a recent tail for the ingester's replay dedupe.
"""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import redis
import redis.asyncio

from firehose.config import Settings

EVENT_FIELD = b"e"
COUNT_FIELD = b"n"
FLUSHED_FIELD = "flushed_id"  # in the cursor hash: the newest entry of the last committed flush batch
SEPARATOR = b"\n"

# KEYS: stream, cursor hash. ARGV: cursor time_us, now_us, event count, joined events, batch token.
# Returns {entry id, events not yet flushed}. A script runs atomically, like MULTI/EXEC. A batch whose token is
# the last one appended is not appended again (a retry after a timeout whose first try did reach Redis).
APPEND_SCRIPT = """
if redis.call('HGET', KEYS[2], 'batch') == ARGV[5] then
  local done = redis.call('HMGET', KEYS[2], 'batch_id', 'events_in', 'events_out')
  return {done[1], tonumber(done[2] or '0') - tonumber(done[3] or '0')}
end
local id = redis.call('XADD', KEYS[1], '*', 'n', ARGV[3], 'e', ARGV[4])
redis.call('HSET', KEYS[2], 'time_us', ARGV[1], 'updated_us', ARGV[2], 'batch', ARGV[5], 'batch_id', id)
local total = redis.call('HINCRBY', KEYS[2], 'events_in', ARGV[3])
local out = tonumber(redis.call('HGET', KEYS[2], 'events_out') or '0')
return {id, total - out}
"""

# redis-py client options of both buffers: a stalled Redis raises TimeoutError (a RedisError) after 30 s
CLIENT_OPTIONS: dict[str, Any] = {"socket_timeout": 30, "socket_connect_timeout": 5, "health_check_interval": 30}

Entry = tuple[bytes, bytes]  # (stream entry id, newline-joined event JSON of one ingest batch)


def split_events(blob: bytes) -> list[bytes]:
    """The events of one stream entry."""
    return blob.split(SEPARATOR) if blob else []


def events_containing(blob: bytes, markers: Sequence[bytes]) -> list[bytes]:
    """The events of one stream entry that contain any of `markers`, in order. The entry is searched for the
    markers (bytes.find, in C), so the events without them cost no Python work at all."""
    starts: set[int] = set()
    for marker in markers:
        at = blob.find(marker)
        while at != -1:
            starts.add(blob.rfind(SEPARATOR, 0, at) + 1)
            end = blob.find(SEPARATOR, at)
            at = blob.find(marker, end) if end != -1 else -1
    found = []
    for start in sorted(starts):
        end = blob.find(SEPARATOR, start)
        found.append(blob[start:] if end == -1 else blob[start:end])
    return found


def join_events(events: Sequence[bytes]) -> bytes:
    """One stream entry's payload; every event must be free of newlines (see `Buffer.append`)."""
    return SEPARATOR.join(events)


class Backpressure(Exception):
    """Redis refused the write (out of memory) or the stream is past its high-water mark: pause reading."""


@dataclass(frozen=True)
class Keys:
    """Where the buffer lives in Redis (from `Settings`)."""

    stream: str
    cursor: str
    deadletter: str
    deadletter_maxlen: int
    group: str

    @classmethod
    def from_settings(cls, settings: Settings) -> Keys:
        return cls(settings.stream_key, settings.cursor_key, settings.deadletter_key, settings.deadletter_maxlen,
                   settings.flush_group)

    @property
    def inflight(self) -> str:
        """The hash holding the flush's in-flight batch range."""
        return f"{self.stream}:flush"

    def append_call(self, events: Sequence[bytes], cursor_time_us: int, token: str | None) -> dict[str, list[Any]]:
        """Keyword arguments of the append script for one batch (`token` None: a fresh one)."""
        return {"keys": [self.stream, self.cursor],
                "args": [cursor_time_us, time.time_ns() // 1000, len(events), join_events(events),
                         token or new_batch_token()]}

    def xadd_dead_letter(self, reason: str, frame: bytes, keep_bytes: int) -> dict[str, Any]:
        """Keyword arguments of XADD for one dead letter (the frame cut to `keep_bytes`)."""
        return {"name": self.deadletter, "maxlen": self.deadletter_maxlen, "approximate": True,
                "fields": {"reason": reason, "frame": frame[:keep_bytes], "size": len(frame),
                           "at_us": time.time_ns() // 1000}}


def new_batch_token() -> str:
    """A token naming one batch across the retries of its append."""
    return uuid.uuid4().hex


@contextlib.contextmanager
def oom_is_backpressure() -> Iterator[None]:
    """Turn Redis's refusal to write for lack of memory into Backpressure (nothing was written)."""
    try:
        yield
    except redis.ResponseError as exc:
        if _is_oom(exc):
            raise Backpressure(str(exc)) from exc
        raise


def flushed_through(client: redis.Redis, keys: Keys) -> tuple[int, int] | None:
    """The id of the newest entry that a committed flush batch wrote to Parquet (every older entry is there too), or
    None before the first commit."""
    raw = client.hget(keys.cursor, FLUSHED_FIELD)
    return id_tuple(raw) if isinstance(raw, bytes) else None


def unflushed_from(counts: Sequence[bytes | None]) -> int:
    """Events not yet flushed, from HMGET cursor events_in events_out."""
    return int(counts[0] or 0) - int(counts[1] or 0)


def entries_from(rows: Sequence[tuple[bytes, dict[bytes, bytes]]]) -> list[Entry]:
    """Stream rows as (id, events blob) entries."""
    return [(eid, fields.get(EVENT_FIELD, b"")) for eid, fields in rows if fields is not None]


class IngestBuffer:
    """The ingester's side of the buffer on redis.asyncio: a slow or stopped Redis suspends only the awaiting
    task, never the event loop (websocket pings and the batch ticker keep running)."""

    def __init__(self, client: redis.asyncio.Redis, settings: Settings) -> None:
        self.client = client
        self.keys = Keys.from_settings(settings)
        self._append_script = client.register_script(APPEND_SCRIPT)

    @classmethod
    def connect(cls, settings: Settings) -> IngestBuffer:
        """A buffer on a new asyncio client for `settings.redis_url` (connects on first use)."""
        return cls(redis.asyncio.Redis.from_url(settings.redis_url, **CLIENT_OPTIONS), settings)

    async def close(self) -> None:
        """Close the client's connections."""
        await self.client.aclose()

    async def append(self, events: Sequence[bytes], cursor_time_us: int, token: str) -> tuple[bytes, int]:
        """`Buffer.append` for the event loop; retries of one batch must pass the same `token`."""
        with oom_is_backpressure():
            entry_id, unflushed = await self._append_script(**self.keys.append_call(events, cursor_time_us, token))
        return entry_id, int(unflushed)

    async def unflushed_events(self) -> int:
        """Events appended but not yet written to Parquet by a committed flush batch."""
        return unflushed_from(await self.client.hmget(self.keys.cursor, "events_in", "events_out"))

    async def cursor(self) -> int | None:
        """The stored resume cursor (the newest `time_us` stored), or None before the first event."""
        raw = await self.client.hget(self.keys.cursor, "time_us")
        return int(raw) if raw is not None else None

    async def tail(self, batch: int = 50) -> AsyncIterator[list[Entry]]:
        """The stream's entries newest first, in batches (for the replay dedupe)."""
        upper: bytes | str = "+"
        while rows := await self.client.xrevrange(self.keys.stream, max=upper, min="-", count=batch):
            yield entries_from(rows)
            upper = b"(" + rows[-1][0]

    async def dead_letter(self, reason: str, frame: bytes, keep_bytes: int = 65_536) -> None:
        """Record a frame that is not a valid event, with the reason."""
        await self.client.xadd(**self.keys.xadd_dead_letter(reason, frame, keep_bytes))


class Buffer:
    """Typed access to the Redis structures of the buffer (redis-py). Holds no state besides the client."""

    def __init__(self, client: redis.Redis, settings: Settings) -> None:
        self.client = client
        self.keys = Keys.from_settings(settings)
        self.stream = self.keys.stream
        self.cursor_key = self.keys.cursor
        self.group = self.keys.group
        self.inflight_key = self.keys.inflight
        self._append_script = client.register_script(APPEND_SCRIPT)

    @classmethod
    def connect(cls, settings: Settings) -> Buffer:
        """A buffer on a new client for `settings.redis_url`."""
        return cls(redis.Redis.from_url(settings.redis_url, **CLIENT_OPTIONS), settings)

    # -- ingest side (the ingester itself uses IngestBuffer; tests and tools fill the stream with this) --------

    def append(self, events: Sequence[bytes], cursor_time_us: int, token: str | None = None) -> tuple[bytes, int]:
        """Append `events` as one entry and move the cursor, atomically; return (entry id, unflushed events).

        Events must not contain newlines. Raises Backpressure when Redis refuses the write for lack of memory;
        nothing is then written. A retry with the `token` of the last appended batch appends nothing again.
        """
        with oom_is_backpressure():
            entry_id, unflushed = self._append_script(**self.keys.append_call(events, cursor_time_us, token))
        return entry_id, int(unflushed)

    def unflushed_events(self) -> int:
        """Events appended but not yet written to Parquet by a committed flush batch."""
        return unflushed_from(self.client.hmget(self.cursor_key, "events_in", "events_out"))

    def length(self) -> int:
        """Entries (ingest batches) in the stream; flushed entries disappear when trimmed."""
        return int(self.client.xlen(self.stream))

    # -- flush side --------------------------------------------------------------------------------------------

    def ensure_group(self) -> None:
        """Create the flush's consumer group (from the stream's start) if it does not exist."""
        try:
            self.client.xgroup_create(self.stream, self.group, id="0", mkstream=True)
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    def read_group(self, consumer: str, count: int, pending_after: bytes | None = None) -> list[Entry]:
        """Read up to `count` entries: new ones, or (with `pending_after`, e.g. b"0") this consumer's
        unacknowledged ones with ids after it."""
        start = pending_after if pending_after is not None else ">"
        reply = self.client.xreadgroup(self.group, consumer, {self.stream: start}, count=count)
        if not reply:
            return []
        _, rows = reply[0]
        return entries_from(rows)

    def range(self, first: bytes, last: bytes) -> list[Entry]:
        """Entries with ids in [first, last], in order."""
        return entries_from(self.client.xrange(self.stream, min=first, max=last))

    def claim_stale(self, consumer: str, count: int) -> int:
        """Move entries that other (gone) consumers of the group left pending to `consumer`; return how many."""
        others = [c for c in self.client.xinfo_consumers(self.stream, self.group)
                  if c["name"] not in (consumer, consumer.encode()) and c["pending"]]
        moved = 0
        for other in others:
            start: bytes | str = "0-0"
            while True:
                reply = self.client.xautoclaim(self.stream, self.group, consumer, 0, start, count=count)
                start, claimed = reply[0], reply[1]
                moved += len(claimed)
                if start in (b"0-0", "0-0") or not claimed:
                    break
            self.client.xgroup_delconsumer(self.stream, self.group, other["name"])
        return moved

    def inflight(self) -> tuple[bytes, bytes] | None:
        """The range of the batch a flush started but did not finish, if any."""
        raw = self.client.hgetall(self.inflight_key)
        if not raw:
            return None
        return raw[b"first"], raw[b"last"]

    def begin_batch(self, first: bytes, last: bytes) -> None:
        """Record the batch range before any file of it is written."""
        self.client.hset(self.inflight_key, mapping={"first": first, "last": last})

    def commit_batch(self, ids: Sequence[bytes], events: int, trim_below: bytes | None) -> None:
        """Acknowledge a written batch of `events` events, trim what is safe, clear the in-flight record; atomic."""
        pipe = self.client.pipeline(transaction=True)
        pipe.hincrby(self.cursor_key, "events_out", events)
        if ids:  # batches are consecutive and committed in order (a crashed one is redone first)
            pipe.hset(self.cursor_key, FLUSHED_FIELD, ids[-1])
        for start in range(0, len(ids), 10_000):
            pipe.xack(self.stream, self.group, *ids[start:start + 10_000])
        if trim_below is not None:
            pipe.xtrim(self.stream, minid=trim_below, approximate=False)
        pipe.delete(self.inflight_key)
        pipe.execute()

    def newest_id(self) -> bytes | None:
        """The id of the newest entry in the stream, or None when it is empty."""
        rows = self.client.xrevrange(self.stream, count=1)
        return rows[0][0] if rows else None

def _is_oom(exc: Exception) -> bool:
    return str(exc).startswith("OOM") or "OOM command not allowed" in str(exc)


def id_ms(entry_id: bytes) -> int:
    """The millisecond part of a stream entry id."""
    return int(entry_id.split(b"-", 1)[0])


def id_tuple(entry_id: bytes) -> tuple[int, int]:
    """A stream entry id as a sortable (ms, seq) pair."""
    ms, _, seq = entry_id.partition(b"-")
    return int(ms), int(seq or 0)
