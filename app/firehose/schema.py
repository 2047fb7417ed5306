"""The storage schema: which table each Jetstream event lands in, with which typed columns.

This module is the single definition of the Parquet layout (`docs/schema.md` documents it for researchers).
Tables live under `<data_dir>/<table>/date=YYYY-MM-DD/*.parquet`, the date being the UTC day of the event's
`time_us`. Every table keeps the event's envelope (`did`, `time_us`, and for commits `rev`, `operation`,
`rkey`, `cid`); record fields that have no column of their own are kept in `record_extra` (a JSON object), so no
field that arrived is dropped. An event that does not fit its table's shape lands in `records` with its raw JSON.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, TypeGuard

import orjson
import pyarrow as pa
import pyarrow.compute as pc

STR = pa.string()
I64 = pa.int64()
STRS = pa.list_(pa.string())

ENVELOPE = [("did", STR), ("time_us", I64)]
COMMIT = [*ENVELOPE, ("rev", STR), ("operation", STR), ("rkey", STR), ("cid", STR)]


@dataclass(frozen=True)
class Table:
    """One Parquet table: its name, Arrow schema and the column order compaction sorts by."""

    name: str
    schema: pa.Schema
    sort_key: tuple[str, ...] = ("time_us",)


def _table(name: str, columns: list[tuple[str, pa.DataType]]) -> Table:
    return Table(name, pa.schema(columns))


TABLES: dict[str, Table] = {
    t.name: t
    for t in (
        _table(
            "posts",
            [
                *COMMIT,
                ("uri", STR),
                ("created_at", STR),
                ("text", STR),
                ("langs", STRS),
                ("reply_root_uri", STR),
                ("reply_root_cid", STR),
                ("reply_parent_uri", STR),
                ("reply_parent_cid", STR),
                ("embed_type", STR),
                ("embed_uri", STR),
                ("mentions", STRS),
                ("links", STRS),
                ("tags", STRS),
                ("embed", STR),
                ("facets", STR),
                ("record_extra", STR),
            ],
        ),
        _table(
            "likes",
            [*COMMIT, ("created_at", STR), ("subject_uri", STR), ("subject_cid", STR), ("via_uri", STR),
             ("via_cid", STR), ("record_extra", STR)],
        ),
        _table(
            "reposts",
            [*COMMIT, ("created_at", STR), ("subject_uri", STR), ("subject_cid", STR), ("via_uri", STR),
             ("via_cid", STR), ("record_extra", STR)],
        ),
        _table("follows", [*COMMIT, ("created_at", STR), ("subject", STR), ("record_extra", STR)]),
        _table("blocks", [*COMMIT, ("created_at", STR), ("subject", STR), ("record_extra", STR)]),
        _table(
            "profiles",
            [*COMMIT, ("display_name", STR), ("description", STR), ("created_at", STR), ("pinned_post_uri", STR),
             ("pinned_post_cid", STR), ("avatar", STR), ("banner", STR), ("record_extra", STR)],
        ),
        _table("deletes", [*ENVELOPE, ("rev", STR), ("collection", STR), ("rkey", STR)]),
        _table("identity", [*ENVELOPE, ("handle", STR), ("seq", I64), ("time", STR)]),
        _table("account", [*ENVELOPE, ("active", pa.bool_()), ("status", STR), ("seq", I64), ("time", STR)]),
        _table(
            "records",
            [("did", STR), ("time_us", I64), ("kind", STR), ("collection", STR), ("operation", STR), ("rkey", STR),
             ("rev", STR), ("cid", STR), ("raw", STR)],
        ),
    )
}

TABLE_NAMES: tuple[str, ...] = tuple(TABLES)

COLLECTION_TABLES = {
    "app.bsky.feed.post": "posts",
    "app.bsky.feed.like": "likes",
    "app.bsky.feed.repost": "reposts",
    "app.bsky.graph.follow": "follows",
    "app.bsky.graph.block": "blocks",
    "app.bsky.actor.profile": "profiles",
}

KINDS = ("commit", "identity", "account")


class Unfit(ValueError):
    """The event is valid JSON but does not have the shape of its table; it goes to `records` instead."""


Row = dict[str, Any]


def event_key(event: dict[str, Any]) -> tuple[Any, ...]:
    """The identity of an event, used to drop replays (the same event delivered twice after a rewind)."""
    commit = event.get("commit")
    if isinstance(commit, dict):
        return (event.get("did"), event.get("time_us"), "c", commit.get("collection"), commit.get("rkey"),
                commit.get("operation"), commit.get("rev"))
    return (event.get("did"), event.get("time_us"), event.get("kind"))


POST_COLLECTION = "app.bsky.feed.post"


def post_uri(did: str, rkey: str) -> str:
    """The at:// URI of the post `rkey` of `did` (the one definition: the hot tier and the hiding facts use it)."""
    return f"at://{did}/{POST_COLLECTION}/{rkey}"


def post_uris(dids: pa.ChunkedArray | pa.Array, rkeys: pa.ChunkedArray | pa.Array) -> pa.ChunkedArray | pa.Array:
    """`post_uri` of each (did, rkey), built by Arrow (the same strings)."""
    return pc.binary_join_element_wise("at://", dids, f"/{POST_COLLECTION}/", rkeys, "")


def partition_date(time_us: int) -> str:
    """The `date=` partition (UTC day, YYYY-MM-DD) of a time in unix microseconds."""
    return dt.datetime.fromtimestamp(time_us / 1_000_000, tz=dt.UTC).strftime("%Y-%m-%d")


def route(event: Any, raw: bytes | str) -> tuple[str, Row]:
    """Return (table name, row) for a decoded event; events that fit no table go to `records` with `raw`."""
    try:
        if not isinstance(event, dict):
            raise Unfit("not a JSON object")
        return _typed_row(event)
    except Unfit:
        return "records", records_row(event if isinstance(event, dict) else {}, raw)


def records_row(event: dict[str, Any], raw: bytes | str) -> Row:
    """The `records` row for an event: envelope columns where present, and the raw JSON."""
    found = event.get("commit")
    commit: dict[str, Any] = found if isinstance(found, dict) else {}
    time_us = event.get("time_us")
    return {
        "did": _opt_str(event.get("did")),
        "time_us": time_us if isinstance(time_us, int) and not isinstance(time_us, bool) else None,
        "kind": _opt_str(event.get("kind")),
        "collection": _opt_str(commit.get("collection")),
        "operation": _opt_str(commit.get("operation")),
        "rkey": _opt_str(commit.get("rkey")),
        "rev": _opt_str(commit.get("rev")),
        "cid": _opt_str(commit.get("cid")),
        "raw": raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw,
    }


def _typed_row(event: dict[str, Any]) -> tuple[str, Row]:
    did = _req_str(event, "did")
    time_us = event.get("time_us")
    if not isinstance(time_us, int) or isinstance(time_us, bool) or time_us < 0:
        raise Unfit("time_us is not a non-negative integer")
    kind = event.get("kind")
    if kind == "commit":
        return _commit_row(event, did, time_us)
    if kind == "identity":
        body = _req_dict(event, "identity")
        return "identity", {"did": did, "time_us": time_us, "handle": _opt_str_strict(body, "handle"),
                            "seq": _opt_int(body, "seq"), "time": _opt_str_strict(body, "time")}
    if kind == "account":
        body = _req_dict(event, "account")
        active = body.get("active")
        if active is not None and not isinstance(active, bool):
            raise Unfit("account.active is not a boolean")
        return "account", {"did": did, "time_us": time_us, "active": active,
                           "status": _opt_str_strict(body, "status"), "seq": _opt_int(body, "seq"),
                           "time": _opt_str_strict(body, "time")}
    raise Unfit(f"unknown kind {kind!r}")


def _commit_row(event: dict[str, Any], did: str, time_us: int) -> tuple[str, Row]:
    commit = _req_dict(event, "commit")
    collection = _req_str(commit, "collection")
    operation = _req_str(commit, "operation")
    rkey = _req_str(commit, "rkey")
    rev = _opt_str_strict(commit, "rev")
    if operation == "delete":
        return "deletes", {"did": did, "time_us": time_us, "rev": rev, "collection": collection, "rkey": rkey}
    table = COLLECTION_TABLES.get(collection)
    if table is None or operation not in ("create", "update"):
        raise Unfit("collection without a table of its own")
    record = _req_dict(commit, "record")
    if record.get("$type", collection) != collection:
        raise Unfit("record $type differs from the collection")
    rest = {k: v for k, v in record.items() if k != "$type"}
    row: Row = {"did": did, "time_us": time_us, "rev": rev, "operation": operation, "rkey": rkey,
                "cid": _opt_str_strict(commit, "cid")}
    row.update(_RECORD_COLUMNS[table](rest))
    if table == "posts":
        row["uri"] = post_uri(did, rkey)
    row["record_extra"] = _dumps(rest) if rest else None
    return table, row


def _post_columns(rest: dict[str, Any]) -> Row:
    """Columns of a post record; consumed keys are removed from `rest`."""
    text = rest.pop("text", None)
    if text is not None and not isinstance(text, str):
        raise Unfit("post text is not a string")
    langs = rest.pop("langs", None)
    if langs is not None and not _is_str_list(langs):
        raise Unfit("post langs is not a list of strings")
    row: Row = {"created_at": _pop_str(rest, "createdAt"), "text": text, "langs": langs}
    row.update(_reply_columns(rest))
    embed = rest.pop("embed", None)
    facets = rest.pop("facets", None)
    if embed is not None and not isinstance(embed, dict):
        raise Unfit("post embed is not an object")
    if facets is not None and not isinstance(facets, list):
        raise Unfit("post facets is not a list")
    mentions, links, tags = _facet_features(facets or [])
    embed_type, embed_uri = _embed_features(embed)
    if embed_type and embed_type.startswith("app.bsky.embed.external") and embed_uri and embed_uri not in links:
        links.append(embed_uri)
    record_tags = rest.get("tags")
    if _is_str_list(record_tags):
        tags.extend(t for t in record_tags if t not in tags)
    row.update({"embed_type": embed_type, "embed_uri": embed_uri, "mentions": mentions, "links": links,
                "tags": tags, "embed": _dumps(embed) if embed is not None else None,
                "facets": _dumps(facets) if facets is not None else None})
    return row


def _reply_columns(rest: dict[str, Any]) -> Row:
    reply = rest.get("reply")
    cols: Row = {"reply_root_uri": None, "reply_root_cid": None, "reply_parent_uri": None, "reply_parent_cid": None}
    if reply is None:
        return cols
    if (isinstance(reply, dict) and set(reply) <= {"root", "parent"}
            and all(_is_strong_ref(reply.get(k)) for k in reply)):
        for k in ("root", "parent"):
            if k in reply:
                cols[f"reply_{k}_uri"] = reply[k]["uri"]
                cols[f"reply_{k}_cid"] = reply[k]["cid"]
        rest.pop("reply")
    return cols  # an unusual reply shape stays in record_extra whole


def _embed_features(embed: dict[str, Any] | None) -> tuple[str | None, str | None]:
    """(embed $type, the linked URI: the external link or the quoted record's at:// URI)."""
    if embed is None:
        return None, None
    etype = embed.get("$type") if isinstance(embed.get("$type"), str) else None
    external = embed.get("external")
    if isinstance(external, dict) and isinstance(external.get("uri"), str):
        return etype, external["uri"]
    record = embed.get("record")
    if isinstance(record, dict):
        nested = record.get("record")
        inner: dict[str, Any] = nested if isinstance(nested, dict) else record
        if isinstance(inner.get("uri"), str):
            return etype, inner["uri"]
    media = embed.get("media")
    if isinstance(media, dict):
        return etype, _embed_features(media)[1]
    return etype, None


def _facet_features(facets: list[Any]) -> tuple[list[str], list[str], list[str]]:
    """(mentioned DIDs, link URIs, hashtags) from a post's rich-text facets, in order, without repeats."""
    mentions: list[str] = []
    links: list[str] = []
    tags: list[str] = []
    for facet in facets:
        features = facet.get("features") if isinstance(facet, dict) else None
        for feature in features if isinstance(features, list) else ():
            if not isinstance(feature, dict):
                continue
            ftype = feature.get("$type")
            for wanted, key, out in (("#mention", "did", mentions), ("#link", "uri", links), ("#tag", "tag", tags)):
                value = feature.get(key)
                if isinstance(ftype, str) and ftype.endswith(wanted) and isinstance(value, str) and value not in out:
                    out.append(value)
    return mentions, links, tags


def _subject_ref_columns(rest: dict[str, Any]) -> Row:
    subject = rest.get("subject")
    if not _is_strong_ref(subject):
        raise Unfit("subject is not a strong reference")
    rest.pop("subject")
    row: Row = {"created_at": _pop_str(rest, "createdAt"), "subject_uri": subject["uri"],
                "subject_cid": subject["cid"], "via_uri": None, "via_cid": None}
    via = rest.get("via")
    if _is_strong_ref(via):
        rest.pop("via")
        row["via_uri"], row["via_cid"] = via["uri"], via["cid"]
    return row


def _subject_did_columns(rest: dict[str, Any]) -> Row:
    subject = rest.get("subject")
    if not isinstance(subject, str):
        raise Unfit("subject is not a DID string")
    rest.pop("subject")
    return {"created_at": _pop_str(rest, "createdAt"), "subject": subject}


def _profile_columns(rest: dict[str, Any]) -> Row:
    row: Row = {"display_name": _pop_str(rest, "displayName"), "description": _pop_str(rest, "description"),
                "created_at": _pop_str(rest, "createdAt"), "pinned_post_uri": None, "pinned_post_cid": None}
    pinned = rest.get("pinnedPost")
    if _is_strong_ref(pinned):
        rest.pop("pinnedPost")
        row["pinned_post_uri"], row["pinned_post_cid"] = pinned["uri"], pinned["cid"]
    for key in ("avatar", "banner"):
        value = rest.get(key)
        row[key] = _dumps(rest.pop(key)) if isinstance(value, dict) else None
    return row


_RECORD_COLUMNS = {
    "posts": _post_columns,
    "likes": _subject_ref_columns,
    "reposts": _subject_ref_columns,
    "follows": _subject_did_columns,
    "blocks": _subject_did_columns,
    "profiles": _profile_columns,
}


def to_arrow(table: str, rows: Iterable[Row]) -> pa.Table:
    """Build the typed Arrow table `table` from rows (dicts keyed by column name; missing keys are null)."""
    names = TABLES[table].schema.names
    return _rows_to_arrow(table, [tuple(row.get(name) for name in names) for row in rows])


def _rows_to_arrow(table: str, rows: list[tuple[Any, ...]]) -> pa.Table:
    """Arrow table `table` from row tuples in column order (transposed once, in C)."""
    schema = TABLES[table].schema
    columns = list(zip(*rows, strict=True)) if rows else [() for _ in schema]
    return pa.table([pa.array(column, f.type) for column, f in zip(columns, schema, strict=True)], schema=schema)


_REF_TABLES = {"app.bsky.feed.like": "likes", "app.bsky.feed.repost": "reposts"}
_DID_TABLES = {"app.bsky.graph.follow": "follows", "app.bsky.graph.block": "blocks"}
_PLAIN_REF_KEYS = {"$type", "createdAt", "subject"}
_REF_KEYS = {"uri", "cid"}
_DAY_US = 86_400_000_000


class TableBatch:
    """Rows of one flush batch, accumulated as tuples (in column order) per (table, date), without replays.

    `add` routes like `route` does, with fast paths for the plain shapes of likes, reposts, follows and blocks
    (about 80% of the firehose) that build their tuple directly; every other event goes through `route`. The
    tuples are transposed into columns once, in C, when the batch is turned into Arrow tables.
    """

    def __init__(self) -> None:
        self._rows: dict[tuple[str, str], list[tuple[Any, ...]]] = {}
        self._day_names: dict[int, str] = {}
        self._seen: set[tuple[Any, ...]] = set()
        self.duplicates = 0

    def add(self, event: Any, raw: bytes, fallback_time_us: int) -> str | None:
        """Add one decoded event (or None when it was not JSON); return its table, or None for a replay.

        A replay is an event whose `event_key` was already added to this batch (the first one wins).
        """
        if isinstance(event, dict) and event.get("kind") == "commit":
            plain = _plain_row(event)
            if plain is not None:
                table, values, collection = plain
                key = (values[0], values[1], "c", collection, values[4], "create", values[2])  # == event_key
                if key in self._seen:
                    self.duplicates += 1
                    return None
                self._seen.add(key)
                self._table_rows(table, values[1]).append(values)
                return table
        if isinstance(event, dict):
            key = event_key(event)
            if key in self._seen:
                self.duplicates += 1
                return None
            self._seen.add(key)
        table, row = route(event, raw) if event is not None else ("records", records_row({}, raw))
        time_us = row.get("time_us")
        rows = self._table_rows(table, time_us if isinstance(time_us, int) else fallback_time_us)
        rows.append(tuple(row.get(name) for name in TABLES[table].schema.names))
        return table

    def _table_rows(self, table: str, time_us: int) -> list[tuple[Any, ...]]:
        day = time_us // _DAY_US
        date = self._day_names.get(day)
        if date is None:
            date = self._day_names[day] = partition_date(time_us)
        key = (table, date)
        rows = self._rows.get(key)
        if rows is None:
            rows = self._rows[key] = []
        return rows

    def tables(self) -> dict[tuple[str, str], pa.Table]:
        """The batch as Arrow tables keyed by (table, date), each sorted by time_us."""
        return {(table, date): _rows_to_arrow(table, rows).sort_by("time_us")
                for (table, date), rows in self._rows.items()}


def _plain_row(event: dict[str, Any]) -> tuple[str, tuple[Any, ...], str] | None:
    """(table, row tuple, collection) for a plain like/repost/follow/block create; None for the general path."""
    commit = event.get("commit")
    if type(commit) is not dict or commit.get("operation") != "create":
        return None
    record = commit.get("record")
    if type(record) is not dict or record.keys() != _PLAIN_REF_KEYS:
        return None
    collection = commit.get("collection")
    did, time_us, created_at, subject = event.get("did"), event.get("time_us"), record["createdAt"], record["subject"]
    rev, rkey, cid = commit.get("rev"), commit.get("rkey"), commit.get("cid")
    if (type(time_us) is not int or time_us < 0 or type(did) is not str or type(rkey) is not str
            or type(created_at) is not str or type(rev) is not str or type(cid) is not str
            or record["$type"] != collection):
        return None
    table = _REF_TABLES.get(collection)
    if table is not None:
        if (type(subject) is not dict or subject.keys() != _REF_KEYS or type(subject["uri"]) is not str
                or type(subject["cid"]) is not str):
            return None
        return table, (did, time_us, rev, "create", rkey, cid, created_at, subject["uri"], subject["cid"], None,
                       None, None), collection
    table = _DID_TABLES.get(collection)
    if table is not None and type(subject) is str:
        return table, (did, time_us, rev, "create", rkey, cid, created_at, subject, None), collection
    return None


def _dumps(value: Any) -> str:
    return orjson.dumps(value).decode()


def _is_strong_ref(value: Any) -> TypeGuard[dict[str, Any]]:
    return (isinstance(value, dict) and set(value) <= {"uri", "cid", "$type"} and isinstance(value.get("uri"), str)
            and isinstance(value.get("cid"), str) and value.get("$type", "com.atproto.repo.strongRef")
            == "com.atproto.repo.strongRef")


def _is_str_list(value: Any) -> TypeGuard[list[str]]:
    return isinstance(value, list) and all(isinstance(v, str) for v in value)


def _req_dict(obj: dict[str, Any], key: str) -> dict[str, Any]:
    value = obj.get(key)
    if not isinstance(value, dict):
        raise Unfit(f"{key} is not an object")
    return value


def _req_str(obj: dict[str, Any], key: str) -> str:
    value = obj.get(key)
    if not isinstance(value, str):
        raise Unfit(f"{key} is not a string")
    return value


def _opt_str(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _opt_str_strict(obj: dict[str, Any], key: str) -> str | None:
    value = obj.get(key)
    if value is not None and not isinstance(value, str):
        raise Unfit(f"{key} is not a string")
    return value


def _opt_int(obj: dict[str, Any], key: str) -> int | None:
    value = obj.get(key)
    if value is not None and (not isinstance(value, int) or isinstance(value, bool)):
        raise Unfit(f"{key} is not an integer")
    return value


def _pop_str(rest: dict[str, Any], key: str) -> str | None:
    """Pop a string field; a non-string value is left in `rest` (so it is kept in record_extra)."""
    value = rest.get(key)
    if isinstance(value, str):
        return rest.pop(key)
    return None
