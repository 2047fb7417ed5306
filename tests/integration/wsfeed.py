"""A scripted Jetstream-like websocket peer for the ingester's failure tests (bad frames, overload, restarts).

It serves a fixed list of frames: on each connection it sends, in order, every frame whose `time_us` is at or
after the connection's `cursor` (frames without a readable time_us are always sent), then keeps the connection
open. It records every connection's query string so tests can check what the ingester asked for.
"""

from __future__ import annotations

import asyncio
import threading
import urllib.parse
from collections.abc import Sequence

import orjson
from websockets.asyncio.server import ServerConnection, serve

from tests.conftest import free_port


class ScriptedFeed:
    """Serve `frames` on ws://127.0.0.1:<port>/subscribe from a background thread."""

    def __init__(self, frames: Sequence[bytes | str]) -> None:
        self.frames = list(frames)
        self.port = free_port()
        self.queries: list[dict[str, list[str]]] = []
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
        await ws.wait_closed()


def _time_us(frame: bytes | str) -> int | None:
    try:
        value = orjson.loads(frame).get("time_us")
    except (orjson.JSONDecodeError, AttributeError):
        return None
    return value if isinstance(value, int) else None
