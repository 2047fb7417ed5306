"""The Jetstream simulator over real websocket connections on loopback."""

from __future__ import annotations

import contextlib
import http.client
import json
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import dns.flags
import dns.message
import dns.query
import dns.rcode
import dns.resolver
import orjson
import pytest
import zstandard
from websockets.exceptions import ConnectionClosed, InvalidStatus
from websockets.sync.client import ClientConnection, connect

from firehose.config import ZSTD_DICTIONARY_PATH
from firehose.simulator.generator import IDENTITY_HANDLE_SHARE, EventGenerator
from firehose.simulator.identity import did_for_handle, handle_for
from firehose.simulator.mix import POST
from firehose.simulator.options import SimulatorOptions
from firehose.simulator.server import SimulatorThread
from tests.support.paths import GOLDEN
from tests.support.services import free_port, stop_process, wait_for_port

DAY = "2026-05-25T00:00:00Z"
WAIT = 30.0  # seconds a test waits for one expected message: a loaded machine is slow, not wrong


@contextlib.contextmanager
def simulator(**options: Any) -> Iterator[SimulatorThread]:
    """A simulator on a free port, in a background thread."""
    with SimulatorThread(SimulatorOptions(port=free_port(), **options)) as sim:
        yield sim


def subscribe(sim: SimulatorThread, query: str = "") -> ClientConnection:
    return connect(f"{sim.url}?{query}", compression=None, max_size=2**22, open_timeout=WAIT)


def receive(ws: ClientConnection, count: int | None = None, idle: float = 0.5) -> list[bytes]:
    """`count` messages, each awaited up to WAIT seconds; without a count, messages until none came for `idle`
    seconds (only to show that nothing more is sent: a slow machine can make that pass, never fail). Text frames
    come back as UTF-8 bytes."""
    out: list[bytes] = []
    while count is None or len(out) < count:
        try:
            message = ws.recv(timeout=idle if count is None else WAIT)
        except TimeoutError:
            break
        out.append(message.encode() if isinstance(message, str) else message)
    return out


def generated(sim: SimulatorThread) -> EventGenerator:
    assert sim.generator is not None
    return sim.generator


def http_get(sim: SimulatorThread, path: str) -> tuple[int, str]:
    conn = http.client.HTTPConnection("127.0.0.1", sim.simulator.port, timeout=WAIT)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.read().decode()
    finally:
        conn.close()


def golden_lines() -> list[bytes]:
    return [line for line in GOLDEN.read_bytes().splitlines() if line.strip()]


# -- cursor and sequence ----------------------------------------------------------------------------------------------


def test_cursor_replay_is_exact() -> None:
    with simulator(start=DAY, rate=0, events=3000, seed=4) as sim:
        gen = generated(sim)
        cursor = gen.time_us(1200)
        start = gen.index_at_or_after(cursor)
        with subscribe(sim, f"cursor={cursor}") as ws:
            got = receive(ws, 3000 - start)
            assert got == [gen.event_json(i) for i in range(start, 3000)]
            assert receive(ws, idle=0.3) == []  # --events reached: the connection idles
        times = {orjson.loads(m)["time_us"] for m in got}
        assert all(gen.time_us(i) in times for i in range(3000) if gen.time_us(i) >= cursor)
        assert min(times) >= cursor - gen.jitter_us


def test_every_subscriber_sees_the_same_sequence() -> None:
    with simulator(start=DAY, rate=0, events=1500) as sim:
        with subscribe(sim, "cursor=1") as a, subscribe(sim, "cursor=1") as b:
            assert receive(a, 1500) == receive(b, 1500)
        # unpaced: a subscriber without a cursor starts where the fastest one got to (here: the end)
        with subscribe(sim) as late:
            assert receive(late, idle=0.3) == []
        stats = sim.stats()
        assert stats["events_produced"] == 3000 and stats["highest_index_sent"] == 1499
        assert stats["bytes_produced"] == 2 * sum(len(generated(sim).event_json(i)) for i in range(1500))


def test_first_subscriber_without_cursor_gets_everything_when_unpaced() -> None:
    with simulator(start=DAY, rate=0, events=800) as sim, subscribe(sim) as ws:
        assert receive(ws, 800) == [generated(sim).event_json(i) for i in range(800)]


def test_live_mode_follows_the_clock() -> None:
    from tests.support.services import wait_until

    with simulator(start="now", rate=400, seed=9) as sim:
        gen = generated(sim)
        wait_until(lambda: sim.stats()["live_index"] >= 100, what="100 events before we subscribe")
        subscribed_us = time.time_ns() // 1000
        got: list[bytes] = []
        received_us: list[int] = []
        with subscribe(sim) as ws:
            for _ in range(400):
                got += receive(ws, 1)
                received_us.append(time.time_ns() // 1000)
        live = sim.stats()["live_index"]
    assert len(got) == 400
    start = next(i for i in range(live) if gen.event_json(i) == got[0])
    assert gen.base_us(start) > subscribed_us  # it starts at the live position: nothing from before we subscribed
    assert got == [gen.event_json(i) for i in range(start, start + 400)]
    # and follows the clock: no event is sent before its (base) time has come
    assert all(gen.base_us(start + k) <= received_us[k] for k in range(400))


def test_paced_history_catches_up_then_follows() -> None:
    from tests.support.services import wait_until

    with simulator(start=DAY, rate=300) as sim:
        wait_until(lambda: sim.stats()["live_index"] >= 150, what="a backlog of 150 events")
        got: list[bytes] = []
        live_after: list[int] = []  # the live position right after each message arrived
        with subscribe(sim, "cursor=1") as ws:
            for _ in range(450):
                got += receive(ws, 1)
                live_after.append(sim.stats()["live_index"])
        gen = generated(sim)
        assert got == [gen.event_json(i) for i in range(450)]  # the backlog from the cursor, then what follows
        assert all(live_after[i] > i for i in range(450))  # never ahead of the pace: event i only once it exists


# -- parameters -----------------------------------------------------------------------------------------------------


def test_compress_true_round_trips_with_the_dictionary() -> None:
    dictionary = zstandard.ZstdCompressionDict(ZSTD_DICTIONARY_PATH.read_bytes())
    decompressor = zstandard.ZstdDecompressor(dict_data=dictionary)
    with simulator(start=DAY, rate=0, events=500) as sim, subscribe(sim, "compress=true&cursor=1") as ws:
        frames = receive(ws, 500)
        assert all(isinstance(f, bytes) for f in frames)
        assert zstandard.get_frame_parameters(frames[0]).dict_id == dictionary.dict_id() == 1612007021
        assert [decompressor.decompress(f) for f in frames] == [generated(sim).event_json(i) for i in range(500)]
        stats = sim.stats()
        assert stats["bytes_sent"] < 0.6 * stats["bytes_produced"]


def test_wanted_collections_with_wildcard_and_wanted_dids() -> None:
    with simulator(start=DAY, rate=0, events=3000, seed=2) as sim:
        gen = generated(sim)
        events = [gen.event(i) for i in range(3000)]

        def expected(keep: Any) -> list[bytes]:
            return [gen.event_json(i) for i, e in enumerate(events) if keep(e)]

        query = "cursor=1&wantedCollections=app.bsky.graph.*&wantedCollections=app.bsky.feed.post"
        want = expected(lambda e: e["kind"] != "commit" or e["commit"]["collection"].startswith("app.bsky.graph.")
                        or e["commit"]["collection"] == POST)
        with subscribe(sim, query) as ws:
            got = receive(ws, len(want))
            assert receive(ws, idle=0.3) == []
        assert got == want
        kinds = {orjson.loads(m)["kind"] for m in got}
        assert kinds == {"commit", "identity", "account"}  # identity and account are always sent

        did = next(e["did"] for e in events if e["kind"] == "commit")
        mine = expected(lambda e: e["did"] == did)
        with subscribe(sim, f"cursor=1&wantedDids={did}") as ws:
            assert receive(ws, len(mine)) == mine
            assert receive(ws, idle=0.3) == []


def test_max_message_size_skips_larger_events() -> None:
    with simulator(start=DAY, rate=0, events=1000) as sim:
        gen = generated(sim)
        small = [gen.event_json(i) for i in range(1000) if len(gen.event_json(i)) <= 450]
        with subscribe(sim, "cursor=1&maxMessageSizeBytes=450") as ws:
            assert receive(ws, len(small)) == small
            assert receive(ws, idle=0.3) == []


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("cursor=abc", "cursor must be an integer"),
        ("cursor=-5", "cursor must be >= 0"),
        ("wantedCollections=not..valid", "invalid wantedCollections"),
        ("wantedCollections=app.bsky.*.post", "invalid wantedCollections"),
        ("&".join(f"wantedCollections=a.b.c{i}" for i in range(101)), "too many wantedCollections"),
        ("wantedDids=alice", "invalid wantedDids"),
        ("compress=yes-please", "compress must be true or false"),
        ("maxMessageSizeBytes=-1", "maxMessageSizeBytes must be a non-negative integer"),
        ("requireHello=maybe", "requireHello must be true or false"),
    ],
)
def test_bad_parameters_get_400_with_a_message(query: str, message: str, shared_sim: SimulatorThread) -> None:
    status, body = http_get(shared_sim, f"/subscribe?{query}")
    assert status == 400 and message in body
    with pytest.raises(InvalidStatus) as excinfo:
        subscribe(shared_sim, query)
    assert excinfo.value.response.status_code == 400


@pytest.fixture(scope="module")
def shared_sim() -> Iterator[SimulatorThread]:
    with simulator(start=DAY, rate=0, events=100) as sim:
        yield sim


def test_http_endpoints(shared_sim: SimulatorThread) -> None:
    assert http_get(shared_sim, "/health") == (200, "ok\n")
    status, body = http_get(shared_sim, "/stats")
    stats = json.loads(body)
    assert status == 200
    assert {"events_produced", "bytes_produced", "connections", "live_index", "mode", "seed"} <= set(stats)
    status, body = http_get(shared_sim, "/elsewhere")
    assert status == 404 and "/subscribe" in body


# -- options_update ---------------------------------------------------------------------------------------------------


def test_require_hello_and_options_update() -> None:
    with simulator(start=DAY, rate=0, events=2000) as sim:
        gen = generated(sim)
        events = [gen.event(i) for i in range(2000)]
        want = [gen.event_json(i) for i, e in enumerate(events)
                if e["kind"] != "commit" or e["commit"]["collection"] == POST]
        with subscribe(sim, "cursor=1&requireHello=true") as ws:
            assert receive(ws, idle=0.3) == []  # nothing before the hello
            ws.send(json.dumps({"type": "options_update",
                                "payload": {"wantedCollections": ["app.bsky.feed.post"], "wantedDids": [],
                                            "maxMessageSizeBytes": 0}}))
            assert receive(ws, len(want)) == want
            assert receive(ws, idle=0.3) == []


def test_options_update_changes_filters_mid_stream_and_bad_updates_close() -> None:
    query = "cursor=1&wantedCollections=app.bsky.feed.like"
    with simulator(start=DAY, rate=200) as sim, subscribe(sim, query) as ws:
        assert receive(ws, count=20)
        ws.send(json.dumps({"type": "options_update", "payload": {"wantedCollections": ["app.bsky.graph.*"]}}))

        def graph(message: bytes) -> bool:
            event = orjson.loads(message)
            return event["kind"] == "commit" and event["commit"]["collection"].startswith("app.bsky.graph.")

        # likes in flight may still come; the first graph event shows the update applied, and nothing but
        # graph events (and identity/account, always sent) may follow it
        in_flight = 0
        while not graph(receive(ws, 1)[0]):
            in_flight += 1
            assert in_flight < 5000, "no app.bsky.graph.* event after the options_update"
        later = [orjson.loads(m) for m in receive(ws, count=10)]
        assert len(later) == 10 and all(e["kind"] != "commit" or e["commit"]["collection"].startswith(
            "app.bsky.graph.") for e in later)
        ws.send(json.dumps({"type": "options_update", "payload": {"wantedCollections": ["no good"]}}))
        with pytest.raises(ConnectionClosed) as excinfo:
            while True:
                ws.recv(timeout=WAIT)
        assert excinfo.value.rcvd is not None and excinfo.value.rcvd.code == 1008


# -- replay -----------------------------------------------------------------------------------------------------------


def test_replay_of_the_golden_file_is_verbatim() -> None:
    lines = golden_lines()
    with simulator(replay=GOLDEN, rate=0) as sim:
        with subscribe(sim) as ws:
            assert receive(ws, len(lines)) == lines
            assert receive(ws, idle=0.3) == []
        cursor = sorted(orjson.loads(line)["time_us"] for line in lines)[5]
        after = [line for line in lines if orjson.loads(line)["time_us"] >= cursor]
        with subscribe(sim, f"cursor={cursor}") as ws:
            assert receive(ws, len(after)) == after
            assert receive(ws, idle=0.3) == []
        with subscribe(sim, "cursor=1&wantedCollections=app.bsky.feed.like") as ws:
            got = [orjson.loads(m) for m in receive(ws, 3)]
            assert [e["kind"] for e in got] == ["commit", "identity", "account"]
            assert receive(ws, idle=0.3) == []


def test_replay_loop_repeats_the_file() -> None:
    lines = golden_lines()
    with simulator(replay=GOLDEN, rate=0, loop=True, events=25) as sim, subscribe(sim, "cursor=1") as ws:
        assert receive(ws, 25) == [lines[i % len(lines)] for i in range(25)]
        assert receive(ws, idle=0.3) == []


# -- flow control -----------------------------------------------------------------------------------------------------


def test_a_stalled_reader_stalls_its_producer_without_losing_events() -> None:
    with simulator(start=DAY, rate=0) as sim:
        gen = generated(sim)
        with connect(f"{sim.url}?cursor=1", compression=None, max_queue=4, open_timeout=5, close_timeout=1) as ws:
            # nothing is read: the producer must come to rest (bounded buffers) instead of running on. Wait for
            # three equal readings; a falsely early one only means fewer events are checked below
            produced = [sim.stats()["events_produced"]]
            while not (produced[-1] > 0 and produced[-3:] == [produced[-1]] * 3):
                assert produced[-1] < 100_000, "the producer did not wait for the stalled reader"
                assert len(produced) < 300, "the producer neither sent anything nor came to rest in 60 s"
                time.sleep(0.2)
                produced.append(sim.stats()["events_produced"])
            first = produced[-1]
            # (on exit the client closes with unread messages queued: close_timeout keeps that short)
            got = receive(ws, count=first + 500)
            assert got == [gen.event_json(i) for i in range(first + 500)]


# -- command line -----------------------------------------------------------------------------------------------------


def test_cli_serves_and_stops_on_sigterm() -> None:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "firehose.cli", "simulate", "--port", str(port), "--rate", "0", "--start", DAY,
         "--events", "50", "--seed", "3", "--profile", "seed"],
        stderr=subprocess.PIPE, text=True,
    )
    try:
        wait_for_port(port)
        with connect(f"ws://127.0.0.1:{port}/subscribe?cursor=1", compression=None, open_timeout=WAIT) as ws:
            got = receive(ws, 50)
            assert receive(ws, idle=0.3) == []
        gen = EventGenerator(seed=3, start_us=1_779_667_200_000_000)  # the seed profile: the stream of old
        assert got == [gen.event_json(i) for i in range(50)]
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=10)
        assert proc.returncode == 0
        assert f"ws://127.0.0.1:{port}/subscribe" in err
    finally:
        stop_process(proc)


def test_cli_rejects_impossible_options() -> None:
    result = subprocess.run([sys.executable, "-m", "firehose.cli", "simulate", "--rate", "0"],
                            check=False, capture_output=True, text=True, timeout=30)
    assert result.returncode == 2 and "--start" in result.stderr


def test_plc_directory_serves_the_handles_of_simulated_accounts(shared_sim: SimulatorThread) -> None:
    did = generated(shared_sim).event(0)["did"]
    status, body = http_get(shared_sim, f"/plc/{did}")
    assert status == 200
    assert json.loads(body)["alsoKnownAs"] == [f"at://{handle_for(did)}"]
    status, body = http_get(shared_sim, "/plc/did:plc:nonsense")
    assert status == 404 and "not registered" in body


# -- handle resolution: DNS, well-known, XRPC (as the network answers) ---------------------------------------------


@pytest.fixture(scope="module")
def identity_sim() -> Iterator[SimulatorThread]:
    """A simulator with its handle DNS server on a free port; 10k events with the default identity handle share
    (of the seed profile, whose mix has 1% identity events: enough of them to check the share)."""
    with simulator(start=DAY, rate=0, events=10_000, seed=6, dns_port=0, profile="seed") as sim:
        yield sim


def identity_events(sim: SimulatorThread) -> list[dict]:
    """The `identity` bodies of the run's identity events, received over a subscription whose collection filter
    matches no commit (identity and account events are always sent)."""
    with subscribe(sim, "cursor=1&wantedCollections=app.example.nothing") as ws:
        got = [orjson.loads(m) for m in receive(ws, idle=1.0)]
    assert got and {e["kind"] for e in got} == {"identity", "account"}
    return [e["identity"] for e in got if e["kind"] == "identity"]


def get_as_host(sim: SimulatorThread, path: str, host: str) -> tuple[int, str, str]:
    """(status, Content-Type, body) of a GET with the given Host header, as a client asking `host` sends it."""
    conn = http.client.HTTPConnection("127.0.0.1", sim.simulator.port, timeout=5)
    try:
        conn.request("GET", path, headers={"Host": host})
        response = conn.getresponse()
        return response.status, response.getheader("Content-Type", ""), response.read().decode()
    finally:
        conn.close()


def test_a_share_of_identity_events_carries_no_handle(identity_sim: SimulatorThread) -> None:
    identities = identity_events(identity_sim)
    assert len(identities) == 100  # 1% of 10k events
    bare = [body for body in identities if "handle" not in body]
    assert list(bare[0]) == ["did", "seq", "time"]  # the real (golden) identity event's shape
    share = 1 - len(bare) / len(identities)
    assert abs(share - IDENTITY_HANDLE_SHARE) < 0.15, share
    for body in identities:
        assert did_for_handle(handle_for(body["did"])) == body["did"]
        assert body.get("handle", handle_for(body["did"])) == handle_for(body["did"])


@pytest.mark.parametrize("tcp", [False, True], ids=["udp", "tcp"])
def test_dns_answers_the_atproto_txt_record_of_every_simulated_handle(identity_sim: SimulatorThread,
                                                                     tcp: bool) -> None:
    port = identity_sim.dns_port
    assert port is not None and port > 0
    resolver = dns.resolver.Resolver(configure=False)  # only the simulator, never the system's DNS
    resolver.nameservers, resolver.port = ["127.0.0.1"], port
    dids = sorted({body["did"] for body in identity_events(identity_sim)})[:20]
    for did in dids:
        answer = resolver.resolve(f"_atproto.{handle_for(did)}", "TXT", tcp=tcp, lifetime=10)
        assert [b"".join(rr.strings) for rr in answer] == [f"did={did}".encode()]
        assert answer.response.flags & dns.flags.AA  # authoritative
    query = dns.query.tcp if tcp else dns.query.udp
    for name in ("_atproto.nobody.bsky.social", "_atproto.example.com", f"{handle_for(dids[0])}"):
        reply = query(dns.message.make_query(name, "TXT"), "127.0.0.1", port=port, timeout=10)
        assert reply.rcode() == dns.rcode.NXDOMAIN and not reply.answer, name
    reply = query(dns.message.make_query(f"_atproto.{handle_for(dids[0])}", "A"), "127.0.0.1", port=port, timeout=10)
    assert reply.rcode() == dns.rcode.NOERROR and not reply.answer  # the name exists, with only a TXT record


def test_well_known_atproto_did_answers_by_host(identity_sim: SimulatorThread) -> None:
    did = identity_events(identity_sim)[0]["did"]
    handle = handle_for(did)
    for host in (handle, f"{handle}:{identity_sim.simulator.port}", handle.upper()):
        status, content_type, body = get_as_host(identity_sim, "/.well-known/atproto-did", host)
        assert (status, body) == (200, did), host
        assert content_type.startswith("text/plain")
    status, _, _ = get_as_host(identity_sim, "/.well-known/atproto-did", "alice.example.com")
    assert status == 404


def test_xrpc_resolve_handle_answers_like_the_real_service(identity_sim: SimulatorThread) -> None:
    did = identity_events(identity_sim)[-1]["did"]
    status, body = http_get(identity_sim, f"/xrpc/com.atproto.identity.resolveHandle?handle={handle_for(did)}")
    assert status == 200 and json.loads(body) == {"did": did}
    status, body = http_get(identity_sim, "/xrpc/com.atproto.identity.resolveHandle?handle=alice.example.com")
    assert status == 400 and json.loads(body) == {"error": "InvalidRequest", "message": "Unable to resolve handle"}
    status, body = http_get(identity_sim, "/xrpc/com.atproto.identity.resolveHandle")
    assert status == 400 and json.loads(body)["error"] == "InvalidRequest"


def test_dns_server_stops_with_the_simulator() -> None:
    with simulator(start=DAY, rate=0, events=10, dns_port=0) as sim:
        port = sim.dns_port
        assert port is not None
        query = dns.message.make_query(f"_atproto.{handle_for('did:plc:' + 'b' * 24)}", "TXT")
        assert dns.query.tcp(query, "127.0.0.1", port=port, timeout=10).answer
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp, socket.socket() as tcp:
        udp.bind(("127.0.0.1", port))  # both sockets were closed: the port is free again
        tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        tcp.bind(("127.0.0.1", port))
