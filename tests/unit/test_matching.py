"""The matching rules (firehose.matching) and THE differential test: index path == scan path == the rules.

The differential test writes generated posts (words that share prefixes and substrings, mixed case, several
scripts, CJK runs, emoji, punctuation, hashtags, glued words) plus hand-written golden posts into Parquet over two
days, builds the full-text index of one copy of the data directory and leaves a second copy unindexed, then runs
thousands of random queries (words, prefixes, CJK substrings, exact phrases, substrings of posts, sort orders,
time ranges) through `Searcher.search` on both copies and compares them result for result with each other and
with the rules applied directly to every post (`matching.matches`).
"""

from __future__ import annotations

import random
import shutil
import sys
from pathlib import Path

import duckdb
import pytest

from firehose import index, storage
from firehose.catalog import OPEN_END
from firehose.filters import Filters, where_clause
from firehose.matching import fold, matches, needle, needles_of, re2_literal, tokens
from firehose.params import Position, SearchQuery
from firehose.search import Searcher
from tests.support.archive import DAY1, DAY2, post_row, search_settings, write_posts

QUERIES = 2000  # random queries compared path by path
SEARCHES = 150  # of them also end to end through Searcher.search
SEED = 20260529

LATIN = ["cat", "cats", "Cat", "CAT", "concatenate", "catalog", "dog", "don't", "hello", "world", "Hello-World",
         "naïve", "café", "Café", "straße", "STRASSE", "ΟΔΟΣ", "οδος", "привет", "Привет", "мир", "İstanbul",
         "istanbul", "x1", "42", "4.2", "snake_case", "e-mail", "über", "Über", "ǅemal", "ﬁne", "Ａｂｃ"]
CJK = ["東京都庁", "京都", "東京", "猫", "猫がかわいい", "今日は", "안녕하세요", "세요", "カタカナ", "ひらがな",
       "中文字", "字", "ｶﾀｶﾅ"]
OTHER = ["🦋", "☕", "!!!", "...", ":)", "—", "🐈‍⬛", "#cat", "#東京", "@alice.bsky.social",
         "https://example.com/cat?x=1", "(dog)", "नमस्ते", "مرحبا", "e\u0301t\u00e9"]
SEPARATORS = [" ", " ", " ", "", ", ", "! ", "\n", "-", "#", "_", "'", "\t", " 🦋 "]
GOLDEN = [
    "Hello World from the archive", "hello again, WORLD", "Привет, Мир! Как дела?", "今日は猫がかわいい 🐈",
    "Butterflies 🦋 everywhere", "I am 100% sure", "snake_case names", "a back\\slash path", "ΟΔΟΣ in capitals",
    "Straße und Weg", "good morning bluesky! #photography", "東京都庁に行きました。京都も。", "안녕하세요 세계",
    "don't stop", "dont stop", "Try RSV for a good time !!", "#Caturday #cat @bob.test https://cat.example/x",
    "C'est l'été — déjà?", "ＦＵＬＬ ｗｉｄｔｈ ｔｅｘｔ", "", "🦋🦋🦋", "cat*", "Ünïcødé 猫 😀",
]


def _piece(rng: random.Random) -> str:
    return rng.choice(rng.choice((LATIN, LATIN, CJK, OTHER)))


def generated_text(rng: random.Random) -> str:
    """A random post text: a few pieces glued by random separators."""
    parts = [_piece(rng) for _ in range(rng.randint(0, 10))]
    return "".join(p + rng.choice(SEPARATORS) for p in parts)


def _recase(rng: random.Random, word: str) -> str:
    return rng.choice((word, word.upper(), word.lower(), word.title()))


def random_query(rng: random.Random, texts: list[str]) -> tuple[str, bool]:
    """(text, exact) of a random query: words, prefixes, substrings of posts, CJK pieces or a phrase."""
    kind = rng.random()
    if kind < 0.15:  # a phrase cut out of a post
        words = rng.choice(texts).split()
        if words:
            start = rng.randrange(len(words))
            return " ".join(words[start:start + rng.randint(1, 3)]), True
    if kind < 0.35:  # any substring of a post (partial words, CJK substrings, punctuation)
        text = rng.choice(texts)
        if text:
            start = rng.randrange(len(text))
            return _recase(rng, text[start:start + rng.randint(1, 8)]), False
    words = []
    for _ in range(rng.randint(1, 3)):
        word = _recase(rng, _piece(rng))
        if rng.random() < 0.2:
            word = word[:rng.randint(1, max(1, len(word)))] + "*"
        words.append(word)
    return " ".join(words), rng.random() < 0.1


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, list[dict]]:
    """(indexed data dir, the same data unindexed, the posts)."""
    rng = random.Random(SEED)
    rows = [post_row(t, DAY1 if i % 2 else DAY2) for i, t in enumerate(GOLDEN)]
    rows += [post_row(generated_text(rng), rng.choice((DAY1, DAY2))) for _ in range(1000)]
    for row in rng.sample(rows, 300):  # ties on time (same day, whole minutes): the keyset order falls back to the URI
        row["time_us"] -= row["time_us"] % 60_000_000
    base = tmp_path_factory.mktemp("corpus")
    indexed, scanned = base / "indexed", base / "scanned"
    write_posts(indexed, rows[::2], name="a")
    write_posts(indexed, rows[1::2], name="b")
    shutil.copytree(indexed, scanned)
    for row in rows:
        row["tokens"] = tokens(row["text"])
    checks = index.verify(indexed)
    assert [(c.date, c.docs == c.rows, c.rebuilt) for c in checks] == [(DAY1, True, True), (DAY2, True, True)]
    assert index.indexed_dates(scanned) == []
    return indexed, scanned, rows


def _uris(searcher: Searcher, filters: Filters, limit: int = 10_000) -> list[str]:
    """Every URI of a full walk over the pages of `filters`."""
    uris: list[str] = []
    after: Position | None = None
    while True:
        page = searcher.search(filters, limit, after, cap=100_000)
        uris += [r["uri"] for r in page.rows]
        if page.next_position is None:
            return uris
        after = page.next_position


def _random_filters(rng: random.Random, texts: list[str], times: list[int]) -> Filters:
    text, exact = random_query(rng, texts)
    needles, _ = needles_of(text, tuple(dict.fromkeys(text.split())), exact)
    since = until = None
    if rng.random() < 0.3:
        since, until = sorted(rng.sample(times, 2))
    return Filters(SearchQuery(since_us=since, until_us=until, sort=rng.choice(("latest", "oldest"))), needles)


def _expected(rows: list[dict], filters: Filters) -> list[dict]:
    """The posts `filters` match by the rules, in its sort order (each row's tokens are in "tokens")."""
    query = filters.query
    found = [r for r in rows if all(n.found_in(r["tokens"]) for n in filters.needles)
             and (query.since_us is None or r["time_us"] >= query.since_us)
             and (query.until_us is None or r["time_us"] < query.until_us)]
    return sorted(found, key=lambda r: (r["time_us"], r["uri"]), reverse=query.sort == "latest")


def test_index_and_scan_match_the_rules_on_thousands_of_queries(corpus: tuple[Path, Path, list[dict]]) -> None:
    """Each path's own matching, query by query: the index's hits (`index.matching_times`) and the scan's SQL
    pre-filter followed by `matching.matches` (what `Searcher` runs over unindexed days and the hot tier)."""
    indexed, scanned, rows = corpus
    searchers = [tantivy_searcher for d in (DAY1, DAY2)
                 if (tantivy_searcher := index.Indexes(indexed).lookup(d, index.parquet_rows(indexed, d)).searcher)]
    assert len(searchers) == 2
    files = [str(f) for d in (DAY1, DAY2) for f in storage.partition_files(scanned, "posts", d)]
    con = duckdb.connect(config={"threads": 1})
    rng = random.Random(SEED + 1)
    texts, times = [r["text"] for r in rows], sorted(r["time_us"] for r in rows)
    nonempty = 0
    for _ in range(QUERIES):
        filters = _random_filters(rng, texts, times)
        want = _expected(rows, filters)
        if not filters.needles:
            continue
        low, high = filters.query.since_us or 0, filters.query.until_us or OPEN_END
        hits: set[tuple[int, int]] = set()
        for searcher in searchers:
            found, complete = index.matching_posts(searcher, filters.needles, low, high, 100_000, latest=True)
            assert complete
            hits.update(found)
        assert hits == {(r["time_us"], index.uri_key(r["uri"])) for r in want}, filters
        where, params = where_clause(filters, None)
        candidates = con.execute(f"SELECT uri, text FROM read_parquet(?) WHERE {where}", [files, *params]).fetchall()
        assert sorted(u for u, t in candidates if matches(filters.needles, t)) == sorted(r["uri"] for r in want), \
            filters
        nonempty += bool(want)
    assert nonempty > QUERIES // 4  # the queries do find things


def test_search_via_index_equals_search_via_scan(corpus: tuple[Path, Path, list[dict]]) -> None:
    """End to end through `Searcher.search`, pages and cursors included, on the indexed and the unindexed copy."""
    indexed, scanned, rows = corpus
    by_index = Searcher(search_settings(indexed, api_duckdb_threads=1))
    by_scan = Searcher(search_settings(scanned, api_duckdb_threads=1))
    assert all(by_index.day_index(d) is not None for d in (DAY1, DAY2))
    assert all(by_scan.day_index(d) is None for d in (DAY1, DAY2))
    rng = random.Random(SEED + 2)
    texts, times = [r["text"] for r in rows], sorted(r["time_us"] for r in rows)
    for _ in range(SEARCHES):
        filters = _random_filters(rng, texts, times)
        want = [r["uri"] for r in _expected(rows, filters)]
        limit = 10 if rng.random() < 0.2 else 10_000
        assert _uris(by_index, filters, limit) == want, filters
        assert _uris(by_scan, filters, limit) == want, filters


def test_export_index_path_equals_scan_path(corpus: tuple[Path, Path, list[dict]]) -> None:
    indexed, scanned, _ = corpus
    by_index, by_scan = Searcher(search_settings(indexed)), Searcher(search_settings(scanned))
    for text in ("cat", "東京", "hello world", "caf*", "don't", "猫が"):
        filters = Filters(needles=needles_of(text, tuple(text.split()), False)[0])
        exported = [[u for b in s.export(filters, 10_000) for u in b.column("uri").to_pylist()]
                    for s in (by_index, by_scan)]
        assert exported[0] == exported[1] == _uris(by_scan, filters)
        assert exported[0], text


def test_tokens() -> None:
    assert tokens("Hello, WORLD! don't #Cat snake_case 🦋 x") == ["hello", "world", "don", "t", "cat", "snake",
                                                                 "case", "x"]
    assert tokens("東京都庁へ") == ["東京", "京都", "都庁", "庁へ"]
    assert tokens("abc東京def猫") == ["abc", "東京", "def", "猫"]
    assert tokens("안녕하세요 세계") == ["안녕", "녕하", "하세", "세요", "세계"]
    assert tokens("ΟΔΟΣ οδος") == ["οδοσ", "οδοσ"]
    assert tokens("e\u0301t\u00e9 नमस्ते") == ["e\u0301t\u00e9", "नमस्ते"]  # combining marks stay in the word
    assert tokens("İstanbul") == ["İstanbul"]
    assert tokens(None) == [] and tokens("🦋 !!!") == []


def test_needles() -> None:
    cat = needle("Cat")
    assert cat is not None and cat.found_in(tokens("a #cat!")) and not cat.found_in(tokens("concatenate cats"))
    prefix = needle("cat*")
    assert prefix is not None and prefix.prefix and prefix.found_in(tokens("catalog"))
    assert not prefix.found_in(tokens("concatenate"))
    assert needle("東京*") == needle("東京")  # no prefix on CJK: it already matches any substring
    assert needle("don't*") == needle("don't")  # a prefix only on a single word
    phrase = needle("hello, world")
    assert phrase is not None and phrase.found_in(tokens("oh HELLO world!"))
    assert not phrase.found_in(tokens("world hello"))
    assert needles_of("🦋 cat", ("🦋", "cat"), False) == ((needle("cat"),), ["🦋"])
    assert needles_of("cat dog", ("cat", "dog"), True) == ((needle("cat dog"),), [])


def test_re2_prefilter_folds_every_character_like_the_tokenizer() -> None:
    """The SQL pre-filter may only drop rows the rules would drop: for every character whose lower case (as the
    tokenizer folds it) differs from itself, RE2's case-insensitive literal of the folded form matches it."""
    changed = [chr(cp) for cp in range(sys.maxunicode + 1)
               if not 0xD800 <= cp <= 0xDFFF and fold(chr(cp)) != chr(cp)]
    changed.append("Σ")  # final sigma: folded to σ in context too
    pairs = [(ch, "(?i)" + re2_literal(fold(ch))) for ch in changed] + [("ς", "(?i)σ"), ("ΟΔΟΣ", "(?i)οδοσ")]
    con = duckdb.connect()
    misses = con.execute("SELECT list(c) FROM (SELECT unnest(?) AS c, unnest(?) AS p) WHERE NOT regexp_matches(c, p)",
                         [[c for c, _ in pairs], [p for _, p in pairs]]).fetchone()
    assert len(changed) > 1000
    assert misses == (None,), misses


def test_re2_literal_matches_every_punctuation_literally() -> None:
    import string

    text = string.punctuation + " Ünïcødé 猫 😀"
    con = duckdb.connect()
    hit = con.execute("SELECT regexp_matches(?, ?)", ["x" + text.upper() + "y", "(?i)" + re2_literal(text)])
    assert hit.fetchall() == [(True,)]


def test_index_rounds_cut_at_a_time_keep_every_match_at_that_time(corpus: tuple[Path, Path, list[dict]]) -> None:
    """Small rounds over posts that share their time: each round ends with every match at its last time, and the
    rounds together are exactly the matches (the boundary the search's growing rounds rely on)."""
    indexed, _, rows = corpus
    needles = needles_of("cat", ("cat",), False)[0]
    want = {(r["time_us"], index.uri_key(r["uri"])) for r in rows if needles[0].found_in(r["tokens"])}
    for latest in (True, False):
        got: list[tuple[int, int]] = []
        for day in (DAY1, DAY2):
            searcher = index.Indexes(indexed).lookup(day, index.parquet_rows(indexed, day)).searcher
            low, high = 0, OPEN_END
            while True:
                hits, complete = index.matching_posts(searcher, needles, low, high, 3, latest=latest)
                assert not set(hits) & set(got)
                got += hits
                if complete:
                    break
                low, high = (low, min(t for t, _ in hits)) if latest else (max(t for t, _ in hits) + 1, high)
        assert set(got) == want and len(got) == len(want)
    assert len({t for t, _ in want}) < len(want)  # the corpus has matches sharing a time
