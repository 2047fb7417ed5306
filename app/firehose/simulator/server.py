"""A local Jetstream v1-compatible websocket server: generated events (deterministic) or a replayed JSONL file.

Subscribe at `ws://HOST:PORT/subscribe` with Jetstream's query parameters: `wantedCollections` (repeatable, up to
100, exact NSIDs or prefixes like `app.bsky.graph.*`; identity and account events are always sent), `wantedDids`
(repeatable, up to 10,000), `cursor` (unix µs), `compress=true` (each message one zstd frame made with the Jetstream
dictionary), `maxMessageSizeBytes` and `requireHello`. Clients may send
`{"type": "options_update", "payload": {...}}` text frames to change the filters. Bad parameters get HTTP 400 with
a message. On the same port, `GET /stats` returns JSON counters, `GET /health` returns 200, `GET /plc/<did>`
answers like a PLC directory for the simulated accounts (their handles), and handle -> DID resolution answers as the
network does: `GET /.well-known/atproto-did` by the request's Host (the handle) and
`GET /xrpc/com.atproto.identity.resolveHandle?handle=`; with `dns_port` set, `firehose.simulator.handle_dns` serves
the `_atproto` TXT records too, started and stopped with the websocket server.

The event sequence is global: event number i is the same for every subscriber (see
`firehose.simulator.generator`); where it comes from and how the live position moves is `firehose.simulator.sources`
(the wall clock with `--start now`, `--rate` events per second from the server start with a `--start` in the past,
or as fast as a subscriber reads with `--rate 0`). A subscriber without a cursor starts at the live position; one
with a cursor starts at the first event at or after it, catches up at full speed and then follows live. Each
connection writes with websockets' flow control: a slow reader slows only its own connection, and never loses or
reorders events. This module owns the connections (HTTP routes, the per-connection pump, counters) and
`SimulatorThread`, which runs a server in a background thread for tests and the validation harness.
See `docs/simulator.md`.
"""

from __future__ import annotations

import asyncio
import contextlib
import http
import logging
import threading
import time
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import orjson
import zstandard
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from firehose.config import ZSTD_DICTIONARY_PATH
from firehose.simulator.generator import EventGenerator
from firehose.simulator.handle_dns import HandleDnsServer
from firehose.simulator.identity import did_for_handle, plc_document
from firehose.simulator.options import SimulatorOptions
from firehose.simulator.sources import GeneratedSource, Source, build_source
from firehose.simulator.subscription import BadRequest, Subscription, parse_filters, parse_subscription

log = logging.getLogger(__name__)

CHUNK = 256
"""Events a connection sends before it yields to the other connections."""
WELL_KNOWN_DID = "/.well-known/atproto-did"
RESOLVE_HANDLE = "/xrpc/com.atproto.identity.resolveHandle"


def load_dictionary(path: Path = ZSTD_DICTIONARY_PATH) -> zstandard.ZstdCompressionDict:
    """The Jetstream zstd dictionary (the one `compress=true` frames are made with)."""
    return zstandard.ZstdCompressionDict(path.read_bytes())


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
        self._dns = HandleDnsServer(options.host, options.dns_port) if options.dns_port is not None else None
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

    @property
    def dns_port(self) -> int | None:
        """The port the handle DNS server listens on (UDP and TCP), None without one."""
        return self._dns.port if self._dns is not None else None

    async def start(self) -> None:
        """Listen on the configured host and port (and the DNS port, if any)."""
        if self._dns is not None:
            self._dns.start()
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
        """Close every connection and stop listening (DNS too)."""
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        if self._dns is not None:
            await asyncio.to_thread(self._dns.stop)

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
        if path == WELL_KNOWN_DID:
            return _well_known_did(connection, request.headers.get("Host", ""))
        if path == RESOLVE_HANDLE:
            return _resolve_handle(connection, parse_qs(urlsplit(request.path).query).get("handle", []))
        return connection.respond(http.HTTPStatus.NOT_FOUND,
                                  "not found: subscribe at /subscribe, or GET /stats, /health, /plc/<did>, "
                                  f"{WELL_KNOWN_DID} or {RESOLVE_HANDLE}?handle=\n")

    def _plc_document(self, connection: ServerConnection, did: str) -> Response:
        """A minimal PLC directory for the simulated accounts (`FIREHOSE_PLC_URL=http://host:port/plc`), so the
        API shows the same handles the identity events carry."""
        document = plc_document(did)
        if document is None:
            return _json_response(connection, http.HTTPStatus.NOT_FOUND, {"message": f"DID not registered: {did}"})
        return _json_response(connection, http.HTTPStatus.OK, document)

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


def _well_known_did(connection: ServerConnection, host: str) -> Response:
    """`/.well-known/atproto-did` of the handle named by the Host header: the DID as text/plain, or 404."""
    handle = host.rsplit(":", 1)[0] if host.count(":") == 1 else host  # drop a :port
    did = did_for_handle(handle)
    if did is None:
        return connection.respond(http.HTTPStatus.NOT_FOUND, f"no simulated account has the handle {handle!r}\n")
    return connection.respond(http.HTTPStatus.OK, did)


def _resolve_handle(connection: ServerConnection, handles: list[str]) -> Response:
    """`com.atproto.identity.resolveHandle`: `{"did": ...}`, or 400 with an XRPC error body, as the real service."""
    if len(handles) != 1 or not handles[0].strip():
        return _json_response(connection, http.HTTPStatus.BAD_REQUEST,
                              {"error": "InvalidRequest", "message": 'Error: Params must have the property "handle"'})
    did = did_for_handle(handles[0])
    if did is None:
        return _json_response(connection, http.HTTPStatus.BAD_REQUEST,
                              {"error": "InvalidRequest", "message": "Unable to resolve handle"})
    return _json_response(connection, http.HTTPStatus.OK, {"did": did})


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
    def dns_port(self) -> int | None:
        return self.simulator.dns_port

    @property
    def generator(self) -> EventGenerator | None:
        return self.simulator.generator

    def __enter__(self) -> SimulatorThread:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


async def _call(fn: Any) -> Any:
    return fn()

