"""The hot tier (posts still in the Redis buffer) and the hiding rules, over a real redis-server and real Parquet
written by the real flush."""

from __future__ import annotations

from pathlib import Path

import pytest

from firehose.buffer import Buffer, Keys
from firehose.config import Settings
from firehose.flush import Flusher
from firehose.hiding import Hiding
from firehose.hot import READ_ENTRIES, HotSnapshot, HotTier
from firehose.schema import post_uri
from tests.support.events import account, delete_post, like, post_event
from tests.support.services import RedisServer


@pytest.fixture
def settings(redis_server: RedisServer, tmp_path: Path) -> Settings:
    return Settings.from_env({"FIREHOSE_REDIS_URL": redis_server.url, "FIREHOSE_DATA_DIR": str(tmp_path / "data"),
                              "FIREHOSE_FLUSH_TRIM_KEEP_SECONDS": "0"})


def tier(settings: Settings, redis_server: RedisServer) -> HotTier:
    return HotTier(redis_server.client, Keys.from_settings(settings), min_interval=0)


def uris(snapshot: HotSnapshot) -> list[str]:
    return sorted(snapshot.posts.column("uri").to_pylist())


def test_posts_are_hot_until_the_flush_trims_them(settings: Settings, redis_server: RedisServer) -> None:
    buffer = Buffer.connect(settings)
    hot = tier(settings, redis_server)
    assert hot.refresh().post_count == 0
    buffer.append([post_event("did:plc:a", "1", "first"), like(), post_event("did:plc:a", "2", "second")], 1)
    snap = hot.refresh()
    assert uris(snap) == [post_uri("did:plc:a", "1"), post_uri("did:plc:a", "2")]
    assert snap.posts.column("text").to_pylist() == ["first", "second"]
    assert snap.uris == frozenset(uris(snap))
    buffer.append([post_event("did:plc:b", "3", "third")], 1)
    assert hot.refresh().post_count == 3
    Flusher(settings, buffer).run_once()  # writes Parquet, then trims everything (keep 0 s)
    assert hot.refresh().post_count == 0
    buffer.append([post_event("did:plc:b", "4", "fourth")], 1)
    assert uris(hot.refresh()) == [post_uri("did:plc:b", "4")]


def test_a_replayed_post_is_hot_once(settings: Settings, redis_server: RedisServer) -> None:
    buffer = Buffer.connect(settings)
    hot = tier(settings, redis_server)
    event = post_event("did:plc:a", "1", "twice")
    buffer.append([event], 1)
    hot.refresh()
    buffer.append([event, event], 1)
    assert hot.refresh().post_count == 1


def test_deletes_and_account_events_in_the_buffer(settings: Settings, redis_server: RedisServer) -> None:
    buffer = Buffer.connect(settings)
    hot = tier(settings, redis_server)
    buffer.append([post_event("did:plc:a", "1", "x"), delete_post("did:plc:a", "1"), account("did:plc:b", False,
                   "deactivated"), delete_post("did:plc:a", "9")], 1)
    snap = hot.refresh()
    assert snap.deleted_uris == {post_uri("did:plc:a", "1"), post_uri("did:plc:a", "9")}
    assert [(a.did, a.active) for a in snap.accounts] == [("did:plc:b", False)]


def test_a_backlog_is_read_over_several_refreshes(settings: Settings, redis_server: RedisServer) -> None:
    """Each refresh reads for at most its budget (here: one XRANGE, the clock jumping past the budget at every
    look), says it is behind, and the next refreshes take up where it stopped: every post once, none skipped."""
    ticks = iter(range(10_000))
    hot = HotTier(redis_server.client, Keys.from_settings(settings), min_interval=0, read_budget=0.5,
                  clock=lambda: float(next(ticks)))
    buffer = Buffer.connect(settings)
    entries = READ_ENTRIES * 3 + 1
    for i in range(entries):
        buffer.append([post_event("did:plc:a", str(i), f"post {i}"), like()], 1)
    counts = []
    snap = hot.refresh()
    while snap.behind:
        counts.append(snap.post_count)
        snap = hot.refresh()
    assert counts == [READ_ENTRIES, 2 * READ_ENTRIES, 3 * READ_ENTRIES]
    assert snap.post_count == entries and len(snap.uris) == entries


def test_refresh_is_throttled_and_survives_a_dead_redis(settings: Settings, redis_server: RedisServer) -> None:
    now = [0.0]
    hot = HotTier(redis_server.client, Keys.from_settings(settings), min_interval=5, clock=lambda: now[0])
    Buffer.connect(settings).append([post_event("did:plc:a", "1", "x")], 1)
    assert hot.refresh().post_count == 1
    Buffer.connect(settings).append([post_event("did:plc:a", "2", "y")], 1)
    assert hot.refresh().post_count == 1  # within min_interval: not re-read
    now[0] = 6.0
    assert hot.refresh().post_count == 2
    redis_server.proc.kill()
    redis_server.proc.wait()
    now[0] = 12.0
    snap = hot.refresh()
    assert snap.post_count == 2 and snap.error is not None and "buffer" in snap.error


def hiding_for(settings: Settings) -> Hiding:
    return Hiding(settings.data_dir, min_interval=0)


def keep(rules, did: str, rkey: str) -> bool:
    return rules.keep_mask([post_uri(did, rkey)], [did])[0]


def test_archived_and_buffered_deletions_hide_posts(settings: Settings, redis_server: RedisServer) -> None:
    buffer = Buffer.connect(settings)
    hot = tier(settings, redis_server)
    hiding = hiding_for(settings)
    buffer.append([post_event("did:plc:a", "1", "x"), post_event("did:plc:a", "2", "y"),
                   delete_post("did:plc:a", "1")], 1)
    Flusher(settings, buffer).run_once()
    rules = hiding.current(hot.refresh())
    assert not keep(rules, "did:plc:a", "1")  # the delete is archived
    assert keep(rules, "did:plc:a", "2")
    buffer.append([delete_post("did:plc:a", "2")], 1)
    rules = hiding.current(hot.refresh())
    assert not keep(rules, "did:plc:a", "2")  # the delete is only in the buffer
    Flusher(settings, buffer).run_once()
    rules = hiding.current(hot.refresh())
    assert not keep(rules, "did:plc:a", "1") and not keep(rules, "did:plc:a", "2")  # both archived now


def test_inactive_accounts_are_hidden_until_active_again(settings: Settings, redis_server: RedisServer) -> None:
    buffer = Buffer.connect(settings)
    hot = tier(settings, redis_server)
    hiding = hiding_for(settings)
    buffer.append([post_event("did:plc:a", "1", "x"), account("did:plc:a", False, "takendown")], 1)
    Flusher(settings, buffer).run_once()
    assert not keep(hiding.current(hot.refresh()), "did:plc:a", "1")
    buffer.append([account("did:plc:a", True)], 1)  # reactivated, still in the buffer
    assert keep(hiding.current(hot.refresh()), "did:plc:a", "1")
    Flusher(settings, buffer).run_once()
    assert keep(hiding.current(hot.refresh()), "did:plc:a", "1")
    buffer.append([account("did:plc:a", False, "deactivated")], 1)
    assert not keep(hiding.current(hot.refresh()), "did:plc:a", "1")


def test_the_cap_drops_posts_never_the_hiding_facts(settings: Settings, redis_server: RedisServer) -> None:
    """The flush is down and newer posts push the tier past its cap: the old deletion and deactivation stay."""
    client = redis_server.client()
    hot = HotTier(redis_server.client, Keys.from_settings(settings), min_interval=0, max_posts=2)
    old = [post_event("did:plc:a", "1", "old"), delete_post("did:plc:z", "9"),
           account("did:plc:y", False, "deactivated")]
    client.xadd(settings.stream_key, {b"e": b"\n".join(old)}, id="1000000-0")
    for i in range(5):  # each in its own 10 s segment, newer than the deletion
        client.xadd(settings.stream_key, {b"e": post_event("did:plc:b", str(i), "new")},
                    id=f"{1_100_000 + 20_000 * i}-0")
    snap = hot.refresh()
    assert snap.post_count <= 2
    assert post_uri("did:plc:z", "9") in snap.deleted_uris
    assert [(a.did, a.active) for a in snap.accounts] == [("did:plc:y", False)]


@pytest.fixture
def keep_tail(redis_server: RedisServer, tmp_path: Path) -> Settings:
    """Settings whose flush keeps a long tail in the buffer after each batch (the real replay-dedupe tail)."""
    return Settings.from_env({"FIREHOSE_REDIS_URL": redis_server.url, "FIREHOSE_DATA_DIR": str(tmp_path / "data"),
                              "FIREHOSE_FLUSH_TRIM_KEEP_SECONDS": "3600"})


def test_a_flushed_post_leaves_the_tier_though_the_buffer_keeps_it(keep_tail: Settings,
                                                                   redis_server: RedisServer) -> None:
    buffer = Buffer.connect(keep_tail)
    hot = HotTier(redis_server.client, Keys.from_settings(keep_tail), min_interval=0)
    buffer.append([post_event("did:plc:a", "1", "flushed"), delete_post("did:plc:z", "1")], 1)
    assert hot.refresh().post_count == 1
    Flusher(keep_tail, buffer).run_once()
    assert buffer.length() == 1  # still in Redis: the tail is kept
    buffer.append([post_event("did:plc:a", "2", "new")], 1)
    snap = hot.refresh()
    assert uris(snap) == [post_uri("did:plc:a", "2")]  # the flushed post is served from Parquet only
    assert snap.uris == {post_uri("did:plc:a", "2")} and not snap.deleted_uris
    assert snap.flushed_through is not None
    fresh = HotTier(redis_server.client, Keys.from_settings(keep_tail), min_interval=0).refresh()
    assert uris(fresh) == [post_uri("did:plc:a", "2")]  # a fresh worker starts at the flushed cut


def test_a_deletion_just_committed_stays_hidden(settings: Settings, redis_server: RedisServer) -> None:
    """The flush commits (and, keeping no tail, trims) the batch holding a deletion: the first request after it
    already has the deletion from the batch's files, though the archive's rules were read less than
    `min_interval` ago."""
    buffer = Buffer.connect(settings)
    buffer.append([post_event("did:plc:a", "1", "x")], 1)
    Flusher(settings, buffer).run_once()
    hot = HotTier(redis_server.client, Keys.from_settings(settings), min_interval=0)
    hiding = Hiding(settings.data_dir, min_interval=3600)
    assert keep(hiding.current(hot.refresh()), "did:plc:a", "1")
    buffer.append([delete_post("did:plc:a", "1"), account("did:plc:b", False, "deactivated")], 1)
    assert not keep(hiding.current(hot.refresh()), "did:plc:a", "1")  # from the buffer
    Flusher(settings, buffer).run_once()
    snap = hot.refresh()
    assert not snap.deleted_uris and not snap.accounts and buffer.length() == 0
    rules = hiding.current(snap)
    assert not keep(rules, "did:plc:a", "1")  # from the batch's Parquet, at once
    assert rules.is_inactive("did:plc:b")


def test_a_replay_after_the_cut_is_hot_once(keep_tail: Settings, redis_server: RedisServer) -> None:
    """A post delivered again after its first copy was flushed is served once (from the tier, skipped in Parquet)."""
    buffer = Buffer.connect(keep_tail)
    hot = HotTier(redis_server.client, Keys.from_settings(keep_tail), min_interval=0)
    event = post_event("did:plc:a", "1", "again")
    buffer.append([event, post_event("did:plc:a", "2", "other")], 1)
    hot.refresh()
    Flusher(keep_tail, buffer).run_once()
    buffer.append([event], 1)
    buffer.append([event], 1)
    snap = hot.refresh()
    assert uris(snap) == [post_uri("did:plc:a", "1")] and snap.uris == {post_uri("did:plc:a", "1")}
