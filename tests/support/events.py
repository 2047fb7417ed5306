"""Jetstream events for tests, built from the golden fixture (real events, re-dated and re-keyed as a test needs):
the golden lines themselves, one event of a kind, create-post and delete-post commits, account events, likes, and
`synthetic_events` (many distinct events of every kind over a few days)."""

from __future__ import annotations

import datetime as dt
import itertools
import random

import orjson

from tests.support.paths import GOLDEN

GOLDEN_LINES = GOLDEN.read_bytes().splitlines()
# The time the builders below date their events at (one microsecond apart) unless given one.
T0 = 1_779_719_010_000_000
_seq = itertools.count(1)


def event_of_kind(kind: str, collection: str | None = None) -> dict:
    """A fresh copy of the golden event of that kind (and collection)."""
    for line in GOLDEN_LINES:
        event = orjson.loads(line)
        if event["kind"] == kind and (collection is None or event.get("commit", {}).get("collection") == collection):
            return event
    raise LookupError(kind)


def post_event(did: str, rkey: str, text: str, time_us: int | None = None) -> bytes:
    """A create-post commit (the golden one) by `did` with this record key and text, at `time_us` (else after T0)."""
    event = event_of_kind("commit", "app.bsky.feed.post")
    event.update(did=did, time_us=time_us or T0 + next(_seq))
    event["commit"].update(rkey=rkey, operation="create")
    event["commit"]["record"]["text"] = text
    return orjson.dumps(event)


def delete_post(did: str, rkey: str) -> bytes:
    """The commit deleting the post `rkey` of `did`."""
    event = event_of_kind("commit", "app.bsky.feed.post")
    event.update(did=did, time_us=T0 + next(_seq))
    commit = event["commit"]
    event["commit"] = {"rev": commit["rev"], "operation": "delete", "collection": commit["collection"], "rkey": rkey}
    return orjson.dumps(event)


def account(did: str, active: bool, status: str | None = None) -> bytes:
    """An account event: `did` is active, or not (with `status`: deactivated, takendown, deleted, ...)."""
    body = {"active": active, "did": did, "seq": next(_seq), "time": "2026-05-25T14:23:30.689Z"}
    if status:
        body["status"] = status
    return orjson.dumps({"did": did, "time_us": T0 + next(_seq), "kind": "account", "account": body})


def like() -> bytes:
    """A like (the golden one), re-dated."""
    event = event_of_kind("commit", "app.bsky.feed.like")
    event["time_us"] = T0 + next(_seq)
    return orjson.dumps(event)


def synthetic_events(n: int, seed: int = 3, days: int = 2) -> list[bytes]:
    """`n` distinct small events of every kind spread over `days` UTC days."""
    rng = random.Random(seed)
    start = int(dt.datetime(2026, 5, 24, tzinfo=dt.UTC).timestamp() * 1_000_000)
    out = []
    for i in range(n):
        base = orjson.loads(GOLDEN_LINES[i % len(GOLDEN_LINES)])
        base["time_us"] = start + rng.randrange(days * 86_400_000_000)
        base["did"] = f"did:plc:{i:024d}"
        out.append(orjson.dumps(base))
    return out
