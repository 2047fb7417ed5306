"""A local Jetstream v1-compatible websocket server: generated events (deterministic) or a replayed JSONL file.

Subscribe at `ws://HOST:PORT/subscribe` with Jetstream's query parameters: `wantedCollections` (repeatable, up to
100, exact NSIDs or prefixes like `app.bsky.graph.*`; identity and account events are always sent), `wantedDids`
(repeatable, up to 10,000), `cursor` (unix µs), `compress=true` (each message one zstd frame made with the Jetstream
dictionary), `maxMessageSizeBytes` and `requireHello`. Clients may send
`{"type": "options_update", "payload": {...}}` text frames to change the filters. Bad parameters get HTTP 400 with
a message. On the same port, `GET /stats` returns JSON counters, `GET /health` returns 200, and `GET /plc/<did>`
answers like a PLC directory for the simulated accounts (their handles).

The event sequence is global: event number i is the same for every subscriber (see `firehose.generate`). The live
position advances with the wall clock (`--start now`), at `--rate` events per second from the server start (a
`--start` in the past), or as fast as a subscriber reads (`--rate 0`). A subscriber without a cursor starts at the
live position; one with a cursor starts at the first event at or after it, catches up at full speed and then
follows live. Each connection writes with websockets' flow control: a slow reader slows only its own connection,
and never loses or reorders events. See `docs/simulator.md`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import http
import logging
import math
import re
import signal
import sys
import threading
import time
import weakref
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple
from urllib.parse import parse_qs, urlsplit

import orjson
import zstandard
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from firehose.config import ZSTD_DICTIONARY_PATH, Settings
from firehose.generate import EVENTS_PER_DAY, EventGenerator, Profile, handle_for, parse_time

log = logging.getLogger(__name__)

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 6008
MAX_WANTED_COLLECTIONS = 100
MAX_WANTED_DIDS = 10_000
CHUNK = 256
"""Events a connection sends before it yields to the other connections."""
UNBOUNDED = sys.maxsize

_NSID = re.compile(r"^[a-zA-Z][a-zA-Z0-9-]*(\.[a-zA-Z0-9][a-zA-Z0-9-]*)+$")
_NSID_PREFIX = re.compile(r"^[a-zA-Z][a-zA-Z0-9-]*(\.[a-zA-Z0-9][a-zA-Z0-9-]*)*\.\*$")
_DID = re.compile(r"^did:[a-z]+:[a-zA-Z0-9._:%-]+$")


class BadRequest(ValueError):
    """A subscription parameter or options update that cannot be used; the message says what is accepted."""


# ---------------------------------------------------------------------------------------------------------------
# Options
# ---------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SimulatorOptions:
    """How the simulator runs (the `firehose simulate` flags). Port 0 picks a free port."""

    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT
    seed: int = 0
    rate: float = 100.0
    start: str = "now"
    days: float | None = None
    events: int | None = None
    diurnal: bool = False
    peak_ratio: float = 1.6
    users: int = 2_000_000
    jitter_ms: float = 40.0
    replay: Path | None = None
    loop: bool = False
    start_on_connect: bool = False

    def validate(self) -> None:
        """Reject combinations that cannot run, saying which flag to change."""
        if self.rate < 0 or not math.isfinite(self.rate):
            raise ValueError(f"--rate must be >= 0 events per second (0 = as fast as possible), got {self.rate}")
        if self.events is not None and self.events < 0:
            raise ValueError(f"--events must be >= 0, got {self.events}")
        if self.days is not None and self.days <= 0:
            raise ValueError(f"--days must be > 0, got {self.days}")
        if self.replay is not None:
            if not self.replay.is_file():
                raise ValueError(f"--replay {self.replay}: no such file")
            return
        if self.start == "now" and self.rate == 0:
            raise ValueError("--rate 0 (as fast as possible) needs a --start time; live mode (--start now) "
                             "follows the wall clock at --rate events per second")
        if self.start != "now":
            parse_time(self.start)
        if self.loop:
            raise ValueError("--loop only applies to --replay")


# ---------------------------------------------------------------------------------------------------------------
# Event sources
# ---------------------------------------------------------------------------------------------------------------


class Item(NamedTuple):
    """One event as a source serves it: the JSON bytes and the fields filters look at (None when unknown)."""

    json: bytes
    did: str | None
    collection: str | None
    time_us: int | None


class Source:
    """The global event sequence and its live position. Subclasses define items and timing."""

    mode = "?"

    def __init__(self, rate: float, limit: int | None) -> None:
        self.rate = rate
        self.limit = limit
        self._t0: float | None = None

    def begin(self) -> None:
        """Start the clock of a paced source (at server start, or at the first subscriber)."""
        if self._t0 is None:
            self._t0 = time.monotonic()

    def available(self) -> int:
        """How many events exist right now (the live position); UNBOUNDED when reading as fast as possible."""
        cap = UNBOUNDED if self.limit is None else self.limit
        if self.rate == 0:
            return cap
        if self._t0 is None:
            return 0
        return min(cap, int((time.monotonic() - self._t0) * self.rate))

    def seconds_until(self, i: int) -> float:
        """Seconds until event i becomes available (<= 0 if it is)."""
        if self.rate == 0:
            return 0.0
        if self._t0 is None:
            return 0.05
        return (i + 1) / self.rate - (time.monotonic() - self._t0)

    def item(self, i: int) -> Item:
        raise NotImplementedError

    def start_index(self, cursor_us: int) -> int | None:
        """Where a subscriber with this cursor starts; None = the cursor is in the future (live tail)."""
        raise NotImplementedError

    def cursor_filter(self) -> bool:
        """Whether items before the cursor must also be skipped one by one (unordered sources)."""
        return False

    def describe(self) -> dict[str, Any]:
        return {"mode": self.mode, "rate": self.rate, "events_limit": self.limit}


class GeneratedSource(Source):
    """Events from an `EventGenerator`; live mode ties the position to the wall clock."""

    mode = "generated"

    def __init__(self, generator: EventGenerator, *, rate: float, limit: int | None, live: bool) -> None:
        super().__init__(rate, limit)
        self.generator = generator
        self.live = live

    def available(self) -> int:
        if not self.live:
            return super().available()
        now_us = time.time_ns() // 1000
        position = self.generator.index_at_or_after(now_us + 1)
        return position if self.limit is None else min(self.limit, position)

    def seconds_until(self, i: int) -> float:
        if not self.live:
            return super().seconds_until(i)
        return (self.generator.base_us(i) - time.time_ns() // 1000) / 1e6

    def item(self, i: int) -> Item:
        g = self.generator.generated(i)
        return Item(g.json, g.did, g.collection, g.time_us)

    def start_index(self, cursor_us: int) -> int | None:
        i = self.generator.index_at_or_after(cursor_us)
        return None if i > self.available() else i

    def describe(self) -> dict[str, Any]:
        gen = self.generator
        return {**super().describe(), "live": self.live, "seed": gen.seed, "start_us": gen.start_us,
                "sim_rate": gen.profile.rate, "diurnal": gen.profile.diurnal}


class ReplaySource(Source):
    """The lines of a JSONL file, sent verbatim, optionally looped."""

    mode = "replay"

    def __init__(self, path: Path, *, rate: float, loop: bool, limit: int | None) -> None:
        self.path = path
        self.items = load_jsonl(path)
        if not self.items:
            raise ValueError(f"--replay {path}: the file has no lines to replay")
        if not loop:
            limit = len(self.items) if limit is None else min(limit, len(self.items))
        super().__init__(rate, limit)
        self.loop = loop
        times = [it.time_us for it in self.items if it.time_us is not None]
        self._max_time = max(times) if times else None

    def item(self, i: int) -> Item:
        return self.items[i % len(self.items)]

    def start_index(self, cursor_us: int) -> int | None:
        if self._max_time is not None and cursor_us > self._max_time:
            return None
        return 0

    def cursor_filter(self) -> bool:
        return True

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "file": str(self.path), "lines": len(self.items), "loop": self.loop}


def load_jsonl(path: Path) -> list[Item]:
    """The non-blank lines of a JSONL file with their did, collection and time_us (None if not parseable)."""
    items = []
    for line in path.read_bytes().splitlines():
        if not line.strip():
            continue
        did = collection = time_us = None
        try:
            event = orjson.loads(line)
        except orjson.JSONDecodeError:
            event = None
        if isinstance(event, dict):
            did = event.get("did") if isinstance(event.get("did"), str) else None
            t = event.get("time_us")
            time_us = t if isinstance(t, int) and not isinstance(t, bool) else None
            commit = event.get("commit")
            if isinstance(commit, dict) and isinstance(commit.get("collection"), str):
                collection = commit["collection"]
        items.append(Item(line, did, collection, time_us))
    return items


def build_source(options: SimulatorOptions, now_us: int | None = None) -> Source:
    """The event source the options describe (see `docs/simulator.md` for how rate, start, days and events mix)."""
    options.validate()
    if options.replay is not None:
        return ReplaySource(options.replay, rate=options.rate, loop=options.loop, limit=options.events)
    live = options.start == "now"
    start_us = (time.time_ns() // 1000 if now_us is None else now_us) if live else parse_time(options.start)
    if live:
        sim_rate = options.rate
    elif options.events is not None and options.days is not None:
        sim_rate = max(options.events, 1) / (options.days * 86_400)
    else:
        sim_rate = options.rate or EVENTS_PER_DAY / 86_400
    profile = Profile(rate=sim_rate, diurnal=options.diurnal, peak_ratio=options.peak_ratio)
    generator = EventGenerator(options.seed, start_us, profile, users=options.users,
                               jitter_us=int(options.jitter_ms * 1000))
    limit = options.events
    if limit is None and options.days is not None:
        limit = generator.index_at_or_after(start_us + int(options.days * 86_400e6))
    return GeneratedSource(generator, rate=options.rate, limit=limit, live=live)


# ---------------------------------------------------------------------------------------------------------------
# Subscriptions
# ---------------------------------------------------------------------------------------------------------------


@dataclass
class Subscription:
    """One connection's parameters; filters change with options_update messages."""

    collections: frozenset[str] = frozenset()
    prefixes: tuple[str, ...] = ()
    dids: frozenset[str] = frozenset()
    max_size: int = 0
    cursor: int | None = None
    compress: bool = False
    require_hello: bool = False
    hello: asyncio.Event = field(default_factory=asyncio.Event)

    def wants(self, item: Item) -> bool:
        """Whether this subscriber gets the item (identity and account events pass collection filters)."""
        if self.dids and item.did not in self.dids:
            return False
        collection = item.collection
        if collection is None or not (self.collections or self.prefixes):
            return True
        return collection in self.collections or collection.startswith(self.prefixes)

    def set_filters(self, collections: Sequence[str], dids: Sequence[str], max_size: int) -> None:
        """Replace the filters (validated by `parse_filters`)."""
        self.collections = frozenset(c for c in collections if not c.endswith(".*"))
        self.prefixes = tuple(c[:-1] for c in collections if c.endswith(".*"))
        self.dids = frozenset(dids)
        self.max_size = max_size


def parse_filters(collections: Any, dids: Any, max_size: Any) -> tuple[list[str], list[str], int]:
    """Validate wantedCollections, wantedDids and maxMessageSizeBytes; raise BadRequest naming the problem."""
    collections = [] if collections is None else collections
    dids = [] if dids is None else dids
    if not isinstance(collections, list) or not all(isinstance(c, str) for c in collections):
        raise BadRequest("wantedCollections must be a list of collection NSIDs")
    if not isinstance(dids, list) or not all(isinstance(d, str) for d in dids):
        raise BadRequest("wantedDids must be a list of DIDs")
    if len(collections) > MAX_WANTED_COLLECTIONS:
        raise BadRequest(f"too many wantedCollections: {len(collections)} (at most {MAX_WANTED_COLLECTIONS})")
    if len(dids) > MAX_WANTED_DIDS:
        raise BadRequest(f"too many wantedDids: {len(dids)} (at most {MAX_WANTED_DIDS})")
    for c in collections:
        if len(c) > 317 or not (_NSID.match(c) or _NSID_PREFIX.match(c)):
            raise BadRequest(f"invalid wantedCollections value {c!r}: use an NSID (app.bsky.feed.post) "
                             "or a prefix ending in .* (app.bsky.graph.*)")
    for d in dids:
        if len(d) > 2048 or not _DID.match(d):
            raise BadRequest(f"invalid wantedDids value {d!r}: use a DID such as did:plc:abc...")
    if max_size is None:
        max_size = 0
    if isinstance(max_size, str):
        try:
            max_size = int(max_size)
        except ValueError:
            raise BadRequest(f"maxMessageSizeBytes must be a non-negative integer, got {max_size!r}") from None
    if not isinstance(max_size, int) or isinstance(max_size, bool) or max_size < 0:
        raise BadRequest(f"maxMessageSizeBytes must be a non-negative integer, got {max_size!r}")
    return collections, dids, max_size


def parse_subscription(path: str, headers: Any = None) -> Subscription:
    """The Subscription for a `/subscribe?...` request path; raise BadRequest for bad parameters."""
    query = parse_qs(urlsplit(path).query, keep_blank_values=True)

    def one(name: str) -> str | None:
        values = query.get(name)
        if not values:
            return None
        if len(values) > 1:
            raise BadRequest(f"{name} may be given only once")
        return values[0]

    def flag(name: str) -> bool:
        value = one(name)
        if value is None:
            return False
        if value.lower() in ("true", "1"):
            return True
        if value.lower() in ("false", "0", ""):
            return False
        raise BadRequest(f"{name} must be true or false, got {value!r}")

    collections, dids, max_size = parse_filters(query.get("wantedCollections"), query.get("wantedDids"),
                                                one("maxMessageSizeBytes"))
    cursor_raw = one("cursor")
    cursor = None
    if cursor_raw not in (None, ""):
        try:
            cursor = int(cursor_raw)
        except ValueError:
            raise BadRequest(f"cursor must be an integer time in unix microseconds, got {cursor_raw!r}") from None
        if cursor < 0:
            raise BadRequest(f"cursor must be >= 0 (unix microseconds), got {cursor}")
    compress = flag("compress")
    if headers is not None and str(headers.get("Socket-Encoding", "")).lower() == "zstd":
        compress = True
    sub = Subscription(cursor=cursor, compress=compress, require_hello=flag("requireHello"))
    sub.set_filters(collections, dids, max_size)
    return sub


def load_dictionary(path: Path = ZSTD_DICTIONARY_PATH) -> zstandard.ZstdCompressionDict:
    """The Jetstream zstd dictionary (the one `compress=true` frames are made with)."""
    return zstandard.ZstdCompressionDict(path.read_bytes())


# ---------------------------------------------------------------------------------------------------------------
# The server
# ---------------------------------------------------------------------------------------------------------------


@dataclass
class Counters:
    """What the server has done, for `/stats`."""

    events_produced: int = 0
    bytes_produced: int = 0
    bytes_sent: int = 0
    connections: int = 0
    connections_total: int = 0
    rejected: int = 0
    highest_index_sent: int = -1


class Simulator:
    """The websocket server. `await start()`, use `url`, `await stop()`; or `await serve_forever()`."""

    def __init__(self, options: SimulatorOptions, source: Source | None = None) -> None:
        self.options = options
        self.source = source or build_source(options)
        self.counters = Counters()
        self._dictionary = load_dictionary()
        # parsed in process_request, picked up by the handler; weak so failed handshakes leave nothing behind
        self._subs: weakref.WeakKeyDictionary[ServerConnection, Subscription] = weakref.WeakKeyDictionary()
        self._position = 0  # how far the fastest subscriber got (the live position when reading unpaced)
        self._server: Server | None = None
        self._started = time.monotonic()
        self.port = options.port

    @property
    def generator(self) -> EventGenerator | None:
        """The event generator (None in replay mode)."""
        return self.source.generator if isinstance(self.source, GeneratedSource) else None

    @property
    def url(self) -> str:
        return f"ws://{self.options.host}:{self.port}/subscribe"

    @property
    def http_url(self) -> str:
        return f"http://{self.options.host}:{self.port}"

    async def start(self) -> None:
        """Listen on the configured host and port."""
        self._server = await serve(
            self._handle, self.options.host, self.options.port, process_request=self._process_request,
            compression=None, max_size=2**20, write_limit=2**18, ping_interval=20, ping_timeout=60,
        )
        self.port = self._server.sockets[0].getsockname()[1]
        if not self.options.start_on_connect:
            self.source.begin()
        described = ", ".join(f"{k}={v}" for k, v in self.source.describe().items())
        log.info("Jetstream simulator: subscribe at %s (stats at %s/stats; %s)", self.url, self.http_url, described)

    async def stop(self) -> None:
        """Close every connection and stop listening."""
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    async def serve_forever(self) -> None:
        """Start (if needed) and serve until cancelled."""
        if self._server is None:
            await self.start()
        assert self._server is not None
        await self._server.serve_forever()

    def live_index(self) -> int:
        """The live position: events that exist now (for unpaced sources, how far the fastest reader got)."""
        if self.source.rate == 0:  # unpaced: events exist as soon as someone reads them
            return self._position
        return self.source.available()

    def stats(self) -> dict[str, Any]:
        """Counters and position, as `/stats` returns them."""
        c = self.counters
        return {
            **self.source.describe(),
            "events_produced": c.events_produced,
            "bytes_produced": c.bytes_produced,
            "bytes_sent": c.bytes_sent,
            "connections": c.connections,
            "connections_total": c.connections_total,
            "rejected_requests": c.rejected,
            "live_index": self.live_index(),
            "highest_index_sent": c.highest_index_sent,
            "uptime_s": round(time.monotonic() - self._started, 3),
            "url": self.url,
        }

    # -- HTTP ---------------------------------------------------------------------------------------------------

    def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        path = urlsplit(request.path).path
        if path == "/subscribe":
            try:
                self._subs[connection] = parse_subscription(request.path, request.headers)
            except BadRequest as exc:
                self.counters.rejected += 1
                log.info("rejected %s: %s", request.path, exc)
                return connection.respond(http.HTTPStatus.BAD_REQUEST, f"{exc}\n")
            return None
        if path == "/health":
            return connection.respond(http.HTTPStatus.OK, "ok\n")
        if path == "/stats":
            return _json_response(connection, http.HTTPStatus.OK, self.stats())
        if path.startswith("/plc/did:plc:"):
            return self._plc_document(connection, path.removeprefix("/plc/"))
        return connection.respond(http.HTTPStatus.NOT_FOUND,
                                  "not found: subscribe at /subscribe, or GET /stats, /health or /plc/<did>\n")

    def _plc_document(self, connection: ServerConnection, did: str) -> Response:
        """A minimal PLC directory for the simulated accounts (`FIREHOSE_PLC_URL=http://host:port/plc`), so the
        API shows the same handles the identity events carry."""
        if len(did) != len("did:plc:") + 24 or not did[8:].isalnum():
            return _json_response(connection, http.HTTPStatus.NOT_FOUND, {"message": f"DID not registered: {did}"})
        return _json_response(connection, http.HTTPStatus.OK,
                              {"id": did, "alsoKnownAs": [f"at://{handle_for(did)}"], "verificationMethod": [],
                               "service": []})

    # -- websocket ----------------------------------------------------------------------------------------------

    async def _handle(self, ws: ServerConnection) -> None:
        sub = self._subs.pop(ws, None) or Subscription()
        self.counters.connections += 1
        self.counters.connections_total += 1
        self.source.begin()
        start = self._start_index(sub)
        log.info("subscriber %s connected (cursor=%s, start index %d, compress=%s)", ws.remote_address,
                 sub.cursor, start, sub.compress)
        pump = asyncio.create_task(self._pump(ws, sub, start))
        try:
            await self._read(ws, sub)
        finally:
            pump.cancel()
            with contextlib.suppress(asyncio.CancelledError, ConnectionClosed):
                await pump
            self.counters.connections -= 1
            log.info("subscriber %s disconnected", ws.remote_address)

    def _start_index(self, sub: Subscription) -> int:
        live = self.live_index()
        if sub.cursor is None:
            return live
        start = self.source.start_index(sub.cursor)
        return live if start is None else max(0, start)

    async def _read(self, ws: ServerConnection, sub: Subscription) -> None:
        """Apply options_update messages until the client goes away."""
        with contextlib.suppress(ConnectionClosed):
            async for message in ws:
                try:
                    self._apply_update(sub, message)
                except BadRequest as exc:
                    log.info("closing %s: bad options_update: %s", ws.remote_address, exc)
                    await ws.close(1008, f"bad options_update: {exc}"[:120])
                    return

    @staticmethod
    def _apply_update(sub: Subscription, message: str | bytes) -> None:
        try:
            update = orjson.loads(message)
        except orjson.JSONDecodeError:
            raise BadRequest("messages must be JSON objects like {\"type\": \"options_update\", ...}") from None
        if not isinstance(update, dict) or update.get("type") != "options_update":
            raise BadRequest("the only message type accepted is options_update")
        payload = update.get("payload")
        if not isinstance(payload, dict):
            raise BadRequest("options_update needs a payload object")
        collections, dids, max_size = parse_filters(payload.get("wantedCollections"), payload.get("wantedDids"),
                                                    payload.get("maxMessageSizeBytes"))
        sub.set_filters(collections, dids, max_size)
        sub.hello.set()

    async def _pump(self, ws: ServerConnection, sub: Subscription, start: int) -> None:
        """Send events from `start` on: catch up at full speed, then follow the live position."""
        source, counters = self.source, self.counters
        compressor = zstandard.ZstdCompressor(dict_data=self._dictionary) if sub.compress else None
        skip_before = sub.cursor if sub.cursor is not None and source.cursor_filter() else None
        i = start
        while True:
            if sub.require_hello and not sub.hello.is_set():
                await sub.hello.wait()
            available = source.available()
            if i >= available:
                if source.limit is not None and i >= source.limit:
                    return  # the run is over: the connection stays open, idle
                await asyncio.sleep(min(max(source.seconds_until(i), 0.002), 0.25))
                continue
            end = min(available, i + CHUNK)
            frames: list[bytes] = []
            produced = last = 0
            for j in range(i, end):
                item = source.item(j)
                if not sub.wants(item):
                    continue
                if skip_before is not None and item.time_us is not None and item.time_us < skip_before:
                    continue
                payload = item.json
                if sub.max_size and len(payload) > sub.max_size:
                    continue
                frames.append(compressor.compress(payload) if compressor is not None else payload)
                produced += len(payload)
                last = j
            if frames:
                await send_frames(ws, frames, text=compressor is None)
                counters.highest_index_sent = max(counters.highest_index_sent, last)
                counters.events_produced += len(frames)
                counters.bytes_produced += produced
                counters.bytes_sent += sum(map(len, frames))
            i = end
            self._position = max(self._position, i)
            await asyncio.sleep(0)


async def send_frames(ws: ServerConnection, frames: list[bytes], *, text: bool) -> None:
    """Send each frame as one message (text or binary), in order, then wait for the write buffer to drain.

    Writing a batch in one go costs a fraction of one `send()` per message; websockets' flow control still applies
    after each batch (`write_limit`), so a slow reader only slows its own connection.
    """
    send_context = getattr(ws, "send_context", None)
    if send_context is None:  # not the websockets >= 13 asyncio implementation: one send per message
        for frame in frames:
            await ws.send(frame, text=text)
        return
    async with send_context():
        send = ws.protocol.send_text if text else ws.protocol.send_binary
        for frame in frames:
            send(frame)


# ---------------------------------------------------------------------------------------------------------------
# Running in a background thread (tests, validation)
# ---------------------------------------------------------------------------------------------------------------


def _json_response(connection: ServerConnection, status: http.HTTPStatus, body: Any) -> Response:
    response = connection.respond(status, orjson.dumps(body).decode() + "\n")
    del response.headers["Content-Type"]
    response.headers["Content-Type"] = "application/json"
    return response


class SimulatorThread:
    """A Simulator running on its own event loop in a daemon thread; a context manager for synchronous code.

    >>> with SimulatorThread(SimulatorOptions(port=0, start="2026-05-25", rate=0, events=1000)) as sim:
    ...     url = sim.url
    """

    def __init__(self, options: SimulatorOptions) -> None:
        self.simulator = Simulator(options)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._run, name="jetstream-simulator", daemon=True)
        self._ready = threading.Event()
        self._error: BaseException | None = None
        self._stop: asyncio.Event | None = None

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        try:
            self._loop.run_until_complete(self._main())
        except BaseException as exc:  # reported to the thread that called start()
            self._error = exc
            self._ready.set()
        finally:
            self._loop.close()

    async def _main(self) -> None:
        self._stop = asyncio.Event()
        await self.simulator.start()
        self._ready.set()
        await self._stop.wait()
        await self.simulator.stop()

    def start(self, timeout: float = 10.0) -> SimulatorThread:
        """Start the thread and wait until the server listens."""
        self._thread.start()
        if not self._ready.wait(timeout):
            raise TimeoutError("the simulator did not start listening in time")
        if self._error is not None:
            raise RuntimeError(f"the simulator failed to start: {self._error}") from self._error
        return self

    def stop(self, timeout: float = 10.0) -> None:
        """Close every connection and end the thread."""
        if self._thread.is_alive() and self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
            self._thread.join(timeout)

    def stats(self) -> dict[str, Any]:
        """A consistent snapshot of the counters (taken on the server's loop)."""
        return asyncio.run_coroutine_threadsafe(_call(self.simulator.stats), self._loop).result(10)

    @property
    def url(self) -> str:
        return self.simulator.url

    @property
    def http_url(self) -> str:
        return self.simulator.http_url

    @property
    def generator(self) -> EventGenerator | None:
        return self.simulator.generator

    def __enter__(self) -> SimulatorThread:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


async def _call(fn: Any) -> Any:
    return fn()


# ---------------------------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------------------------


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Flags of `firehose simulate`."""
    parser.add_argument("--host", default=DEFAULT_HOST, help=f"address to listen on (default {DEFAULT_HOST})")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT,
                        help=f"port to listen on, 0 = any free one (default {DEFAULT_PORT})")
    parser.add_argument("--seed", type=int, default=0, help="generator seed: same seed, same events (default 0)")
    parser.add_argument("--rate", type=float, default=100.0,
                        help="events per wall-clock second; 0 = as fast as subscribers read (default 100)")
    parser.add_argument("--start", default="now",
                        help="'now' = live (time_us follows the clock) or an ISO time for simulated history "
                             "(e.g. 2026-05-25T00:00:00Z) (default now)")
    parser.add_argument("--days", type=float, default=None,
                        help="simulated days to cover; with --events, spreads them over these days")
    parser.add_argument("--events", type=int, default=None,
                        help="stop producing after this many events (connections then idle)")
    parser.add_argument("--diurnal", action="store_true", help="day/night rate curve (peak/trough --peak-ratio)")
    parser.add_argument("--peak-ratio", type=float, default=1.6, help="diurnal peak/trough ratio (default 1.6)")
    parser.add_argument("--users", type=int, default=2_000_000, help="size of the DID population (default 2M)")
    parser.add_argument("--jitter-ms", type=float, default=40.0,
                        help="time_us is up to this much earlier than the event's slot (default 40)")
    parser.add_argument("--replay", type=Path, default=None, help="replay this JSONL file's lines verbatim")
    parser.add_argument("--loop", action="store_true", help="with --replay: start over at the end, forever")
    parser.add_argument("--start-on-connect", action="store_true",
                        help="paced modes: the clock starts with the first subscriber, not at server start")


def options_from_args(args: argparse.Namespace) -> SimulatorOptions:
    """SimulatorOptions from parsed `firehose simulate` flags."""
    return SimulatorOptions(
        host=args.host, port=args.port, seed=args.seed, rate=args.rate, start=args.start, days=args.days,
        events=args.events, diurnal=args.diurnal, peak_ratio=args.peak_ratio, users=args.users,
        jitter_ms=args.jitter_ms, replay=args.replay, loop=args.loop, start_on_connect=args.start_on_connect,
    )


async def _serve_until_signal(simulator: Simulator) -> None:
    await simulator.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("stopping the simulator: %s", orjson.dumps(simulator.stats()).decode())
    await simulator.stop()


def run(args: argparse.Namespace, settings: Settings) -> int:
    """`firehose simulate`: serve until SIGINT/SIGTERM. The simulator is configured by flags, not settings."""
    del settings
    try:
        simulator = Simulator(options_from_args(args))
    except ValueError as exc:
        print(f"firehose simulate: {exc}", file=sys.stderr)
        return 2
    try:
        asyncio.run(_serve_until_signal(simulator))
    except OSError as exc:
        print(f"firehose simulate: cannot listen on {args.host}:{args.port}: {exc} (choose another --port)",
              file=sys.stderr)
        return 1
    return 0
