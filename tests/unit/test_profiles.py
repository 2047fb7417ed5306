"""The network profiles: `real` (the 2026 firehose, the default) and `seed` (the old stream, byte for byte).

Shares are checked within tolerances over samples big enough for them; nothing here is timed.
"""

from __future__ import annotations

import argparse
import collections
import itertools
import re

import pytest

from firehose.matching import matches, needles_of, tokens
from firehose.simulator.clock import DEFAULT_START_US, Bursts, Clock, Profile
from firehose.simulator.command import configure_parser, options_from_args
from firehose.simulator.generator import EventGenerator
from firehose.simulator.mix import POST
from firehose.simulator.options import SimulatorOptions
from firehose.simulator.profiles import DEFAULT_PROFILE, REAL, REAL_EVENTS_PER_DAY, SEED, profile_named
from firehose.simulator.realtext import DOMAINS, LANGUAGE_CODES, REAL_LANGUAGES, hashtags, language
from firehose.simulator.sources import GeneratedSource, build_source
from firehose.simulator.vocabulary import CJK_WORD, COMMON_WORD, CYRILLIC_WORD, RARE_WORD, TAG, has_special

DAY = "2026-05-25T00:00:00Z"
DAY_US = 86_400_000_000
SCRIPTS = {  # a character class each language's posts must show
    "ja": "[\u3041-\u30ff]", "zh": "[\u4e00-\u9fff]", "ko": "[\uac00-\ud7a3]", "ru": "[\u0400-\u04ff]",
    "uk": "[\u0456\u0457\u0454]", "ar": "[\u0600-\u06ff]", "th": "[\u0e00-\u0e7f]", "pt": "[ãõçáéíóê]",
    "de": "[äöüß]", "es": "[ñáéíó]", "pl": "[ąęłśżć]", "tr": "[ğışç]",
}


def _generator(options: SimulatorOptions) -> EventGenerator:
    source = build_source(options)
    assert isinstance(source, GeneratedSource)
    return source.generator


@pytest.fixture(scope="module")
def real_posts() -> list[dict]:
    """The posts among the first 300k events of the real profile (about 18k)."""
    gen = EventGenerator(seed=3, network=REAL)
    return [e["commit"]["record"] for e in gen.iter_events(0, 300_000)
            if e["kind"] == "commit" and e["commit"]["collection"] == POST and e["commit"]["operation"] == "create"]


# -- which profile, and the seed's bytes ------------------------------------------------------------------------


def test_the_simulator_defaults_to_the_real_profile() -> None:
    parser = argparse.ArgumentParser()
    configure_parser(parser)
    assert DEFAULT_PROFILE == "real" and options_from_args(parser.parse_args([])).profile == "real"
    assert options_from_args(parser.parse_args(["--profile", "seed"])).profile == "seed"
    gen = _generator(SimulatorOptions(start=DAY, rate=0))
    assert gen.network is REAL and gen.profile.rate == REAL_EVENTS_PER_DAY / 86_400 == pytest.approx(520.83, abs=0.01)
    assert gen.profile.diurnal and gen.profile.bursts is not None
    no_curve = _generator(SimulatorOptions(start=DAY, rate=0, diurnal=False, bursts=False))
    assert not no_curve.profile.diurnal and no_curve.profile.bursts is None


def test_an_unknown_profile_is_refused_with_the_names_there_are() -> None:
    with pytest.raises(ValueError, match="no profile 'huge': choose one of real, seed"):
        SimulatorOptions(profile="huge").validate()
    with pytest.raises(ValueError, match="choose one of"):
        profile_named("")


@pytest.mark.parametrize(("options", "profile"), [
    ({}, Profile()),  # --rate 0 --start DAY: the seed's 8.1M a day, constant
    ({"days": 1, "events": 50_000, "diurnal": True}, Profile(rate=50_000 / 86_400, diurnal=True)),
    ({"peak_ratio": 2.0, "diurnal": True}, Profile(diurnal=True, peak_ratio=2.0)),
])
def test_the_seed_profile_is_the_old_stream_byte_for_byte(options: dict, profile: Profile) -> None:
    """What `--profile seed` serves is what the simulator served before profiles existed (the pinned digest of
    tests/unit/test_generate.py is that generator's): same bytes, same times."""
    served = _generator(SimulatorOptions(profile="seed", start=DAY, rate=0, seed=4, **options))
    old = EventGenerator(4, DEFAULT_START_US, profile)
    assert served.profile == profile and served.network is SEED
    assert [served.event_json(i) for i in range(3000)] == [old.event_json(i) for i in range(3000)]


def test_profiles_state_their_source_and_peak() -> None:
    assert "Jetstream" in REAL.source and "ClickHouse" in REAL.source and "estimated" in REAL.source
    assert "8.1M" in SEED.source
    assert "45,000,000 events a day (520.8/s" in REAL.describe() and "peak <=" in REAL.describe()
    bound = REAL.peak_events_per_s
    assert bound == pytest.approx(REAL_EVENTS_PER_DAY / 86_400 * (1 + 1.4 / 3.4) * 3)  # peak of the curve x 3
    assert SEED.peak_events_per_s == SEED.events_per_day / 86_400


# -- the day: diurnal curve and bursts ----------------------------------------------------------------------------


def _per_minute(clock: Clock, day_start_us: int) -> list[int]:
    edges = [clock.index_at_or_after(day_start_us + m * 60_000_000) for m in range(1441)]
    return [b - a for a, b in itertools.pairwise(edges)]


def test_a_real_day_has_the_curve_the_bursts_and_exactly_its_events() -> None:
    clock = Clock(REAL.timing(), DEFAULT_START_US, seed=7)
    minutes = _per_minute(clock, DEFAULT_START_US)
    assert sum(minutes) == pytest.approx(REAL_EVENTS_PER_DAY, abs=2)  # every UTC day keeps the mean
    hours = [sum(minutes[h * 60:(h + 1) * 60]) for h in range(24)]
    assert hours.index(max(hours)) in (11, 12, 13)  # peak around 12:00 UTC
    assert 2.0 <= max(hours) / min(hours) <= 3.4  # peak/trough 2.4, bursts on top
    schedule = clock.bursts_of_day(DEFAULT_START_US // DAY_US)
    bursts = [(a, b, m) for a, b, m in zip(schedule.edges, schedule.edges[1:], schedule.multipliers, strict=False)
              if m > 1.5]
    assert len(bursts) == 6
    for start, end, factor in bursts:
        assert 120 <= end - start <= 600 and 1.9 <= factor <= 3.0
        inside = clock.rate_at(DEFAULT_START_US / 1e6 + (start + end) / 2)
        before = clock.rate_at(DEFAULT_START_US / 1e6 + start - 1)
        assert inside / before == pytest.approx(factor / schedule.multipliers[0], rel=0.02)  # a spike of 2-3x
    peak = max(minutes) / 60
    assert 2 * REAL_EVENTS_PER_DAY / 86_400 < peak <= REAL.peak_events_per_s


def test_bursts_are_deterministic_per_seed_and_day() -> None:
    profile = REAL.timing()
    a, b, other = Clock(profile, DEFAULT_START_US, 7), Clock(profile, DEFAULT_START_US, 7), Clock(profile, 0, 8)
    day = DEFAULT_START_US // DAY_US
    assert a.bursts_of_day(day) == b.bursts_of_day(day) != other.bursts_of_day(day)
    assert a.bursts_of_day(day) != a.bursts_of_day(day + 1)
    assert [a.base_us(i) for i in range(0, 10**7, 9973)] == [b.base_us(i) for i in range(0, 10**7, 9973)]
    gen = EventGenerator(7, DEFAULT_START_US, network=REAL)
    assert gen.base_us(10**6) == a.base_us(10**6)  # the generator's clock is keyed by its seed


def test_every_day_of_a_bursty_profile_holds_the_same_events() -> None:
    clock = Clock(Profile(rate=1000 / 86_400, diurnal=True, peak_ratio=2.4, bursts=Bursts(per_day=3)), 0, 1)
    midnights = [clock.count(DEFAULT_START_US / 1e6 + d * 86_400) for d in range(6)]
    assert [b - a for a, b in itertools.pairwise(midnights)] == pytest.approx([1000] * 5, abs=1e-6)
    assert clock.count(DEFAULT_START_US / 1e6 + 3600) - midnights[0] != pytest.approx(1000 / 24, abs=1)  # a curve


def test_bursts_are_checked() -> None:
    with pytest.raises(ValueError, match="half of its slice"):
        Bursts(per_day=48, minutes=(10, 20))
    with pytest.raises(ValueError, match="factors"):
        Bursts(factor=(3, 2))


# -- the real mix and texts ---------------------------------------------------------------------------------------


def test_real_mix_shares() -> None:
    shares = collections.Counter()
    for kind in REAL.mix:
        shares[kind.collection or kind.kind] += kind.per_mille / 1000
    assert shares["app.bsky.feed.like"] == pytest.approx(0.67)  # Jetstream's 2026 collection-filter run
    assert shares["app.bsky.graph.follow"] > shares["app.bsky.feed.post"] > shares["app.bsky.feed.repost"]
    assert shares["identity"] == shares["account"] == pytest.approx(0.003)


def test_languages_and_scripts_in_their_shares(real_posts: list[dict]) -> None:
    n = len(real_posts)
    firsts = collections.Counter(r["langs"][0] if "langs" in r else None for r in real_posts)
    for code, share in REAL_LANGUAGES:
        if code not in ("emoji", "en"):
            assert firsts[code] / n == pytest.approx(share, abs=max(0.006, share * 0.25)), code
    assert firsts["en"] / n == pytest.approx(0.535 + 0.02, abs=0.02)  # emoji-only posts carry `en` as well
    texts: dict[str, list[str]] = collections.defaultdict(list)
    for record in real_posts:
        texts[record.get("langs", [None])[0]].append(record["text"])
    for code, script in SCRIPTS.items():
        shown = sum(bool(re.search(script, t)) for t in texts[code]) / len(texts[code])
        assert shown > 0.5, (code, shown)
    # Japanese and Chinese run their words together (CJK runs); the others separate them
    ja_runs = [max(map(len, re.findall("[\u3041-\u30ff\u4e00-\u9fff]+", t)), default=0) for t in texts["ja"]]
    assert sum(length >= 6 for length in ja_runs) / len(ja_runs) > 0.4


def test_posts_have_the_features_of_real_ones(real_posts: list[dict]) -> None:
    n = len(real_posts)
    feature_counts = collections.Counter(f["features"][0]["$type"].split("#")[1] for r in real_posts
                                         for f in r.get("facets", []))
    assert feature_counts["link"] / n == pytest.approx(0.10, abs=0.02)
    assert feature_counts["mention"] / n > 0.08 and feature_counts["tag"] / n > 0.08
    emoji = re.compile("[\U0001F300-\U0001FAFF\u2600-\u27BF]")
    assert sum(bool(emoji.search(r["text"])) for r in real_posts) / n > 0.15
    embeds = collections.Counter(r["embed"]["$type"] for r in real_posts if "embed" in r)
    assert sum(embeds.values()) / n == pytest.approx(REAL.shape.embed_share, abs=0.02)
    assert embeds["app.bsky.embed.record"] and embeds["app.bsky.embed.recordWithMedia"]  # quotes
    alts = [i["alt"] for r in real_posts for i in r.get("embed", {}).get("images", [])]
    assert sum(bool(a) for a in alts) / len(alts) == pytest.approx(0.35, abs=0.04)
    assert sum("reply" in r for r in real_posts) / n == pytest.approx(REAL.shape.reply_share, abs=0.02)
    assert sum("\n" in r["text"] for r in real_posts) > 0  # line breaks


def test_words_follow_zipfs_law_over_a_large_vocabulary(real_posts: list[dict]) -> None:
    english = [r["text"] for r in real_posts if r.get("langs") == ["en"]]
    counts = collections.Counter(t for text in english for t in tokens(text) if t.isalpha())
    ranked = [c for _, c in counts.most_common()]
    total = sum(ranked)
    assert 0.03 < ranked[0] / total < 0.10  # "the": ~6% of English words
    assert 4 < ranked[9] / ranked[99] < 25  # frequency ~ 1/rank: rank 10 about ten times rank 100
    assert len(counts) > 15_000  # a large vocabulary: most words are rare
    assert len(language("en").words) == 50_000


def test_searchable_strings_occur_only_where_injected(real_posts: list[dict]) -> None:
    """Under the project's matching (CJK by 2+ character substrings), each searchable string is found in exactly
    the posts it was injected into: no word, hashtag or neighbouring pair of words makes one by chance."""
    texts = [r["text"] for r in real_posts]
    for word in (COMMON_WORD, RARE_WORD, CJK_WORD, CYRILLIC_WORD):
        needles, _ = needles_of(word, [word], exact=False)
        found = [t for t in texts if matches(needles, t)]
        assert len(found) == sum(word in t.lower() for t in texts), word
    cjk = [r for r in real_posts if CJK_WORD in r["text"]]
    assert cjk and all(r["langs"][0] in ("ja", "zh") for r in cjk)
    share = len(cjk) / sum(r["langs"][0] in ("ja", "zh") for r in real_posts if "langs" in r)
    assert share == pytest.approx(0.10, abs=0.02)
    tagged = sum(any(f["features"][0].get("tag") == TAG for f in r.get("facets", [])) for r in real_posts)
    assert tagged == sum(f"#{TAG}" in t for t in texts)


def test_no_list_of_the_real_profile_contains_a_searchable_string() -> None:
    for code in LANGUAGE_CODES:
        words = language(code).words
        assert not [w for w in words if has_special(w)], code
        assert len(set(words)) == len(words), code
    assert not any(ch in CJK_WORD for code in ("ja", "zh") for w in language(code).words for ch in w)
    assert not [t for t in hashtags() if has_special(t)] and not [d for d in DOMAINS if has_special(d)]
