"""The API under a real Gunicorn for tests: `start_gunicorn` serves a data directory and a Redis on a free port with
the appliance's Gunicorn configuration (2 gthread workers); `Server` GETs from it on fresh connections. `NOW_US`
is the time the tests' fixture data is dated against (so "the last days" hold it)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from tests.support.services import free_port, stop_process, wait_for_port

GUNICORN = Path(sys.executable).parent / "gunicorn"
NOW_US = int(time.time() * 1_000_000)


@dataclass
class Server:
    """A running Gunicorn serving the API."""

    base: str
    proc: subprocess.Popen
    log: Path

    def get(self, path: str, **params: Any) -> tuple[int, dict[str, str], bytes]:
        """GET path?params on a fresh connection: (status, lower-cased headers, body)."""
        query = urllib.parse.urlencode(params, doseq=True)
        return self.raw(path + ("?" + query if query else ""))

    def raw(self, target: str, method: str = "GET", headers: dict[str, str] | None = None
            ) -> tuple[int, dict[str, str], bytes]:
        request = urllib.request.Request(self.base + target, method=method, headers=headers or {})
        try:
            with urllib.request.urlopen(request, timeout=30) as resp:
                return resp.status, {k.lower(): v for k, v in resp.headers.items()}, resp.read()
        except urllib.error.HTTPError as exc:
            return exc.code, {k.lower(): v for k, v in exc.headers.items()}, exc.read()

    def json(self, path: str, **params: Any) -> tuple[int, Any]:
        status, _, body = self.get(path, **params)
        return status, orjson.loads(body)


def start_gunicorn(tmp: Path, data_dir: Path, redis_url: str, **env: str) -> Server:
    """Start `gunicorn -c python:firehose.gunicorn_conf 'firehose.api:create_app()'` on a free port."""
    port = free_port()
    log = tmp / f"gunicorn-{port}.log"
    environ = {k: v for k, v in os.environ.items() if not k.startswith(("FIREHOSE_", "PROMETHEUS_"))}
    environ.update({
        "FIREHOSE_DATA_DIR": str(data_dir), "FIREHOSE_REDIS_URL": redis_url,
        "FIREHOSE_API_BIND": f"127.0.0.1:{port}", "FIREHOSE_API_WORKERS": "2", "FIREHOSE_PLC_URL": "",
        "FIREHOSE_DNS_ENABLED": "false", "FIREHOSE_WELLKNOWN_ENABLED": "false",
        "FIREHOSE_API_METRICS_DIR": str(tmp / f"metrics-{port}"), **env,
    })
    with open(log, "wb") as out:
        proc = subprocess.Popen([str(GUNICORN), "-c", "python:firehose.gunicorn_conf", "firehose.api:create_app()"],
                                env=environ, cwd=tmp, stdout=out, stderr=subprocess.STDOUT)
    try:
        wait_for_port(port, timeout=20)
    except TimeoutError:
        stop_process(proc)
        raise AssertionError(log.read_text()) from None
    return Server(f"http://127.0.0.1:{port}", proc, log)
