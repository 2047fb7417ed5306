"""Subscriptions: a connection's Jetstream query parameters and options updates, validated, and its filters.

`parse_subscription` reads `/subscribe?...` (`wantedCollections`, `wantedDids`, `cursor`, `compress`,
`maxMessageSizeBytes`, `requireHello`); `parse_filters` validates the filters of both the query and an
`options_update` message. Anything unusable raises `BadRequest` with a message that says what is accepted.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlsplit

from firehose.simulator.sources import Item

MAX_WANTED_COLLECTIONS = 100
MAX_WANTED_DIDS = 10_000

_NSID = re.compile(r"^[a-zA-Z][a-zA-Z0-9-]*(\.[a-zA-Z0-9][a-zA-Z0-9-]*)+$")
_NSID_PREFIX = re.compile(r"^[a-zA-Z][a-zA-Z0-9-]*(\.[a-zA-Z0-9][a-zA-Z0-9-]*)*\.\*$")
_DID = re.compile(r"^did:[a-z]+:[a-zA-Z0-9._:%-]+$")


class BadRequest(ValueError):
    """A subscription parameter or options update that cannot be used; the message says what is accepted."""


@dataclass
class Subscription:
    """One connection's parameters; filters change with options_update messages."""

    collections: frozenset[str] = frozenset()
    prefixes: tuple[str, ...] = ()
    dids: frozenset[str] = frozenset()
    max_size: int = 0
    cursor: int | None = None
    compress: bool = False
    require_hello: bool = False
    hello: asyncio.Event = field(default_factory=asyncio.Event)

    def wants(self, item: Item) -> bool:
        """Whether this subscriber gets the item (identity and account events pass collection filters)."""
        if self.dids and item.did not in self.dids:
            return False
        collection = item.collection
        if collection is None or not (self.collections or self.prefixes):
            return True
        return collection in self.collections or collection.startswith(self.prefixes)

    def set_filters(self, collections: Sequence[str], dids: Sequence[str], max_size: int) -> None:
        """Replace the filters (validated by `parse_filters`)."""
        self.collections = frozenset(c for c in collections if not c.endswith(".*"))
        self.prefixes = tuple(c[:-1] for c in collections if c.endswith(".*"))
        self.dids = frozenset(dids)
        self.max_size = max_size


def parse_filters(collections: Any, dids: Any, max_size: Any) -> tuple[list[str], list[str], int]:
    """Validate wantedCollections, wantedDids and maxMessageSizeBytes; raise BadRequest naming the problem."""
    collections = [] if collections is None else collections
    dids = [] if dids is None else dids
    if not isinstance(collections, list) or not all(isinstance(c, str) for c in collections):
        raise BadRequest("wantedCollections must be a list of collection NSIDs")
    if not isinstance(dids, list) or not all(isinstance(d, str) for d in dids):
        raise BadRequest("wantedDids must be a list of DIDs")
    if len(collections) > MAX_WANTED_COLLECTIONS:
        raise BadRequest(f"too many wantedCollections: {len(collections)} (at most {MAX_WANTED_COLLECTIONS})")
    if len(dids) > MAX_WANTED_DIDS:
        raise BadRequest(f"too many wantedDids: {len(dids)} (at most {MAX_WANTED_DIDS})")
    for c in collections:
        if len(c) > 317 or not (_NSID.match(c) or _NSID_PREFIX.match(c)):
            raise BadRequest(f"invalid wantedCollections value {c!r}: use an NSID (app.bsky.feed.post) "
                             "or a prefix ending in .* (app.bsky.graph.*)")
    for d in dids:
        if len(d) > 2048 or not _DID.match(d):
            raise BadRequest(f"invalid wantedDids value {d!r}: use a DID such as did:plc:abc...")
    if max_size is None:
        max_size = 0
    if isinstance(max_size, str):
        try:
            max_size = int(max_size)
        except ValueError:
            raise BadRequest(f"maxMessageSizeBytes must be a non-negative integer, got {max_size!r}") from None
    if not isinstance(max_size, int) or isinstance(max_size, bool) or max_size < 0:
        raise BadRequest(f"maxMessageSizeBytes must be a non-negative integer, got {max_size!r}")
    return collections, dids, max_size


def parse_subscription(path: str, headers: Any = None) -> Subscription:
    """The Subscription for a `/subscribe?...` request path; raise BadRequest for bad parameters."""
    query = parse_qs(urlsplit(path).query, keep_blank_values=True)

    def one(name: str) -> str | None:
        values = query.get(name)
        if not values:
            return None
        if len(values) > 1:
            raise BadRequest(f"{name} may be given only once")
        return values[0]

    def flag(name: str) -> bool:
        value = one(name)
        if value is None:
            return False
        if value.lower() in ("true", "1"):
            return True
        if value.lower() in ("false", "0", ""):
            return False
        raise BadRequest(f"{name} must be true or false, got {value!r}")

    collections, dids, max_size = parse_filters(query.get("wantedCollections"), query.get("wantedDids"),
                                                one("maxMessageSizeBytes"))
    cursor_raw = one("cursor")
    cursor = None
    if cursor_raw not in (None, ""):
        try:
            cursor = int(cursor_raw)
        except ValueError:
            raise BadRequest(f"cursor must be an integer time in unix microseconds, got {cursor_raw!r}") from None
        if cursor < 0:
            raise BadRequest(f"cursor must be >= 0 (unix microseconds), got {cursor}")
    compress = flag("compress")
    if headers is not None and str(headers.get("Socket-Encoding", "")).lower() == "zstd":
        compress = True
    sub = Subscription(cursor=cursor, compress=compress, require_hello=flag("requireHello"))
    sub.set_filters(collections, dids, max_size)
    return sub

