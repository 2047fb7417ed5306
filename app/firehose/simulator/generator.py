"""Deterministic, indexable generator of realistic Jetstream v1 events: the `EventGenerator` orchestration.

`EventGenerator(seed, start_us, profile, network=...)` defines an endless event sequence: event number `i` (0, 1,
2, ...) is a pure function of `(seed, i)` and of the constructor arguments, so `event_json(i)` returns the same bytes
every time, on every machine, in any order of calls. That is what makes cursor replay in the simulator exact. The
network profile (`firehose.simulator.profiles`: `REAL`, or `SEED`, the default of this class) gives the mix, the
texts and, unless `profile` is given, the rate curve.

Shape: each event is a dict laid out like `tests/fixtures/jetstream/golden_v1.jsonl` (top-level `did`, `time_us`,
`kind`; `commit` = `{rev, operation, collection, rkey, record, cid}` without `record`/`cid` for deletes;
`identity` = `{did, handle, seq, time}`, or `{did, seq, time}` as most real ones are (`identity_handle_share`);
`account` = `{active, did, seq, time, status?}`); record keys are sorted as Jetstream sorts them.

This module owns the per-event hashing (author, CID, jitter), the kind of each event (the profile's mix, exact in
every window of 1000 events, the order shuffled), the accounts and the posts other records point at, and the
envelope of each event; the records themselves come from `firehose.simulator.records`.

Time: event `i` has a base time `base_us(i)` from the rate `Profile` (`firehose.simulator.clock`); base times never
decrease. The event's `time_us` is its base time minus a jitter in `[0, jitter_us)`, so events arrive slightly out
of time order, as they do from Jetstream. Guarantee used by cursors: every event with `time_us >= C` has an index
`>= index_at_or_after(C)`; replaying from that index therefore delivers every event at or after `C`, plus possibly a
few whose `time_us` lies in `[C - jitter_us, C)`.

Searchable vocabulary with known frequencies (shares of posts) is in `firehose.simulator.vocabulary`; see
`docs/simulator.md`. `python -m firehose.simulator.generator` measures the generation rate.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Iterator
from typing import Any, NamedTuple

import orjson

from firehose.simulator.clock import DEFAULT_START_US, Clock, IsoClock, Profile
from firehose.simulator.encoding import b32_chars, tid
from firehose.simulator.identity import handle_for
from firehose.simulator.mix import POST, PROFILE, WINDOW, Kind
from firehose.simulator.profiles import SEED, NetworkProfile
from firehose.simulator.records import PostRef, RecordMaker

SEQ_BASE = 30_000_000_000
"""`seq` of identity and account event i is SEQ_BASE + i."""
IDENTITY_HANDLE_SHARE = 0.3
"""Share of identity events that carry a `handle` (real Jetstream identity events mostly carry none)."""
_MASK64 = (1 << 64) - 1


class Generated(NamedTuple):
    """One generated event, serialised, with the fields a server filters on."""

    index: int  # type: ignore[assignment]  # the event's number; shadows tuple.index, which nobody calls
    time_us: int
    did: str
    kind: str
    collection: str | None
    json: bytes


class EventGenerator:
    """The deterministic event sequence of one seed, start time, rate profile and network profile.

    `profile` (the rate curve) defaults to `network.timing()`, the network profile's day; `network` defaults to
    `SEED`, the sequence the pinned digests and golden checks refer to (`firehose simulate` defaults to `REAL`).

    - `event(i)` / `event_json(i)`: event number i (random access; the same bytes every time).
    - `iter_events(start, stop)` / `iter_generated(start, stop)`: fast sequential generation.
    - `base_us(i)`, `time_us(i)`, `index_at_or_after(time_us)`: the time mapping (see the module docstring).

    Everything random about event i comes from a keyed hash of (seed, i) (kind slot, author, CID, jitter) and from
    a PRNG seeded per block of `block_size` events (content); so events are generated block by block, and a small
    cache of recent blocks serves random access and several readers near the same position.
    """

    def __init__(
        self,
        seed: int = 0,
        start_us: int = DEFAULT_START_US,
        profile: Profile | None = None,
        *,
        users: int = 2_000_000,
        jitter_us: int = 40_000,
        identity_handle_share: float = IDENTITY_HANDLE_SHARE,
        block_size: int = 64,
        cache_blocks: int = 256,
        network: NetworkProfile = SEED,
    ) -> None:
        if users < 1000:
            raise ValueError(f"users must be at least 1000, got {users}")
        if jitter_us < 0 or block_size < 1:
            raise ValueError("jitter_us must be >= 0 and block_size >= 1")
        if not 0.0 <= identity_handle_share <= 1.0:
            raise ValueError(f"identity_handle_share must be between 0 and 1, got {identity_handle_share}")
        self.seed = seed
        self.start_us = start_us
        self.network = network
        self.mix: tuple[Kind, ...] = network.mix
        self.profile = profile or network.timing()
        self.users = users
        self.jitter_us = jitter_us
        self._handle_threshold = int(identity_handle_share * 2**32)
        self.block_size = block_size
        self._clock = Clock(self.profile, start_us, seed)
        self._key = hashlib.blake2b(str(seed).encode(), digest_size=32, person=b"fh-seed").digest()
        self._block_seed = int.from_bytes(self._key[:16], "big")
        self._iso = IsoClock()
        self._cache: dict[int, list[Generated]] = {}
        self._cache_blocks = cache_blocks
        self._post_refs: dict[int, PostRef] = {}
        self._did_cache = [self._make_did(r) for r in range(min(users, 20_000))]
        self._tables, self._post_slots = self._build_tables()
        self._posts_per_window = len(self._post_slots[0])
        self._makers = RecordMaker(self, self._iso, self.mix, network.text(self), network.shape).makers

    # -- time -------------------------------------------------------------------------------------------------

    def base_us(self, i: int) -> int:
        """Base time of event i (unix µs): non-decreasing in i; the event's time_us is at most jitter_us less."""
        return self._clock.base_us(i)

    def time_us(self, i: int) -> int:
        """The `time_us` field of event i (its base time minus its jitter)."""
        return self._clock.base_us(i) - self._jitter(self._header(i))

    def index_at_or_after(self, time_us: int) -> int:
        """The first event whose base time is >= time_us: replaying from it covers every event with time_us >= it."""
        return self._clock.index_at_or_after(time_us)

    # -- access ---------------------------------------------------------------------------------------------------

    def generated(self, i: int) -> Generated:
        """Event i as a `Generated` (cached block-wise)."""
        if i < 0:
            raise IndexError(f"event numbers start at 0, got {i}")
        block, offset = divmod(i, self.block_size)
        return self._cached_block(block)[offset]

    def event_json(self, i: int) -> bytes:
        """Event i serialised exactly as the simulator sends it."""
        return self.generated(i).json

    def event(self, i: int) -> dict[str, Any]:
        """Event i as a fresh dict (safe to modify)."""
        return orjson.loads(self.generated(i).json)

    def iter_generated(self, start: int, stop: int) -> Iterator[Generated]:
        """Events start..stop-1 in order, via the block cache (use for serving)."""
        for i in range(start, stop):
            yield self.generated(i)

    def iter_events(self, start: int, stop: int) -> Iterator[dict[str, Any]]:
        """Events start..stop-1 as fresh dicts, generated without caching (the fastest bulk path)."""
        if start < 0:
            raise IndexError(f"event numbers start at 0, got {start}")
        bs = self.block_size
        for block in range(start // bs, -(-stop // bs)):
            rng = self._block_rng(block)
            for i in range(block * bs, min(stop, (block + 1) * bs)):
                event = self._make(i, rng)
                if i >= start:
                    yield event

    # -- blocks -------------------------------------------------------------------------------------------------

    def _block_rng(self, block: int) -> random.Random:
        return random.Random((self._block_seed << 64) ^ (block & _MASK64))

    def _cached_block(self, block: int) -> list[Generated]:
        events = self._cache.get(block)
        if events is None:
            events = self._generate_block(block)
            if len(self._cache) >= self._cache_blocks:
                self._cache.pop(next(iter(self._cache)))
            self._cache[block] = events
        return events

    def _generate_block(self, block: int) -> list[Generated]:
        rng = self._block_rng(block)
        out = []
        dumps = orjson.dumps
        for i in range(block * self.block_size, (block + 1) * self.block_size):
            event = self._make(i, rng)
            commit = event.get("commit")
            out.append(Generated(i, event["time_us"], event["did"], event["kind"],
                                 commit["collection"] if commit else None, dumps(event)))
        return out

    # -- per-event hashing ------------------------------------------------------------------------------------

    def _header(self, i: int) -> bytes:
        """64 keyed-hash bytes of event i: [0:52] CID, [52:56] author, [56:59] jitter, [59:61] delay, [61:63] clocks."""
        return hashlib.blake2b(i.to_bytes(9, "big", signed=True), digest_size=64, key=self._key).digest()

    def _jitter(self, header: bytes) -> int:
        if not self.jitter_us:
            return 0
        return int.from_bytes(header[56:59], "big") % self.jitter_us

    def _author_rank(self, header: bytes) -> int:
        """Author popularity rank: skewed (density ~ rank^-0.6), rank 0 the most active."""
        u = int.from_bytes(header[52:56], "big") / 4294967296.0
        return int(self.users * u ** 2.5)

    def _make_did(self, rank: int) -> str:
        h = hashlib.blake2b(rank.to_bytes(8, "big"), digest_size=24, key=self._key, person=b"fh-did").digest()
        return "did:plc:" + b32_chars(h)

    def did(self, rank: int) -> str:
        """The DID of the user with popularity rank `rank` (0 = most active)."""
        cache = self._did_cache
        return cache[rank] if rank < len(cache) else self._make_did(rank)

    def popular_did(self, rng: random.Random) -> str:
        """A DID skewed harder towards popular accounts (follow, block and mention targets)."""
        return self.did(int(self.users * rng.random() ** 4))

    # -- kinds ----------------------------------------------------------------------------------------------------

    def _build_tables(self) -> tuple[list[list[int]], list[list[int]]]:
        """64 shuffled windows of the mix; each 1000-event window uses one, chosen by hash."""
        slots = [k for k, kind in enumerate(self.mix) for _ in range(kind.per_mille)]
        rng = random.Random(self._block_seed ^ 0x5EED)
        tables, post_slots = [], []
        post_kind = next(k for k, kind in enumerate(self.mix) if kind.collection == POST and kind.operation == "create")
        for _ in range(64):
            table = slots[:]
            rng.shuffle(table)
            tables.append(table)
            post_slots.append([pos for pos, k in enumerate(table) if k == post_kind])
        return tables, post_slots

    def _table_of(self, window: int) -> int:
        return ((window * 0x9E3779B97F4A7C15 + self._block_seed) & _MASK64) >> 58

    def kind_of(self, i: int) -> Kind:
        """The mix entry of event i."""
        window, pos = divmod(i, WINDOW)
        return self.mix[self._tables[self._table_of(window)][pos]]

    def post_index(self, n: int) -> int:
        """Event number of the n-th post (n may be negative: posts from before the start, never emitted)."""
        window, r = divmod(n, self._posts_per_window)
        return window * WINDOW + self._post_slots[self._table_of(window)][r]

    def post_ref(self, n: int) -> PostRef:
        """URI, CID and author of the n-th post, computed without generating it."""
        ref = self._post_refs.get(n)
        if ref is None:
            i = self.post_index(n)
            header = self._header(i)
            did = self.did(self._author_rank(header))
            created = self._created_us(self._clock.base_us(i), header)
            ref = PostRef(f"at://{did}/{POST}/{tid(created, header[61] & 31)}", "bafyrei" + b32_chars(header[:52]),
                          did)
            if len(self._post_refs) > 100_000:
                self._post_refs.clear()
            self._post_refs[n] = ref
        return ref

    @staticmethod
    def _created_us(base_us: int, header: bytes) -> int:
        """createdAt of an event's record: up to 2 s before its base time (clients' clocks and PDS latency)."""
        return base_us - int.from_bytes(header[59:61], "big") * 30

    def recent_post(self, i: int, rng: random.Random) -> PostRef:
        """A post made before event i: 40% one of the recent 'hot' posts (every 64th), else any recent post."""
        n_now = (i // WINDOW) * self._posts_per_window
        if rng.random() < 0.4:
            n = (n_now // 64 - 1 - int(300 * rng.random() ** 2)) * 64
        else:
            n = n_now - 1 - int(50_000 * rng.random() ** 3)
        return self.post_ref(n)

    # -- events ---------------------------------------------------------------------------------------------------

    def _make(self, i: int, rng: random.Random) -> dict[str, Any]:
        """Event i (the block PRNG must be at event i's position)."""
        header = self._header(i)
        base = self._clock.base_us(i)
        time_us = base - self._jitter(header)
        did = self.did(self._author_rank(header))
        window, pos = divmod(i, WINDOW)
        k = self._tables[self._table_of(window)][pos]
        kind = self.mix[k]
        if kind.kind == "identity":
            body = self._identity(i, header, did, base)
            return {"did": did, "time_us": time_us, "kind": "identity", "identity": body}
        if kind.kind == "account":
            body = {"active": True, "did": did, "seq": SEQ_BASE + i}
            u = rng.random()
            if u < 0.15:
                body["active"] = False
                body["status"] = "deactivated" if u < 0.10 else "deleted" if u < 0.13 else "takendown"
            body["time"] = self._iso(base - 50_000)
            return {"did": did, "time_us": time_us, "kind": "account", "account": body}
        rev = tid(base - 2_000, header[62] & 31)
        collection = kind.collection
        assert collection is not None
        if kind.operation == "delete" and collection == POST:
            # a post that was made (a recent one, as real deletions mostly are), deleted by its author
            ref = self.recent_post(i, rng)
            did, rkey = ref.did, ref.uri.rsplit("/", 1)[1]
            commit: dict[str, Any] = {"rev": rev, "operation": "delete", "collection": collection, "rkey": rkey}
        elif kind.operation == "delete":
            old = self._created_us(base, header) - int(rng.random() ** 2 * 30 * 86_400e6)
            rkey = "self" if collection == PROFILE else tid(old, header[61] & 31)
            commit = {"rev": rev, "operation": "delete", "collection": collection, "rkey": rkey}
        else:
            created = self._created_us(base, header)
            maker = self._makers[k]
            assert maker is not None  # every commit kind of a mix has a record maker
            record, rkey = maker(i, header, rng, created, did)
            commit = {"rev": rev, "operation": kind.operation, "collection": collection, "rkey": rkey,
                      "record": record, "cid": "bafyrei" + b32_chars(header[:52])}
        return {"did": did, "time_us": time_us, "kind": "commit", "commit": commit}


    def _identity(self, i: int, header: bytes, did: str, base: int) -> dict[str, Any]:
        """An identity event's body: with the account's handle for a share of events (decided by the event's hash
        bytes an identity event has no other use for), else without the key, like the golden `{did, seq, time}`."""
        body: dict[str, Any] = {"did": did}
        if int.from_bytes(header[:4], "big") < self._handle_threshold:
            body["handle"] = handle_for(did)
        body["seq"] = SEQ_BASE + i
        body["time"] = self._iso(base - 50_000)
        return body


def measure_throughput(count: int = 200_000, seed: int = 0, *, diurnal: bool = False,
                       network: NetworkProfile = SEED) -> tuple[float, float]:
    """(events per wall-clock second, events per CPU second) of sequential generation plus orjson serialisation
    (after a warm-up that builds the profile's word lists)."""
    import time

    gen = EventGenerator(seed, profile=network.timing(diurnal=diurnal), network=network)
    dumps = orjson.dumps
    for event in gen.iter_events(count, count + 5000):
        dumps(event)
    wall, cpu = time.perf_counter(), time.process_time()
    for event in gen.iter_events(0, count):
        dumps(event)
    return count / (time.perf_counter() - wall), count / (time.process_time() - cpu)


if __name__ == "__main__":
    from firehose.simulator.profiles import PROFILES

    for net in PROFILES.values():
        for curve in (False, True):
            per_wall, per_cpu = measure_throughput(diurnal=curve, network=net)
            print(f"{net.name} profile, {'diurnal' if curve else 'constant'} rate: {per_wall:,.0f} events/s wall, "
                  f"{per_cpu:,.0f} per CPU-s")
