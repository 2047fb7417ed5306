"""The API in-process (WSGI calls, no server): response shapes, error shapes, odd inputs, cursors, CSV, timeouts,
handles from the identity table and from a real local PLC directory (http.server in a thread)."""

from __future__ import annotations

import csv
import dataclasses
import http.server
import io
import threading
import time
import urllib.parse
import wsgiref.util
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from firehose.api import create_app
from firehose.handles import HandleBook, PlcResolver, TTLCache, handle_from_did_document
from tests.conftest import free_port, wait_until
from tests.unit.test_query import DAY1, DAY2, DAY3, bulk_posts, post, settings_for, us, write_identity, write_posts


class Response:
    """What a WSGI call returned."""

    def __init__(self, status: str, headers: list[tuple[str, str]], body: bytes) -> None:
        self.status = int(status.split(maxsplit=1)[0])
        self.headers = {k.lower(): v for k, v in headers}
        self.body = body

    def json(self) -> Any:
        return orjson.loads(self.body)


def call(app: Any, path: str, query: str = "", method: str = "GET") -> Response:
    """Call the WSGI app like a server would (PATH_INFO and QUERY_STRING as latin-1 native strings)."""
    environ: dict[str, Any] = {}
    wsgiref.util.setup_testing_defaults(environ)
    environ.update(REQUEST_METHOD=method, PATH_INFO=path, QUERY_STRING=query)
    seen: dict[str, Any] = {}

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> None:
        seen.update(status=status, headers=headers)

    chunks = app(environ, start_response)
    body = b"".join(chunks)
    getattr(chunks, "close", lambda: None)()
    return Response(seen["status"], seen["headers"], body)


def get(app: Any, path: str, **params: Any) -> Response:
    return call(app, path, urllib.parse.urlencode(params, doseq=True))


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    data = tmp_path / "data"
    rows = [
        post("Hello world", DAY1, did="did:plc:alice", langs=["en"]),
        post("hello, new WORLD", DAY2, did="did:plc:bob", mentions=["did:plc:alice"]),
        post('text with "quotes", commas\nand a newline', DAY3, did="did:plc:carol"),
        post("Привет мир 🦋", DAY3, did="did:plc:alice", langs=["ru"], links=["https://news.example.org/a"]),
    ]
    write_posts(data, rows)
    write_identity(data, [("did:plc:alice", "alice.test", us(DAY1, 1)), ("did:plc:bob", "bob.test", us(DAY1, 2))])
    return data


@pytest.fixture
def app(data_dir: Path) -> Any:
    return create_app(settings_for(data_dir, redis_url="redis://127.0.0.1:1/0"))


def test_search_shape(app: Any) -> None:
    r = get(app, "/search", text="WORLD hello")
    assert r.status == 200 and r.headers["content-type"] == "application/json"
    assert r.headers["access-control-allow-origin"] == "*"
    body = r.json()
    assert [x["text"] for x in body["results"]] == ["hello, new WORLD", "Hello world"]
    first = body["results"][0]
    assert first["username"] == "bob.test" and first["did"] == "did:plc:bob"
    assert first["timestamp"].startswith(DAY2) and first["timestamp"].endswith("Z")
    assert first["mentions"] == ["did:plc:alice"] and first["uri"].startswith("at://did:plc:bob/")
    meta = body["meta"]
    assert meta["count"] == 2 and meta["cursor"] is None and meta["limit"] == 50 and meta["total_cap"] == 1000
    assert meta["query"]["text"] == "WORLD hello" and meta["query"]["sort"] == "latest"
    assert isinstance(meta["took_ms"], float)


def test_unknown_did_falls_back_to_the_did(app: Any) -> None:
    r = get(app, "/search", text="quotes")
    assert r.json()["results"][0]["username"] == "did:plc:carol"


def test_username_filter_takes_handle_or_did(app: Any) -> None:
    by_handle = get(app, "/search", username="@Alice.Test").json()
    by_did = get(app, "/search", author="did:plc:alice").json()
    assert [x["text"] for x in by_handle["results"]] == ["Привет мир 🦋", "Hello world"]
    assert by_did["results"] == by_handle["results"]
    unknown = get(app, "/search", username="nobody.test").json()
    assert unknown["results"] == [] and "nobody.test" in unknown["meta"]["warnings"][0]
    assert [x["text"] for x in get(app, "/search", mentions="alice.test").json()["results"]] == ["hello, new WORLD"]


def test_frontend_parameters(app: Any) -> None:
    r = get(app, "/search", text="hello world", exact="true")
    assert [x["text"] for x in r.json()["results"]] == ["Hello world"]
    r = get(app, "/search", text="hello", start=DAY2, end=DAY2)
    assert [x["text"] for x in r.json()["results"]] == ["hello, new WORLD"]
    r = get(app, "/search", lang="ru", domain="example.org")
    assert [x["text"] for x in r.json()["results"]] == ["Привет мир 🦋"]


def error_of(r: Response) -> dict[str, Any]:
    assert r.headers["content-type"] == "application/json", r.body
    body = r.json()
    assert set(body) == {"error"} and set(body["error"]) == {"parameter", "message"}
    return body["error"]


@pytest.mark.parametrize(("query", "parameter"), [
    ("start=2024-02-30", "since"),
    ("limit=0", "limit"),
    ("limit=51", "limit"),
    ("limit=99999999999999999999999999", "limit"),
    ("limit=-1", "limit"),
    ("sort=top", "sort"),
    ("sort=%00", "sort"),
    ("cursor=forged.cursor", "cursor"),
    ("cursor=%F0%9F%A6%8B", "cursor"),
    ("text=" + "x" * 600, "text"),
    ("exact=sure", "exact"),
    ("text=a%00b", "text"),
    ("text=%ff%fe", "text"),
    ("%ff=1", "query"),
    ("text=a&text=b", "text"),
    ("username=a&author=b", "author"),
    ("nope=1", "nope"),
    ("username=%3Cscript%3E", "username"),
    ("&".join(f"tag={i}" for i in range(100)), "query"),
])
def test_bad_input_is_a_400_naming_the_parameter(app: Any, query: str, parameter: str) -> None:
    r = call(app, "/search", query)
    assert r.status == 400
    err = error_of(r)
    assert err["parameter"] == parameter and err["message"]


@pytest.mark.parametrize("query", [
    "text=%", "text=%25", "text=%2", "text=+", "text=&&&", "=", "==&=x", "text=%C3", "text=\xff\xfe",
    "limit=%20%2050", "start=%20", "start=9999-12-31", "end=0001-01-01", "exact=", "cursor=", "tag=%23",
    "text=" + "%E2%80%AE" * 10, "domain=-", "url=javascript:alert(1)", "lang=zz-ZZZZZZZZZ", "text=\\\\%_",
])
def test_odd_inputs_never_500(app: Any, query: str) -> None:
    r = call(app, "/search", query)
    assert r.status in (200, 400), (query, r.status, r.body)
    if r.status == 400:
        error_of(r)


@pytest.mark.parametrize(("path", "method", "status"), [
    ("/nope", "GET", 404), ("/search/extra", "GET", 404), ("/\xff\xfe", "GET", 404), ("/search", "POST", 405),
    ("/export", "DELETE", 405), ("/", "GET", 404),
])
def test_404_and_405_are_json(app: Any, path: str, method: str, status: int) -> None:
    r = call(app, path, "", method)
    assert r.status == status
    error_of(r)


def test_head_is_allowed(app: Any) -> None:
    assert call(app, "/health", "", "HEAD").status in (200, 503)


def test_unexpected_failure_is_a_json_500(app: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    api = app.config["firehose.api"]
    monkeypatch.setattr(api.searcher, "search", lambda *a, **k: 1 / 0)
    r = get(app, "/search", text="x")
    assert r.status == 500 and "internal error" in error_of(r)["message"]


def test_cursor_pages(tmp_path: Path) -> None:
    data = tmp_path / "data"
    bulk_posts(data, DAY1, 80, name="a")
    bulk_posts(data, DAY2, 80, name="b")
    app = create_app(settings_for(data, api_page_size=50, api_max_results=120))
    seen: list[str] = []
    params: dict[str, Any] = {"text": "filler", "limit": 50}
    counts = []
    while True:
        meta = (r := get(app, "/search", **params).json())["meta"]
        seen += [x["uri"] for x in r["results"]]
        counts.append(meta["count"])
        if not meta["cursor"]:
            break
        params["cursor"] = meta["cursor"]
    assert counts == [50, 50, 20] and len(set(seen)) == 120
    other = get(app, "/search", text="other words", cursor=params["cursor"])
    assert other.status == 400 and error_of(other)["parameter"] == "cursor"
    # another worker with the same secret accepts the cursor
    again = create_app(settings_for(data, api_page_size=50, api_max_results=120))
    assert get(again, "/search", **params).status == 200


def test_export_csv(app: Any) -> None:
    r = get(app, "/export", text="")
    assert r.status == 200
    assert r.headers["content-type"] == "text/csv; charset=utf-8"
    assert r.headers["content-disposition"].startswith('attachment; filename="bluesky-posts-')
    rows = list(csv.DictReader(io.StringIO(r.body.decode())))
    assert len(rows) == 4
    assert rows[0]["text"] == "Привет мир 🦋" and rows[0]["username"] == "alice.test"
    assert rows[0]["langs"] == '["ru"]' and rows[0]["timestamp"].endswith("Z")
    assert rows[1]["text"] == 'text with "quotes", commas\nand a newline' and rows[1]["username"] == "did:plc:carol"
    assert list(rows[0]) == ["timestamp", "username", "text", "uri", "did", "cid", "created_at", "langs",
                             "reply_parent_uri", "reply_root_uri", "embed_type", "embed_uri", "mentions", "links",
                             "tags"]
    limited = list(csv.reader(io.StringIO(get(app, "/export", limit=1).body.decode())))
    assert len(limited) == 2
    empty = list(csv.reader(io.StringIO(get(app, "/export", text="zzzz").body.decode())))
    assert len(empty) == 1 and empty[0][0] == "timestamp"
    assert get(app, "/export", cursor="x").status == 400


def test_export_cap_over_partitions(tmp_path: Path) -> None:
    data = tmp_path / "data"
    for i, day in enumerate((DAY1, DAY2, DAY3)):
        bulk_posts(data, day, 3000, name=f"p{i}")
    app = create_app(settings_for(data, api_export_max_rows=7000))
    rows = list(csv.DictReader(io.StringIO(get(app, "/export").body.decode())))
    assert len(rows) == 7000 and len({r["uri"] for r in rows}) == 7000
    assert rows[0]["timestamp"] > rows[-1]["timestamp"]
    assert get(app, "/export", limit=7001).status == 400


def test_timeout_is_a_504_and_the_worker_recovers(tmp_path: Path) -> None:
    data = tmp_path / "data"
    for day in range(1, 29):
        bulk_posts(data, f"2024-02-{day:02d}", 20_000, name=f"b{day}", text="lorem ipsum dolor sit amet " * 8)
    bulk_posts(data, "2024-03-01", 10, name="tiny")
    # a budget no machine can meet: scanning 560k long texts takes ~80 ms here, two orders of magnitude more than
    # 1 ms, and the watchdog's verdict is checked after every statement (an interrupt that lands between two
    # statements is not lost)
    app = create_app(settings_for(data, api_query_timeout=0.001))
    r = get(app, "/search", text="nowhere-to-be-found")
    assert r.status == 504 and "budget" in error_of(r)["message"]
    r = get(app, "/export", text="nowhere-to-be-found")
    assert r.status == 504
    # the same worker and DuckDB connection answer the next query, given a budget it can meet
    searcher = app.config["firehose.api"].searcher
    searcher.settings = dataclasses.replace(searcher.settings, api_query_timeout=60.0)
    assert get(app, "/search", limit=3, start="2024-03-01").status == 200
    metrics = get(app, "/metrics").body.decode()
    assert 'firehose_api_query_errors_total{endpoint="/search",kind="timeout"} 1.0' in metrics


def test_openapi_lists_every_route(app: Any) -> None:
    doc = get(app, "/openapi.json").json()
    assert doc["openapi"].startswith("3.1")
    routes = {(r.rule, r.method) for r in app.routes}
    assert {(p, m.upper()) for p, ops in doc["paths"].items() for m in ops} == routes
    search_params = {p["name"]: p for p in doc["paths"]["/search"]["get"]["parameters"]}
    assert search_params["limit"]["schema"]["maximum"] == 50
    assert search_params["sort"]["schema"]["enum"] == ["latest", "oldest"]
    assert search_params["text"]["schema"]["maxLength"] == 512


def test_health_stats_metrics(app: Any) -> None:
    health = get(app, "/health")
    assert health.status == 503  # redis on port 1 is down and the fixture data is old
    checks = health.json()["checks"]
    assert checks["redis"]["ok"] is False and checks["data_dir"]["ok"] is True
    assert checks["freshness"]["ok"] is False and checks["freshness"]["newest_event_age_s"] > 0
    stats = get(app, "/stats").json()
    assert stats["tables"]["posts"]["rows"] == 4 and stats["tables"]["identity"]["rows"] == 2
    assert get(app, "/stats", x=1).status == 400
    text = get(app, "/metrics").body.decode()
    assert 'firehose_api_requests_total{endpoint="/health",status="503"} 1.0' in text
    assert "firehose_api_request_seconds_bucket" in text


# ------------------------------------------------------------------------------------------ PLC directory


class PlcHandler(http.server.BaseHTTPRequestHandler):
    """A tiny PLC directory: /did:plc:known -> a document; /did:plc:slow -> late; anything else 404."""

    hits: list[str] = []  # noqa: RUF012 (test server state)
    release = threading.Event()  # /did:plc:slow answers only once a test sets it

    def do_GET(self) -> None:
        did = urllib.parse.unquote(self.path.lstrip("/"))
        type(self).hits.append(did)
        if did == "did:plc:slow":
            type(self).release.wait(60)
        if did in ("did:plc:known", "did:plc:slow"):
            body = orjson.dumps({"id": did, "alsoKnownAs": ["https://x", f"at://{did[8:]}.plc.test"]})
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(body)
            return
        if did == "did:plc:broken":
            self.send_response(500)
            self.end_headers()
            return
        self.send_response(404)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def plc_server() -> Iterator[str]:
    PlcHandler.hits = []
    PlcHandler.release = threading.Event()
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), PlcHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        PlcHandler.release.set()
        server.shutdown()
        server.server_close()


def book_with(plc_url: str, timeout: float = 0.5) -> HandleBook:
    return HandleBook(lambda dids: {}, lambda handle: None, PlcResolver(plc_url, timeout), 100, 60.0)


def test_plc_resolution_with_negative_cache(plc_server: str) -> None:
    book = book_with(plc_server)
    deadline = time.monotonic() + 2
    assert book.handles(["did:plc:known", "did:plc:missing", "did:web:x.test"], plc_deadline=deadline) == {
        "did:plc:known": "known.plc.test"}
    assert sorted(PlcHandler.hits) == ["did:plc:known", "did:plc:missing"]
    book.handles(["did:plc:known", "did:plc:missing"], plc_deadline=time.monotonic() + 2)
    assert len(PlcHandler.hits) == 2  # hits and misses are cached
    assert book.did_for("known.plc.test") == "did:plc:known"


def test_plc_slow_answers_arrive_later(plc_server: str) -> None:
    book = book_with(plc_server, timeout=60)
    # the directory holds its answer until released: the search returns at its deadline without the handle
    assert book.handles(["did:plc:slow"], plc_deadline=time.monotonic() + 0.1) == {}
    PlcHandler.release.set()
    # the late answer still fills the cache: a cache-only lookup (no PLC deadline) finds the handle
    wait_until(lambda: book.handles(["did:plc:slow"], plc_deadline=None) == {"did:plc:slow": "slow.plc.test"},
               what="the late PLC answer in the cache")
    assert PlcHandler.hits == ["did:plc:slow"]


def test_plc_down_never_fails_a_search(data_dir: Path) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    app = create_app(settings_for(data_dir, plc_url=dead, plc_timeout=0.5))
    r = get(app, "/search", text="quotes")
    assert r.status == 200 and r.json()["results"][0]["username"] == "did:plc:carol"
    assert app.config["firehose.api"].book.plc.is_down()


def test_plc_errors_open_the_breaker(plc_server: str) -> None:
    book = book_with(plc_server)
    assert book.handles(["did:plc:broken"], plc_deadline=time.monotonic() + 2) == {}
    assert book.plc.is_down()
    assert book.handles(["did:plc:known"], plc_deadline=time.monotonic() + 2) == {}
    assert PlcHandler.hits == ["did:plc:broken"]


def test_search_shows_plc_handles(data_dir: Path, plc_server: str) -> None:
    rows = [post("from a plc account", DAY3, did="did:plc:known")]
    write_posts(data_dir, rows, name="plc")
    app = create_app(settings_for(data_dir, plc_url=plc_server))
    r = get(app, "/search", text="plc account")
    assert r.json()["results"][0]["username"] == "known.plc.test"


def test_ttl_cache_and_did_documents() -> None:
    now = [0.0]
    cache = TTLCache(2, 10.0, clock=lambda: now[0])
    cache.put("a", 1)
    cache.put("b", 2)
    cache.put("c", 3)
    assert cache.get("a", None) is None and cache.get("c") == 3
    now[0] = 11.0
    assert cache.get("c", None) is None
    assert handle_from_did_document({"alsoKnownAs": ["at://Bad Handle", "at://Good.Example"]}) == "good.example"
    assert handle_from_did_document({"alsoKnownAs": "at://x.y"}) is None
    assert handle_from_did_document([]) is None
