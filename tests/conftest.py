"""Fixtures shared by every test layer: real services on free ports, cleaned up afterwards (the helpers behind
them are in tests/support/services.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.services import RedisServer, start_redis, stop_process


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A fresh redis-server for one test."""
    server = start_redis(tmp_path / "redis")
    try:
        yield server
    finally:
        stop_process(server.proc)
