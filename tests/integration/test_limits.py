"""Fair use: per-client rates and export slots, shared by the Gunicorn workers through a real Redis.

The reverse proxy is played by the test: requests from 127.0.0.1 carrying X-Forwarded-For are counted against
the address in that header; requests from 127.0.0.1 without it come from the box itself and are not limited.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from pathlib import Path

import orjson
import pytest
import redis

from firehose.config import Settings
from firehose.limits import Client, Limiter, Refused, client_of
from tests.support.api_server import NOW_US, Server, start_gunicorn
from tests.support.archive import bulk_posts, post_row, write_posts
from tests.support.services import RedisServer, start_redis, stop_process

API_KEY = "test-key-0123456789"


def fetch(server: Server, target: str, headers: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
    """GET with extra headers on a fresh connection (so Gunicorn spreads the requests over its workers)."""
    return server.raw(target, headers=headers)


def via_proxy(client: str, **extra: str) -> dict[str, str]:
    return {"X-Forwarded-For": f"198.51.100.99, {client}", **extra}


@pytest.fixture(scope="module")
def limited(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, RedisServer]]:
    tmp = tmp_path_factory.mktemp("limits")
    data = tmp / "data"
    write_posts(data, [post_row("hello limits", did="did:plc:alice", time_us=NOW_US - 60_000_000)])
    bulk_posts(data, "2024-01-01", 50, text="filler")
    redis = start_redis(tmp / "redis")
    server = start_gunicorn(tmp, data, redis.url, FIREHOSE_API_RATE_PER_MINUTE="6", FIREHOSE_API_RATE_BURST="4",
                            FIREHOSE_API_EXPORT_SLOTS="1", FIREHOSE_API_KEYS=API_KEY,
                            FIREHOSE_API_KEY_RATE_PER_MINUTE="600", FIREHOSE_API_KEY_EXPORT_SLOTS="1")
    try:
        yield server, redis
    finally:
        stop_process(server.proc)
        stop_process(redis.proc)



def test_burst_then_429_with_retry_after_across_workers(limited: tuple[Server, RedisServer]) -> None:
    server = limited[0]
    statuses = [fetch(server, "/health", via_proxy("203.0.113.5"))[0] for _ in range(4)]
    assert statuses == [200] * 4
    status, headers, body = fetch(server, "/health", via_proxy("203.0.113.5"))
    assert status == 429, body
    assert headers["content-type"] == "application/json"
    assert int(headers["retry-after"]) >= 1
    error = orjson.loads(body)["error"]
    assert error["parameter"] is None and "too many requests" in error["message"]
    # Another client, the box itself and a client with a key are not affected.
    assert fetch(server, "/health", via_proxy("203.0.113.6"))[0] == 200
    assert fetch(server, "/health", {})[0] == 200
    assert fetch(server, "/health", via_proxy("203.0.113.5", **{"X-API-Key": API_KEY}))[0] == 200


def test_forwarded_for_from_an_untrusted_peer_is_ignored() -> None:
    settings = Settings()
    environ = {"REMOTE_ADDR": "192.0.2.7", "HTTP_X_FORWARDED_FOR": "203.0.113.5"}
    assert client_of(environ, settings) == Client("ip:192.0.2.7")
    v6 = {"REMOTE_ADDR": "::1", "HTTP_X_FORWARDED_FOR": "2001:db8:1:2:3:4:5:6"}
    assert client_of(v6, settings) == Client("ip:2001:db8:1:2::/64")
    assert client_of({"REMOTE_ADDR": "127.0.0.1"}, settings).local


def test_unknown_api_key_is_refused(limited: tuple[Server, RedisServer]) -> None:
    status, _, body = fetch(limited[0], "/search?text=hello", via_proxy("203.0.113.7", **{"X-API-Key": "nope"}))
    assert status == 401 and "API key" in orjson.loads(body)["error"]["message"]


def test_export_slot_is_shared_and_given_back(limited: tuple[Server, RedisServer]) -> None:
    server, redis = limited
    settings = Settings.from_env({"FIREHOSE_REDIS_URL": redis.url, "FIREHOSE_API_EXPORT_SLOTS": "1"})
    limiter = Limiter(settings, redis.client)
    # Someone else's export holds the only anonymous slot: an export is refused, 429 with Retry-After ...
    lease = limiter.export_slot(Client("ip:192.0.2.50"))
    try:
        status, headers, body = fetch(server, "/export?text=filler", via_proxy("203.0.113.8"))
        assert status == 429, body
        assert int(headers["retry-after"]) == settings.api_export_retry_seconds
        assert "exports are running" in orjson.loads(body)["error"]["message"]
        # ... while a client with a key has a pool of its own.
        status, _, body = fetch(server, "/export?text=filler", via_proxy("203.0.113.8", **{"X-API-Key": API_KEY}))
        assert status == 200 and len(list(csv.DictReader(io.StringIO(body.decode())))) == 50
    finally:
        limiter.release(lease)
    # Slot free again: exports one after another all get it back when they end.
    for client in ("203.0.113.9", "203.0.113.10", "203.0.113.9"):
        status, _, body = fetch(server, "/export?text=filler&limit=5", via_proxy(client))
        assert status == 200, body
    assert redis.client().zcard("firehose:limits:exports:anonymous") == 0


def test_slots_per_client_and_expiry(redis_server: RedisServer) -> None:
    settings = Settings.from_env({"FIREHOSE_API_EXPORT_SLOTS": "3", "FIREHOSE_API_EXPORTS_PER_CLIENT": "1"})
    limiter = Limiter(settings, redis_server.client)
    first = limiter.export_slot(Client("ip:192.0.2.1"))
    with pytest.raises(Refused) as refused:
        limiter.export_slot(Client("ip:192.0.2.1"))
    assert refused.value.status == 429 and "already" in refused.value.message
    second = limiter.export_slot(Client("ip:192.0.2.2"))
    assert first is not None and second is not None
    # A lease whose worker died expires: push its expiry into the past, as time would.
    redis_server.client().zadd(first.keys[0], {first.token: 0})
    redis_server.client().zadd(first.keys[1], {first.token: 0})
    assert limiter.export_slot(Client("ip:192.0.2.1")) is not None
    assert limiter.export_slot(Client("local", local=True)) is None


def test_exports_can_require_a_key(tmp_path: Path, redis_server: RedisServer) -> None:
    settings = Settings.from_env({"FIREHOSE_API_EXPORT_KEY_REQUIRED": "true", "FIREHOSE_API_KEYS": API_KEY})
    limiter = Limiter(settings, redis_server.client)
    with pytest.raises(Refused) as refused:
        limiter.export_slot(Client("ip:192.0.2.1"))
    assert refused.value.status == 403
    assert limiter.export_slot(Client("key:x", keyed=True)) is not None


def test_no_redis_lets_requests_through() -> None:
    settings = Settings.from_env({"FIREHOSE_REDIS_URL": "redis://127.0.0.1:1/0", "FIREHOSE_API_RATE_BURST": "1"})
    limiter = Limiter(settings, lambda: redis.Redis.from_url(settings.redis_url, socket_connect_timeout=1))
    for _ in range(3):
        limiter.admit(Client("ip:192.0.2.1"))
    assert limiter.export_slot(Client("ip:192.0.2.1")) is None
