"""The ingester as a real process against a real redis-server and a real websocket peer."""

from __future__ import annotations

import os
import signal
import subprocess
import time
import urllib.request
from pathlib import Path

import orjson
import pytest
import redis
from prometheus_client.parser import text_string_to_metric_families

from firehose.buffer import EVENT_FIELD, Buffer, split_events
from firehose.config import Settings
from tests.support.events import GOLDEN_LINES
from tests.support.pipeline import CLI, stage_env
from tests.support.services import RedisServer, free_port, start_redis, stop_process, wait_until
from tests.support.wsfeed import ScriptedFeed


def start_ingester(redis_url: str, data_dir: Path, url: str, metrics_port: int = 0, **env: str) -> subprocess.Popen:
    """The ingester as a process; `metrics_port` serves its Prometheus metrics (what the tests wait on)."""
    environment = stage_env(redis_url, data_dir, FIREHOSE_COMPRESS="false", FIREHOSE_BACKOFF_MAX_SECONDS="0.5",
                            FIREHOSE_INGEST_BATCH_MS="20", FIREHOSE_INGEST_METRICS_PORT=str(metrics_port), **env)
    return subprocess.Popen([*CLI, "ingest", "--url", url, "--cursor", "1"], env=environment,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def metric(port: int, name: str, **labels: str) -> float:
    """The sum of the ingester's samples called `name` (matching `labels`); 0 while its endpoint is not up yet."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
            text = response.read().decode()
    except OSError:
        return 0.0
    return sum(sample.value for family in text_string_to_metric_families(text) for sample in family.samples
               if sample.name == name and labels.items() <= sample.labels.items())


def frames_from_cursor(feed: ScriptedFeed, events: list[bytes]) -> int:
    """How many of `events` the feed sent on its latest connection (those at or after that connection's cursor)."""
    cursor = int(feed.queries[-1]["cursor"][0])
    return sum(1 for e in events if orjson.loads(e)["time_us"] >= cursor)


def handled(port: int) -> float:
    """Frames the ingester is done with: appended to the buffer or recognised as already buffered."""
    return metric(port, "firehose_ingest_events_total") + metric(port, "firehose_ingest_duplicates_total")


def numbered_events(n: int, start_us: int = 1_779_719_000_000_000) -> list[bytes]:
    """`n` distinct like events, 1 ms apart."""
    like = orjson.loads(GOLDEN_LINES[0])
    out = []
    for i in range(n):
        like["time_us"] = start_us + i * 1000
        like["commit"]["rkey"] = f"k{i:08d}"
        out.append(orjson.dumps(like))
    return out


def stream_events(server: RedisServer) -> list[bytes]:
    return [raw for _, fields in server.client().xrange("firehose:events") for raw in split_events(fields[EVENT_FIELD])]


def buffered(client: redis.Redis) -> int:
    """Events appended to the buffer so far."""
    return int(client.hget("firehose:cursor", "events_in") or 0)


def test_bad_frames_go_to_the_dead_letter_stream(redis_server: RedisServer, tmp_path: Path) -> None:
    bad = [b"{not json", b"[]", b'{"did":"did:plc:x","time_us":5,"kind":"gossip"}',
           b'{"did":"did:plc:x","kind":"identity"}', b'{"did":"did:plc:x","time_us":1,"kind":"identity","pad":"'
           + b"x" * 5000 + b'"}']
    frames = [*GOLDEN_LINES[:5], *bad, *GOLDEN_LINES[5:]]
    with ScriptedFeed(frames) as feed:
        proc = start_ingester(redis_server.url, tmp_path, feed.url, FIREHOSE_MAX_FRAME_BYTES="4000")
        try:
            client = redis_server.client()
            wait_until(lambda: buffered(client) == 10 and client.xlen("firehose:deadletter") == 5,
                       what="10 events and 5 dead letters")
        finally:
            stop_process(proc)
    assert stream_events(redis_server) == GOLDEN_LINES
    reasons = [fields[b"reason"] for _, fields in client.xrange("firehose:deadletter")]
    assert reasons == [b"invalid_json", b"not_an_object", b"unknown_kind", b"bad_time_us", b"oversized"]
    assert proc.returncode == 0  # SIGTERM: a clean stop


def test_cursor_is_stored_and_a_restart_rewinds_without_doubling(redis_server: RedisServer, tmp_path: Path) -> None:
    events = numbered_events(20_000)  # 20 s of event time
    with ScriptedFeed(events) as feed:
        proc = start_ingester(redis_server.url, tmp_path, feed.url)
        client = redis_server.client()
        try:
            wait_until(lambda: buffered(client) == 20_000, what="all events buffered")
        finally:
            stop_process(proc)
        stored = int(client.hget("firehose:cursor", "time_us"))
        assert stored == orjson.loads(events[-1])["time_us"]
        port = free_port()
        proc = start_ingester(redis_server.url, tmp_path, feed.url, metrics_port=port)
        try:
            wait_until(lambda: len(feed.queries) == 2, what="the second connection")
            replayed = frames_from_cursor(feed, events)
            # every replayed frame was looked at (and, the assertion below shows, none appended again)
            wait_until(lambda: handled(port) >= replayed, what=f"the ingester to handle {replayed} replayed frames")
        finally:
            stop_process(proc)
    assert int(feed.queries[1]["cursor"][0]) == stored - 5_000_000
    assert stream_events(redis_server) == events  # the 5 s replayed were recognised, not appended again


@pytest.mark.parametrize("failpoint", ["ingest.after_append:3", "ingest.before_append:5"])
def test_kill_9_of_the_ingester_loses_and_doubles_nothing(redis_server: RedisServer, tmp_path: Path,
                                                          failpoint: str) -> None:
    events = numbered_events(30_000)
    with ScriptedFeed(events) as feed:
        crashed = start_ingester(redis_server.url, tmp_path, feed.url, FIREHOSE_FAILPOINT=failpoint,
                                 FIREHOSE_INGEST_BATCH="1000")
        assert crashed.wait(30) == -9
        client = redis_server.client()
        assert buffered(client) < 30_000
        port = free_port()
        proc = start_ingester(redis_server.url, tmp_path, feed.url, metrics_port=port)
        try:
            wait_until(lambda: buffered(client) >= 30_000, what="all events buffered")
            sent = frames_from_cursor(feed, events)  # from the stored cursor, rewound: some are replays
            wait_until(lambda: handled(port) >= sent, what=f"the ingester to handle the {sent} frames sent")
        finally:
            stop_process(proc)
    assert stream_events(redis_server) == events


def test_overload_pauses_reading_and_drops_nothing(tmp_path: Path) -> None:
    server = start_redis(tmp_path / "redis", "--maxmemory", "3mb", "--maxmemory-policy", "noeviction")
    events = numbered_events(30_000)  # ~15 MB of JSON: far past maxmemory
    try:
        with ScriptedFeed(events) as feed:
            port = free_port()
            proc = start_ingester(server.url, tmp_path, feed.url, metrics_port=port)
            client = server.client()
            try:
                wait_until(lambda: metric(port, "firehose_ingest_backpressure_seconds_total") > 0,
                           what="Redis to refuse writes at its memory limit")
                partial = buffered(client)
                assert 0 < partial < 30_000  # stopped at the memory limit, still running
                assert proc.poll() is None
                client.config_set("maxmemory", "0")
                wait_until(lambda: buffered(client) >= 30_000, what="the rest")
                wait_until(lambda: handled(port) >= len(events), what="the ingester to handle every frame")
            finally:
                stop_process(proc)
        assert stream_events(server) == events
    finally:
        stop_process(server.proc)


def test_ingester_survives_the_feed_going_away(redis_server: RedisServer, tmp_path: Path) -> None:
    events = numbered_events(100)
    feed = ScriptedFeed(events)
    port = free_port()
    with feed:
        proc = start_ingester(redis_server.url, tmp_path, feed.url, metrics_port=port)
        client = redis_server.client()
        wait_until(lambda: buffered(client) == 100, what="first events")
    # the feed is gone: the ingester keeps retrying (with backoff) instead of exiting
    wait_until(lambda: metric(port, "firehose_ingest_reconnects_total") >= 3 or proc.poll() is not None,
               what="two reconnection attempts after the feed went away")
    assert proc.poll() is None
    revived = ScriptedFeed([*events, *numbered_events(50, start_us=1_779_719_100_000_000)])
    revived.port = feed.port
    with revived:
        try:
            wait_until(lambda: buffered(client) == 150, what="events after reconnecting")
        finally:
            stop_process(proc)
    assert len(set(stream_events(redis_server))) == 150


def test_a_stopped_redis_does_not_stall_the_websocket(redis_server: RedisServer, tmp_path: Path) -> None:
    """While redis-server is SIGSTOPped for longer than the feed's ping timeout, the ingester's write of a batch
    waits, but its event loop still answers pings: no reconnect, and after SIGCONT every event is buffered once."""
    ping_timeout = 4.0  # generous: a loaded machine must not miss a pong by itself
    before = numbered_events(300)
    during = numbered_events(50, start_us=1_779_719_300_000_000)
    after = numbered_events(300, start_us=1_779_719_400_000_000)
    with ScriptedFeed(before, ping_every=0.2, ping_timeout=ping_timeout) as feed:
        proc = start_ingester(redis_server.url, tmp_path, feed.url)
        client = redis_server.client()
        try:
            wait_until(lambda: buffered(client) == 300 and feed.pongs > 0, what="the first events and a pong")
            os.kill(redis_server.proc.pid, signal.SIGSTOP)
            try:
                stopped, pongs = time.monotonic(), feed.pongs
                feed.push(during)  # written after 20 ms: that write now waits on the stopped Redis
                wait_until(lambda: feed.ping_timeouts > 0 or proc.poll() is not None
                           or (time.monotonic() - stopped > 2 * ping_timeout and feed.pongs >= pongs + 10),
                           timeout=120, what="pongs for two ping timeouts while Redis is stopped")
                assert feed.ping_timeouts == 0, "the ingester stopped answering pings while Redis was stopped"
                assert proc.poll() is None
            finally:
                os.kill(redis_server.proc.pid, signal.SIGCONT)
            feed.push(after)
            wait_until(lambda: buffered(client) >= 650, what="every event after SIGCONT")
        finally:
            stop_process(proc)
    assert proc.returncode == 0
    assert stream_events(redis_server) == [*before, *during, *after]  # none lost, none doubled
    assert len(feed.queries) == 1  # the one connection stayed up
    assert feed.ping_timeouts == 0


def test_a_retried_append_is_applied_once(redis_server: RedisServer) -> None:
    """A retry under the same batch token (after a timeout whose first try did reach Redis) appends nothing."""
    buffer = Buffer.connect(Settings.from_env({"FIREHOSE_REDIS_URL": redis_server.url}))
    events = numbered_events(3)
    first = buffer.append(events, 5, token="batch-1")
    assert buffer.append(events, 5, token="batch-1") == first
    assert (buffer.length(), buffered(buffer.client)) == (1, 3)
    buffer.append(events[:1], 6, token="batch-2")
    assert (buffer.length(), buffered(buffer.client), buffer.unflushed_events()) == (2, 4, 4)
