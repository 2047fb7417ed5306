"""Identity syntax and parsing as the AT Protocol specs define them (handles, DIDs, TXT values, well-known bodies,
DID documents), the nameserver setting, and the in-process caches. No network."""

from __future__ import annotations

import time

import pytest

from firehose.config import ConfigError, Settings, nameservers
from firehose.identity import IdentityResolver
from firehose.identity_cache import DID_TO_HANDLE, HANDLE_TO_DID, MISSING, IdentityCache, TTLCache
from firehose.identity_syntax import (
    did_from_txt,
    did_from_wellknown,
    did_web_host,
    handle_from_did_document,
    handles_in_document,
    is_did,
    normalise_handle,
    resolvable_handle,
)

PLC = "did:plc:z72i7hdynmk6r22z27h6tvur"


@pytest.mark.parametrize("value", ["jay.bsky.social", "8.cn", "name.t--t", "XX.LCS.MIT.EDU", "a.co",
                                   "xn--notarealidn.com", "xn--fiqa61au8b7zsevnm8ak20mc4a87e.xn--fiqs8s",
                                   "xn--ls8h.test", "example.t", " @Alice.Example.COM "])
def test_valid_handles_normalise_to_lower_case(value: str) -> None:
    assert normalise_handle(value) == value.strip().removeprefix("@").lower()


@pytest.mark.parametrize("value", ["jo@hn.test", "💩.test", "john..test", "xn--bcher-.tld", "john.0", "cn.8",
                                   "www.masełkowski.pl.com", "org", "name.org.", "-a.test", "a-.test", "",
                                   "a." * 126 + "test", "did:plc:abc", "alice test.com", "@@alice.test"])
def test_invalid_handles_are_rejected(value: str) -> None:
    assert normalise_handle(value) is None


def test_reserved_tlds_never_resolve_but_test_does() -> None:
    for handle in ("laptop.local", "blah.arpa", "x.onion", "handle.invalid", "a.localhost", "a.example",
                   "a.internal", "a.alt"):
        assert normalise_handle(handle) == handle and not resolvable_handle(handle)
    assert resolvable_handle("alice.test") and resolvable_handle("jay.bsky.social")


@pytest.mark.parametrize("value", [PLC, "did:web:blueskyweb.xyz", "did:method:val:two", "did:m:v",
                                   "did:method::::val", "did:method:-:_:.", "did:web:localhost%3A1234"])
def test_valid_dids(value: str) -> None:
    assert is_did(value)


@pytest.mark.parametrize("value", ["did:METHOD:val", "did:m123:val", "DID:method:val", "did:method:",
                                   "did:method:val/two", "did:method:val?two", "did:method:val#two",
                                   "did:method:val%", "alice.test", "did:plc:" + "a" * 2048])
def test_invalid_dids(value: str) -> None:
    assert not is_did(value)


def test_txt_values_follow_the_spec() -> None:
    assert did_from_txt([f"did={PLC}".encode()]) == PLC
    assert did_from_txt(["v=spf1 -all", f"did={PLC}", "hello"]) == PLC  # other values are ignored
    assert did_from_txt([f"did={PLC}", f"did={PLC}"]) == PLC  # the same DID twice is still one answer
    assert did_from_txt([f"did={PLC}", "did=did:plc:other"]) is None  # different DIDs: resolution fails
    assert did_from_txt(["did=not-a-did", "DID=" + PLC, f" did={PLC}"]) is None
    assert did_from_txt(["did=not-a-did", f"did={PLC}"]) == PLC
    assert did_from_txt([]) is None


def test_wellknown_bodies() -> None:
    assert did_from_wellknown(f"{PLC}\n".encode()) == PLC
    assert did_from_wellknown(f"  {PLC}\r\n".encode()) == PLC
    assert did_from_wellknown(f'{{"did": "{PLC}"}}'.encode()) is None
    assert did_from_wellknown(b"<html>not found</html>") is None
    assert did_from_wellknown("did:plc:é".encode()) is None
    assert did_from_wellknown(b"") is None


def test_handles_of_a_did_document() -> None:
    doc = {"id": PLC, "alsoKnownAs": ["https://example.com", "at://not a handle", "at://Alice.Test",
                                      "at://alice.test", "at://old.test", "at://x.test/app.bsky.feed.post/1"]}
    assert handles_in_document(doc) == ["alice.test", "old.test"]
    assert handle_from_did_document(doc) == "alice.test"  # the first valid at:// entry is the handle
    assert handle_from_did_document({"alsoKnownAs": "at://alice.test"}) is None
    assert handle_from_did_document({"id": PLC}) is None
    assert handle_from_did_document(None) is None
    assert handles_in_document({"alsoKnownAs": [1, None, "at://@alice.test", "at://"]}) == []


def test_did_web_hosts() -> None:
    assert did_web_host("did:web:dave.test") == "dave.test"
    assert did_web_host("did:web:Dave.test") is None  # DIDs are case-sensitive: reject other casings
    assert did_web_host("did:web:example.com:user:alice") is None  # path-based did:web is not atproto
    assert did_web_host("did:web:localhost%3A8080") is None
    assert did_web_host(PLC) is None


def test_nameservers_setting() -> None:
    assert nameservers(("1.1.1.1", "127.0.0.1:5353", "[::1]:5300", "::1")) == [
        ("1.1.1.1", 53), ("127.0.0.1", 5353), ("::1", 5300), ("::1", 53)]
    settings = Settings.from_env({"FIREHOSE_DNS_NAMESERVERS": "127.0.0.1:5353, 9.9.9.9"})
    assert settings.dns_nameservers == ("127.0.0.1:5353", "9.9.9.9")
    for bad in ("dns.google", "127.0.0.1:0", "127.0.0.1:x", "[::1]:99999"):
        with pytest.raises(ConfigError, match="FIREHOSE_DNS_NAMESERVERS"):
            Settings.from_env({"FIREHOSE_DNS_NAMESERVERS": bad})
    with pytest.raises(ConfigError, match="FIREHOSE_RESOLVE_WORKERS"):
        Settings.from_env({"FIREHOSE_RESOLVE_WORKERS": "0"})


def test_ttl_cache_entries_can_have_their_own_lifetime() -> None:
    now = [0.0]
    cache = TTLCache(10, 100.0, clock=lambda: now[0])
    cache.put("long", 1)
    cache.put("short", 2, ttl=5.0)
    now[0] = 6.0
    assert cache.get("short") is MISSING and cache.get("long") == 1
    now[0] = 101.0
    assert cache.get("long", None) is None


def test_cache_without_redis_keeps_answers_in_process() -> None:
    cache = IdentityCache("", 100, 3600.0, 300.0, 30.0)
    cache.put(DID_TO_HANDLE, PLC, "alice.test")
    cache.put(HANDLE_TO_DID, "nobody.test", None)
    cache.put_failure(HANDLE_TO_DID, "down.test")
    assert cache.get_many(DID_TO_HANDLE, [PLC, "did:plc:unknown"]) == {PLC: "alice.test"}
    assert cache.get(HANDLE_TO_DID, "nobody.test") == ""
    assert cache.get(HANDLE_TO_DID, "down.test") == ""
    assert cache.get(HANDLE_TO_DID, "alice.test") is None
    no_retry = IdentityCache("", 100, 3600.0, 300.0, 0.0)
    no_retry.put_failure(HANDLE_TO_DID, "down.test")
    assert no_retry.get(HANDLE_TO_DID, "down.test") is None


def test_resolver_with_everything_off_answers_from_the_identity_table_only() -> None:
    settings = Settings(redis_url="", plc_url="", dns_enabled=False, wellknown_enabled=False)

    def broken(_: object) -> dict[str, str]:
        raise RuntimeError("identity table unreadable")

    table = IdentityResolver(settings, lambda dids: {d: "Alice.Test" for d in dids if d == PLC},
                             {"alice.test": PLC}.get)
    failing = IdentityResolver(settings, broken, broken)
    try:
        deadline = time.monotonic() + 5
        assert table.handles([PLC, "did:plc:other", "not a did"], deadline) == {PLC: "alice.test"}
        assert table.did_for(" @ALICE.test", deadline) == PLC
        assert table.did_for(PLC, deadline) == PLC
        assert table.did_for("not a handle!", deadline) is None
        assert table.did_for("bob.test", deadline) is None
        assert failing.handles([PLC], deadline) == {}  # a broken source is logged, never raised
        assert failing.did_for("alice.test", deadline) is None
    finally:
        table.close()
        failing.close()


def test_a_passed_deadline_means_cache_and_identity_table_only() -> None:
    settings = Settings(redis_url="", plc_url="http://127.0.0.1:9", dns_enabled=False, wellknown_enabled=False)
    resolver = IdentityResolver(settings, lambda dids: {}, lambda handle: None)
    try:
        assert resolver.handles([PLC], time.monotonic() - 1) == {}
        assert resolver.did_for("alice.test", time.monotonic() - 1) is None
        assert resolver._pool is None  # no lookup was started
    finally:
        resolver.close()
