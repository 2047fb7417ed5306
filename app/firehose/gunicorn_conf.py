"""Gunicorn configuration for the API: `gunicorn -c python:firehose.gunicorn_conf 'firehose.api:create_app()'`.

Read once in the master from `Settings.from_env()`:
- `bind` from FIREHOSE_API_BIND; `workers` from FIREHOSE_API_WORKERS (0 = one per core, at least 2);
  `gthread` workers with FIREHOSE_API_THREADS threads, so a long /export does not block a worker.
- No `preload_app`: each worker imports the app after the fork and opens its own DuckDB (DuckDB is not fork-safe).
- `max_requests` stays off: every restarted worker leaves prometheus multiprocess files behind.
- Prometheus multiprocess mode: PROMETHEUS_MULTIPROC_DIR is set here, before any worker imports
  prometheus_client; the directory is emptied in `on_starting` and dead workers are marked in `child_exit`.
- `limit_request_line` at Gunicorn's maximum: the proxy's limits (roles/proxy) are tighter, so its JSON refusals
  come first.
- The page-cursor key: when FIREHOSE_API_CURSOR_SECRET is empty, one random key is made here and handed to every
  worker through the environment, so a cursor from one worker is valid on all of them (until a restart).
"""

from __future__ import annotations

import os
import secrets
import tempfile
from pathlib import Path
from typing import Any

from firehose.config import Settings

_settings = Settings.from_env()

if not _settings.api_cursor_secret:
    os.environ["FIREHOSE_API_CURSOR_SECRET"] = secrets.token_hex(32)

_metrics_dir = _settings.api_metrics_dir or Path(tempfile.gettempdir()) / f"firehose-api-metrics-{os.getuid()}"
os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(_metrics_dir)

bind = [_settings.api_bind]
workers = _settings.api_workers or max(2, os.cpu_count() or 1)
worker_class = "gthread"
threads = _settings.api_threads
timeout = int(max(60.0, _settings.api_export_timeout + 30.0, _settings.api_query_timeout + 30.0))
graceful_timeout = 30
keepalive = 5
# The largest request line Gunicorn takes: the reverse proxy refuses longer URLs first, with a JSON 414, so
# Gunicorn's own (HTML) 414/400 pages never reach a client; and the API refuses long query strings with a JSON 400.
limit_request_line = 8190
preload_app = False
max_requests = 0
accesslog = "-"
errorlog = "-"
access_log_format = '%(h)s "%(r)s" %(s)s %(b)s %(M)sms'
proc_name = "firehose-api"
control_socket_disable = True  # gunicorn >= 25: one fixed socket path would clash between instances; unused here


def on_starting(server: Any) -> None:
    """Empty the prometheus multiprocess directory before any worker starts."""
    _metrics_dir.mkdir(parents=True, mode=0o700, exist_ok=True)
    for stale in _metrics_dir.glob("*.db"):  # only prometheus_client's files, whatever else the directory holds
        stale.unlink(missing_ok=True)
    server.log.info("prometheus multiprocess directory %s (emptied)", _metrics_dir)


def child_exit(server: Any, worker: Any) -> None:
    """Tell prometheus_client a worker is gone (its live gauges stop counting)."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid, str(_metrics_dir))
