"""The hiding facts: the per-day file format, how facts are made from rows, and how the rules combine days and
the hot tier (no services: Arrow tables and files in a temporary directory)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from firehose import hiding_facts
from firehose.hiding import HiddenSet
from firehose.hiding_facts import DayFacts, facts_of
from firehose.index import uri_key, uri_keys
from firehose.schema import post_uri, post_uris

DAY_US = 86_400_000_000


def deletes(*rows: tuple[str, str, str]) -> pa.Table:
    """`deletes` rows (did, rkey, collection)."""
    return pa.table({"did": [r[0] for r in rows], "rkey": [r[1] for r in rows], "collection": [r[2] for r in rows]})


def accounts(*rows: tuple[str, int, bool]) -> pa.Table:
    """`account` rows (did, time_us, active)."""
    return pa.table({"did": [r[0] for r in rows], "time_us": pa.array([r[1] for r in rows], pa.int64()),
                     "active": [r[2] for r in rows]})


def test_facts_keep_deleted_posts_and_each_accounts_latest_state() -> None:
    facts = facts_of(deletes(("did:plc:a", "1", "app.bsky.feed.post"), ("did:plc:a", "1", "app.bsky.feed.post"),
                             ("did:plc:a", "2", "app.bsky.feed.like")),
                     accounts(("did:plc:b", 20, False), ("did:plc:b", 10, True), ("did:plc:c", 5, True)),
                     {"deletes": frozenset({("f1.parquet", 10)})})
    assert facts.deleted.tolist() == [uri_key(post_uri("did:plc:a", "1"))]  # once, and only the post
    state = dict(zip(facts.account_keys.tolist(), zip(facts.account_times.tolist(), facts.account_active.tolist(),
                                                      strict=True), strict=True))
    assert state == {uri_key("did:plc:b"): (20, 0), uri_key("did:plc:c"): (5, 1)}
    assert facts.covers == {"deletes": frozenset({("f1.parquet", 10)}), "account": frozenset()}


def test_the_file_round_trips_memory_mapped(tmp_path: Path) -> None:
    facts = facts_of(deletes(*[(f"did:plc:{i}", "1", "app.bsky.feed.post") for i in range(100)]),
                     accounts(("did:plc:x", 7, False)),
                     {"deletes": frozenset({("a.parquet", 1), ("b.parquet", 2)}),
                      "account": frozenset({("a.parquet", 3)})})
    path = hiding_facts.write(tmp_path, "2026-05-25", facts)
    back = hiding_facts.read(path)
    assert back is not None and isinstance(back.deleted, np.memmap | np.ndarray)
    assert back.covers == facts.covers
    for name in ("deleted", "account_keys", "account_times", "account_active"):
        assert getattr(back, name).tolist() == getattr(facts, name).tolist()
    assert hiding_facts.read(tmp_path / "missing.facts") is None


def test_a_damaged_file_is_refused(tmp_path: Path) -> None:
    path = hiding_facts.write(tmp_path, "2026-05-25", facts_of(deletes(("did:plc:a", "1", "app.bsky.feed.post")),
                                                               None, {}))
    data = path.read_bytes()
    path.write_bytes(data[:-3])
    with pytest.raises(ValueError, match="header says"):
        hiding_facts.read(path)
    path.write_bytes(b"NOTFACTS" + data[8:])
    with pytest.raises(ValueError, match="bad magic"):
        hiding_facts.read(path)


def test_merging_two_sets_of_files_of_a_day() -> None:
    one = facts_of(deletes(("did:plc:a", "1", "app.bsky.feed.post")), accounts(("did:plc:b", 10, False)),
                   {"deletes": frozenset({("1.parquet", 1)}), "account": frozenset({("1.parquet", 1)})})
    two = facts_of(deletes(("did:plc:a", "2", "app.bsky.feed.post")), accounts(("did:plc:b", 30, True)),
                   {"deletes": frozenset({("2.parquet", 2)}), "account": frozenset({("2.parquet", 2)})})
    both = one.merged(two)
    assert both.covers["deletes"] == {("1.parquet", 1), ("2.parquet", 2)}
    assert sorted(both.deleted.tolist()) == both.deleted.tolist() and both.deleted.size == 2
    assert both.account_times.tolist() == [30] and both.account_active.tolist() == [1]


def test_the_newest_day_and_then_the_hot_tier_decide_an_accounts_state() -> None:
    older = facts_of(None, accounts(("did:plc:a", 1 * DAY_US, False), ("did:plc:b", 1 * DAY_US, False)), {})
    newer = facts_of(None, accounts(("did:plc:a", 2 * DAY_US, True)), {})
    rules = HiddenSet((newer, older))
    assert rules.active(["did:plc:a", "did:plc:b", "did:plc:c"]) == {"did:plc:a": True, "did:plc:b": False,
                                                                     "did:plc:c": True}
    hot = HiddenSet((newer, older), accounts={"did:plc:a": (3 * DAY_US, False), "did:plc:b": (DAY_US - 1, True)})
    assert hot.is_inactive("did:plc:a")  # the buffer's later event wins
    assert hot.is_inactive("did:plc:b")  # an older event in the buffer (a replay) does not


def test_a_deletion_of_any_day_hides_the_post() -> None:
    days = tuple(facts_of(deletes((f"did:plc:{d}", "1", "app.bsky.feed.post")), None, {}) for d in range(5))
    rules = HiddenSet(days, deleted_uris=frozenset({post_uri("did:plc:hot", "1")}))
    uris = [post_uri(f"did:plc:{d}", "1") for d in [*range(5), 9]] + [post_uri("did:plc:hot", "1")]
    assert rules.keep_mask(uris, [u.split("/")[2] for u in uris]) == [False] * 5 + [True, False]
    assert HiddenSet().keep_mask([], []) == [] and DayFacts({}).size == 0


def test_arrow_builds_the_same_uris_and_keys_as_one_at_a_time() -> None:
    dids, rkeys = ["did:plc:a", "did:web:example.com"], ["3k2a", "self"]
    uris = post_uris(pa.array(dids), pa.array(rkeys)).to_pylist()
    assert uris == [post_uri(d, r) for d, r in zip(dids, rkeys, strict=True)]
    assert uri_keys(uris).tolist() == [uri_key(u) for u in uris]
