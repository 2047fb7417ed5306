"""The storage schema: every golden event lands in its table with every field kept."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from firehose import schema
from tests.support.paths import GOLDEN, REPO

EXPECTED_TABLES = ["likes", "posts", "reposts", "follows", "profiles", "deletes", "records", "identity", "account",
                   "blocks"]


def golden() -> list[tuple[bytes, dict[str, Any]]]:
    return [(line.rstrip(b"\n"), orjson.loads(line)) for line in GOLDEN.read_bytes().splitlines()]


def leaves(value: Any) -> set[str]:
    """Every scalar in a JSON value, as JSON text."""
    if isinstance(value, dict):
        return set().union(*(leaves(v) for v in value.values())) if value else set()
    if isinstance(value, list):
        return set().union(*(leaves(v) for v in value)) if value else set()
    return {orjson.dumps(value).decode()}


def row_leaves(row: dict[str, Any]) -> set[str]:
    out: set[str] = set()
    for value in row.values():
        if isinstance(value, str) and value[:1] in "{[":
            out |= leaves(orjson.loads(value))
        out |= leaves(value)
    return out


def test_golden_events_route_to_their_tables() -> None:
    assert [schema.route(event, raw)[0] for raw, event in golden()] == EXPECTED_TABLES


@pytest.mark.parametrize("index", range(10))
def test_every_field_of_a_golden_event_is_kept(index: int) -> None:
    raw, event = golden()[index]
    table, row = schema.route(event, raw)
    if table == "records":
        assert orjson.loads(row["raw"]) == event
        return
    kept = row_leaves(row)
    expected = leaves(event)
    expected.discard(orjson.dumps(event["kind"]).decode())
    commit = event.get("commit", {})
    for derived in (commit.get("collection"), commit.get("record", {}).get("$type")):
        if derived is not None:
            expected.discard(orjson.dumps(derived).decode())
    if table == "deletes":
        expected.discard('"delete"')
    assert expected - kept == set()
    schema.to_arrow(table, [row])  # the row has the table's types


def test_post_columns() -> None:
    raw, event = golden()[1]
    table, row = schema.route(event, raw)
    assert table == "posts"
    assert row["uri"] == f"at://{event['did']}/app.bsky.feed.post/{event['commit']['rkey']}"
    assert row["text"] == "Try RSV for a good time !!"
    assert row["langs"] == ["en"]
    assert row["reply_parent_uri"].startswith("at://did:plc:j76trmiofvaxxpvx2vnb2vwf/")
    assert row["record_extra"] is None


def test_facets_become_mentions_links_and_tags() -> None:
    record = {
        "$type": "app.bsky.feed.post", "text": "hi @a #Tag https://x.org", "createdAt": "2026-01-01T00:00:00Z",
        "facets": [
            {"index": {"byteStart": 3, "byteEnd": 5}, "features": [{"$type": "app.bsky.richtext.facet#mention",
                                                                     "did": "did:plc:a"}]},
            {"index": {"byteStart": 6, "byteEnd": 10}, "features": [{"$type": "app.bsky.richtext.facet#tag",
                                                                      "tag": "Tag"}]},
            {"index": {"byteStart": 11, "byteEnd": 24}, "features": [{"$type": "app.bsky.richtext.facet#link",
                                                                       "uri": "https://x.org"}]},
        ],
        "embed": {"$type": "app.bsky.embed.external", "external": {"uri": "https://y.org/p", "title": "t",
                                                                    "description": ""}},
        "tags": ["extra"],
    }
    event = {"did": "did:plc:b", "time_us": 1, "kind": "commit",
             "commit": {"rev": "r", "operation": "create", "collection": "app.bsky.feed.post", "rkey": "k",
                        "record": record, "cid": "c"}}
    table, row = schema.route(event, orjson.dumps(event))
    assert table == "posts"
    assert row["mentions"] == ["did:plc:a"]
    assert row["links"] == ["https://x.org", "https://y.org/p"]
    assert row["tags"] == ["Tag", "extra"]
    assert row["embed_type"] == "app.bsky.embed.external"
    assert row["embed_uri"] == "https://y.org/p"
    assert orjson.loads(row["record_extra"]) == {"tags": ["extra"]}


@pytest.mark.parametrize(
    "event",
    [
        {"did": "did:plc:x", "time_us": 5, "kind": "commit",
         "commit": {"operation": "create", "collection": "app.bsky.feed.like", "rkey": "k",
                    "record": {"subject": "not a strong ref"}}},
        {"did": "did:plc:x", "time_us": 5, "kind": "commit",
         "commit": {"operation": "create", "collection": "app.bsky.feed.post", "rkey": "k",
                    "record": {"text": 42}}},
        {"did": "did:plc:x", "time_us": "5", "kind": "identity", "identity": {}},
        {"did": "did:plc:x", "time_us": 5, "kind": "mystery"},
        {"did": "did:plc:x", "time_us": 5, "kind": "account", "account": {"active": "yes"}},
    ],
)
def test_events_that_do_not_fit_land_in_records_with_raw_json(event: dict[str, Any]) -> None:
    raw = orjson.dumps(event)
    table, row = schema.route(event, raw)
    assert table == "records"
    assert row["raw"] == raw.decode()
    schema.to_arrow("records", [row])


def test_event_key_tells_replays_from_distinct_events() -> None:
    (_, like), (_, post) = golden()[:2]
    assert schema.event_key(like) == schema.event_key(orjson.loads(orjson.dumps(like)))
    assert schema.event_key(like) != schema.event_key(post)


def test_partition_date_is_the_utc_day() -> None:
    assert schema.partition_date(1779719009132431) == "2026-05-25"
    assert schema.partition_date(0) == "1970-01-01"


def test_every_table_has_the_envelope_columns() -> None:
    for table in schema.TABLES.values():
        assert table.schema.names[:2] == ["did", "time_us"]


def test_docs_describe_every_table_and_column() -> None:
    doc = (REPO / "docs" / "schema.md").read_text()
    common = {"did", "time_us", "rev", "operation", "rkey", "cid"}
    for table in schema.TABLES.values():
        heading = next((line for line in doc.splitlines()
                        if line.startswith("## ") and f" {table.name} " in f" {line[3:]} "), None)
        assert heading is not None, f"docs/schema.md has no section for {table.name}"
        for column in table.schema.names:
            assert f"| `{column}` |" in doc or column in common, f"{table.name}.{column} is not documented"


def test_fast_paths_of_the_batch_agree_with_route() -> None:
    variants = []
    for raw, event in golden():
        variants.append((raw, event))
        if event.get("kind") == "commit" and "record" in event["commit"]:
            odd = orjson.loads(raw)
            odd["commit"]["record"]["extra"] = 1  # a field without a column: takes the general path
            odd["commit"]["rkey"] += "x"  # another event (the same key would be dropped as a replay)
            variants.append((orjson.dumps(odd), odd))
    batch = schema.TableBatch()
    expected: dict[tuple[str, str], list[dict[str, Any]]] = {}
    for raw, event in variants:
        table, row = schema.route(event, raw)
        assert batch.add(orjson.loads(raw), raw, 0) == table
        expected.setdefault((table, schema.partition_date(row["time_us"])), []).append(row)
    built = batch.tables()
    assert set(built) == set(expected)
    for key, rows in expected.items():
        want = schema.to_arrow(key[0], sorted(rows, key=lambda r: r["time_us"]))
        assert built[key].equals(want), key


def test_the_batch_drops_replays_on_both_paths() -> None:
    batch = schema.TableBatch()
    lines = [line for line, _ in golden()]
    for raw in lines + lines:  # every event twice: the plain fast path (likes...) and the general path
        batch.add(orjson.loads(raw), raw, 0)
    assert batch.duplicates == len(lines)
    assert sum(t.num_rows for t in batch.tables().values()) == len(lines)
