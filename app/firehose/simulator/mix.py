"""The event mix: which kinds of events the simulator makes, and how many of each in every 1000.

Likes 60%, posts 11.5%, reposts 8.5%, follows 8%, blocks 1%, profile writes 1%, deletes 5% (spread over
collections), identity 1%, account 1%, other collections 3% (threadgates, postgates, list items, chat declarations,
place.stream.*, fyi.unravel.*, sh.tangled.*, ...). The generator shuffles each window of `WINDOW` events, so the mix
is exact in every aligned window.
"""

from __future__ import annotations

from typing import NamedTuple

WINDOW = 1000
"""The kind mix is exact in every aligned window of this many events."""

LIKE, POST, REPOST, FOLLOW, BLOCK = "app.bsky.feed.like", "app.bsky.feed.post", "app.bsky.feed.repost", \
    "app.bsky.graph.follow", "app.bsky.graph.block"
PROFILE = "app.bsky.actor.profile"


class Kind(NamedTuple):
    """One entry of the mix: event kind, collection and operation (None for identity/account)."""

    kind: str
    collection: str | None
    operation: str | None
    per_mille: int


MIX: tuple[Kind, ...] = (
    Kind("commit", LIKE, "create", 600),
    Kind("commit", POST, "create", 115),
    Kind("commit", REPOST, "create", 85),
    Kind("commit", FOLLOW, "create", 80),
    Kind("commit", BLOCK, "create", 10),
    Kind("commit", PROFILE, "update", 9),
    Kind("commit", PROFILE, "create", 1),
    Kind("commit", LIKE, "delete", 25),
    Kind("commit", POST, "delete", 8),
    Kind("commit", REPOST, "delete", 6),
    Kind("commit", FOLLOW, "delete", 8),
    Kind("commit", BLOCK, "delete", 1),
    Kind("commit", "app.bsky.graph.listitem", "delete", 1),
    Kind("commit", "app.bsky.feed.threadgate", "delete", 1),
    Kind("identity", None, None, 10),
    Kind("account", None, None, 10),
    Kind("commit", "app.bsky.feed.threadgate", "create", 5),
    Kind("commit", "app.bsky.feed.postgate", "create", 3),
    Kind("commit", "app.bsky.graph.listitem", "create", 7),
    Kind("commit", "app.bsky.graph.list", "create", 1),
    Kind("commit", "app.bsky.graph.starterpack", "create", 1),
    Kind("commit", "app.bsky.graph.listblock", "create", 1),
    Kind("commit", "chat.bsky.actor.declaration", "create", 3),
    Kind("commit", "place.stream.broadcast.origin", "update", 2),
    Kind("commit", "place.stream.chat.message", "create", 3),
    Kind("commit", "fyi.unravel.frontpage.vote", "create", 2),
    Kind("commit", "sh.tangled.feed.star", "create", 1),
    Kind("commit", "app.bsky.actor.status", "create", 1),
)
assert sum(k.per_mille for k in MIX) == WINDOW, "the mix must add up to 1000 per mille"
