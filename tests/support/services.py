"""Real services for tests: free loopback ports, a redis-server of a test's own, child processes stopped for sure,
and waiting on what a test needs to see."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for_port(port: int, timeout: float = 15.0) -> None:
    """Block until something accepts connections on 127.0.0.1:`port`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port} after {timeout}s")


def wait_until(condition: Callable[[], bool], timeout: float = 60, what: str = "condition") -> None:
    """Poll `condition` until it holds; fail after `timeout` seconds (generous: a loaded machine is slow, not
    wrong). Tests wait on what they need to see, never on a sleep that hopes the machine is fast."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.05)


@dataclass
class RedisServer:
    """A real redis-server process owned by a test."""

    port: int
    dir: Path
    proc: subprocess.Popen

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def client(self) -> redis.Redis:
        return redis.Redis.from_url(self.url)


def start_redis(tmp: Path, *extra: str) -> RedisServer:
    """Start redis-server on a free port with AOF on, its files in `tmp`."""
    exe = shutil.which("redis-server")
    if exe is None:
        pytest.fail("redis-server is not installed: run `make test` (it installs Debian's redis-server)")
    tmp.mkdir(parents=True, exist_ok=True)
    port = free_port()
    proc = subprocess.Popen(
        [exe, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(tmp), "--appendonly", "yes",
         "--save", "", "--daemonize", "no", "--logfile", str(tmp / "redis.log"), *extra],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    wait_for_port(port)
    return RedisServer(port, tmp, proc)


def stop_process(proc: subprocess.Popen, timeout: float = 10.0) -> None:
    """Terminate a child process, killing it if it does not exit in time."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
