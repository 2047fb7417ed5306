"""The event mix: which kinds of events the simulator makes, and how many of each in every 1000.

Each profile (`firehose.simulator.profiles`) has its mix file. The seed profile's, `mix.csv` (`MIX`): likes 60%,
posts 11.5%, reposts 8.5%, follows 8%, blocks 1%, profile writes 1%, deletes 5% (spread over collections), identity
1%, account 1%, other collections 3% (threadgates, postgates, list items, chat declarations, place.stream.*,
fyi.unravel.*, sh.tangled.*, ...). The real profile's, `mix_real.csv`: likes 67%, follows 18.9%, posts 6.4%,
reposts 4.2% (deletes included), identity and account 0.3% each (docs/simulator.md says what each share rests on).
The generator shuffles each window of `WINDOW` events, so the mix is exact in every aligned window.
"""

from __future__ import annotations

import csv
from pathlib import Path
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


MIX_FILE = Path(__file__).resolve().parent / "mix.csv"
"""The seed profile's mix as data: one row per `Kind` (kind, collection, operation, per_mille; empty collection and
operation for identity and account events). The order of the rows is part of the stream: the generator numbers
kinds by it."""
REAL_MIX_FILE = MIX_FILE.with_name("mix_real.csv")
"""The real profile's mix, in the same format."""

_OPERATIONS = ("create", "update", "delete")


def read_mix(path: Path = MIX_FILE) -> tuple[Kind, ...]:
    """The kinds of `path` in file order, checked: commit rows name a collection and an operation, identity and
    account rows neither, and the shares add up to `WINDOW` per mille."""
    with path.open(newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    kinds = tuple(Kind(r["kind"], r["collection"] or None, r["operation"] or None, int(r["per_mille"])) for r in rows)
    for number, kind in enumerate(kinds, start=2):
        commit = kind.kind == "commit" and kind.collection is not None and kind.operation in _OPERATIONS
        other = kind.kind in ("identity", "account") and kind.collection is None and kind.operation is None
        if not (commit or other) or kind.per_mille <= 0:
            raise ValueError(f"{path}:{number}: not a mix entry: {kind}")
    if sum(k.per_mille for k in kinds) != WINDOW:
        raise ValueError(f"{path}: the mix must add up to {WINDOW} per mille")
    return kinds


MIX: tuple[Kind, ...] = read_mix()
"""The seed profile's mix."""
