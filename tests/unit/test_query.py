"""The query layer against real Parquet files: search semantics, ordering, keyset pages, caps, time budgets.

The fixture data is written by tests/support/archive.py, as in the API tests (unit and integration).
"""

from __future__ import annotations

import itertools
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest

from firehose import catalog, storage
from firehose.config import Settings
from firehose.database import Database, Watchdog
from firehose.filters import Filters
from firehose.matching import Needle, needle
from firehose.params import BadParameter, CursorCodec, Position, SearchQuery, openapi_parameters, parse_search
from firehose.search import QueryTimeout, Searcher
from tests.support.archive import (
    DAY1,
    DAY2,
    DAY3,
    bulk_posts,
    post_row,
    search_settings,
    us,
    write_identity,
    write_posts,
)

SEMANTIC_POSTS = [
    ("Hello World from the archive", DAY1, {}),
    ("hello again, WORLD", DAY2, {}),
    ("Привет, Мир! Как дела?", DAY2, {"langs": ["ru"]}),
    ("今日は猫がかわいい 🐈", DAY3, {"langs": ["ja"]}),
    ("Butterflies 🦋 everywhere", DAY3, {}),
    ("I am 100% sure", DAY1, {}),
    ("I am 100 sure", DAY1, {}),
    ("snake_case names", DAY2, {}),
    ("snakeXcase names", DAY2, {}),
    ("a back\\slash path", DAY3, {}),
    ("a backslash path", DAY3, {}),
    ("ΟΔΟΣ in capitals", DAY1, {"langs": ["el"]}),
    ("Straße und Weg", DAY2, {"langs": ["de-DE"]}),
    ("link post", DAY1, {"links": ["https://www.Example.com/page?x=1", "https://other.org/"]}),
    ("tag post", DAY2, {"tags": ["BlueSky", "Art"]}),
    ("mention post", DAY3, {"mentions": ["did:plc:bob"]}),
    ("by bob", DAY3, {"did": "did:plc:bob", "langs": ["en-US"]}),
]


@pytest.fixture
def semantic_dir(tmp_path: Path) -> Path:
    data = tmp_path / "data"
    rows = [post_row(text, date, **extra) for text, date, extra in SEMANTIC_POSTS]
    write_posts(data, rows)
    return data


def texts(searcher: Searcher, *, needles: Sequence[str] = (), author_did: str | None = None,
          mentions_did: str | None = None, tags: tuple[str, ...] = (), **query: Any) -> list[str]:
    """Texts of the first page for these filters (each needle given as the word or phrase a user types; `query`:
    the `SearchQuery` fields the filters take as they are, such as `lang` or `since_us`)."""
    flt = Filters(SearchQuery(**query), tuple(n for w in needles if (n := needle(w)) is not None),
                  author_did=author_did, mentions_did=mentions_did, tags=tags)
    return [r["text"] for r in searcher.search(flt, 50, None, cap=1000).rows]


# ------------------------------------------------------------------------------------------ parameters


def parse(**params: Any) -> Any:
    pairs = [(k, v) for k, vs in params.items() for v in (vs if isinstance(vs, list) else [vs])]
    return parse_search(pairs, Settings(api_page_size=50, api_max_text_length=100))


def test_aliases_and_defaults() -> None:
    q = parse(q="  hello   world ", author="@Alice.BSKY.social", since="2024-05-01", until="2024-05-02")
    assert q.words == ("hello", "world") and q.text == "hello world"
    assert q.author == "alice.bsky.social"
    assert q.since_us == us(DAY1) and q.until_us == us("2024-05-03")  # a bare end date includes that day
    assert q.limit == 50 and q.sort == "latest" and not q.exact
    assert parse(text="a", username="did:plc:xyz", start="2024-05-01T10:00:00Z").author == "did:plc:xyz"


def test_datetimes_with_offsets_are_utc() -> None:
    q = parse(start="2024-05-01T12:00:00+02:00", end="2024-05-01T12:00:00.1234567")
    assert q.since_us == us(DAY1, 10 * 3600)
    assert q.until_us == us(DAY1, 12 * 3600) + 123456


@pytest.mark.parametrize(("params", "name"), [
    ({"start": "2024-13-01"}, "start"),
    ({"since": "yesterday"}, "since"),
    ({"end": "2024-05-01", "start": "2024-05-03"}, "end"),
    ({"until": "1960-01-01"}, "until"),
    ({"limit": "0"}, "limit"),
    ({"limit": "51"}, "limit"),
    ({"limit": "9" * 5000}, "limit"),
    ({"limit": "1e3"}, "limit"),
    ({"limit": "٣"}, "limit"),
    ({"sort": "top"}, "sort"),
    ({"sort": "random"}, "sort"),
    ({"exact": "maybe"}, "exact"),
    ({"text": "x" * 101}, "text"),
    ({"text": " ".join("abcdefghijklmnopqrstuvwxyz0123456789ABCD")}, "text"),
    ({"bogus": "1"}, "bogus"),
    ({"text": "a\x00b"}, "text"),
    ({"text": ["a", "b"]}, "text"),
    ({"text": "a", "q": "b"}, "q"),
    ({"username": "not a handle!"}, "username"),
    ({"lang": "english language"}, "lang"),
    ({"domain": "http://x.com/"}, "domain"),
    ({"tag": "two words"}, "tag"),
    ({"tag": [str(i) for i in range(11)]}, "tag"),
])
def test_bad_parameters_are_named(params: dict, name: str) -> None:
    with pytest.raises(BadParameter) as err:
        parse(**params)
    assert err.value.parameter == name
    assert err.value.message


@pytest.mark.parametrize(("raw", "value"), [("true", True), ("1", True), ("YES", True), ("false", False),
                                            ("0", False), ("no", False), ("", False)])
def test_booleans(raw: str, value: bool) -> None:
    assert parse(text="x", exact=raw).exact is value


def test_export_accepts_big_limit_but_no_cursor() -> None:
    settings = Settings(api_export_max_rows=500)
    assert parse_search([("limit", "500")], settings, export=True).limit == 500
    with pytest.raises(BadParameter) as err:
        parse_search([("cursor", "abc")], settings, export=True)
    assert err.value.parameter == "cursor"


def test_tags_repeat_and_lose_their_hash() -> None:
    assert parse(tag=["#Art", "bluesky", "#Art"]).tags == ("Art", "bluesky")


@pytest.mark.parametrize("export", [False, True])
def test_documented_parameters_are_exactly_the_accepted_ones(export: bool) -> None:
    settings = Settings(api_page_size=50, api_export_max_rows=500)
    names = [p["name"] for p in openapi_parameters(settings, export=export)]
    assert len(names) == len(set(names)) and ("cursor" in names) is not export
    for name in names:
        parse_search([(name, "")], settings, export=export)  # accepted (an empty value counts as absent)
    with pytest.raises(BadParameter) as err:
        parse_search([("bogus", "1")], settings, export=export)
    assert err.value.message.split("accepted: ")[1].split(", ") == names
    limit = next(p for p in openapi_parameters(settings, export=export) if p["name"] == "limit")
    assert limit["schema"]["maximum"] == parse_search([], settings, export=export).limit == (500 if export else 50)


# ------------------------------------------------------------------------------------------ cursors


def test_cursor_round_trip_and_forgery() -> None:
    codec = CursorCodec(b"k")
    pos = Position(123, "at://x/y/z", 50)
    token = codec.encode(pos, "fp")
    assert codec.decode(token, "fp") == pos
    for bad in (token + "x", "x" + token, token.replace(".", ""), "garbage", ".", "é.é",
                CursorCodec(b"other").encode(pos, "fp")):
        with pytest.raises(BadParameter):
            codec.decode(bad, "fp")
    with pytest.raises(BadParameter):
        codec.decode(token, "another query")


# ------------------------------------------------------------------------------------------ semantics


def test_all_words_case_insensitive_any_script(semantic_dir: Path) -> None:
    s = Searcher(search_settings(semantic_dir))
    assert texts(s, needles=["WORLD", "hello"]) == ["hello again, WORLD", "Hello World from the archive"]
    assert texts(s, needles=["мир"]) == ["Привет, Мир! Как дела?"]
    assert texts(s, needles=["ПРИВЕТ", "дела"]) == ["Привет, Мир! Как дела?"]
    assert texts(s, needles=["猫が"]) == ["今日は猫がかわいい 🐈"]  # CJK: any substring of two or more characters
    assert texts(s, needles=["猫"]) == []  # a single CJK character only matches on its own
    assert needle("🦋") is None  # no letters or digits: ignored (the API warns)
    assert texts(s, needles=["οδοσ"]) == ["ΟΔΟΣ in capitals"]
    assert texts(s, needles=["STRASSE"]) == []  # no full case folding: ß stays ß
    assert texts(s, needles=["straße"]) == ["Straße und Weg"]
    assert texts(s, needles=["hello", "nowhere"]) == []


def test_punctuation_separates_words(semantic_dir: Path) -> None:
    s = Searcher(search_settings(semantic_dir))
    assert texts(s, needles=["100%"]) == ["I am 100 sure", "I am 100% sure"]
    assert needle("%") is None and needle("_") is None and needle("\\") is None
    assert texts(s, needles=["snake_case"]) == ["snake_case names"]  # the words snake, case in a row
    assert texts(s, needles=["snake"]) == ["snake_case names"]  # snakeXcase is one word
    assert texts(s, needles=["back\\slash"]) == ["a back\\slash path"]
    assert texts(s, needles=["back*"]) == ["a backslash path", "a back\\slash path"]  # a prefix


def test_exact_phrase(semantic_dir: Path) -> None:
    s = Searcher(search_settings(semantic_dir))
    assert texts(s, needles=["HELLO WORLD"]) == ["Hello World from the archive"]
    assert texts(s, needles=["world hello"]) == []


def test_structured_filters(semantic_dir: Path) -> None:
    s = Searcher(search_settings(semantic_dir))
    assert texts(s, lang="ru") == ["Привет, Мир! Как дела?"]
    assert texts(s, lang="de") == ["Straße und Weg"]
    assert texts(s, lang="en-us") == ["by bob"]
    assert texts(s, domain="example.com") == ["link post"]
    assert texts(s, domain="www.example.com") == ["link post"]
    assert texts(s, domain="ample.com") == []
    assert texts(s, url="https://other.org/") == ["link post"]
    assert texts(s, url="https://www.Example.com/pa") == ["link post"]
    assert texts(s, tags=("bluesky",)) == ["tag post"]
    assert texts(s, tags=("bluesky", "art")) == ["tag post"]
    assert texts(s, tags=("bluesky", "nope")) == []
    assert texts(s, mentions_did="did:plc:bob") == ["mention post"]
    assert texts(s, author_did="did:plc:bob") == ["by bob"]
    assert texts(s, needles=["post"], since_us=us(DAY2), until_us=us(DAY3)) == ["tag post"]


def test_newest_first_across_partitions_and_oldest(semantic_dir: Path) -> None:
    s = Searcher(search_settings(semantic_dir))
    rows = s.search(Filters(), 50, None, cap=1000).rows
    times = [r["time_us"] for r in rows]
    assert len(rows) == len(SEMANTIC_POSTS)
    assert times == sorted(times, reverse=True)
    assert rows[0]["timestamp"].startswith(DAY3) and rows[0]["timestamp"].endswith("Z")
    oldest = s.search(Filters(SearchQuery(sort="oldest")), 50, None, cap=1000).rows
    assert [r["uri"] for r in oldest] == [r["uri"] for r in reversed(rows)]


def test_stops_at_the_newest_partition_when_the_page_is_full(tmp_path: Path) -> None:
    data = tmp_path / "data"
    bulk_posts(data, DAY3, 200, name="new")
    bulk_posts(data, DAY1, 200, name="old")
    (storage.partition_dir(data, "posts", DAY1) / "old.parquet").write_bytes(b"not parquet")  # never opened
    page = Searcher(search_settings(data)).search(Filters(), 50, None, cap=1000)
    assert len(page.rows) == 50 and page.next_position is not None


def walk(searcher: Searcher, filters: Filters, limit: int, cap: int) -> list[str]:
    """Every uri over all pages."""
    uris: list[str] = []
    after = None
    while True:
        page = searcher.search(filters, limit, after, cap=cap)
        uris += [r["uri"] for r in page.rows]
        if page.next_position is None:
            return uris
        after = page.next_position


@pytest.mark.parametrize("sort", ["latest", "oldest"])
def test_keyset_pages_have_no_gaps_or_duplicates(tmp_path: Path, sort: str) -> None:
    data = tmp_path / "data"
    for i, date in enumerate((DAY1, DAY2, DAY3)):
        bulk_posts(data, date, 37 + i, name=f"d{i}")  # pairs of rows share a time_us
    s = Searcher(search_settings(data))
    expected = [r["uri"] for r in s.search(Filters(SearchQuery(sort=sort)), 500, None, cap=1000).rows]
    assert len(expected) == 37 + 38 + 39
    for limit in (1, 7, 50):
        assert walk(s, Filters(SearchQuery(sort=sort)), limit, 1000) == expected


@pytest.mark.parametrize("sort", ["latest", "oldest"])
def test_time_windows_over_small_row_groups(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, sort: str) -> None:
    monkeypatch.setattr("firehose.catalog.FIRST_WINDOW_ROWS", 16)
    data = tmp_path / "data"
    for i, date in enumerate((DAY1, DAY2, DAY3)):
        for part in range(3):  # several files a day, like the 5-minute flushes, overlapping in time
            bulk_posts(data, date, 45, name=f"d{i}p{part}", start_us=us(date, 100 + part * 10), step_us=997_000,
                       row_group_size=10)
    s = Searcher(search_settings(data, api_duckdb_threads=2))
    in_order = Filters(SearchQuery(sort=sort))
    windows = list(s.windows(in_order, None))
    assert len(windows) > 3
    bounds = [(lo, hi) for _, lo, hi in windows]
    pairs = list(itertools.pairwise(bounds))
    assert all(a[0] == b[1] for a, b in pairs) if sort == "latest" else all(a[1] == b[0] for a, b in pairs)
    expected = sorted(((r["time_us"], r["uri"]) for r in s.search(in_order, 500, None, cap=1000).rows),
                      reverse=sort == "latest")
    assert len(expected) == 405
    with Searcher(search_settings(data)).db.connection().cursor() as cur:
        rows = cur.execute(f"SELECT time_us, uri FROM '{data}/posts/*/*.parquet'").fetchall()
    assert sorted(rows, reverse=sort == "latest") == expected
    for limit in (7, 50):
        assert walk(s, in_order, limit, 1000) == [u for _, u in expected]
    middle = Filters(SearchQuery(sort=sort, since_us=us(DAY2, 120), until_us=us(DAY3, 130)))
    assert walk(s, middle, 13, 1000) == [u for t, u in expected if us(DAY2, 120) <= t < us(DAY3, 130)]


def test_total_cap_over_all_pages(tmp_path: Path) -> None:
    data = tmp_path / "data"
    bulk_posts(data, DAY1, 700, name="a")
    bulk_posts(data, DAY2, 700, name="b")
    s = Searcher(search_settings(data))
    uris = walk(s, Filters(), 50, 1000)
    assert len(uris) == 1000 == len(set(uris))
    assert len(walk(s, Filters(), 30, 1000)) == 1000  # the last page is cut to the cap
    page = s.search(Filters(), 50, Position(us(DAY2, 5000), "at://x", 1000), cap=1000)
    assert page.rows == [] and page.next_position is None


def test_no_data_no_error(tmp_path: Path) -> None:
    s = Searcher(search_settings(tmp_path / "nothing"))
    assert s.search(Filters(needles=(Needle(("x",)),)), 50, None, cap=1000).rows == []
    assert s.catalog.newest_time_us() is None
    assert s.catalog.stats() == {"tables": {}}


# ------------------------------------------------------------------------------------------ time budget


def test_watchdog_interrupts_and_the_connection_stays_usable() -> None:
    db = Database(threads=1, memory_limit="500MB")
    cur = db.cursor()
    with Watchdog(cur, 0.2) as dog, pytest.raises(Exception, match="nterrupt"):
        cur.execute("SELECT count(*) FROM range(10000000000) a WHERE a % 7 = 3").fetchall()
    assert dog.fired
    assert cur.execute("SELECT 42").fetchall() == [(42,)]


def test_search_past_its_budget_times_out_then_works(tmp_path: Path) -> None:
    data = tmp_path / "data"
    for day in range(1, 29):
        bulk_posts(data, f"2024-02-{day:02d}", 20_000, name=f"b{day}", text="lorem ipsum dolor sit amet " * 8)
    s = Searcher(search_settings(data, api_query_timeout=0.001))  # ~80 ms of scanning against a 1 ms budget
    with pytest.raises(QueryTimeout):
        s.search(Filters(needles=(Needle(("nowhere", "to", "be", "found")),)), 50, None, cap=1000)
    assert len(s.search(Filters(), 5, None, cap=1000, budget=30).rows) == 5


# ------------------------------------------------------------------------------------------ metadata


def test_freshness_and_stats_from_footers(semantic_dir: Path) -> None:
    write_identity(semantic_dir, [("did:plc:bob", "bob.test", us(DAY3, 7))])
    s = Searcher(search_settings(semantic_dir))
    newest = max(r["time_us"] for r in s.search(Filters(), 50, None, cap=1000).rows)
    assert s.catalog.newest_time_us() == newest
    stats = s.catalog.stats()["tables"]
    assert stats["posts"]["rows"] == len(SEMANTIC_POSTS)
    assert sum(d["rows"] for d in stats["posts"]["days"].values()) == len(SEMANTIC_POSTS)
    assert stats["identity"]["days"][DAY3]["rows"] == 1 and stats["identity"]["days"][DAY3]["files"] == 1


def test_stats_are_current_at_every_call(tmp_path: Path) -> None:
    """No answer is reused: a new file, a file replaced under its name and a compaction show at the next call,
    also when the directory changes twice within its mtime tick; an unchanged partition is not listed again."""
    data = tmp_path / "data"
    write_posts(data, [post_row("a"), post_row("b")], name="f1")
    s = Searcher(search_settings(data))

    def day() -> dict:
        return s.catalog.stats()["tables"]["posts"]["days"][DAY1]

    assert day()["rows"] == 2 and day()["files"] == 1
    write_posts(data, [post_row("c")], name="f2")  # a flush batch
    assert day()["rows"] == 3 and day()["files"] == 2
    write_posts(data, [post_row("c"), post_row("d")], name="f2")  # its redo, same name, more rows
    assert day()["rows"] == 4 and day()["files"] == 2
    part = storage.partition_dir(data, "posts", DAY1)
    for f in part.glob("*.parquet"):
        f.unlink()
    write_posts(data, [post_row(str(i)) for i in range(5)], name="compact-1")  # compacted into one file
    assert day() == {"rows": 5, "files": 1, "bytes": (part / "compact-1.parquet").stat().st_size}
    old = time.time_ns() - 10 * catalog.RACY_NS  # a settled partition: its listing is kept while it is unchanged
    os.utime(part, ns=(old, old))
    assert day()["rows"] == 5
    write_posts(data, [post_row("e")], name="f3")
    os.utime(part, ns=(old, old))  # a change that left the directory's mtime alone (renames never do)
    assert day()["rows"] == 5  # proves the settled listing is reused: one stat per partition
    os.utime(part)
    assert day()["rows"] == 6


def test_identity_lookups(tmp_path: Path) -> None:
    data = tmp_path / "data"
    write_identity(data, [("did:plc:a", "old.test", us(DAY1, 1)), ("did:plc:a", "New.Test", us(DAY1, 2)),
                          ("did:plc:b", "b.test", us(DAY1, 3))])
    s = Searcher(search_settings(data))
    assert s.identity_handles(["did:plc:a", "did:plc:b", "did:plc:c"]) == {"did:plc:a": "new.test",
                                                                          "did:plc:b": "b.test"}
    assert s.identity_did("new.test") == "did:plc:a"
    assert s.identity_did("nobody.test") is None
