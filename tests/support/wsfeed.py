"""A scripted Jetstream-like websocket peer for the ingester's failure tests (bad frames, overload, restarts).

It serves a fixed list of frames: on each connection it sends, in order, every frame whose `time_us` is at or
after the connection's `cursor` (frames without a readable time_us are always sent), then keeps the connection
open. It records every connection's query string so tests can check what the ingester asked for. `push()` sends
more frames on the open connections. With `ping_every`, it pings each connection that often and closes it (code
1011, counted in `ping_timeouts`) when a pong takes longer than `ping_timeout`; answered pings count in `pongs`.
"""

from __future__ import annotations

import asyncio
import threading
import urllib.parse
from collections.abc import Sequence

import orjson
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from tests.support.services import free_port


class ScriptedFeed:
    """Serve `frames` on ws://127.0.0.1:<port>/subscribe from a background thread."""

    def __init__(self, frames: Sequence[bytes | str], ping_every: float | None = None,
                 ping_timeout: float = 20.0) -> None:
        self.frames = list(frames)
        self.port = free_port()
        self.queries: list[dict[str, list[str]]] = []
        self.ping_every = ping_every
        self.ping_timeout = ping_timeout
        self.pongs = 0
        self.ping_timeouts = 0
        self._open: list[ServerConnection] = []
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._stop: asyncio.Event | None = None
        self._thread = threading.Thread(target=self._run, daemon=True)

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/subscribe"

    def __enter__(self) -> ScriptedFeed:
        self._thread.start()
        self._ready.wait(10)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._stop is not None:
            self._loop.call_soon_threadsafe(self._stop.set)
        self._thread.join(10)

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._loop.run_until_complete(self._serve())

    async def _serve(self) -> None:
        self._stop = asyncio.Event()
        async with serve(self._handle, "127.0.0.1", self.port, compression=None, max_size=None):
            self._ready.set()
            await self._stop.wait()

    async def _handle(self, ws: ServerConnection) -> None:
        query = urllib.parse.parse_qs(urllib.parse.urlsplit(ws.request.path).query)
        self.queries.append(query)
        cursor = int(query["cursor"][0]) if "cursor" in query else None
        for frame in self.frames:
            if cursor is not None and _time_us(frame) is not None and _time_us(frame) < cursor:
                continue
            await ws.send(frame)
        self._open.append(ws)
        keepalive = asyncio.create_task(self._keepalive(ws)) if self.ping_every else None
        try:
            await ws.wait_closed()
        finally:
            self._open.remove(ws)
            if keepalive is not None:
                keepalive.cancel()

    def push(self, frames: Sequence[bytes | str], timeout: float = 30) -> None:
        """Send `frames` on every open connection (call from the test's thread; returns once they are sent)."""
        asyncio.run_coroutine_threadsafe(self._push(frames), self._loop).result(timeout)

    async def _push(self, frames: Sequence[bytes | str]) -> None:
        for ws in list(self._open):
            for frame in frames:
                await ws.send(frame)

    async def _keepalive(self, ws: ServerConnection) -> None:
        assert self.ping_every is not None
        while True:
            await asyncio.sleep(self.ping_every)
            try:
                pong = await ws.ping()
                await asyncio.wait_for(pong, self.ping_timeout)
            except TimeoutError:
                self.ping_timeouts += 1
                await ws.close(1011, "keepalive ping timeout")
                return
            except ConnectionClosed:
                return
            self.pongs += 1


def _time_us(frame: bytes | str) -> int | None:
    try:
        value = orjson.loads(frame).get("time_us")
    except (orjson.JSONDecodeError, AttributeError):
        return None
    return value if isinstance(value, int) else None
