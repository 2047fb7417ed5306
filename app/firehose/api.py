"""The HTTP API: a Bottle WSGI app served by Gunicorn (`gunicorn -c python:firehose.gunicorn_conf
'firehose.api:create_app()'`).

Endpoints: `GET /search`, `GET /export` (CSV), `GET /health`, `GET /metrics`, `GET /stats`, `GET /openapi.json`.
Everything the app needs per worker lives in the `Api` object `create_app` builds; DuckDB, Redis and the PLC pool
are opened on first use, so after Gunicorn forks. Every error is JSON `{"error": {"parameter", "message"}}`;
no input produces a 500 (an unexpected failure is logged and answered with a JSON 500 all the same).
This module is only HTTP: `firehose.params` validates the parameters (and supplies their OpenAPI description),
`firehose.search` runs searches and exports, `firehose.catalog` answers /stats and the freshness check.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import secrets
import threading
import time
import urllib.parse
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import bottle
import orjson
import redis
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest

from firehose.buffer import Keys
from firehose.config import ConfigError, Settings
from firehose.csv_export import csv_header, csv_rows, truncation_row
from firehose.export import ExportStream
from firehose.hot import HotTier
from firehose.identity import IdentityResolver
from firehose.limits import Client, Lease, Limiter, Refused, client_of
from firehose.openapi import JSON_TYPE, openapi_document
from firehose.params import BadParameter, CursorCodec, SearchQuery, parse_search
from firehose.search import QueryTimeout, Searcher
from firehose.sources import SCAN_REASONS, VIA, Sources

log = logging.getLogger(__name__)

MAX_QUERY_PARAMETERS = 64
MAX_QUERY_STRING = 16_384
DISPLAY_WAIT_SECONDS = 0.5  # how long a page waits for handles to show (the DID is shown past it)
FILTER_WAIT_SECONDS = 3.0  # how long a search waits to resolve the handle it filters on
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 120.0)
ENDPOINTS = ("/search", "/export", "/health", "/metrics", "/stats", "/openapi.json")


class Metrics:
    """The API's Prometheus metrics. Under Gunicorn (PROMETHEUS_MULTIPROC_DIR set) values go to the shared
    multiprocess directory and /metrics aggregates every worker; otherwise they live in this app's own registry."""

    def __init__(self) -> None:
        self.multiprocess = "PROMETHEUS_MULTIPROC_DIR" in os.environ
        self.registry = None if self.multiprocess else CollectorRegistry()
        reg = self.registry
        self.requests = Counter("firehose_api_requests", "HTTP requests by endpoint and status.",
                                ["endpoint", "status"], registry=reg)
        self.latency = Histogram("firehose_api_request_seconds", "Time to produce a response (for /export: the "
                                 "first rows), by endpoint and status.", ["endpoint", "status"],
                                 buckets=LATENCY_BUCKETS, registry=reg)
        self.query_errors = Counter("firehose_api_query_errors", "Failed queries by endpoint and kind "
                                    "(timeout, internal).", ["endpoint", "kind"], registry=reg)
        self.export_rows = Counter("firehose_api_export_rows", "Rows streamed by /export.", registry=reg)
        self.days = Counter("firehose_api_search_days", f"Days read by /search and /export, by endpoint, how (via: "
                            f"{', '.join(VIA)}) and why a day was scanned (reason: {', '.join(SCAN_REASONS)}; empty "
                            "otherwise).", ["endpoint", "via", "reason"], registry=reg)
        self.exports = Counter("firehose_api_exports", "Exports streamed, by how they ended: complete, cut by "
                               "limit, timeout or error (a truncation row written), or aborted by the client.",
                               ["outcome"], registry=reg)

    def count_days(self, endpoint: str, sources: Sources) -> None:
        """Count the days one request read."""
        for day in sources.days:
            self.days.labels(endpoint, day.via, day.reason or "").inc()

    def render(self) -> bytes:
        """The exposition text of all workers' metrics (multiprocess) or this app's."""
        if self.multiprocess:
            from prometheus_client import multiprocess

            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)
            return generate_latest(registry)
        assert self.registry is not None  # set whenever not in multiprocess mode
        return generate_latest(self.registry)


def check_api_settings(settings: Settings) -> None:
    """Reject API settings the app cannot work with, naming the variable."""
    if settings.api_workers < 0 or settings.api_threads < 1:
        raise ConfigError("FIREHOSE_API_WORKERS must be >= 0 (0 = auto) and FIREHOSE_API_THREADS >= 1")
    if settings.api_export_timeout <= 0 or settings.plc_timeout <= 0 or settings.handle_cache_seconds < 0:
        raise ConfigError("FIREHOSE_API_EXPORT_TIMEOUT and FIREHOSE_PLC_TIMEOUT must be > 0, "
                          "FIREHOSE_HANDLE_CACHE_SECONDS >= 0")
    if settings.api_max_results < settings.api_page_size:
        raise ConfigError("FIREHOSE_API_MAX_RESULTS must be at least FIREHOSE_API_PAGE_SIZE")
    if ":" not in settings.api_bind:
        raise ConfigError(f"FIREHOSE_API_BIND={settings.api_bind!r} must be host:port (e.g. 127.0.0.1:8080)")


def query_pairs(environ: dict[str, Any]) -> list[tuple[str, str]]:
    """The query string as (name, value) pairs, percent-decoded as strict UTF-8 ('+' is a space)."""
    raw = environ.get("QUERY_STRING", "") or ""
    if len(raw) > MAX_QUERY_STRING:
        raise BadParameter("query", f"the query string is longer than {MAX_QUERY_STRING} characters")
    try:
        data = raw.encode("latin-1")  # PEP 3333: the request's bytes, as latin-1
    except UnicodeEncodeError:
        data = raw.encode("utf-8", "surrogateescape")
    pairs: list[tuple[str, str]] = []
    for part in data.split(b"&"):
        if not part:
            continue
        if len(pairs) >= MAX_QUERY_PARAMETERS:
            raise BadParameter("query", f"more than {MAX_QUERY_PARAMETERS} parameters")
        name_b, _, value_b = part.partition(b"=")
        name = _decode(name_b, "query")
        pairs.append((name, _decode(value_b, name)))
    return pairs


def _decode(raw: bytes, parameter: str) -> str:
    try:
        return urllib.parse.unquote_to_bytes(raw.replace(b"+", b" ")).decode("utf-8")
    except UnicodeDecodeError:
        raise BadParameter(parameter[:64], "is not valid UTF-8 after percent-decoding; encode text as UTF-8") from None


def _iso_now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class Api:
    """Per-worker state and the endpoint implementations."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._redis: redis.Redis | None = None
        self._redis_pid = 0
        self._lock = threading.Lock()
        hot = None
        if settings.api_hot_tier:
            hot = HotTier(self.redis, Keys.from_settings(settings), min_interval=settings.api_hot_refresh_seconds,
                          max_posts=settings.api_hot_max_posts, read_budget=settings.api_hot_read_budget_seconds)
        self.searcher = Searcher(settings, hot=hot)
        self.book = IdentityResolver(settings, self.searcher.identity_handles, self.searcher.identity_did)
        secret = settings.api_cursor_secret.encode() if settings.api_cursor_secret else secrets.token_bytes(32)
        self.cursors = CursorCodec(secret)
        self.metrics = Metrics()
        self.limits = Limiter(settings, self.redis)

    # --- plumbing

    def headers(self, content_type: str = JSON_TYPE) -> dict[str, str]:
        """Headers every response carries (content type, CORS, no caching of live data)."""
        headers = {"Content-Type": content_type, "Cache-Control": "no-store"}
        if self.settings.api_cors_origin:
            headers["Access-Control-Allow-Origin"] = self.settings.api_cors_origin
            headers["Access-Control-Expose-Headers"] = "Content-Disposition"
        return headers

    def json(self, body: Any, status: int = 200) -> bottle.HTTPResponse:
        """A JSON response."""
        return bottle.HTTPResponse(orjson.dumps(body), status, self.headers())

    def error(self, status: int, parameter: str | None, message: str) -> bottle.HTTPResponse:
        """The error shape every failure uses."""
        return self.json({"error": {"parameter": parameter, "message": message}}, status)

    def refusal(self, exc: Refused) -> bottle.HTTPResponse:
        """The answer to a request the limits turn away (429 with Retry-After, 401, 403)."""
        resp = self.error(exc.status, None, exc.message)
        if exc.retry_after is not None:
            resp.set_header("Retry-After", str(exc.retry_after))
        return resp

    def endpoint(self, name: str, handler: Callable[[], bottle.HTTPResponse]) -> Callable[[], bottle.HTTPResponse]:
        """Wrap `handler`: the client's rate limit, error mapping (400/429/504/500 JSON) and request metrics."""

        def wrapped() -> bottle.HTTPResponse:
            started = time.perf_counter()
            try:
                client = client_of(bottle.request.environ, self.settings)
                bottle.request.environ["firehose.client"] = client
                self.limits.admit(client)
                resp = handler()
            except Refused as exc:
                resp = self.refusal(exc)
            except BadParameter as exc:
                resp = self.error(400, exc.parameter, exc.message)
            except QueryTimeout as exc:
                self.metrics.query_errors.labels(name, "timeout").inc()
                resp = self.error(504, None, f"{exc}; narrow the search (fewer days, an author, more words) "
                                  "and try again")
            except Exception:
                log.exception("%s failed", name)
                self.metrics.query_errors.labels(name, "internal").inc()
                resp = self.error(500, None, "internal error; it has been logged. Try again, or report it with "
                                  "the request URL")
            self.observe(name, resp.status_code, time.perf_counter() - started)
            return resp

        return wrapped

    def observe(self, endpoint: str, status: int, seconds: float) -> None:
        """Count one request."""
        self.metrics.requests.labels(endpoint, str(status)).inc()
        self.metrics.latency.labels(endpoint, str(status)).observe(seconds)

    def redis(self) -> redis.Redis:
        """This process's Redis client (created after fork)."""
        with self._lock:
            if self._redis is None or self._redis_pid != os.getpid():
                self._redis = redis.Redis.from_url(self.settings.redis_url, socket_timeout=1.0,
                                                   socket_connect_timeout=1.0)
                self._redis_pid = os.getpid()
            return self._redis

    # --- search and export

    def search(self) -> bottle.HTTPResponse:
        """GET /search."""
        started = time.perf_counter()
        query = parse_search(query_pairs(bottle.request.environ), self.settings)
        fingerprint = query.fingerprint()
        position = self.cursors.decode(query.cursor, fingerprint) if query.cursor else None
        filters, warnings = self.searcher.filters(query, self.did_for)
        cap = self.settings.api_max_results
        sources = Sources()
        if filters is None or (position and position.served >= cap):
            rows, next_position = [], None
        else:
            try:
                page = self.searcher.search(filters, query.limit, position, cap=cap, sources=sources)
            finally:
                self.metrics.count_days("/search", sources)
            rows, next_position = page.rows, page.next_position
        names = self.book.names([r["did"] for r in rows], time.monotonic() + DISPLAY_WAIT_SECONDS)
        results = [{"timestamp": r["timestamp"], "username": names.handles.get(r["did"], r["did"]), **r} for r in rows]
        meta: dict[str, Any] = {
            "count": len(results),
            "cursor": self.cursors.encode(next_position, fingerprint) if next_position else None,
            "limit": query.limit,
            "served": (position.served if position else 0) + len(results),
            "total_cap": cap,
            "query": query.echo(),
            "took_ms": round((time.perf_counter() - started) * 1000, 1),
            "days": sources.as_json(),
            "unverified_dids": sorted(names.unverified),
        }
        if self.searcher.hot is not None and self.searcher.hot.refresh().behind:
            warnings = [*warnings, "the hot tier is still reading a backlog of the buffer (a catch-up after an "
                        "outage): the newest posts, deletions and account changes may not show yet"]
        if warnings:
            meta["warnings"] = warnings
        return self.json({"results": results, "meta": meta})

    def export(self) -> bottle.HTTPResponse:
        """GET /export: CSV streamed in record batches; the first batch is read before the response starts."""
        query = parse_search(query_pairs(bottle.request.environ), self.settings, export=True)
        client: Client = bottle.request.environ["firehose.client"]
        lease = self.limits.export_slot(client)
        sources = Sources()
        try:
            filters, _ = self.searcher.filters(query, self.did_for)
            stream = self.searcher.export(filters, query.limit, sources) if filters is not None else None
        except BaseException:
            self.limits.release(lease)
            self.metrics.count_days("/export", sources)
            raise
        stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")
        headers = self.headers("text/csv; charset=utf-8")
        headers["Content-Disposition"] = f'attachment; filename="bluesky-posts-{stamp}.csv"'
        return bottle.HTTPResponse(self._csv(stream, query, lease=lease, sources=sources), 200, headers)

    def did_for(self, value: str) -> str | None:
        """The DID of a handle (or DID) typed into a filter, resolved within FILTER_WAIT_SECONDS."""
        return self.book.did_for(value, time.monotonic() + min(FILTER_WAIT_SECONDS, self.settings.api_query_timeout))

    def _csv(self, stream: ExportStream | None, query: SearchQuery, *, lease: Lease | None,
             sources: Sources) -> Iterator[bytes]:
        """CSV bytes: a header row, then each batch of `stream` (None: nothing matches) written by pyarrow (quoted
        where needed); unless `query.raw`, cells that a spreadsheet would run as a formula are neutralised
        (`csv_export.neutralise`). An export that ends early ends with `csv_export.truncation_row`. The export slot
        `lease` is given back, and the days the export read (`sources`) counted, when the stream ends (Bottle starts
        the generator at once, so the `finally` always runs)."""
        yield csv_header()
        rows, last_time_us, outcome = 0, None, "aborted"  # stays aborted if the client goes away mid-stream
        try:
            cut = None
            try:
                for batch in stream or ():
                    dids = batch.column("did").to_pylist()
                    handles = self.book.handles(dids, time.monotonic() + DISPLAY_WAIT_SECONDS)
                    self.metrics.export_rows.inc(batch.num_rows)
                    yield csv_rows(batch, [handles.get(d, d) for d in dids], raw=query.raw)
                    rows, last_time_us = rows + batch.num_rows, batch.column("time_us")[-1].as_py()
                cut = stream.cut if stream else None
            except Exception:
                log.exception("export stream failed after the response started and %d rows; the CSV ends with a "
                              "truncation row", rows)
                self.metrics.query_errors.labels("/export", "internal").inc()
                cut = "error"
            outcome = cut or "complete"
            if cut:
                yield truncation_row(cut, rows=rows, last_time_us=last_time_us, sort=query.sort, limit=query.limit,
                                     settings=self.settings)
        finally:
            self.metrics.exports.labels(outcome).inc()
            self.limits.release(lease)
            if stream is not None:
                stream.close()
            self.metrics.count_days("/export", sources)

    # --- operations

    def health(self) -> bottle.HTTPResponse:
        """GET /health. 503 `fail` when nothing can be served (the data directory is missing); 200 `degraded` with
        the reasons when serving, but stale or incomplete (Redis unreachable: the newest posts cannot be served and
        nothing is ingested; the newest event older than FIREHOSE_API_FRESH_SECONDS; no data yet); else 200 `ok`."""
        _no_parameters()
        checks: dict[str, dict[str, Any]] = {}
        started = time.perf_counter()
        try:
            self.redis().ping()
            checks["redis"] = {"ok": True, "latency_ms": round((time.perf_counter() - started) * 1000, 1)}
        except (redis.RedisError, OSError) as exc:
            checks["redis"] = {"ok": False, "error": f"{type(exc).__name__}: {exc}"[:300]}
        data_dir = Path(self.settings.data_dir)
        checks["data_dir"] = {"ok": data_dir.is_dir(), "path": str(data_dir)}
        view = self.searcher.view() if data_dir.is_dir() else None
        checks["hot_tier"] = {"ok": view is not None and view.hot.error is None,
                              "enabled": self.searcher.hot is not None, "posts": view.hot.post_count if view else 0,
                              "hidden": view.rules.size if view else 0, "behind": bool(view and view.hot.behind)}
        archived = self.searcher.catalog.newest_time_us() if data_dir.is_dir() else None
        newest = max((t for t in (archived, view.hot.newest_time_us if view else None) if t is not None), default=None)
        fresh: dict[str, Any] = {"ok": False, "newest_event_age_s": None, "max_age_s": self.settings.api_fresh_seconds}
        if newest is not None:
            age = time.time() - newest / 1_000_000
            fresh.update(ok=age <= self.settings.api_fresh_seconds, newest_event_age_s=round(age, 1),
                         newest_event=dt.datetime.fromtimestamp(newest / 1e6, dt.UTC).isoformat())
        checks["freshness"] = fresh
        reasons = _health_reasons(checks, newest)
        status = "fail" if not checks["data_dir"]["ok"] else "degraded" if reasons else "ok"
        body = {"status": status, "checks": checks, "time": _iso_now()}
        if reasons:
            body["reasons"] = reasons
        return self.json(body, 503 if status == "fail" else 200)

    def metrics_endpoint(self) -> bottle.HTTPResponse:
        """GET /metrics (Prometheus text format)."""
        _no_parameters()
        return bottle.HTTPResponse(self.metrics.render(), 200, self.headers(CONTENT_TYPE_LATEST))

    def stats(self) -> bottle.HTTPResponse:
        """GET /stats: rows, files and bytes per table per day."""
        _no_parameters()
        return self.json({**self.searcher.catalog.stats(), "time": _iso_now()})

    def openapi(self) -> bottle.HTTPResponse:
        """GET /openapi.json."""
        _no_parameters()
        return self.json(openapi_document(self.settings))


def _health_reasons(checks: dict[str, dict[str, Any]], newest: int | None) -> list[str]:
    """Why /health is not `ok`, one sentence each, saying what to look at."""
    reasons = []
    if not checks["data_dir"]["ok"]:
        reasons.append(f"the data directory {checks['data_dir']['path']} does not exist: nothing can be served "
                       "(is the volume mounted?)")
    if not checks["redis"]["ok"]:
        reasons.append("Redis does not answer: posts not yet flushed cannot be served and nothing is ingested")
    elif not checks["hot_tier"]["ok"] and checks["hot_tier"]["enabled"]:
        reasons.append("the buffer cannot be read: posts not yet flushed are not served")
    if newest is None:
        reasons.append("no events yet (archived or buffered): is the ingester running?")
    elif not checks["freshness"]["ok"]:
        reasons.append(f"the newest event is {checks['freshness']['newest_event_age_s']:.0f} s old (more than "
                       f"{checks['freshness']['max_age_s']:.0f} s): ingest or the feed has stalled")
    return reasons


def _no_parameters() -> None:
    pairs = query_pairs(bottle.request.environ)
    if pairs:
        raise BadParameter(pairs[0][0][:64], "unknown parameter; this endpoint takes none")


def create_app(settings: Settings | None = None) -> bottle.Bottle:
    """The WSGI app. Reads `Settings.from_env()` when no settings are given. Opens nothing: DuckDB, Redis and
    the PLC pool are created on first use in each worker process."""
    settings = settings or Settings.from_env()
    check_api_settings(settings)
    api = Api(settings)
    app = bottle.Bottle()
    app.config["catchall"] = True
    app.config["firehose.api"] = api
    routes: dict[str, tuple[str, Callable[[], bottle.HTTPResponse]]] = {
        "/search": ("search", api.search),
        "/export": ("export", api.export),
        "/health": ("health", api.health),
        "/metrics": ("metrics", api.metrics_endpoint),
        "/stats": ("stats", api.stats),
        "/openapi.json": ("openapi", api.openapi),
    }
    for path, (name, handler) in routes.items():
        app.route(path, "GET", api.endpoint(path, handler), name=name)

    def not_found(err: bottle.HTTPError) -> bytes:
        return _error_page(api, err, 404, None, f"no such endpoint; try one of {', '.join(ENDPOINTS)}")

    def not_allowed(err: bottle.HTTPError) -> bytes:
        return _error_page(api, err, 405, None, "method not allowed; every endpoint answers GET (and HEAD)")

    def internal(err: bottle.HTTPError) -> bytes:
        if err.exception is not None:
            log.error("unhandled error: %r\n%s", err.exception, err.traceback)
        return _error_page(api, err, 500, None, "internal error; it has been logged")

    def bad_request(err: bottle.HTTPError) -> bytes:
        return _error_page(api, err, 400, None, "the request is malformed")

    app.error_handler.update({404: not_found, 405: not_allowed, 500: internal, 400: bad_request})
    return app


def _error_page(api: Api, err: bottle.HTTPError, status: int, parameter: str | None, message: str) -> bytes:
    """JSON body for errors Bottle raises itself (no route, wrong method, failures outside the handlers)."""
    for key, value in api.headers().items():
        bottle.response.set_header(key, value)
    api.observe("unmatched" if status in (404, 405) else "error", status, 0.0)
    return orjson.dumps({"error": {"parameter": parameter, "message": message}})
