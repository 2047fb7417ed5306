"""Ingest: Jetstream websocket -> Redis Stream.

One asyncio task reads frames from a Jetstream `/subscribe` connection, checks each is an event, and appends
events in batches to the buffer stream together with the resume cursor (one Lua script call per batch: one
stream entry, atomically with the cursor). Every Redis call is awaited on redis.asyncio and every retry waits with
`asyncio.sleep`, so a slow or stopped Redis never blocks the event loop: websocket pings are answered and the
batch ticker runs while a write waits. Guarantees:

- never exits on network errors: reconnects with exponential backoff and full jitter, rotating instances;
- resumes from the stored cursor minus `rewind_seconds`; replayed events that are already in the stream are
  recognised (by `schema.event_key`) against the stream's recent tail and not appended twice;
- never drops on overload: when Redis refuses writes or the stream passes `high_water`, it stops reading
  (the pending batch is kept and retried under the same batch token, so a retry whose first try did reach
  Redis appends nothing twice) and later resumes from the cursor;
- frames that are not events (bad compression, invalid JSON, unknown kind, oversized) go to the dead-letter
  stream with a reason.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import logging
import random
import signal
import time
import urllib.parse
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson
import redis
import websockets
import zstandard
from prometheus_client import CollectorRegistry, Gauge, start_http_server
from prometheus_client import Counter as PromCounter
from websockets.asyncio.client import connect

from firehose.buffer import Backpressure, IngestBuffer, new_batch_token, split_events
from firehose.config import ZSTD_DICTIONARY_PATH, Settings
from firehose.faults import Failpoint, Failpoints
from firehose.schema import COLLECTION_TABLES, KINDS, event_key

log = logging.getLogger("firehose.ingest")

REPLAY_SLACK_US = 10_000_000  # events arrive up to this much out of time order (Jetstream: tens of ms)
KNOWN_COLLECTIONS = frozenset(COLLECTION_TABLES)


class BadFrame(ValueError):
    """A frame that is not a Jetstream event; `reason` is the dead-letter reason."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass
class Event:
    """A checked event: its bytes as received, decoded fields needed for routing, cursor and metrics."""

    raw: bytes
    time_us: int
    kind: str
    collection: str
    operation: str
    key: tuple[Any, ...]


class FrameDecoder:
    """Turns websocket messages into checked events (decompressing with the Jetstream v1 dictionary)."""

    def __init__(self, compressed: bool, max_frame_bytes: int) -> None:
        self.compressed = compressed
        self.max_frame_bytes = max_frame_bytes
        dictionary = zstandard.ZstdCompressionDict(ZSTD_DICTIONARY_PATH.read_bytes())
        self.dctx = zstandard.ZstdDecompressor(dict_data=dictionary)

    def decode(self, message: bytes | str) -> Event:
        """Decode one message into an Event, or raise BadFrame."""
        raw = self._payload(message)
        if len(raw) > self.max_frame_bytes:
            raise BadFrame("oversized")
        try:
            event = orjson.loads(raw)
        except orjson.JSONDecodeError:
            raise BadFrame("invalid_json") from None
        if b"\n" in raw:  # valid JSON with line breaks between tokens: the buffer separates events by newline
            raw = orjson.dumps(event)
        return check_event(raw, event)

    def _payload(self, message: bytes | str) -> bytes:
        if isinstance(message, str):
            return message.encode()
        if not self.compressed:
            return message
        try:
            if zstandard.frame_content_size(message) > self.max_frame_bytes:
                raise BadFrame("oversized")
            return self.dctx.decompress(message, max_output_size=self.max_frame_bytes + 1)
        except zstandard.ZstdError:
            raise BadFrame("bad_compression") from None


def check_event(raw: bytes, event: Any) -> Event:
    """Check the envelope of a decoded event (the record's shape is the flush's business)."""
    if not isinstance(event, dict):
        raise BadFrame("not_an_object")
    kind = event.get("kind")
    if kind not in KINDS:
        raise BadFrame("unknown_kind")
    time_us = event.get("time_us")
    if not isinstance(time_us, int) or isinstance(time_us, bool) or time_us <= 0:
        raise BadFrame("bad_time_us")
    if not isinstance(event.get("did"), str):
        raise BadFrame("bad_did")
    collection = operation = ""
    if kind == "commit":
        commit = event.get("commit")
        if not isinstance(commit, dict) or not isinstance(commit.get("collection"), str) \
                or commit.get("operation") not in ("create", "update", "delete"):
            raise BadFrame("bad_commit")
        collection, operation = commit["collection"], commit["operation"]
    return Event(raw, time_us, kind, collection, operation, event_key(event))


def subscribe_url(base: str, collections: Sequence[str], cursor: int | None, compress: bool) -> str:
    """The /subscribe URL with Jetstream's query parameters."""
    params: list[tuple[str, str]] = [("wantedCollections", c) for c in collections]
    if cursor is not None:
        params.append(("cursor", str(cursor)))
    if compress:
        params.append(("compress", "true"))
    if not params:
        return base
    separator = "&" if urllib.parse.urlsplit(base).query else "?"
    return base + separator + urllib.parse.urlencode(params)


def backoff_delay(attempt: int, cap: float, base: float = 0.5, rng: random.Random | None = None) -> float:
    """Exponential backoff with full jitter: uniform in [0, min(cap, base * 2**attempt)]."""
    return (rng or random).uniform(0, min(cap, base * (2 ** min(attempt, 30))))


class IngestMetrics:
    """The ingester's Prometheus metrics, in a registry of its own."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.events = PromCounter("firehose_ingest_events_total", "Events appended to the buffer.",
                                  ["kind", "collection", "operation"], registry=registry)
        self.bytes = PromCounter("firehose_ingest_bytes_total", "JSON bytes of events appended.", registry=registry)
        self.wire_bytes = PromCounter("firehose_ingest_wire_bytes_total", "Bytes received on the websocket.",
                                      registry=registry)
        self.duplicates = PromCounter("firehose_ingest_duplicates_total",
                                      "Replayed events skipped because they were already buffered.",
                                      registry=registry)
        self.dead_letters = PromCounter("firehose_ingest_dead_letters_total", "Frames sent to the dead-letter stream.",
                                        ["reason"], registry=registry)
        self.reconnects = PromCounter("firehose_ingest_reconnects_total", "Websocket (re)connections attempted.",
                                      ["url"], registry=registry)
        self.errors = PromCounter("firehose_ingest_errors_total", "Connection or Redis errors.", ["stage"],
                                  registry=registry)
        self.backpressure = PromCounter("firehose_ingest_backpressure_seconds_total",
                                        "Seconds spent paused because Redis refused writes or was past high water.",
                                        registry=registry)
        self.lag = Gauge("firehose_ingest_lag_seconds", "Wall clock minus the newest buffered event's time_us.",
                         registry=registry)
        self.cursor = Gauge("firehose_ingest_cursor_time_us", "The stored resume cursor.", registry=registry)
        self.unflushed = Gauge("firehose_ingest_unflushed_events",
                               "Events buffered in Redis and not yet written to Parquet.", registry=registry)
        self.connected = Gauge("firehose_ingest_connected", "1 while a Jetstream connection is open.",
                               registry=registry)

    def count_batch(self, events: Sequence[Event]) -> None:
        """Count a written batch by kind/collection/operation (collections outside the bsky tables: `other`)."""
        counts = Counter((e.kind, e.collection if e.collection in KNOWN_COLLECTIONS or not e.collection
                          else "other", e.operation) for e in events)
        for (kind, collection, operation), n in counts.items():
            self.events.labels(kind, collection, operation).inc(n)
        self.bytes.inc(sum(len(e.raw) for e in events))


@dataclass
class ReplayFilter:
    """Keys of buffered events near the cursor, so a rewound replay does not append them twice."""

    upto_us: int = 0
    keys: set[tuple[Any, ...]] = field(default_factory=set)

    @classmethod
    async def from_buffer(cls, buffer: IngestBuffer, cursor: int | None, since_us: int) -> ReplayFilter:
        """Collect keys of the stream's tail entries with time_us >= since_us - slack."""
        if cursor is None:
            return cls()
        keys: set[tuple[Any, ...]] = set()
        floor = since_us - REPLAY_SLACK_US
        async for batch in buffer.tail():
            newer = 0
            for _, blob in batch:
                for raw in split_events(blob):
                    try:
                        event = orjson.loads(raw)
                    except orjson.JSONDecodeError:
                        continue
                    t = event.get("time_us") if isinstance(event, dict) else None
                    if isinstance(t, int) and t >= floor:
                        keys.add(event_key(event))
                        newer += 1
            if newer == 0:
                break
        return cls(cursor + REPLAY_SLACK_US, keys)

    def seen(self, event: Event) -> bool:
        """True when `event` is a replay of a buffered one; forgets the keys once past the window."""
        if not self.keys:
            return False
        if event.time_us > self.upto_us:
            self.keys.clear()
            return False
        return event.key in self.keys


class Ingester:
    """Reads Jetstream into the buffer until `stop` is set."""

    def __init__(self, settings: Settings, buffer: IngestBuffer, metrics: IngestMetrics,
                 start_cursor: int | None = None) -> None:
        self.settings = settings
        self.buffer = buffer
        self.metrics = metrics
        self.decoder = FrameDecoder(settings.compress, settings.max_frame_bytes)
        self.pending: list[Event] = []
        self.pending_since = 0.0
        self.write_lock = asyncio.Lock()
        self.cursor: int | None = start_cursor
        self.start_cursor = start_cursor
        self.stop = asyncio.Event()
        self.events_written = 0
        self.faults = Failpoints(settings.failpoint)

    async def run(self) -> None:
        """Connect, read, reconnect; return when `stop` is set, after writing what is pending."""
        urls = self.settings.jetstream_urls
        attempt = 0
        index = 0
        ticker = asyncio.create_task(self._tick())
        try:
            while not self.stop.is_set():
                url = urls[index % len(urls)]
                try:
                    delivered = await self._session(url)
                except (TimeoutError, OSError, websockets.WebSocketException) as exc:
                    self.metrics.errors.labels("websocket").inc()
                    log.warning("connection to %s failed: %s", url, exc)
                    delivered = False
                except redis.RedisError as exc:
                    self.metrics.errors.labels("redis").inc()
                    log.warning("Redis failed while (re)connecting (%s); retrying", exc)
                    delivered = False
                finally:
                    self.metrics.connected.set(0)
                    await self._write_pending()
                if self.stop.is_set():
                    break
                attempt = 0 if delivered else attempt + 1
                index += 1  # fail over to the next instance
                delay = backoff_delay(attempt, self.settings.backoff_max_seconds)
                log.info("reconnecting in %.1fs (attempt %d, next %s)", delay, attempt, urls[index % len(urls)])
                await self._sleep(delay)
        finally:
            ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await ticker
            await self._write_pending()

    def _resume_cursor(self, stored: int | None) -> int | None:
        if stored is None:
            return self.start_cursor
        return max(0, stored - int(self.settings.rewind_seconds * 1_000_000))

    async def _stored_cursor(self) -> int | None:
        while True:
            try:
                return await self.buffer.cursor()
            except redis.RedisError as exc:
                self.metrics.errors.labels("redis").inc()
                log.warning("cannot read the cursor from Redis (%s); retrying", exc)
                await asyncio.sleep(1)

    async def _session(self, url: str) -> bool:
        """One connection: read until it closes or `stop` is set. True if it delivered any event."""
        stored = await self._stored_cursor()
        if stored is not None:
            self.cursor = max(self.cursor or 0, stored)
        resume = self._resume_cursor(stored)
        replay = await ReplayFilter.from_buffer(self.buffer, stored, resume) if resume is not None else ReplayFilter()
        full_url = subscribe_url(url, self.settings.wanted_collections, resume, self.settings.compress)
        self.metrics.reconnects.labels(url).inc()
        log.info("connecting to %s (cursor %s, %d keys for replay dedupe)", url, resume, len(replay.keys))
        delivered = False
        async with connect(full_url, max_size=max(16 * 2**20, 2 * self.settings.max_frame_bytes),
                           compression=None if self.settings.compress else "deflate", open_timeout=15,
                           ping_interval=20, ping_timeout=30, close_timeout=5) as ws:
            self.metrics.connected.set(1)
            closer = asyncio.create_task(self._close_on_stop(ws))
            try:
                async for message in ws:
                    delivered = True
                    await self._accept(message, replay)
            finally:
                closer.cancel()
        return delivered

    async def _close_on_stop(self, ws: Any) -> None:
        await self.stop.wait()
        await ws.close()

    async def _accept(self, message: bytes | str, replay: ReplayFilter) -> None:
        self.metrics.wire_bytes.inc(len(message))
        try:
            event = self.decoder.decode(message)
        except BadFrame as bad:
            await self._dead_letter(bad.reason, message)
            return
        if replay.seen(event):
            self.metrics.duplicates.inc()
            return
        if not self.pending:
            self.pending_since = time.monotonic()
        self.pending.append(event)
        if len(self.pending) >= self.settings.ingest_batch:
            await self._write_pending()

    async def _dead_letter(self, reason: str, message: bytes | str) -> None:
        frame = message.encode() if isinstance(message, str) else message
        self.metrics.dead_letters.labels(reason).inc()
        log.warning("dead letter (%s): %d bytes", reason, len(frame))
        while True:
            try:
                await self.buffer.dead_letter(reason, frame)
                return
            except redis.RedisError as exc:
                self.metrics.errors.labels("redis").inc()
                log.warning("cannot write the dead letter (%s); retrying", exc)
                await asyncio.sleep(1)

    async def _tick(self) -> None:
        """Write a partial batch once its oldest event has waited `ingest_batch_ms`."""
        interval = self.settings.ingest_batch_ms / 1000
        while True:
            await asyncio.sleep(interval / 2)
            if self.pending and time.monotonic() - self.pending_since >= interval:
                await self._write_pending()

    async def _write_pending(self) -> None:
        """Append the pending batch, retrying (reads stay paused) until Redis takes it."""
        async with self.write_lock:
            if not self.pending:
                return
            batch, self.pending = self.pending, []
            cursor = max(self.cursor or 0, *(e.time_us for e in batch))
            raws = [e.raw for e in batch]
            token = new_batch_token()  # the same across this batch's retries: Redis applies it once
            attempt = 0
            while True:
                try:
                    self.faults.reached(Failpoint.INGEST_BEFORE_APPEND)
                    _, unflushed = await self.buffer.append(raws, cursor, token)
                    self.faults.reached(Failpoint.INGEST_AFTER_APPEND)
                    break
                except (Backpressure, redis.RedisError) as exc:
                    self.metrics.errors.labels("redis").inc()
                    delay = backoff_delay(attempt, 5.0, base=0.2)
                    log.warning("Redis refused %d events (%s); pausing %.1fs", len(batch), exc, delay)
                    self.metrics.backpressure.inc(delay)
                    attempt += 1
                    await asyncio.sleep(delay)
            self.cursor = cursor
            self.events_written += len(batch)
            self.metrics.count_batch(batch)
            self.metrics.cursor.set(cursor)
            self.metrics.lag.set(max(0.0, time.time() - cursor / 1_000_000))
            self.metrics.unflushed.set(unflushed)
            if unflushed >= self.settings.high_water:
                await self._respect_high_water()

    async def _respect_high_water(self) -> None:
        """Pause (holding the write lock, so reading stops) while unflushed events are past the high-water mark."""
        paused = 0.0
        while True:
            try:
                unflushed = await self.buffer.unflushed_events()
            except redis.RedisError:
                unflushed = 0
            self.metrics.unflushed.set(unflushed)
            if unflushed < self.settings.high_water or self.stop.is_set():
                break
            if paused == 0:
                log.warning("%d unflushed events: past the high-water mark %d, pausing reads",
                            unflushed, self.settings.high_water)
            await asyncio.sleep(1.0)
            paused += 1.0
            self.metrics.backpressure.inc(1.0)

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(self.stop.wait(), timeout=seconds)




def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Flags of `firehose ingest` (everything else comes from FIREHOSE_* settings)."""
    parser.add_argument("--url", action="append", dest="urls", metavar="WS_URL",
                        help="Jetstream /subscribe URL (repeatable; default FIREHOSE_JETSTREAM_URLS)")
    parser.add_argument("--cursor", type=int, default=None,
                        help="unix microseconds to start from when Redis holds no cursor yet (default: live tail)")


def run(args: argparse.Namespace, settings: Settings) -> int:
    """Run the ingester until SIGINT/SIGTERM."""
    if args.urls:
        settings = dataclasses.replace(settings, jetstream_urls=tuple(args.urls))
        settings.validate()
    registry = CollectorRegistry()
    metrics = IngestMetrics(registry)
    if settings.ingest_metrics_port:
        start_http_server(settings.ingest_metrics_port, addr=settings.metrics_bind, registry=registry)
        log.info("metrics on http://%s:%d/metrics", settings.metrics_bind, settings.ingest_metrics_port)
    return asyncio.run(_main(settings, metrics, args.cursor))


async def _main(settings: Settings, metrics: IngestMetrics, cursor: int | None) -> int:
    buffer = IngestBuffer.connect(settings)  # inside the loop its connections belong to
    ingester = Ingester(settings, buffer, metrics, start_cursor=cursor)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, ingester.stop.set)
    try:
        await ingester.run()
    finally:
        await buffer.close()
    log.info("stopped after writing %d events", ingester.events_written)
    return 0
