"""The API served by a real Gunicorn (2 gthread workers) over HTTP: every endpoint, CSV export, multiprocess
metrics, health with Redis up and down, error shapes, and an OpenAPI document that lists every route."""

from __future__ import annotations

import csv
import io
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from firehose import index
from firehose.api import create_app
from firehose.buffer import Buffer
from firehose.catalog import date_of
from firehose.config import Settings
from tests.support.api_server import NOW_US, Server, start_gunicorn
from tests.support.archive import bulk_posts, post_row, search_settings, write_identity, write_posts
from tests.support.events import post_event
from tests.support.services import RedisServer, start_redis, stop_process


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, RedisServer, Path]]:
    tmp = tmp_path_factory.mktemp("api")
    data = tmp / "data"
    rows = [
        post_row("Hello world", did="did:plc:alice", time_us=NOW_US - 3 * 86_400_000_000),
        post_row("hello again world", did="did:plc:bob", time_us=NOW_US - 86_400_000_000, tags=["News"]),
        post_row('a "quoted", multi\nline text', did="did:plc:carol", time_us=NOW_US - 60_000_000),
        post_row("Привет мир 日本 🦋", did="did:plc:alice", time_us=NOW_US - 30_000_000, langs=["ru"]),
    ]
    write_posts(data, rows)
    write_identity(data, [("did:plc:alice", "alice.test", NOW_US - 86_400_000_000)])
    bulk_posts(data, "2024-01-01", 300, text="filler")
    redis = start_redis(tmp / "redis")
    server = start_gunicorn(tmp, data, redis.url)
    try:
        yield server, redis, data
    finally:
        stop_process(server.proc)
        stop_process(redis.proc)


def test_search(stack: tuple[Server, RedisServer, Path]) -> None:
    server = stack[0]
    status, body = server.json("/search", text="WORLD hello")
    assert status == 200
    assert [r["text"] for r in body["results"]] == ["hello again world", "Hello world"]
    assert [r["username"] for r in body["results"]] == ["did:plc:bob", "alice.test"]
    assert body["meta"]["count"] == 2 and body["meta"]["cursor"] is None
    status, body = server.json("/search", text="日本 🦋")
    assert [r["username"] for r in body["results"]] == ["alice.test"]
    status, body = server.json("/search", username="alice.test", tag="#news")
    assert status == 200 and body["results"] == []


def test_pages_are_consistent_across_workers(stack: tuple[Server, RedisServer, Path]) -> None:
    server = stack[0]
    seen: list[str] = []
    params: dict[str, Any] = {"text": "filler", "limit": 40}
    for _ in range(20):
        status, body = server.json("/search", **params)
        assert status == 200, body
        seen += [r["uri"] for r in body["results"]]
        if body["meta"]["cursor"] is None:
            break
        params["cursor"] = body["meta"]["cursor"]
    assert len(seen) == 300 == len(set(seen))


def test_export(stack: tuple[Server, RedisServer, Path]) -> None:
    server = stack[0]
    status, headers, body = server.get("/export", text="")
    assert status == 200 and headers["content-type"] == "text/csv; charset=utf-8"
    assert headers["content-disposition"].startswith('attachment; filename="bluesky-posts-')
    assert headers["content-disposition"].endswith('.csv"')
    rows, mark = parsed_export(body)
    assert len(rows) == 304 and mark is None  # complete: the data rows, nothing after them
    assert rows[0]["text"] == "Привет мир 日本 🦋" and rows[0]["username"] == "alice.test"
    assert rows[1]["text"] == 'a "quoted", multi\nline text'


# A script's view of /export's truncation row (docs/api.md): the last row, first cell "# truncated: <why>; <n> rows;
# resume with end=<time> ..." (start= for sort=oldest); a complete export has none.
TRUNCATION = re.compile(r"# truncated: (?P<why>timeout|limit|error)\b[^;]*; (?P<rows>\d+) rows; "
                        r"resume with (?P<name>end|start)=(?P<when>\S+) ")


def export_rows(server: Server, **params: Any) -> tuple[list[dict[str, str]], re.Match[str] | None]:
    """An export's data rows and its truncation row's match, if it has one (see `parsed_export`)."""
    status, _, body = server.get("/export", **params)
    assert status == 200, body[:300]
    return parsed_export(body)


def parsed_export(body: bytes) -> tuple[list[dict[str, str]], re.Match[str] | None]:
    """The data rows of an export's CSV (csv module, as a script reads it) and its truncation row's match, if it
    has one; every row of the file has the header's width."""
    rows = list(csv.reader(io.StringIO(body.decode(), newline="")))
    header, data = rows[0], rows[1:]
    assert all(len(r) == len(header) for r in data)
    marked = [i for i, r in enumerate(data) if r[0].startswith("#")]
    assert marked in ([], [len(data) - 1]), "only the last row may be a truncation row"
    mark = None
    if marked:
        mark = TRUNCATION.match(data.pop()[0])
        assert mark is not None and int(mark["rows"]) == len(data), rows[-1][0]
    return [dict(zip(header, r, strict=True)) for r in data], mark


def test_export_says_when_its_limit_cut_it(stack: tuple[Server, RedisServer, Path]) -> None:
    server = stack[0]
    rows, mark = export_rows(server, text="filler", limit=10)
    assert len(rows) == 10 and mark is not None and mark["why"] == "limit" and mark["name"] == "end"
    assert "limit of 10 rows reached and more posts match (the request's limit)" in mark.string
    for limit in (300, 301):  # exactly every match, and room for one more: complete, no truncation row
        rows, mark = export_rows(server, text="filler", limit=limit)
        assert len(rows) == 300 and mark is None


@pytest.fixture(scope="module")
def cut_stack(stack: tuple[Server, RedisServer, Path], tmp_path_factory: pytest.TempPathFactory
              ) -> Iterator[tuple[Server, Server, set[str]]]:
    """Three days of 100 "filler" posts each (pairs share a time) and two servers over them: one whose exports
    are cut off at once (FIREHOSE_API_EXPORT_TIMEOUT of 1 µs: the stream stops at the first check after the
    first day), one with FIREHOSE_API_EXPORT_MAX_ROWS=250; and the URIs of every matching post."""
    tmp = tmp_path_factory.mktemp("cut")
    data = tmp / "data"
    for day in ("2024-02-01", "2024-02-02", "2024-02-03"):
        bulk_posts(data, day, 100, name=f"b{day[-2:]}")
    tricky = [post_row("# truncated: timeout; 1 rows; not a marker filler", date="2024-02-03", seconds=7200),
              post_row("=1+1 filler", date="2024-02-03", seconds=7201)]
    write_posts(data, tricky)
    uris = {f"at://did:plc:bulk/app.bsky.feed.post/b{d}{i:07d}" for d in ("01", "02", "03") for i in range(100)}
    uris |= {p["uri"] for p in tricky}
    redis_url = stack[1].url
    cutting = start_gunicorn(tmp, data, redis_url, FIREHOSE_API_WORKERS="1", FIREHOSE_API_EXPORT_TIMEOUT="0.000001")
    capped = start_gunicorn(tmp, data, redis_url, FIREHOSE_API_WORKERS="1", FIREHOSE_API_EXPORT_MAX_ROWS="250")
    try:
        yield cutting, capped, uris
    finally:
        stop_process(cutting.proc)
        stop_process(capped.proc)


def test_an_export_cut_by_its_timeout_says_so_and_where_to_resume(cut_stack: tuple[Server, Server, set[str]]
                                                                   ) -> None:
    cutting, capped, uris = cut_stack
    rows, mark = export_rows(cutting, text="filler")
    assert mark is not None and mark["why"] == "timeout" and mark["name"] == "end", rows[-1]
    assert "timeout after 1e-06 s (FIREHOSE_API_EXPORT_TIMEOUT)" in mark.string
    assert len(rows) == 102 and {r["timestamp"][:10] for r in rows} == {"2024-02-03"}  # the newest day, then cut
    assert next(r["text"] for r in rows if r["text"].startswith("'=")) == "'=1+1 filler"  # still neutralised
    assert any(r["text"].startswith("# truncated") for r in rows)  # a post's text is data, not a marker
    # the resume point loses nothing: the rest, from a server with time to finish, completes the set
    rest, end = export_rows(capped, text="filler", end=mark["when"])
    assert end is None and rest[0]["timestamp"] == rows[-1]["timestamp"]  # the last row's time comes again
    assert {r["uri"] for r in rows} | {r["uri"] for r in rest} == uris
    repeated = {r["uri"] for r in rows} & {r["uri"] for r in rest}
    assert repeated == {r["uri"] for r in rows if r["timestamp"] == rows[-1]["timestamp"]}
    raw, mark = export_rows(cutting, text="filler", raw="true")  # raw=true: the same marker, exact cells
    assert mark is not None and mark["why"] == "timeout" and "=1+1 filler" in {r["text"] for r in raw}
    metrics = cutting.get("/metrics")[2].decode()
    assert 'firehose_api_exports_total{outcome="timeout"} 2.0' in metrics


def test_an_export_cut_by_the_row_cap_says_so(cut_stack: tuple[Server, Server, set[str]]) -> None:
    capped, uris = cut_stack[1], cut_stack[2]
    for sort, name in (("latest", "end"), ("oldest", "start")):
        rows, mark = export_rows(capped, text="filler", sort=sort)
        assert len(rows) == 250 and mark is not None and mark["why"] == "limit" and mark["name"] == name
        assert "(FIREHOSE_API_EXPORT_MAX_ROWS: the most one export returns)" in mark.string
        rest, end = export_rows(capped, text="filler", sort=sort, **{name: mark["when"]})
        assert end is None and {r["uri"] for r in rows} | {r["uri"] for r in rest} == uris
    rows, mark = export_rows(capped, text="filler", start="2024-02-02")  # 202 posts fit: complete
    assert len(rows) == 202 and mark is None
    metrics = capped.get("/metrics")[2].decode()
    assert 'firehose_api_exports_total{outcome="limit"} 2.0' in metrics
    assert 'firehose_api_exports_total{outcome="complete"}' in metrics


def test_errors(stack: tuple[Server, RedisServer, Path]) -> None:
    server = stack[0]
    for target, parameter in (("/search?limit=5000", "limit"), ("/search?start=nope", "start"),
                              ("/search?sort=top", "sort"), ("/search?cursor=abc.def", "cursor"),
                              ("/search?exact=perhaps", "exact"), ("/search?text=%ff", "text"),
                              ("/search?text=a%00", "text"), ("/export?limit=0", "limit")):
        status, headers, body = server.raw(target)
        assert status == 400, target
        assert headers["content-type"] == "application/json"
        assert orjson.loads(body)["error"]["parameter"] == parameter
    for target, method, code in (("/missing", "GET", 404), ("/search", "POST", 405)):
        status, _, body = server.raw(target, method)
        assert status == code and orjson.loads(body)["error"]["message"]


def test_health_stats_openapi(stack: tuple[Server, RedisServer, Path]) -> None:
    server = stack[0]
    status, body = server.json("/health")
    assert status == 200, body
    assert body["status"] == "ok" and body["checks"]["freshness"]["newest_event_age_s"] < 900
    status, body = server.json("/stats")
    assert status == 200 and body["tables"]["posts"]["rows"] == 304
    status, doc = server.json("/openapi.json")
    routes = {(r.rule, r.method) for r in create_app(search_settings(stack[2])).routes}
    assert {(p, m.upper()) for p, ops in doc["paths"].items() for m in ops} == routes


def test_metrics_cover_every_worker(stack: tuple[Server, RedisServer, Path]) -> None:
    server = stack[0]
    before = _count(server, "/openapi.json", "200")
    for _ in range(12):
        assert server.get("/openapi.json")[0] == 200
    status, headers, body = server.get("/metrics")
    assert status == 200 and headers["content-type"].startswith("text/plain")
    assert _count(server, "/openapi.json", "200") == before + 12
    assert b"firehose_api_request_seconds_bucket" in body
    assert server.log.read_text().count("Booting worker") == 2


def _count(server: Server, endpoint: str, status: str) -> float:
    text = server.get("/metrics")[2].decode()
    needle = f'firehose_api_requests_total{{endpoint="{endpoint}",status="{status}"}} '
    for line in text.splitlines():
        if line.startswith(needle):
            return float(line[len(needle):])
    return 0.0


def test_meta_and_metrics_say_how_each_day_was_read(tmp_path: Path, redis_server: RedisServer) -> None:
    """`meta.days` and `firehose_api_search_days_total`: an indexed day is read from its index, a day whose index
    is gone is scanned (reason `missing`), posts still in the buffer come from the hot tier, and a search without
    text scans; counted over both workers, for /search and /export."""
    data = tmp_path / "data"
    yesterday, before = NOW_US - 86_400_000_000, NOW_US - 2 * 86_400_000_000
    write_posts(data, [post_row("observable yesterday", did="did:plc:alice", time_us=yesterday),
                       post_row("observable before", did="did:plc:bob", time_us=before)])
    index.verify(data)
    shutil.rmtree(index.day_dir(data, date_of(before)))
    settings = Settings.from_env({"FIREHOSE_REDIS_URL": redis_server.url, "FIREHOSE_DATA_DIR": str(data)})
    Buffer.connect(settings).append([post_event("did:plc:carol", "3khot0001", "observable now", NOW_US)], 1)
    server = start_gunicorn(tmp_path, data, redis_server.url)
    try:
        assert _days_read(server) == {}
        status, body = server.json("/search", text="observable")
        assert status == 200, body
        assert [r["text"] for r in body["results"]] == ["observable now", "observable yesterday", "observable before"]
        assert body["meta"]["days"] == [{"date": date_of(NOW_US), "via": "hot"},
                                        {"date": date_of(yesterday), "via": "index"},
                                        {"date": date_of(before), "via": "scan", "reason": "missing"}]
        status, _, csv_body = server.get("/export", text="observable")
        assert status == 200 and len(list(csv.DictReader(io.StringIO(csv_body.decode())))) == 3
        status, body = server.json("/search", limit=3)  # no text: the archive is scanned, no index applies
        assert status == 200 and len(body["results"]) == 3
        assert sorted((d["date"], d["via"], d.get("reason")) for d in body["meta"]["days"]) == sorted(
            [(date_of(NOW_US), "hot", None), (date_of(yesterday), "scan", "no_text"),
             (date_of(before), "scan", "no_text")])
        assert _days_read(server) == {
            ("/search", "hot", ""): 2, ("/search", "index", ""): 1, ("/search", "scan", "missing"): 1,
            ("/search", "scan", "no_text"): 2,
            ("/export", "hot", ""): 1, ("/export", "index", ""): 1, ("/export", "scan", "missing"): 1}
    finally:
        stop_process(server.proc)
    assert 1 <= server.log.read_text().count(f"scanning {date_of(before)} instead of reading its index (missing") <= 2


def _days_read(server: Server) -> dict[tuple[str, str, str], float]:
    """firehose_api_search_days_total by (endpoint, via, reason), from /metrics (all workers)."""
    text = server.get("/metrics")[2].decode()
    return {(s.labels["endpoint"], s.labels["via"], s.labels["reason"]): s.value
            for family in text_string_to_metric_families(text) if family.name == "firehose_api_search_days"
            for s in family.samples if s.name == "firehose_api_search_days_total"}


def test_health_without_redis(tmp_path: Path, redis_server: RedisServer) -> None:
    data = tmp_path / "data"
    write_posts(data, [post_row("fresh", time_us=NOW_US)])
    server = start_gunicorn(tmp_path, data, redis_server.url)
    try:
        status, body = server.json("/health")
        assert status == 200, body
        stop_process(redis_server.proc)
        status, body = server.json("/health")
        assert status == 200 and body["status"] == "degraded" and "Redis does not answer" in body["reasons"][0]
        assert body["checks"]["redis"]["ok"] is False and body["checks"]["data_dir"]["ok"] is True
        status, body = server.json("/search", text="fresh")  # search does not need Redis
        assert status == 200 and body["meta"]["count"] == 1
    finally:
        stop_process(server.proc)


def test_a_backlog_in_the_buffer_is_read_over_several_requests_and_said(tmp_path: Path,
                                                                         redis_server: RedisServer) -> None:
    """Far more buffered entries than one refresh may read (a catch-up): each search answers with what the hot tier
    has read so far and says it is behind, until it has read them all; no post is skipped or served twice."""
    data = tmp_path / "data"
    write_posts(data, [post_row("archived", time_us=NOW_US - 86_400_000_000)])
    buffer = Buffer(redis_server.client(), Settings.from_env({"FIREHOSE_REDIS_URL": redis_server.url}))
    entries = 400
    for i in range(entries):
        buffer.append([post_event("did:plc:backlog", str(i), f"backlog post {i}", NOW_US - 60_000_000 + i)], 1)
    server = start_gunicorn(tmp_path, data, redis_server.url, FIREHOSE_API_WORKERS="1",
                            FIREHOSE_API_HOT_READ_BUDGET_SECONDS="0.000001", FIREHOSE_API_HOT_REFRESH_SECONDS="0")
    try:
        seen: list[int] = []
        for _ in range(entries):
            status, body = server.json("/search", text="backlog", limit=1)
            assert status == 200, body
            behind = any("backlog of the buffer" in w for w in body["meta"].get("warnings", []))
            seen.append(body["meta"]["count"])
            if not behind:
                break
        assert len(seen) > 1, "one refresh read the whole backlog: the budget did nothing"
        status, _, body = server.get("/export", text="backlog", limit=10_000)
        rows, cut = parsed_export(body)
        assert status == 200 and cut is None
        assert len(rows) == entries and len({r["uri"] for r in rows}) == entries
    finally:
        stop_process(server.proc)
