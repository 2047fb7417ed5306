"""What one API worker's hot tier holds in memory while the flush is down, measured, and projected to an outage.

The hot tier keeps every post deletion, account and identity event of the buffer until the flush has archived it
(so a post deleted during an outage stays hidden), and at most FIREHOSE_API_HOT_MAX_POSTS posts. This script
feeds simulated traffic into a real redis-server the way the ingester does (one stream entry per batch of
events), lets a `HotTier` read it twice (two outage lengths, to check that the cost grows linearly), and reports
the bytes the tier holds per hiding fact and per post (tracemalloc over the tier's state), then projects the memory
per worker for an outage of `--outage-hours` at `--rate` events/s.

    .venv/bin/python tests/bench/hot_memory.py [--profile real] [--rate 520] [--events 400000] [--outage-hours 24]
"""

from __future__ import annotations

import argparse
import gc
import logging
import sys
import tempfile
import tracemalloc
from pathlib import Path

import orjson
import pyarrow as pa

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from firehose.buffer import EVENT_FIELD, Keys, join_events
from firehose.hot import HotTier
from firehose.simulator.clock import parse_time
from firehose.simulator.generator import EventGenerator
from firehose.simulator.profiles import DEFAULT_PROFILE, PROFILES, profile_named
from tests.support.services import start_redis, stop_process

KEYS = Keys(stream="bench:hot", cursor="bench:hot:cursor", deadletter="bench:hot:dead", deadletter_maxlen=1,
            group="flush")
STREAM = KEYS.stream
ENTRY_EVENTS = 500  # events per stream entry (the ingester appends one entry per batch)


def feed(client, generator: EventGenerator, start: int, stop: int) -> None:  # type: ignore[no-untyped-def]
    """Append events [start, stop) as stream entries, with stream ids at their simulated times."""
    pipe = client.pipeline(transaction=False)
    for first in range(start, stop, ENTRY_EVENTS):
        events = [orjson.dumps(generator.event(i)) for i in range(first, min(first + ENTRY_EVENTS, stop))]
        pipe.xadd(STREAM, {EVENT_FIELD: join_events(events)}, id=f"{generator.base_us(first) // 1000}-*")
        if len(pipe) >= 50:
            pipe.execute()
    pipe.execute()


def added_bytes(tier: HotTier) -> tuple[int, dict[str, int]]:
    """Bytes the tier keeps from reading what it has not read yet (Python objects by tracemalloc, Arrow buffers by
    Arrow's allocator), and the counts of what it then holds."""
    gc.collect()
    tracemalloc.start()
    base, arrow_base = tracemalloc.get_traced_memory()[0], pa.total_allocated_bytes()
    snap = tier.refresh()
    gc.collect()
    held = tracemalloc.get_traced_memory()[0] - base + pa.total_allocated_bytes() - arrow_base
    tracemalloc.stop()
    counts = {"posts": snap.post_count, "deleted_uris": len(snap.deleted_uris), "accounts": len(snap.accounts),
              "identities": len(snap.identities)}
    return held, counts


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--profile", choices=sorted(PROFILES), default=DEFAULT_PROFILE, help="network profile fed")
    parser.add_argument("--rate", type=float, default=520.0, help="events/s of the projected firehose")
    parser.add_argument("--events", type=int, default=400_000, help="events fed per step (two steps)")
    parser.add_argument("--max-posts", type=int, default=1_000_000, help="FIREHOSE_API_HOT_MAX_POSTS")
    parser.add_argument("--outage-hours", type=float, default=24.0)
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)  # the capped tier warns on every refresh that it dropped posts
    network = profile_named(args.profile)
    generator = EventGenerator(7, parse_time("2026-05-25T00:00:00Z"), network.timing(args.rate), network=network)
    print(f"profile {network.describe()}")
    with tempfile.TemporaryDirectory() as tmp:
        server = start_redis(Path(tmp))
        try:
            client = server.client()
            # a cap of 1 post isolates the hiding facts; a second tier without cap measures the posts
            facts_tier = HotTier(server.client, KEYS, min_interval=0, max_posts=1)
            posts_tier = HotTier(server.client, KEYS, min_interval=0, max_posts=10**9)
            steps = []
            facts_bytes = all_bytes = 0
            for step in (1, 2):
                feed(client, generator, (step - 1) * args.events, step * args.events)
                added, counts = added_bytes(facts_tier)
                facts_bytes += added
                added, all_counts = added_bytes(posts_tier)
                all_bytes += added
                steps.append((step * args.events, facts_bytes, counts, all_bytes, all_counts))
        finally:
            stop_process(server.proc)
    total_facts = [sum(v for k, v in c.items() if k != "posts") for _, _, c, _, _ in steps]
    # the second step's increments: what the tier adds per fact and per post as the outage goes on
    per_fact = (steps[1][1] - steps[0][1]) / max(1, total_facts[1] - total_facts[0])
    per_post = ((steps[1][3] - steps[1][1]) - (steps[0][3] - steps[0][1])) / max(
        1, steps[1][4]["posts"] - steps[0][4]["posts"])
    for events, facts_bytes, counts, all_bytes, all_counts in steps:
        print(f"{events:>10,} events: hiding facts {counts} hold {facts_bytes / 2**20:,.1f} MiB; "
              f"with {all_counts['posts']:,} posts {all_bytes / 2**20:,.1f} MiB")
    outage_events = args.rate * args.outage_hours * 3600
    facts_per_event = total_facts[1] / steps[1][0]
    posts_per_event = steps[1][4]["posts"] / steps[1][0]
    facts = facts_per_event * outage_events
    posts = min(args.max_posts, posts_per_event * outage_events)
    print(f"per hiding fact {per_fact:,.0f} B, per post {per_post:,.0f} B; "
          f"{facts_per_event * 1000:.1f} facts and {posts_per_event * 1000:.1f} posts per 1000 events")
    print(f"a {args.outage_hours:g} h outage at {args.rate:g} events/s ({outage_events:,.0f} events): "
          f"{facts:,.0f} hiding facts = {facts * per_fact / 2**20:,.0f} MiB + {posts:,.0f} posts (cap "
          f"{args.max_posts:,}) = {posts * per_post / 2**20:,.0f} MiB per API worker")
    return 0


if __name__ == "__main__":
    sys.exit(main())
