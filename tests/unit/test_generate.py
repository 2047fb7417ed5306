"""The event generator: deterministic, realistic, shaped like Jetstream v1, and routed to the intended tables."""

from __future__ import annotations

import collections
import hashlib
import re
from pathlib import Path

import orjson
import pytest

from firehose.schema import COLLECTION_TABLES, route
from firehose.simulator.clock import DEFAULT_START_US, Profile
from firehose.simulator.encoding import tid, tid_time_us
from firehose.simulator.generator import EventGenerator
from firehose.simulator.identity import did_for_handle, handle_for, plc_document
from firehose.simulator.mix import LIKE, MIX, MIX_FILE, POST, REAL_MIX_FILE, read_mix
from firehose.simulator.profiles import PROFILES, REAL, SEED, NetworkProfile
from firehose.simulator.vocabulary import COMMON_WORD, PHRASE, RARE_WORD, TAG
from tests.support.paths import GOLDEN

N = 100_000
DID_RE = re.compile(r"^did:plc:[a-z2-7]{24}$")
CID_RE = re.compile(r"^bafyrei[a-z2-7]{52}$")
BLOB_RE = re.compile(r"^bafkrei[a-z2-7]{52}$")
TID_RE = re.compile(r"^[2-7a-j][2-7a-z]{12}$")


@pytest.fixture(scope="module", params=tuple(PROFILES))
def network(request: pytest.FixtureRequest) -> NetworkProfile:
    """Each network profile in turn: the checks of this module hold for both."""
    return PROFILES[request.param]


@pytest.fixture(scope="module")
def sample(network: NetworkProfile) -> list[dict]:
    """The first 100k events of seed 1 of the profile."""
    return list(EventGenerator(seed=1, network=network).iter_events(0, N))


@pytest.fixture(scope="module")
def posts(sample: list[dict]) -> list[dict]:
    return [e["commit"]["record"] for e in sample
            if e["kind"] == "commit" and e["commit"]["collection"] == POST
            and e["commit"]["operation"] == "create"]


def _key(event: dict) -> tuple:
    commit = event.get("commit")
    return (event["kind"], commit and commit["collection"], commit and commit["operation"])


# -- determinism --------------------------------------------------------------------------------------------------


def test_same_seed_same_bytes_and_random_access_matches_sequential() -> None:
    a, b = EventGenerator(seed=5), EventGenerator(seed=5)
    sequential = [orjson.dumps(e) for e in a.iter_events(0, 3000)]
    assert [b.event_json(i) for i in range(3000)] == sequential
    fresh = EventGenerator(seed=5)
    for i in (2999, 17, 1500, 0, 64, 63):  # random order, across block boundaries
        assert fresh.event_json(i) == sequential[i]
        assert fresh.event(i) == orjson.loads(sequential[i])
    assert [orjson.dumps(e) for e in a.iter_events(1234, 1300)] == sequential[1234:1300]


def test_different_seeds_differ() -> None:
    assert EventGenerator(seed=1).event_json(10) != EventGenerator(seed=2).event_json(10)


@pytest.mark.parametrize(("profile", "pinned"), [
    ("seed", "f5522d66976458ccc16526b4cbd0ea9aa4fdc78eb519d55e6e03320548f6b005"),
    ("real", "bf584c33e7279df678ccdd976e5fe1183d6998570027ce0c24d40cc300e73e8e"),
])
def test_sequence_is_pinned(profile: str, pinned: str) -> None:
    """The event sequence of a seed is part of the contract (recorded validation runs refer to it); the seed
    profile's is the one the simulator made before profiles existed, byte for byte.

    If you change the generator on purpose, update the digest and say so in docs/simulator.md.
    """
    gen = EventGenerator(seed=0, network=PROFILES[profile])
    digest = hashlib.sha256(b"".join(gen.event_json(i) for i in range(1000))).hexdigest()
    assert digest == pinned


# -- shape ----------------------------------------------------------------------------------------------------------


def test_events_have_the_golden_shape(sample: list[dict]) -> None:
    golden = [orjson.loads(line) for line in GOLDEN.read_bytes().splitlines() if line.strip()]
    golden_layout = {e["kind"]: list(e) for e in golden}
    golden_identity = next(e for e in golden if e["kind"] == "identity")
    assert list(golden_identity["identity"]) == ["did", "seq", "time"]
    for event in sample[:20_000]:
        assert list(event) == golden_layout[event["kind"]], event
        assert DID_RE.match(event["did"])
        if event["kind"] == "commit":
            commit = event["commit"]
            assert TID_RE.match(commit["rev"])
            if commit["operation"] == "delete":
                assert list(commit) == ["rev", "operation", "collection", "rkey"]
            else:
                assert list(commit) == ["rev", "operation", "collection", "rkey", "record", "cid"]
                assert CID_RE.match(commit["cid"])
                assert commit["record"]["$type"] == commit["collection"]
                assert commit["rkey"] == "self" or TID_RE.match(commit["rkey"]) or ":" in commit["rkey"]
        elif event["kind"] == "identity":
            if "handle" in event["identity"]:
                assert list(event["identity"]) == ["did", "handle", "seq", "time"]
                assert event["identity"]["handle"] == handle_for(event["did"])
            else:  # as most real ones: the golden identity event has no handle
                assert list(event["identity"]) == list(golden_identity["identity"])
        else:
            assert set(event["account"]) <= {"active", "did", "seq", "status", "time"}
            assert event["account"]["active"] is ("status" not in event["account"])


def test_record_keys_are_sorted_like_jetstream(sample: list[dict]) -> None:
    def check(value: object) -> None:
        if isinstance(value, dict):
            keys = list(value)
            if value.get("$type") != "blob":
                assert keys == sorted(keys), keys
            for v in value.values():
                check(v)
        elif isinstance(value, list):
            for v in value:
                check(v)

    for event in sample[:20_000]:
        if "record" in event.get("commit", {}):
            check(event["commit"]["record"])


def test_cids_are_random_and_incompressible(sample: list[dict]) -> None:
    cids = [e["commit"]["cid"] for e in sample if "cid" in e.get("commit", {})]
    assert len(set(cids)) == len(cids)
    body = "".join(c[7:] for c in cids[:5000]).encode()
    import zlib

    assert len(zlib.compress(body, 9)) > 0.6 * len(body)  # 5 bits of entropy per 8-bit char: ~0.625 at best


# -- mix and sizes ------------------------------------------------------------------------------------------------


MIX_SHARES = {  # (low, high) share of events: likes created, posts created, deletes, other collections
    "seed": ((0.55, 0.60), (0.10, 0.12), (0.04, 0.06), (0.02, 0.035)),
    "real": ((0.64, 0.65), (0.06, 0.062), (0.05, 0.06), (0.005, 0.012)),
}


def test_mix_is_exact_per_window(sample: list[dict], network: NetworkProfile) -> None:
    counts = collections.Counter(_key(e) for e in sample)
    expected = collections.Counter()
    for kind in network.mix:
        expected[(kind.kind, kind.collection, kind.operation)] += kind.per_mille * N // 1000
    assert counts == expected
    likes = counts[("commit", LIKE, "create")] / N
    posts = counts[("commit", POST, "create")] / N
    deletes = sum(v for k, v in counts.items() if k[2] == "delete") / N
    other = sum(v for k, v in counts.items() if k[1] and k[1] not in COLLECTION_TABLES and k[2] != "delete") / N
    shares = (likes, posts, deletes, other)
    assert all(low <= x <= high for x, (low, high) in zip(shares, MIX_SHARES[network.name], strict=True)), shares


@pytest.mark.parametrize(("row", "error"), [
    ("commit,app.bsky.feed.like,craete,1", "not a mix entry"),
    ("identity,app.bsky.feed.like,,1", "not a mix entry"),
    ("commit,,create,1", "not a mix entry"),
    ("account,,,0", "not a mix entry"),
    ("account,,,1", "add up to 1000"),
])
def test_the_mix_file_is_checked(tmp_path: Path, row: str, error: str) -> None:
    assert SEED.mix == MIX and REAL.mix == read_mix(REAL_MIX_FILE)
    lines = MIX_FILE.read_text().splitlines()
    assert lines[0] == "kind,collection,operation,per_mille"
    assert [line.split(",")[0] for line in lines[1:]] == [k.kind for k in MIX]
    bad = tmp_path / "mix.csv"
    bad.write_text("\n".join([*lines, row]) + "\n")
    with pytest.raises(ValueError, match=error):
        read_mix(bad)


SIZES = {  # (low, high) mean JSON bytes: all events, likes (the golden like: 502 bytes), posts
    "seed": ((450, 530), (490, 520), (550, 900)),  # 3% of likes carry a `via`
    "real": ((460, 540), (500, 540), (600, 1100)),  # 10% of likes carry a `via`
}


def test_sizes_are_realistic(sample: list[dict], network: NetworkProfile) -> None:
    sizes = collections.defaultdict(list)
    for event in sample:
        sizes[_key(event)].append(len(orjson.dumps(event)))
    average = sum(map(sum, sizes.values())) / N
    like = sizes[("commit", LIKE, "create")]
    post = sizes[("commit", POST, "create")]
    means = (average, sum(like) / len(like), sum(post) / len(post))
    assert all(low <= x <= high for x, (low, high) in zip(means, SIZES[network.name], strict=True)), means
    assert max(post) < 4000


# -- routing ---------------------------------------------------------------------------------------------------------


def test_every_event_routes_to_its_intended_table(sample: list[dict]) -> None:
    for event in sample:
        raw = orjson.dumps(event)
        table, row = route(event, raw)
        if event["kind"] != "commit":
            assert table == event["kind"]
            continue
        commit = event["commit"]
        if commit["operation"] == "delete":
            assert table == "deletes"
        else:
            assert table == COLLECTION_TABLES.get(commit["collection"], "records"), (table, event)
        if table == "posts":
            assert row["record_extra"] is None, row["record_extra"]  # every post field has a column
        if table in ("likes", "reposts"):
            assert row["subject_uri"].startswith("at://did:plc:")


# -- posts --------------------------------------------------------------------------------------------------------


def test_facets_are_valid_utf8_byte_ranges(posts: list[dict]) -> None:
    kinds = collections.Counter()
    for record in posts:
        data = record["text"].encode()
        for facet in record.get("facets", []):
            start, end = facet["index"]["byteStart"], facet["index"]["byteEnd"]
            assert 0 <= start < end <= len(data)
            text = data[start:end].decode()  # raises if the range splits a character
            (feature,) = facet["features"]
            kind = feature["$type"].split("#")[1]
            kinds[kind] += 1
            if kind == "mention":
                assert text == "@" + handle_for(feature["did"])
            elif kind == "tag":
                assert text == "#" + feature["tag"]
            else:
                assert feature["uri"].startswith("https://")
                assert feature["uri"][8:].startswith(text.removesuffix("..."))
    assert min(kinds["mention"], kinds["tag"], kinds["link"]) > 200, kinds


def test_post_texts_languages_replies_embeds(posts: list[dict], network: NetworkProfile) -> None:
    assert all(len(r["text"]) <= 300 for r in posts)
    lengths = sorted(len(r["text"]) for r in posts)
    assert 20 <= lengths[len(lengths) // 2] <= 120  # mostly short
    langs = collections.Counter(r["langs"][0] if "langs" in r else None for r in posts)
    assert langs.most_common(1)[0][0] == "en"
    assert {"ja", "pt", "es", "de", "ko", "zh", "fr", "ru", "uk", "ar", None} <= set(langs)
    replies = sum("reply" in r for r in posts) / len(posts)
    assert replies == pytest.approx(network.shape.reply_share, abs=0.04)
    embeds = collections.Counter(r["embed"]["$type"] for r in posts if "embed" in r)
    assert set(embeds) == {"app.bsky.embed.images", "app.bsky.embed.external", "app.bsky.embed.record",
                           "app.bsky.embed.recordWithMedia", "app.bsky.embed.video"}
    for record in posts:
        for image in record.get("embed", {}).get("images", []):
            assert BLOB_RE.match(image["image"]["ref"]["$link"])


def test_vocabulary_frequencies(posts: list[dict], network: NetworkProfile) -> None:
    n = len(posts)
    texts = [r["text"] for r in posts]
    shares = network.vocabulary
    common = sum(COMMON_WORD in t.lower() for t in texts) / n
    assert abs(common - shares[COMMON_WORD]) < 0.01
    assert sum(PHRASE in t for t in texts) / n == pytest.approx(shares[PHRASE], abs=0.003)
    assert sum(RARE_WORD in t for t in texts) < 10
    tagged = sum(any(f["features"][0].get("tag") == TAG for f in r.get("facets", [])) for r in posts) / n
    assert tagged == pytest.approx(shares[f"#{TAG}"], abs=0.004)
    assert any(t.startswith("Coffee") or " Coffee" in t for t in texts)  # capitalised too: search is case-blind


def test_liked_subjects_are_skewed_towards_generated_posts(sample: list[dict], network: NetworkProfile) -> None:
    post_uris = {f"at://{e['did']}/{POST}/{e['commit']['rkey']}": e["commit"]["cid"] for e in sample
                 if e["kind"] == "commit" and e["commit"]["collection"] == POST
                 and e["commit"]["operation"] == "create"}
    subjects = [e["commit"]["record"]["subject"] for e in sample[50_000:]
                if e["kind"] == "commit" and e["commit"]["collection"] == LIKE
                and e["commit"]["operation"] == "create"]
    counts = collections.Counter(s["uri"] for s in subjects)
    assert counts.most_common(1)[0][1] >= 20  # hot posts collect many likes
    assert len(counts) > len(subjects) / 4  # but most likes are spread out
    in_stream = [s for s in subjects if s["uri"] in post_uris]
    # the rest point at posts from before event 0 (the recent-post window is 50,000 posts; the real profile has
    # only ~3,000-6,100 posts in its first 50k-100k events)
    assert len(in_stream) > len(subjects) * (0.5 if network is SEED else 0.3)
    assert all(post_uris[s["uri"]] == s["cid"] for s in in_stream)


def test_author_activity_is_skewed(sample: list[dict]) -> None:
    counts = collections.Counter(e["did"] for e in sample)
    top = sum(c for _, c in counts.most_common(1000))
    assert top > 0.03 * N  # the most active 0.05% of users make over 3% of the events
    assert len(counts) > 0.3 * N


# -- identities ---------------------------------------------------------------------------------------------------


def test_handles_are_deterministic_well_formed_and_invertible() -> None:
    gen = EventGenerator(seed=0)
    dids = [gen.did(r) for r in range(5000)]
    handles = [handle_for(d) for d in dids]
    assert handles == [handle_for(d) for d in dids]
    assert len(set(handles)) == len(handles)
    # atproto handle syntax: labels of 1-63 lower-case letters, digits and inner hyphens; a letters-only TLD
    label = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
    assert all(re.fullmatch(rf"(?:{label}\.)+[a-z]+", h) and len(h) <= 253 for h in handles)
    assert sum(h.endswith(".bsky.social") for h in handles) > 0.75 * len(handles)
    assert [did_for_handle(h) for h in handles] == dids
    assert did_for_handle(handles[0].upper() + ".") == dids[0]  # handles are case-insensitive; FQDN dot allowed


@pytest.mark.parametrize("name", [
    "", "bsky.social", "alice.bsky.social", "_atproto.alice.bsky.social", "did:plc:abc",
    "mariacat-aaaaaaaaaaaaaaaaaaaaaaaa.bsky.social",  # the right shape, but not that DID's name or domain
])
def test_did_for_handle_refuses_names_it_did_not_make(name: str) -> None:
    assert did_for_handle(name) is None


def test_did_for_handle_refuses_a_handle_on_the_wrong_domain() -> None:
    handle = handle_for("did:plc:" + "a" * 24)
    first, _, domain = handle.partition(".")
    other = "example.org" if domain != "example.org" else "example.net"
    assert did_for_handle(handle) == "did:plc:" + "a" * 24
    assert did_for_handle(f"{first}.{other}") is None
    assert plc_document("did:plc:" + "a" * 24)["alsoKnownAs"] == [f"at://{handle}"]
    assert plc_document("did:plc:" + "A" * 24) is None


@pytest.mark.parametrize("share", [0.0, 0.3, 1.0])
def test_identity_events_carry_a_handle_in_the_configured_share(share: float) -> None:
    gen = EventGenerator(seed=2, identity_handle_share=share)
    identities = [e["identity"] for e in gen.iter_events(0, 40_000) if e["kind"] == "identity"]
    assert len(identities) == 400  # 1% of the mix
    with_handle = sum("handle" in body for body in identities) / len(identities)
    assert abs(with_handle - share) < 0.08, with_handle
    # deterministic per seed: the same events carry the handle every time
    again = EventGenerator(seed=2, identity_handle_share=share)
    assert [e["identity"] for e in again.iter_events(0, 40_000) if e["kind"] == "identity"] == identities


def test_identity_handle_share_must_be_a_share() -> None:
    with pytest.raises(ValueError, match="between 0 and 1"):
        EventGenerator(identity_handle_share=1.5)


# -- time -----------------------------------------------------------------------------------------------------------


def test_tids_round_trip() -> None:
    t = 1_779_719_009_132_431
    value = tid(t, 5)
    assert TID_RE.match(value) and tid_time_us(value) == t
    assert tid(t + 1) > tid(t)
    # the golden like's rev decodes to the time of its event (within a few seconds)
    golden = orjson.loads(GOLDEN.read_bytes().splitlines()[0])
    assert abs(tid_time_us(golden["commit"]["rev"]) - golden["time_us"]) < 5_000_000


@pytest.mark.parametrize("diurnal", [False, True])
def test_cursor_guarantee(diurnal: bool) -> None:
    gen = EventGenerator(seed=2, profile=Profile(rate=200, diurnal=diurnal), jitter_us=40_000)
    times = [gen.time_us(i) for i in range(20_000)]
    bases = [gen.base_us(i) for i in range(20_000)]
    assert bases == sorted(bases)
    assert all(0 <= b - t < 40_000 for b, t in zip(bases, times, strict=True))
    assert times != sorted(times)  # slightly out of order, as Jetstream is
    assert [e["time_us"] for e in gen.iter_events(0, 2000)] == times[:2000]
    for cursor in (times[0] - 1, times[777], bases[5000], bases[5000] + 1, times[19_000] + 3):
        start = gen.index_at_or_after(cursor)
        assert all(i >= start for i, t in enumerate(times) if t >= cursor)  # nothing at or after C is missed
        assert all(times[i] >= cursor - 40_000 for i in range(start, 19_000))  # extras are at most jitter early
        assert start == 0 or bases[start - 1] < cursor <= bases[start]
    assert gen.index_at_or_after(0) == 0


def test_a_day_of_events_covers_24_hours_with_a_diurnal_curve() -> None:
    per_day = 8_100_000
    gen = EventGenerator(seed=0, start_us=DEFAULT_START_US, profile=Profile(rate=per_day / 86_400, diurnal=True))
    assert abs(gen.base_us(per_day) - (DEFAULT_START_US + 86_400_000_000)) < 1_000_000
    hour = 3_600_000_000
    per_hour = [gen.index_at_or_after(DEFAULT_START_US + (h + 1) * hour) - gen.index_at_or_after(
        DEFAULT_START_US + h * hour) for h in range(24)]
    assert max(per_hour) / min(per_hour) == pytest.approx(1.6, rel=0.03)
    assert per_hour.index(max(per_hour)) in (14, 15)  # peak around 15:00 UTC
    assert sum(per_hour) == pytest.approx(per_day, rel=1e-6)


def test_profile_rejects_bad_rates() -> None:
    with pytest.raises(ValueError, match="positive"):
        Profile(rate=0)
