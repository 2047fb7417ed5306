"""Search and export served from the hot tier and the archive together, with the hiding rules: over a real
redis-server, Parquet written by the real flush, and (at the end) the API under a real Gunicorn."""

from __future__ import annotations

import csv
import io
import time
from pathlib import Path

import pytest

from firehose.buffer import EVENT_FIELD, Buffer, Keys
from firehose.config import Settings
from firehose.filters import Filters
from firehose.flush import Flusher
from firehose.hot import HotTier
from firehose.matching import needle
from firehose.params import SearchQuery
from firehose.schema import post_uri
from firehose.search import Searcher
from firehose.simulator.identity import handle_for
from firehose.simulator.options import SimulatorOptions
from firehose.simulator.server import SimulatorThread
from tests.support.api_server import start_gunicorn
from tests.support.events import account, delete_post, like, post_event
from tests.support.services import RedisServer, free_port, stop_process

DID = "did:plc:aaaaaaaaaaaaaaaaaaaaaaaa"
OTHER = "did:plc:bbbbbbbbbbbbbbbbbbbbbbbb"


def settings_for(redis_server: RedisServer, tmp_path: Path, keep_seconds: int = 0) -> Settings:
    return Settings.from_env({"FIREHOSE_REDIS_URL": redis_server.url, "FIREHOSE_DATA_DIR": str(tmp_path / "data"),
                              "FIREHOSE_FLUSH_TRIM_KEEP_SECONDS": str(keep_seconds),
                              "FIREHOSE_API_HOT_REFRESH_SECONDS": "0", "FIREHOSE_PLC_URL": ""})


def searcher_for(settings: Settings, redis_server: RedisServer) -> Searcher:
    return Searcher(settings, hot=HotTier(redis_server.client, Keys.from_settings(settings), min_interval=0))


def filters_of(needles: tuple[str, ...] = (), author_did: str | None = None, sort: str = "latest") -> Filters:
    """`Filters` with each needle given as the word a user types."""
    return Filters(SearchQuery(sort=sort), tuple(n for w in needles if (n := needle(w)) is not None),
                   author_did=author_did)


def search_uris(searcher: Searcher, limit: int = 50, **filters: object) -> list[str]:
    """Every URI a full walk over the pages returns, in order."""
    uris: list[str] = []
    after = None
    while True:
        page = searcher.search(filters_of(**filters), limit, after, cap=10_000)  # type: ignore[arg-type]
        uris += [r["uri"] for r in page.rows]
        if page.next_position is None:
            return uris
        assert len(page.rows) == limit, "a page before the last one is short"
        after = page.next_position


def export_uris(searcher: Searcher, max_rows: int = 10_000, **filters: object) -> list[str]:
    return [u for batch in searcher.export(filters_of(**filters), max_rows)  # type: ignore[arg-type]
            for u in batch.column("uri").to_pylist()]


def test_a_post_is_served_before_the_flush_and_once_after(redis_server: RedisServer, tmp_path: Path) -> None:
    settings = settings_for(redis_server, tmp_path, keep_seconds=3600)  # flushed entries stay in the stream
    buffer = Buffer.connect(settings)
    searcher = searcher_for(settings, redis_server)
    assert search_uris(searcher, needles=("coffee",)) == []
    buffer.append([post_event(DID, "1", "morning coffee"), like(), post_event(DID, "2", "tea")], 1)
    assert search_uris(searcher, needles=("coffee",)) == [post_uri(DID, "1")]  # nothing flushed yet
    assert export_uris(searcher, needles=("coffee",)) == [post_uri(DID, "1")]
    Flusher(settings, buffer).run_once()  # now in Parquet and still in the stream
    assert Buffer.connect(settings).length() > 0
    assert search_uris(searcher, needles=("coffee",)) == [post_uri(DID, "1")]
    assert export_uris(searcher, needles=("coffee",)) == [post_uri(DID, "1")]
    assert search_uris(searcher) == [post_uri(DID, "2"), post_uri(DID, "1")]


def test_hot_and_archived_posts_interleave_in_sort_order(redis_server: RedisServer, tmp_path: Path) -> None:
    settings = settings_for(redis_server, tmp_path)
    buffer = Buffer.connect(settings)
    searcher = searcher_for(settings, redis_server)
    base = 1_779_719_000_000_000
    buffer.append([post_event(DID, f"a{i:03d}", f"word {i}", base + 10 * i) for i in range(0, 100, 2)], 1)
    Flusher(settings, buffer).run_once()  # the even ones are archived (and trimmed)
    buffer.append([post_event(DID, f"a{i:03d}", f"word {i}", base + 10 * i) for i in range(1, 100, 2)], 1)
    newest_first = [post_uri(DID, f"a{i:03d}") for i in reversed(range(100))]
    for limit in (7, 50, 100):
        assert search_uris(searcher, limit, needles=("word",)) == newest_first
        assert search_uris(searcher, limit, needles=("word",), sort="oldest") == newest_first[::-1]
    assert export_uris(searcher, needles=("word",)) == newest_first
    assert export_uris(searcher, needles=("word",), sort="oldest") == newest_first[::-1]
    assert export_uris(searcher, 33, needles=("word",)) == newest_first[:33]


def test_deleted_posts_are_never_served_and_pages_stay_full(redis_server: RedisServer, tmp_path: Path) -> None:
    settings = settings_for(redis_server, tmp_path)
    buffer = Buffer.connect(settings)
    searcher = searcher_for(settings, redis_server)
    base = 1_779_719_000_000_000
    buffer.append([post_event(DID, f"p{i:03d}", f"cat {i}", base + i) for i in range(120)], 1)
    buffer.append([delete_post(DID, f"p{i:03d}") for i in range(0, 60, 2)], 1)  # archived deletions
    Flusher(settings, buffer).run_once()
    buffer.append([delete_post(DID, f"p{i:03d}") for i in range(60, 120, 2)], 1)  # deletions in the buffer only
    expected = [post_uri(DID, f"p{i:03d}") for i in reversed(range(1, 120, 2))]
    for limit in (1, 10, 50):
        assert search_uris(searcher, limit, needles=("cat",)) == expected
    assert export_uris(searcher, needles=("cat",)) == expected
    assert export_uris(searcher, 7, needles=("cat",)) == expected[:7]
    Flusher(settings, buffer).run_once()  # the rest of the deletions archived too
    assert search_uris(searcher, 10, needles=("cat",)) == expected


def test_inactive_accounts_are_hidden_until_reactivated(redis_server: RedisServer, tmp_path: Path) -> None:
    settings = settings_for(redis_server, tmp_path)
    buffer = Buffer.connect(settings)
    searcher = searcher_for(settings, redis_server)
    buffer.append([post_event(DID, "1", "hello"), post_event(OTHER, "2", "hello")], 1)
    Flusher(settings, buffer).run_once()
    buffer.append([account(DID, False, "suspended")], 1)
    assert search_uris(searcher, needles=("hello",)) == [post_uri(OTHER, "2")]
    assert search_uris(searcher, author_did=DID) == []
    assert export_uris(searcher, needles=("hello",)) == [post_uri(OTHER, "2")]
    filters, warnings = searcher.filters(SearchQuery(author=DID), did_for=lambda name: name)
    assert filters is None and "is not active" in warnings[0]  # answered without reading a file
    assert searcher.filters(SearchQuery(author=OTHER), did_for=lambda name: name)[0] is not None
    Flusher(settings, buffer).run_once()
    assert search_uris(searcher, needles=("hello",)) == [post_uri(OTHER, "2")]
    buffer.append([account(DID, True)], 1)
    assert sorted(search_uris(searcher, needles=("hello",))) == [post_uri(DID, "1"), post_uri(OTHER, "2")]


@pytest.mark.slow
def test_the_api_serves_the_hot_tier_and_hides_deletions(redis_server: RedisServer, tmp_path: Path) -> None:
    settings = settings_for(redis_server, tmp_path)
    buffer = Buffer.connect(settings)
    buffer.append([post_event(DID, "1", "=HYPERLINK(\"http://evil.example\") fresh"),
                   post_event(DID, "2", "fresh gone")], 1)
    buffer.append([delete_post(DID, "2")], 1)
    (tmp_path / "data").mkdir()
    server = start_gunicorn(tmp_path, tmp_path / "data", redis_server.url, FIREHOSE_API_HOT_REFRESH_SECONDS="0")
    try:
        status, body = server.json("/search", text="fresh")
        assert status == 200, body
        assert [r["uri"] for r in body["results"]] == [post_uri(DID, "1")]  # before any flush
        status, _, raw = server.get("/export", text="fresh")
        rows = list(csv.DictReader(io.StringIO(raw.decode())))
        assert status == 200 and [r["uri"] for r in rows] == [post_uri(DID, "1")]
    finally:
        stop_process(server.proc)


@pytest.mark.slow
def test_a_handle_the_archive_never_saw_is_found_through_dns(redis_server: RedisServer, tmp_path: Path) -> None:
    """No identity event names this account; its handle resolves through the simulator's DNS (TXT _atproto) and is
    verified against its PLC document, then shown with its posts."""
    did = "did:plc:" + "q" * 24
    handle = handle_for(did)
    settings = settings_for(redis_server, tmp_path)
    buffer = Buffer.connect(settings)
    buffer.append([post_event(did, "1", "only via dns"), post_event(OTHER, "2", "only via dns")], 1)
    Flusher(settings, buffer).run_once()
    assert not any((tmp_path / "data").glob("identity/*/*.parquet"))
    with SimulatorThread(SimulatorOptions(port=free_port(), events=0, dns_port=0)) as sim:
        plc = f"{sim.http_url.rstrip('/')}/plc"
        server = start_gunicorn(tmp_path, tmp_path / "data", redis_server.url, FIREHOSE_PLC_URL=plc,
                                FIREHOSE_DNS_ENABLED="true", FIREHOSE_DNS_NAMESERVERS=f"127.0.0.1:{sim.dns_port}")
        try:
            status, body = server.json("/search", username=handle)
            assert status == 200 and [r["uri"] for r in body["results"]] == [post_uri(did, "1")], body
            assert body["results"][0]["username"] == handle
            status, body = server.json("/search", username="nobody-" + handle)
            assert status == 200 and body["results"] == [] and "could not be resolved" in body["meta"]["warnings"][0]
        finally:
            stop_process(server.proc)


@pytest.mark.slow
def test_a_capped_hot_tier_keeps_hiding_what_the_outage_deleted(redis_server: RedisServer, tmp_path: Path) -> None:
    """The flush is down; a deletion and a deactivation of archived posts arrive, then more new posts than the
    API's hot cap: /search and /export never serve the hidden posts, during the outage nor after the flush."""
    settings = settings_for(redis_server, tmp_path)
    buffer = Buffer.connect(settings)
    buffer.append([post_event(DID, "1", "cat kept"), post_event(DID, "2", "cat deleted"),
                   post_event(OTHER, "3", "cat deactivated")], 1)
    Flusher(settings, buffer).run_once()  # archived; from here on the flush is down
    client = redis_server.client()
    start_ms = int(time.time() * 1000) + 1_000
    client.xadd(settings.stream_key, {EVENT_FIELD: b"\n".join([delete_post(DID, "2"), account(OTHER, False)])},
                id=f"{start_ms}-0")
    for i in range(6):  # one post per 10 s segment of stream time, all newer than the hiding facts
        entry_id = f"{start_ms + 20_000 * (i + 1)}-0"
        client.xadd(settings.stream_key, {EVENT_FIELD: post_event(DID, f"n{i}", "cat new")}, id=entry_id)
    server = start_gunicorn(tmp_path, tmp_path / "data", redis_server.url, FIREHOSE_API_HOT_REFRESH_SECONDS="0",
                            FIREHOSE_API_HOT_MAX_POSTS="2")

    def served() -> tuple[list[str], list[str]]:
        status, body = server.json("/search", text="cat", limit="50")
        assert status == 200, body
        status, _, raw = server.get("/export", text="cat")
        assert status == 200, raw
        return [r["uri"] for r in body["results"]], [r["uri"] for r in csv.DictReader(io.StringIO(raw.decode()))]

    try:
        during = [post_uri(DID, "n5"), post_uri(DID, "n4"), post_uri(DID, "1")]  # the cap keeps the 2 newest posts
        assert served() == (during, during)
        Flusher(settings, buffer).run_once()  # the flush is back: everything archived, the stream trimmed
        after = [post_uri(DID, f"n{i}") for i in reversed(range(6))] + [post_uri(DID, "1")]
        assert served() == (after, after)
    finally:
        stop_process(server.proc)
