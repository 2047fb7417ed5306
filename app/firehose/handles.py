"""Superseded by firehose.identity (kept until the API switches over to it).

DID <-> handle mapping for the API: the `username` shown with each post, and the `username`/`author` filter.

Where a handle comes from, in order:
1. a bounded per-worker LRU cache whose entries (hits and misses alike) expire after `handle_cache_seconds`,
   so handle changes are picked up periodically;
2. the archive's own `identity` table (the newest handle per DID), looked up in batches by the query layer;
3. the PLC directory (`GET {plc_url}/{did}`, the first `at://` entry of `alsoKnownAs`) for `did:plc` DIDs,
   with a short timeout, a per-request deadline, negative caching and a breaker that stops asking for a while
   after a failure. A search never fails because the directory is slow or down: the DID is shown instead.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor, wait

import orjson

from firehose.identity_cache import MISSING, TTLCache
from firehose.identity_syntax import handle_from_did_document, is_did, normalise_handle

__all__ = ["HandleBook", "PlcResolver", "TTLCache", "handle_from_did_document", "is_did", "normalise_handle"]

log = logging.getLogger(__name__)

PLC_DOWN_SECONDS = 30.0
PLC_MAX_LOOKUPS_PER_CALL = 64
PLC_WORKERS = 8
PLC_MAX_BODY = 256 * 1024

IdentitySource = Callable[[list[str]], dict[str, str]]
ReverseSource = Callable[[str], "str | None"]


class PlcResolver:
    """Resolve `did:plc` DIDs to handles through a PLC directory; bounded, deadline-aware and never raising."""

    def __init__(self, base_url: str, timeout: float) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self._down_until = 0.0
        self._lock = threading.Lock()
        self._inflight: dict[str, Future[str | None]] = {}
        self._pool: ThreadPoolExecutor | None = None
        self._pool_pid = 0
        self.lookups = 0
        self.failures = 0

    @property
    def enabled(self) -> bool:
        """False when no directory is configured."""
        return bool(self.base_url)

    def is_down(self) -> bool:
        """True while the breaker is open after a recent failure."""
        return time.monotonic() < self._down_until

    def resolve(self, dids: Iterable[str], deadline: float, on_result: Callable[[str, str | None], None]) -> None:
        """Look up `dids` concurrently until `deadline` (time.monotonic()); `on_result(did, handle|None)` is called
        for every definite answer (also after the deadline, so late answers still fill the cache)."""
        if not self.enabled or self.is_down():
            return
        futures = []
        for did in list(dict.fromkeys(d for d in dids if d.startswith("did:plc:")))[:PLC_MAX_LOOKUPS_PER_CALL]:
            futures.append(self._submit(did, on_result))
        remaining = deadline - time.monotonic()
        if futures and remaining > 0:
            wait(futures, timeout=remaining, return_when="ALL_COMPLETED")

    def _submit(self, did: str, on_result: Callable[[str, str | None], None]) -> Future[str | None]:
        with self._lock:
            future = self._inflight.get(did)
            if future is not None:
                return future
            future = self._executor().submit(self._fetch, did)
            self._inflight[did] = future

        def done(f: Future[str | None]) -> None:
            with self._lock:
                self._inflight.pop(did, None)
            if f.exception() is None:
                on_result(did, f.result())

        future.add_done_callback(done)
        return future

    def _executor(self) -> ThreadPoolExecutor:
        if self._pool is None or self._pool_pid != os.getpid():
            self._pool = ThreadPoolExecutor(max_workers=PLC_WORKERS, thread_name_prefix="plc")
            self._pool_pid = os.getpid()
            self._inflight = {}
        return self._pool

    def _fetch(self, did: str) -> str | None:
        """The handle of `did` per the directory, None when it has none; raises when the directory failed."""
        if self.is_down():
            raise ConnectionError("PLC directory marked down")
        url = f"{self.base_url}/{urllib.parse.quote(did, safe=':')}"
        self.lookups += 1
        request = urllib.request.Request(url, headers={"Accept": "application/json", "User-Agent": "firehose-api"})
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as resp:
                doc = orjson.loads(resp.read(PLC_MAX_BODY))
        except urllib.error.HTTPError as exc:
            if exc.code in (404, 410):
                return None
            self._trip(f"HTTP {exc.code}")
            raise
        except (OSError, ValueError) as exc:
            self._trip(repr(exc))
            raise
        return handle_from_did_document(doc)

    def _trip(self, reason: str) -> None:
        self.failures += 1
        self._down_until = time.monotonic() + PLC_DOWN_SECONDS
        log.warning("PLC directory %s failed (%s); showing DIDs for %.0f s", self.base_url, reason, PLC_DOWN_SECONDS)


class HandleBook:
    """Per-worker DID <-> handle knowledge: cache, then the identity table, then the PLC directory."""

    def __init__(self, identity: IdentitySource, reverse: ReverseSource, plc: PlcResolver,
                 cache_size: int, cache_seconds: float) -> None:
        self._identity = identity
        self._reverse = reverse
        self.plc = plc
        self._handles = TTLCache(cache_size, cache_seconds)
        self._dids = TTLCache(cache_size, cache_seconds)

    def _learn(self, did: str, handle: str | None) -> None:
        self._handles.put(did, handle)
        if handle:
            self._dids.put(handle, did)

    def handles(self, dids: Iterable[str], *, plc_deadline: float | None = None) -> dict[str, str]:
        """Map each DID that has a known handle to it. `plc_deadline` (time.monotonic()) allows PLC lookups until
        then; None means cache and identity table only (used for exports). Never raises for a PLC problem."""
        result: dict[str, str] = {}
        unknown: list[str] = []
        for did in dict.fromkeys(dids):
            cached = self._handles.get(did)
            if cached is MISSING:
                unknown.append(did)
            elif cached:
                result[did] = cached
        if not unknown:
            return result
        found = self._identity(unknown)
        for did in unknown:
            if did in found:
                self._learn(did, found[did])
                result[did] = found[did]
        rest = [d for d in unknown if d not in found]
        if not rest:
            return result
        if plc_deadline is None or not self.plc.enabled:
            if not self.plc.enabled:
                for did in rest:
                    self._learn(did, None)
            return result
        self.plc.resolve(rest, plc_deadline, self._learn)
        for did in rest:
            handle = self._handles.get(did, None)
            if handle:
                result[did] = handle
        return result

    def did_for(self, value: str) -> str | None:
        """The DID for a handle or DID given by a user (a DID is returned as is), None when the handle is unknown."""
        if is_did(value):
            return value
        handle = normalise_handle(value)
        if handle is None:
            return None
        cached = self._dids.get(handle)
        if cached is not MISSING:
            return cached
        did = self._reverse(handle)
        self._dids.put(handle, did)
        if did:
            self._handles.put(did, handle)
        return did
