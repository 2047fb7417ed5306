"""The identity cache: DID -> handle and handle -> DID answers shared by every API worker, kept across restarts.

Two layers:
- Redis (`FIREHOSE_REDIS_URL`), one string key per answer under `firehose:identity:v1:`: a verified answer lives
  `FIREHOSE_HANDLE_CACHE_SECONDS`, a definite "none" (stored as the empty string) `FIREHOSE_HANDLE_NEGATIVE_SECONDS`.
  Redis persists them, so a restarted API and its sibling workers reuse what one worker learned.
- a small per-process front cache (an LRU with short-lived entries) that spares Redis round trips for the names a
  worker sees again and again, and remembers resolver failures for `FIREHOSE_RESOLVE_RETRY_SECONDS` without
  writing them to Redis (a failure is not an answer).

A Redis that is down or slow is skipped for a few seconds (logged once), never raised: identity only decorates
search results.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from typing import Any

import redis

log = logging.getLogger(__name__)

KEY_PREFIX = "firehose:identity:v1:"
FRONT_SECONDS = 60.0
REDIS_TIMEOUT = 0.5
REDIS_DOWN_SECONDS = 10.0
MISSING = object()

DID_TO_HANDLE = "d2h"
HANDLE_TO_DID = "h2d"


class TTLCache:
    """A thread-safe LRU cache with at most `size` entries, each valid for `ttl` seconds (or its own) after it was
    stored."""

    def __init__(self, size: int, ttl: float, clock: Callable[[], float] = time.monotonic) -> None:
        self._size = max(1, size)
        self._ttl = ttl
        self._clock = clock
        self._data: OrderedDict[str, tuple[float, Any]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: str, default: Any = MISSING) -> Any:
        """The live value for `key` (marking it recently used), or `default`."""
        with self._lock:
            item = self._data.get(key)
            if item is None:
                return default
            if item[0] < self._clock():
                del self._data[key]
                return default
            self._data.move_to_end(key)
            return item[1]

    def put(self, key: str, value: Any, ttl: float | None = None) -> None:
        """Store `value` for `key` for `ttl` seconds (default: the cache's), evicting the least recently used entry
        past the size bound."""
        with self._lock:
            self._data[key] = (self._clock() + (self._ttl if ttl is None else ttl), value)
            self._data.move_to_end(key)
            while len(self._data) > self._size:
                self._data.popitem(last=False)

    def __len__(self) -> int:
        return len(self._data)


class IdentityCache:
    """Answers keyed by (kind, name): a string is an answer, "" a definite "none"; absent keys are unknown."""

    def __init__(self, redis_url: str, front_size: int, positive_seconds: float, negative_seconds: float,
                 retry_seconds: float) -> None:
        self.redis_url = redis_url
        self.positive_seconds = positive_seconds
        self.negative_seconds = negative_seconds
        self.retry_seconds = retry_seconds
        self._front = TTLCache(front_size, min(FRONT_SECONDS, positive_seconds, negative_seconds))
        self._lock = threading.Lock()
        self._client: redis.Redis | None = None
        self._client_pid = 0
        self._down_until = 0.0

    def get_many(self, kind: str, names: Iterable[str]) -> dict[str, str]:
        """The cached answer of each name that has one ("" = definite none); unknown names are left out."""
        found: dict[str, str] = {}
        missing: list[str] = []
        for name in dict.fromkeys(names):
            value = self._front.get(f"{kind}:{name}")
            if value is MISSING:
                missing.append(name)
            else:
                found[name] = value
        if not missing:
            return found
        values = self._redis_call(lambda r: r.mget([KEY_PREFIX + f"{kind}:{n}" for n in missing]))
        for name, value in zip(missing, values or (), strict=False):
            if value is not None:
                text = value.decode()
                found[name] = text
                self._front.put(f"{kind}:{name}", text)
        return found

    def get(self, kind: str, name: str) -> str | None:
        """The cached answer of one name ("" = definite none), None when unknown."""
        return self.get_many(kind, [name]).get(name)

    def put(self, kind: str, name: str, answer: str | None) -> None:
        """Remember an answer (None = definite none) here and in Redis, each with its lifetime."""
        value = answer or ""
        seconds = self.positive_seconds if answer else self.negative_seconds
        self._front.put(f"{kind}:{name}", value)
        if seconds > 0:
            self._redis_call(lambda r: r.set(KEY_PREFIX + f"{kind}:{name}", value, ex=max(1, round(seconds))))

    def put_failure(self, kind: str, name: str) -> None:
        """Remember in this process only that resolving `name` failed: it is not asked again for a while."""
        if self.retry_seconds > 0:
            self._front.put(f"{kind}:{name}", "", self.retry_seconds)

    def _redis_call(self, call: Callable[[redis.Redis], Any]) -> Any:
        """`call(client)`, or None while Redis is (marked) unreachable."""
        if not self.redis_url or time.monotonic() < self._down_until:
            return None
        try:
            return call(self._redis())
        except (redis.RedisError, OSError) as exc:
            self._down_until = time.monotonic() + REDIS_DOWN_SECONDS
            log.warning("identity cache: Redis at %s failed (%s); using the in-process cache for %.0f s. Check "
                        "FIREHOSE_REDIS_URL and that redis-server runs", self.redis_url, exc, REDIS_DOWN_SECONDS)
            return None

    def _redis(self) -> redis.Redis:
        """This process's client (created again after a fork)."""
        with self._lock:
            if self._client is None or self._client_pid != os.getpid():
                self._client = redis.Redis.from_url(self.redis_url, socket_timeout=REDIS_TIMEOUT,
                                                    socket_connect_timeout=REDIS_TIMEOUT)
                self._client_pid = os.getpid()
            return self._client
