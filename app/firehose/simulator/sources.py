"""Event sources: the global event sequence a server sends, generated or replayed, and its live position.

`GeneratedSource` serves an `EventGenerator` (paced by the wall clock in live mode, at a rate from the server start,
or as fast as subscribers read); `ReplaySource` serves the lines of a JSONL file verbatim, optionally looped.
`build_source` turns `SimulatorOptions` into one (see `docs/simulator.md` for how rate, start, days and events mix).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any, NamedTuple

import orjson

from firehose.simulator.clock import parse_time
from firehose.simulator.generator import EventGenerator
from firehose.simulator.options import SimulatorOptions
from firehose.simulator.profiles import profile_named

UNBOUNDED = sys.maxsize
"""`Source.available()` of an unpaced source with no event limit."""


class Item(NamedTuple):
    """One event as a source serves it: the JSON bytes and the fields filters look at (None when unknown)."""

    json: bytes
    did: str | None
    collection: str | None
    time_us: int | None


class Source:
    """The global event sequence and its live position. Subclasses define items and timing."""

    mode = "?"

    def __init__(self, rate: float, limit: int | None) -> None:
        self.rate = rate
        self.limit = limit
        self._t0: float | None = None

    def begin(self) -> None:
        """Start the clock of a paced source (at server start, or at the first subscriber)."""
        if self._t0 is None:
            self._t0 = time.monotonic()

    def available(self) -> int:
        """How many events exist right now (the live position); UNBOUNDED when reading as fast as possible."""
        cap = UNBOUNDED if self.limit is None else self.limit
        if self.rate == 0:
            return cap
        if self._t0 is None:
            return 0
        return min(cap, int((time.monotonic() - self._t0) * self.rate))

    def seconds_until(self, i: int) -> float:
        """Seconds until event i becomes available (<= 0 if it is)."""
        if self.rate == 0:
            return 0.0
        if self._t0 is None:
            return 0.05
        return (i + 1) / self.rate - (time.monotonic() - self._t0)

    def item(self, i: int) -> Item:
        raise NotImplementedError

    def start_index(self, cursor_us: int) -> int | None:
        """Where a subscriber with this cursor starts; None = the cursor is in the future (live tail)."""
        raise NotImplementedError

    def cursor_filter(self) -> bool:
        """Whether items before the cursor must also be skipped one by one (unordered sources)."""
        return False

    def describe(self) -> dict[str, Any]:
        return {"mode": self.mode, "rate": self.rate, "events_limit": self.limit}


class GeneratedSource(Source):
    """Events from an `EventGenerator`; live mode ties the position to the wall clock."""

    mode = "generated"

    def __init__(self, generator: EventGenerator, *, rate: float, limit: int | None, live: bool) -> None:
        super().__init__(rate, limit)
        self.generator = generator
        self.live = live

    def available(self) -> int:
        if not self.live:
            return super().available()
        now_us = time.time_ns() // 1000
        position = self.generator.index_at_or_after(now_us + 1)
        return position if self.limit is None else min(self.limit, position)

    def seconds_until(self, i: int) -> float:
        if not self.live:
            return super().seconds_until(i)
        return (self.generator.base_us(i) - time.time_ns() // 1000) / 1e6

    def item(self, i: int) -> Item:
        g = self.generator.generated(i)
        return Item(g.json, g.did, g.collection, g.time_us)

    def start_index(self, cursor_us: int) -> int | None:
        i = self.generator.index_at_or_after(cursor_us)
        return None if i > self.available() else i

    def describe(self) -> dict[str, Any]:
        gen = self.generator
        return {**super().describe(), "live": self.live, "seed": gen.seed, "start_us": gen.start_us,
                "sim_rate": gen.profile.rate, "diurnal": gen.profile.diurnal,
                "bursts": gen.profile.bursts is not None, "profile": gen.network.name}


class ReplaySource(Source):
    """The lines of a JSONL file, sent verbatim, optionally looped."""

    mode = "replay"

    def __init__(self, path: Path, *, rate: float, loop: bool, limit: int | None) -> None:
        self.path = path
        self.items = load_jsonl(path)
        if not self.items:
            raise ValueError(f"--replay {path}: the file has no lines to replay")
        if not loop:
            limit = len(self.items) if limit is None else min(limit, len(self.items))
        super().__init__(rate, limit)
        self.loop = loop
        times = [it.time_us for it in self.items if it.time_us is not None]
        self._max_time = max(times) if times else None

    def item(self, i: int) -> Item:
        return self.items[i % len(self.items)]

    def start_index(self, cursor_us: int) -> int | None:
        if self._max_time is not None and cursor_us > self._max_time:
            return None
        return 0

    def cursor_filter(self) -> bool:
        return True

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "file": str(self.path), "lines": len(self.items), "loop": self.loop}


def load_jsonl(path: Path) -> list[Item]:
    """The non-blank lines of a JSONL file with their did, collection and time_us (None if not parseable)."""
    items = []
    for line in path.read_bytes().splitlines():
        if not line.strip():
            continue
        did = collection = time_us = None
        try:
            event = orjson.loads(line)
        except orjson.JSONDecodeError:
            event = None
        if isinstance(event, dict):
            did = event.get("did") if isinstance(event.get("did"), str) else None
            t = event.get("time_us")
            time_us = t if isinstance(t, int) and not isinstance(t, bool) else None
            commit = event.get("commit")
            if isinstance(commit, dict) and isinstance(commit.get("collection"), str):
                collection = commit["collection"]
        items.append(Item(line, did, collection, time_us))
    return items


def build_source(options: SimulatorOptions, now_us: int | None = None) -> Source:
    """The event source the options describe (see `docs/simulator.md` for how rate, start, days and events mix)."""
    options.validate()
    if options.replay is not None:
        return ReplaySource(options.replay, rate=options.rate, loop=options.loop, limit=options.events)
    live = options.start == "now"
    now = time.time_ns() // 1000 if now_us is None else now_us
    start_us = now - int(options.backlog_hours * 3_600e6) if live else parse_time(options.start)
    sim_rate: float | None
    if live:
        sim_rate = options.rate
    elif options.events is not None and options.days is not None:
        sim_rate = max(options.events, 1) / (options.days * 86_400)
    else:
        sim_rate = options.rate or None  # None: the profile's day
    network = profile_named(options.profile)
    profile = network.timing(sim_rate, diurnal=options.diurnal, peak_ratio=options.peak_ratio, bursts=options.bursts)
    generator = EventGenerator(options.seed, start_us, profile, users=options.users,
                               jitter_us=int(options.jitter_ms * 1000),
                               identity_handle_share=options.identity_handle_share, network=network)
    limit = options.events
    if limit is None and options.days is not None:
        limit = generator.index_at_or_after(start_us + int(options.days * 86_400e6))
    return GeneratedSource(generator, rate=options.rate, limit=limit, live=live)

