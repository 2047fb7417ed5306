"""The catch-up run: the ingester comes back from an outage of `hours` and must catch up with the live firehose.

The simulator runs live at the profile's mean rate (`--rate`, on the diurnal curve with bursts) with a backlog
(`--backlog-hours`): its events begin `hours` before it starts, as Jetstream keeps them for a client whose cursor is
that old. The local pipeline (`local.LocalDayTarget`: Redis with the appliance's noeviction and a `maxmemory`,
`firehose ingest` from the first event, `firehose flush --loop` at the appliance's 300 s cadence, the API) reads
the backlog at full speed while new events keep coming. Measured:

- the catch-up time: from the ingester's start until its cursor is within `CAUGHT_UP_S` of the wall clock, and the
  catch-up speed in simulated seconds per wall second (goal: >= 10x real time);
- Redis's peak memory (`used_memory_peak`) against its `maxmemory`, and the seconds the ingester spent paused by
  backpressure (it pauses instead of losing events);
- /search while catching up (the hot tier and the archive together): requests, failures, latency;
- the accounting after `follow_s` more seconds live: every event the simulator sent is stored once, per table.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from firehose.simulator.generator import EventGenerator
from firehose.simulator.options import SimulatorOptions
from firehose.simulator.profiles import DEFAULT_PROFILE, profile_named
from firehose.simulator.sources import GeneratedSource, build_source
from tests.validation import probe
from tests.validation.accounting import Accounting, simulator_accounting
from tests.validation.day import Say, wait_drained
from tests.validation.local import LocalDayTarget, scrape
from tests.validation.procs import CLI, Processes, free_port, wait_for_port
from tests.validation.simulator import simulator_stats
from tests.validation.trusted import FreshnessProbe

CAUGHT_UP_S = 10.0
"""The ingester has caught up when its cursor (the newest event time stored) is this close to the wall clock."""


@dataclass(frozen=True)
class CatchupParams:
    """Parameters of a catch-up run."""

    hours: float = 6.0
    rate: float = 0.0  # 0: the profile's daily mean (real: 520.8 events/s)
    seed: int = 7
    profile: str = DEFAULT_PROFILE
    flush_interval: float = 300.0
    maxmemory_mb: int = 4096  # the appliance's Redis on a CX32 (8 GB, redis_maxmemory_fraction 0.5)
    follow_s: float = 60.0

    @property
    def live_rate(self) -> float:
        return self.rate or profile_named(self.profile).events_per_day / 86_400

    def options(self, port: int) -> SimulatorOptions:
        return SimulatorOptions(port=port, seed=self.seed, rate=self.live_rate, start="now", profile=self.profile,
                                backlog_hours=self.hours)

    def argv(self, port: int) -> list[str]:
        return [*CLI, "simulate", "--host", "127.0.0.1", "--port", str(port), "--seed", str(self.seed), "--rate",
                f"{self.live_rate:g}", "--start", "now", "--backlog-hours", f"{self.hours:g}", "--profile",
                self.profile]


@dataclass
class CatchupOutcome:
    """What a catch-up run measured."""

    params: CatchupParams
    backlog_events: int
    catchup_s: float
    events_during_catchup: int
    redis_peak_mb: float
    redis_maxmemory_mb: float
    backpressure_s: float
    searches: dict[str, Any]
    accounting: Accounting
    drain_s: float
    samples: list[dict[str, Any]] = field(default_factory=list)

    @property
    def speed(self) -> float:
        """Simulated seconds the ingester read per wall-clock second while catching up."""
        return (self.params.hours * 3600 + self.catchup_s) / max(self.catchup_s, 1e-9)

    def problems(self) -> list[str]:
        """Correctness failures (the exit status): the accounting, and searches that failed while catching up."""
        out = self.accounting.problems()
        if self.searches["errors"]:
            out.append(f"{self.searches['errors']} of {self.searches['requests']} searches failed while catching up")
        return out


def _generator(params: CatchupParams, port: int, stats: dict[str, Any]) -> EventGenerator:
    """The simulator's generator, rebuilt from its options and the start time it reports."""
    now_us = int(stats["start_us"]) + int(params.hours * 3_600e6)
    source = build_source(params.options(port), now_us=now_us)
    assert isinstance(source, GeneratedSource)
    return source.generator


def _redis_memory_mb(target: LocalDayTarget) -> tuple[float, float]:
    info = target.redis().info("memory")
    return int(info["used_memory_peak"]) / 2**20, int(info["maxmemory"]) / 2**20


def run_catchup(params: CatchupParams, procs: Processes, work: Path, say: Say) -> CatchupOutcome:
    """The whole run on this machine; the caller owns (and cleans up) the processes."""
    port = free_port()
    procs.start("simulator", params.argv(port))
    wait_for_port(port)
    stats = simulator_stats("127.0.0.1", port)
    generator = _generator(params, port, stats)
    backlog = int(stats["live_index"])
    say(f"simulator: live at {params.live_rate:,.1f} events/s ({params.profile}) with a {params.hours:g} h backlog "
        f"of {backlog:,} events at ws://127.0.0.1:{port}/subscribe")
    target = LocalDayTarget(procs, work, redis_extra=("--maxmemory", f"{params.maxmemory_mb}mb"))
    t0 = time.monotonic()
    target.start(f"ws://127.0.0.1:{port}/subscribe", 5.0, params.flush_interval)
    window = {"start": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(generator.start_us / 1e6 - 60)),
              "end": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(time.time() + 86_400))}
    api = target.api()
    with FreshnessProbe(api.base_url, window) as searches:
        catchup_s = wait_caught_up(target, t0, params, say)
        appended = int(target.stream_state().get("events_added") or 0)
        backpressure = scrape(f"http://127.0.0.1:{target.metrics_port}/metrics",
                              "firehose_ingest_backpressure_seconds_total")
        say(f"  caught up after {catchup_s:,.0f} s ({appended:,} events appended); following live for "
            f"{params.follow_s:g} s")
        time.sleep(params.follow_s)  # live traffic after the catch-up: a duration of the run, not a wait for a state
    target.stop_ingester(hard=False)
    final = simulator_stats("127.0.0.1", port)
    drain_s = wait_drained(target, params.flush_interval * 3 + backlog / 5000, say)
    peak_mb, maxmemory_mb = _redis_memory_mb(target)
    target.finish_ingest()
    counts = target.count(generator.start_us - 60_000_000, int(time.time() * 1e6) + 60_000_000)
    accounting = simulator_accounting(final, generator, counts["rows"], counts["duplicate_keys"])
    failed = searches.errors
    outcome = CatchupOutcome(params, backlog, catchup_s, appended, peak_mb, maxmemory_mb, backpressure,
                             {"requests": len(searches.search_ms) + failed, "errors": failed,
                              "latency_ms": probe.percentiles(searches.search_ms) if searches.search_ms else None},
                             accounting, drain_s, target.samples())
    say(f"accounting: generated {accounting.events_generated:,}, duplicate {accounting.events_duplicate:,}, stored "
        f"{accounting.events_stored:,} -> {'OK' if accounting.ok else 'FAILED'}")
    return outcome


def wait_caught_up(target: LocalDayTarget, t0: float, params: CatchupParams, say: Say) -> float:
    """Wait until the ingester's cursor is within CAUGHT_UP_S of the wall clock; return the seconds since `t0`."""
    deadline = t0 + max(600.0, params.hours * 3600)  # slower than real time: it would never catch up
    reported = t0
    while True:
        state = target.stream_state()
        cursor = state.get("cursor_time_us")
        if cursor is not None and time.time() - cursor / 1e6 <= CAUGHT_UP_S:
            return time.monotonic() - t0
        if time.monotonic() > deadline:
            raise TimeoutError(f"the ingester had not caught up after {time.monotonic() - t0:,.0f} s (cursor "
                               f"{time.time() - (cursor or 0) / 1e6:,.0f} s behind the clock)")
        if not target.ingester_alive():
            raise RuntimeError("the ingester exited while catching up; see its log")
        if time.monotonic() - reported >= 60:
            reported = time.monotonic()
            say(f"  {state.get('events_added', 0):,} events appended, {state.get('events_buffered', 0):,} not yet "
                f"flushed; cursor {time.time() - (cursor or 0) / 1e6:,.0f} s behind the clock")
        time.sleep(0.5)


def write_report(outcome: CatchupOutcome, out: Path, run_id: str, machine: dict[str, str]) -> None:
    """summary.json and REPORT.md of a catch-up run (on `machine`, `report.this_machine`)."""
    p, acc = outcome.params, outcome.accounting
    lat = outcome.searches["latency_ms"] or {"p50": float("nan"), "p95": float("nan")}
    summary = {
        "run_id": run_id, "kind": "catchup", "params": {**asdict(p), "live_rate": p.live_rate},
        "backlog_events": outcome.backlog_events, "catchup_s": round(outcome.catchup_s, 1),
        "speed_x_real_time": round(outcome.speed, 2), "events_during_catchup": outcome.events_during_catchup,
        "ingest_events_per_s": round(outcome.events_during_catchup / max(outcome.catchup_s, 1e-9), 1),
        "redis_peak_mb": round(outcome.redis_peak_mb, 1), "redis_maxmemory_mb": round(outcome.redis_maxmemory_mb, 1),
        "backpressure_s": outcome.backpressure_s, "searches": outcome.searches, "drain_s": round(outcome.drain_s, 1),
        "accounting_ok": acc.ok, "problems": outcome.problems(), "events_generated": acc.events_generated,
        "events_duplicate": acc.events_duplicate, "events_stored": acc.events_stored,
        "rows_by_table": acc.stored_by_table, "machine": machine,
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    mark = {True: "met", False: "**NOT MET**"}
    problems = outcome.problems()
    lines = [f"# Catch-up run `{run_id}`: {p.hours:g} h outage, {p.profile} profile", "",
             f"**Correctness: {'PASSED' if not problems else 'FAILED'}** — every event stored once, every search "
             "answered while catching up.", ""]
    lines += [f"- FAILURE: {problem}" for problem in problems]
    lines += ["", "Written by `tests/validation/harness.py catchup` (`make validate-catchup`; docs/validation.md).",
              "", "The simulator runs live at the profile's mean rate on its diurnal curve, with bursts; its events "
              f"begin {p.hours:g} h before it starts (`--backlog-hours`), so the ingester, started from the first "
              "event (its cursor as the outage began), reads the backlog at full speed while new events keep coming. "
              f"Redis has the appliance's `noeviction` and `maxmemory {p.maxmemory_mb} MB`; the flush runs every "
              f"{p.flush_interval:g} s (the appliance's timer: 300 s); the API serves the hot tier and the archive. "
              "Every process (simulator, Redis, ingester, flush, API, this harness) shares this machine: "
              + "; ".join(f"{k}: {v}" for k, v in machine.items()) + ".", "",
              "| what | goal | measured | |", "|---|---|---|---|",
              f"| backlog | {p.hours:g} h of the live rate | {outcome.backlog_events:,} events at "
              f"{p.live_rate:,.1f} events/s | |",
              f"| catch-up time (ingester start -> cursor within {CAUGHT_UP_S:g} s of the clock) | | "
              f"{outcome.catchup_s:,.0f} s ({outcome.events_during_catchup:,} events appended, "
              f"{summary['ingest_events_per_s']:,.0f} events/s) | |",
              f"| catch-up speed (simulated seconds read per second) | >= 10x real time | {outcome.speed:.1f}x | "
              f"{mark[outcome.speed >= 10]} |",
              f"| Redis peak memory (`used_memory_peak`) | below `maxmemory` | {outcome.redis_peak_mb:,.0f} MB of "
              f"{outcome.redis_maxmemory_mb:,.0f} MB | {mark[outcome.redis_peak_mb < outcome.redis_maxmemory_mb]} |",
              f"| ingester paused by backpressure | pauses instead of losing | {outcome.backpressure_s:,.0f} s paused; "
              f"accounting {'exact' if acc.ok else 'FAILED'} | {mark[acc.ok]} |",
              f"| /search while catching up (common word, hot tier and archive) | every one answered | "
              f"{outcome.searches['requests']:,} requests, {outcome.searches['errors']} failed; p50 {lat['p50']:,.1f} "
              f"ms, p95 {lat['p95']:,.1f} ms | {mark[not outcome.searches['errors']]} |",
              f"| buffer drained after the ingester stopped | | {outcome.drain_s:,.0f} s | |",
              f"| accounting | every event once | generated {acc.events_generated:,}, duplicate "
              f"{acc.events_duplicate:,}, stored {acc.events_stored:,} | {mark[acc.ok]} |", ""]
    (out / "REPORT.md").write_text("\n".join(lines))
