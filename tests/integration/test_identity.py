"""Identity resolution against real servers: a dnslib DNS server, an HTTPS well-known server with a test CA, an
HTTP PLC directory with an XRPC resolveHandle endpoint, and a real redis-server as the shared cache."""

from __future__ import annotations

import dataclasses
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from firehose.config import Settings
from firehose.identity import IdentityResolver
from tests.support.identity_servers import BlackHole, DnsServer, PlcServer, WebServer, document
from tests.support.services import RedisServer, start_redis, stop_process

ALICE = "did:plc:aliceaaaaaaaaaaaaaaaaaaa"
BOB = "did:plc:bobbbbbbbbbbbbbbbbbbbbbb"
CAROL = "did:plc:carolccccccccccccccccccc"
EVE = "did:plc:eveeeeeeeeeeeeeeeeeeeeee"
DAVE = "did:web:dave.test"


def soon(seconds: float = 5.0) -> float:
    """A request deadline `seconds` from now: generous, so a loaded machine still makes it."""
    return time.monotonic() + seconds


@dataclasses.dataclass
class World:
    """The servers of one test and the settings pointing at them."""

    dns: DnsServer
    web: WebServer
    plc: PlcServer
    settings: Settings
    table: dict[str, str]
    resolvers: list[IdentityResolver] = dataclasses.field(default_factory=list)

    def resolver(self, **changes: object) -> IdentityResolver:
        """A resolver (one API worker) over these servers; `table` is the archive's identity table."""
        settings = dataclasses.replace(self.settings, **changes)  # type: ignore[arg-type]
        by_handle = {h: d for d, h in self.table.items()}
        resolver = IdentityResolver(settings, lambda dids: {d: self.table[d] for d in dids if d in self.table},
                                    by_handle.get)
        self.resolvers.append(resolver)
        return resolver


@pytest.fixture
def world(tmp_path: Path, redis_server: RedisServer) -> Iterator[World]:
    dns, web, plc = DnsServer(), WebServer(tmp_path), PlcServer()
    settings = Settings(redis_url=redis_server.url, plc_url=plc.url, plc_timeout=3.0, resolve_handle_url="",
                        dns_nameservers=(dns.nameserver,), wellknown_host="127.0.0.1", wellknown_port=web.port,
                        wellknown_ca_file=web.ca_file, resolve_timeout=3.0, resolve_retry_seconds=0.0)
    # alice: DNS TXT; bob: well-known; carol: XRPC only; dave: did:web; eve claims alice's handle
    dns.txt("alice.test", "v=spf1 -all", f"did={ALICE}")
    plc.account(ALICE, "alice.test")
    web.atproto_did["bob.test"] = BOB
    plc.account(BOB, "bob.test")
    plc.xrpc["carol.test"] = CAROL
    plc.account(CAROL, "carol.test")
    dns.txt("dave.test", f"did={DAVE}")
    web.did_json["dave.test"] = document(DAVE, "dave.test")
    plc.account(EVE, "alice.test")
    state = World(dns, web, plc, settings, {})
    try:
        yield state
    finally:
        for resolver in state.resolvers:
            resolver.close()
        dns.stop()
        web.stop()
        plc.stop()


def test_dns_txt_resolves_both_ways(world: World) -> None:
    resolver = world.resolver()
    assert resolver.did_for("@Alice.TEST", soon()) == ALICE
    assert resolver.handles([ALICE], soon()) == {ALICE: "alice.test"}
    assert world.dns.queries_for("alice.test") >= 1
    assert "alice.test" not in world.web.hosts_asked()  # DNS answered: no well-known request


def test_wellknown_over_https_with_the_test_ca(world: World) -> None:
    resolver = world.resolver()
    assert resolver.handles([BOB], soon()) == {BOB: "bob.test"}
    assert resolver.did_for("bob.test", soon()) == BOB
    assert ("bob.test", "/.well-known/atproto-did") in world.web.hits


def test_wellknown_with_an_untrusted_certificate_is_no_answer(world: World) -> None:
    resolver = world.resolver(wellknown_ca_file=None)  # the system CAs do not know the test CA
    assert resolver.did_for("bob.test", soon()) is None


def test_xrpc_resolve_handle_when_dns_and_wellknown_have_nothing(world: World) -> None:
    assert world.resolver().did_for("carol.test", soon()) is None  # XRPC off by default
    resolver = world.resolver(resolve_handle_url=world.plc.xrpc_url, redis_url="")
    assert resolver.did_for("carol.test", soon()) == CAROL
    assert resolver.handles([CAROL], soon()) == {CAROL: "carol.test"}


def test_did_web_document_from_its_host(world: World) -> None:
    resolver = world.resolver()
    assert resolver.handles([DAVE], soon()) == {DAVE: "dave.test"}
    assert ("dave.test", "/.well-known/did.json") in world.web.hits


def test_one_sided_claims_are_rejected(world: World) -> None:
    resolver = world.resolver()
    # eve's document claims alice.test, but alice.test points at alice: eve shows as her DID
    assert resolver.handles([EVE, ALICE], soon()) == {ALICE: "alice.test"}
    # mallory.test points at alice's DID, but alice's document does not list mallory.test
    world.dns.txt("mallory.test", f"did={ALICE}")
    assert resolver.did_for("mallory.test", soon()) is None
    # two different DIDs in the TXT records: no answer, as the spec says
    world.dns.txt("twice.test", f"did={ALICE}", f"did={BOB}")
    assert resolver.did_for("twice.test", soon()) is None


def test_a_claimed_handle_shows_unverified_while_its_check_back_runs(world: World) -> None:
    """Carol's handle resolves only over XRPC, which holds its answer: a page gets her document's claim, marked
    unverified; the check goes on after the page and the next page has it verified (and cached)."""
    gate = threading.Event()
    world.plc.gates["/xrpc/"] = gate
    resolver = world.resolver(resolve_handle_url=world.plc.xrpc_url, redis_url="")
    names = resolver.names([CAROL, EVE], time.monotonic() + 0.5)
    assert names.handles.get(CAROL) == "carol.test" and CAROL in names.unverified
    assert resolver.handles([CAROL], time.monotonic()) == {}  # not verified yet
    gate.set()
    deadline = time.monotonic() + 30
    while resolver.handles([CAROL], time.monotonic()) != {CAROL: "carol.test"}:
        assert time.monotonic() < deadline, "the check back never finished after its page"
        time.sleep(0.05)
    names = resolver.names([CAROL, EVE], soon())
    assert names.handles == {CAROL: "carol.test"} and not names.unverified  # eve's one-sided claim is gone too


def test_identity_table_comes_first_and_reserved_tlds_never_resolve(world: World) -> None:
    world.table[CAROL] = "carol.test"
    resolver = world.resolver()
    assert resolver.did_for("carol.test", soon()) == CAROL
    assert resolver.handles([CAROL], soon()) == {CAROL: "carol.test"}
    assert world.plc.asked_for(CAROL) == 0
    world.dns.txt("laptop.local", f"did={ALICE}")
    assert resolver.did_for("laptop.local", soon()) is None
    assert world.dns.queries_for("laptop.local") == 0


def test_negative_answers_are_cached_and_shared(world: World) -> None:
    first, second = world.resolver(), world.resolver()
    assert first.did_for("nobody.test", soon()) is None
    assert first.handles(["did:plc:nobodynnnnnnnnnnnnnnnnnn"], soon()) == {}
    asked = world.dns.queries_for("nobody.test")
    assert asked >= 1 and world.plc.asked_for("did:plc:nobodynnnnnnnnnnnnnnnnnn") == 1
    # the handle appears now, but "none" is trusted for FIREHOSE_HANDLE_NEGATIVE_SECONDS, by every worker
    world.dns.txt("nobody.test", f"did={ALICE}")
    assert second.did_for("nobody.test", soon()) is None
    assert second.handles(["did:plc:nobodynnnnnnnnnnnnnnnnnn"], soon()) == {}
    assert world.dns.queries_for("nobody.test") == asked
    assert world.plc.asked_for("did:plc:nobodynnnnnnnnnnnnnnnnnn") == 1


def test_cache_is_shared_by_workers_and_survives_a_restart(world: World, tmp_path: Path) -> None:
    redis_dir = tmp_path / "cache-redis"
    cache = start_redis(redis_dir)
    try:
        assert world.resolver(redis_url=cache.url).handles([ALICE, BOB], soon()) == {ALICE: "alice.test",
                                                                                      BOB: "bob.test"}
        # another worker whose resolvers are all dead still knows both, in both directions
        offline = {"plc_url": "", "dns_enabled": False, "wellknown_enabled": False}
        other = world.resolver(redis_url=cache.url, **offline)
        assert other.did_for("alice.test", soon()) == ALICE
        assert other.handles([ALICE, BOB], soon()) == {ALICE: "alice.test", BOB: "bob.test"}
        stop_process(cache.proc)
        cache = start_redis(redis_dir)  # same AOF directory, new port: what a reboot looks like
        restarted = world.resolver(redis_url=cache.url, **offline)
        assert restarted.handles([ALICE, BOB], soon()) == {ALICE: "alice.test", BOB: "bob.test"}
        assert restarted.did_for("bob.test", soon()) == BOB
    finally:
        stop_process(cache.proc)


def test_dead_resolvers_give_up_at_the_deadline_without_raising(world: World) -> None:
    hole = BlackHole()
    try:
        resolver = world.resolver(plc_url=f"http://127.0.0.1:{hole.tcp_port}",
                                  dns_nameservers=(f"127.0.0.1:{hole.udp_port}",), wellknown_host="127.0.0.1",
                                  wellknown_port=hole.tcp_port,
                                  resolve_handle_url=f"http://127.0.0.1:{hole.tcp_port}/xrpc/x",
                                  resolve_timeout=30.0, plc_timeout=30.0)
        started = time.monotonic()
        assert resolver.did_for("alice.test", time.monotonic() + 1.0) is None
        assert resolver.handles([ALICE, BOB], time.monotonic() + 1.0) == {}
        # both calls returned: well before the 30 s per-call timeouts, bounded by their 1 s deadlines
        assert time.monotonic() - started < 20.0
    finally:
        hole.close()


def test_redis_down_still_resolves(world: World) -> None:
    hole = BlackHole()
    try:
        resolver = world.resolver(redis_url=f"redis://127.0.0.1:{hole.tcp_port}/0")
        assert resolver.did_for("alice.test", soon()) == ALICE
        assert resolver.handles([ALICE], soon()) == {ALICE: "alice.test"}
    finally:
        hole.close()


def test_a_shared_lookup_does_not_hold_a_caller_past_its_own_deadline(world: World) -> None:
    hole = BlackHole()
    resolver = world.resolver(dns_nameservers=(f"127.0.0.1:{hole.udp_port}",), wellknown_port=hole.tcp_port,
                              resolve_timeout=60.0, plc_timeout=60.0)
    patient: list[str | None] = ["unset"]
    first = threading.Thread(target=lambda: patient.__setitem__(0, resolver.did_for("alice.test", soon(5))))
    first.start()
    try:
        hole.wait_for_dns_query()  # the first caller's lookup is under way
        # joins the lookup the first caller started (5 s of time), yet returns at its own 0.5 s deadline
        assert resolver.did_for("alice.test", time.monotonic() + 0.5) is None
        assert first.is_alive()
    finally:
        first.join(60)
        hole.close()
    assert patient == [None]
