"""Redis: AOF, noeviction, loopback only (sockets are in test_network)."""

from __future__ import annotations

import pytest


@pytest.mark.parametrize(
    "key,expected",
    [("appendonly", "yes"), ("appendfsync", "everysec"), ("maxmemory-policy", "noeviction")],
)
def test_redis_config(redis_cli, key, expected):
    out = redis_cli("CONFIG", "GET", key).splitlines()
    assert out[:1] == [key] and out[1:2] == [expected], f"CONFIG GET {key} -> {out}"


def test_redis_maxmemory_is_set(redis_cli):
    out = redis_cli("CONFIG", "GET", "maxmemory").splitlines()
    assert len(out) == 2 and int(out[1]) > 0, f"maxmemory is unlimited: {out}"


def test_redis_bind_is_loopback(redis_cli):
    out = redis_cli("CONFIG", "GET", "bind").splitlines()
    addrs = out[1].split() if len(out) > 1 else []
    assert addrs and all(a in ("127.0.0.1", "::1", "-::1") for a in addrs), f"bind = {addrs}"


def test_redis_answers(redis_cli):
    assert redis_cli("PING") == "PONG"
