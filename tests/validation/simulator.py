"""The Jetstream simulator of a day run: a `firehose simulate` process on this machine, and what it reports.

It serves `events` events of a network profile spread over `days` simulated days from `start` with the diurnal
curve (and the profile's bursts), as fast as the subscriber reads (`--rate 0`). `/stats` gives the delivery
counters the accounting starts from; its log gives the start index of every connection, which tells exactly which
events a cursor rewind delivered twice.
"""

from __future__ import annotations

import json
import re
import time
import urllib.request
from dataclasses import dataclass
from typing import Any

from firehose.simulator.clock import parse_time
from firehose.simulator.generator import EventGenerator
from firehose.simulator.options import SimulatorOptions
from firehose.simulator.profiles import DEFAULT_PROFILE, profile_named
from firehose.simulator.sources import GeneratedSource, build_source
from tests.validation.procs import CLI, Proc, Processes, wait_for_port

CONNECTED = re.compile(r"subscriber .*? connected \(cursor=(\S+), start index (\d+),")


@dataclass(frozen=True)
class SimSpec:
    """What the simulator generates."""

    events: int
    days: float
    start: str
    seed: int
    rate: float = 0.0
    """Events per wall-clock second, counted from the first subscriber (so it sees every event from index 0);
    0 = as fast as the subscriber reads (the day run's)."""
    profile: str = DEFAULT_PROFILE

    @property
    def start_us(self) -> int:
        return parse_time(self.start)

    @property
    def end_us(self) -> int:
        return self.start_us + int(self.days * 86_400e6)

    def options(self) -> SimulatorOptions:
        """The simulator's options, as `argv` gives them on its command line."""
        return SimulatorOptions(seed=self.seed, rate=self.rate, start=self.start, days=self.days, events=self.events,
                                profile=self.profile, diurnal=True, start_on_connect=bool(self.rate))

    def generator(self) -> EventGenerator:
        """The generator the simulator builds from these flags (same seed, start and profile: same events)."""
        source = build_source(self.options())
        assert isinstance(source, GeneratedSource)
        return source.generator

    def argv(self, host: str, port: int) -> list[str]:
        return [*CLI, "simulate", "--host", host, "--port", str(port), "--seed", str(self.seed),
                "--rate", f"{self.rate:g}", "--start", self.start, "--days", f"{self.days:g}",
                "--events", str(self.events), "--profile", self.profile, "--diurnal",
                *(["--start-on-connect"] if self.rate else [])]


@dataclass
class Simulator:
    """A running simulator process."""

    spec: SimSpec
    host: str
    port: int
    proc: Proc

    @classmethod
    def start(cls, procs: Processes, spec: SimSpec, host: str, port: int) -> Simulator:
        proc = procs.start("simulator", spec.argv(host, port))
        try:
            wait_for_port(port, host)
        except TimeoutError as exc:
            raise RuntimeError(f"the simulator did not listen on {host}:{port}; see {proc.log}") from exc
        return cls(spec, host, port, proc)

    @property
    def url(self) -> str:
        return f"ws://{self.host}:{self.port}/subscribe"

    def stats(self) -> dict[str, Any]:
        return simulator_stats(self.host, self.port)

    def wait_index(self, index: int, timeout: float, alive: Any = None) -> dict[str, Any]:
        """Wait until event `index` has been sent; `alive()` (optional) must stay true meanwhile."""
        deadline = time.monotonic() + timeout
        while True:
            stats = self.stats()
            if stats["highest_index_sent"] >= index:
                return stats
            if time.monotonic() > deadline:
                raise TimeoutError(f"the simulator sent up to event {stats['highest_index_sent']} of {index} "
                                   f"in {timeout:g}s: is the ingester reading?")
            if alive is not None and not alive():
                raise RuntimeError("the ingester exited while events were pending; see its log")
            time.sleep(0.02)

    def wait_disconnected(self, timeout: float = 15.0) -> dict[str, Any]:
        """Wait until no subscriber is connected (after stopping the ingester); return the stats then."""
        deadline = time.monotonic() + timeout
        while True:
            stats = self.stats()
            if stats["connections"] == 0:
                return stats
            if time.monotonic() > deadline:
                raise TimeoutError("the ingester's connection to the simulator did not close")
            time.sleep(0.02)

    def connection_starts(self) -> list[int]:
        """The start index of every connection so far, from the simulator's log."""
        return [int(m.group(2)) for m in CONNECTED.finditer(self.proc.log.read_text(errors="replace"))]


def simulator_stats(host: str, port: int) -> dict[str, Any]:
    """The `/stats` of the simulator listening on host:port."""
    with urllib.request.urlopen(f"http://{host}:{port}/stats", timeout=10) as response:
        return dict(json.load(response))


def profile_params(name: str) -> dict[str, str]:
    """The report's parameters naming the network profile of a run and what its figures rest on."""
    network = profile_named(name)
    return {"profile": network.describe(), "profile source": network.source}


def replayed_ranges(starts: list[int], ends: list[int]) -> list[tuple[int, int]]:
    """Event index ranges delivered twice: connection k+1 started at `starts[k+1]` before the end of connection k.

    `ends[k]` is one past the highest index sent when connection k closed (known for every connection but the
    last). Returns half-open ranges [start, end).
    """
    out = []
    for k in range(1, len(starts)):
        end_before = max(ends[:k]) if ends[:k] else 0
        if starts[k] < end_before:
            out.append((starts[k], end_before))
    return out


def replayed_bytes(generator: EventGenerator, ranges: list[tuple[int, int]]) -> int:
    """JSON bytes of the events in `ranges` (each one served again by the simulator)."""
    return sum(len(generator.event_json(i)) for a, b in ranges for i in range(a, b))
