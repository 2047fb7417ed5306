"""The day run: simulator -> websocket -> ingester -> Redis -> flush on its cadence -> Parquet -> API.

The same orchestration drives both targets (`local.LocalDayTarget`, `host.HostDayTarget`):

1. the simulator (always on this machine) serves `round(events_per_day * scale)` events of the network profile
   (real: 45M a day; seed: 8.1M) spread over one simulated day with its diurnal curve and bursts, as fast as the
   ingester reads;
2. the target's ingester reads it; at 35% of the events it is killed with SIGKILL, at 70% stopped with
   SIGTERM, and started again each time, so it resumes from its cursor minus the rewind and the simulator
   delivers the rewound events a second time (the deliberate replays);
3. the target's flush runs on its cadence until the buffer is drained; the query suite runs over the day as the
   flush left it (today: its batch files and the batch-updated index), then the day is compacted (as the daily
   compaction timer would) and counted, and the query suite runs again against the target's API.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

from firehose.simulator.profiles import DEFAULT_PROFILE, profile_named
from firehose.simulator.vocabulary import COMMON_WORD, TAG
from tests.validation import probe
from tests.validation.accounting import Accounting, simulator_accounting
from tests.validation.queries import Api, build_suite, iso, run_suite
from tests.validation.simulator import SimSpec, Simulator, replayed_bytes, replayed_ranges
from tests.validation.trusted import (
    FreshnessProbe,
    Truth,
    fresh_post,
    freshness_figures,
    hidden_truth,
    newest_servable_post,
    served_hidden,
)

FLUSH_BATCH = re.compile(r"batch (\S+)\.\.(\S+): (\d+) (?:entries|events), (\d+) duplicates, (\d+) files, ([\d.]+) KiB "
                         r"in ([\d.]+)s")
Say = Callable[[str], None]
T = TypeVar("T")
RESTART_PLAN: tuple[tuple[str, float], ...] = (("kill", 0.35), ("term", 0.70))
"""(how, fraction of the events sent) of each deliberate ingester restart: SIGKILL, then SIGTERM."""


@dataclass(frozen=True)
class DayParams:
    """Parameters of a day run."""

    scale: float = 1.0
    start: str = "2026-05-25T00:00:00Z"
    seed: int = 7
    flush_interval: float = 30.0
    replay_events: int = 2000
    warm_reps: int = 20
    cold_reps: int = 20
    analytics_reps: int = 20
    analytics_budget_s: float = 60.0
    profile: str = DEFAULT_PROFILE

    @property
    def events(self) -> int:
        return max(1000, round(profile_named(self.profile).events_per_day * self.scale))

    def sim_spec(self) -> SimSpec:
        return SimSpec(events=self.events, days=1.0, start=self.start, seed=self.seed, profile=self.profile)

    @property
    def rewind_seconds(self) -> float:
        """FIREHOSE_REWIND_SECONDS for the run: enough simulated time to replay about `replay_events` events."""
        return max(5.0, round(self.replay_events / (self.events / 86_400)))


class DayTarget(Protocol):
    """Where the pipeline of a day run runs (this machine or the test host)."""

    sim_host: str
    flush_note: str

    def start(self, sim_url: str, rewind_seconds: float, flush_interval: float) -> None: ...
    def stream_state(self) -> dict[str, Any]: ...
    def newest_event(self) -> str | None: ...
    def samples(self) -> list[dict[str, Any]]: ...
    def ingest_duplicates(self) -> int: ...
    def ingester_alive(self) -> bool: ...
    def stop_ingester(self, hard: bool) -> None: ...
    def start_ingester(self) -> None: ...
    def finish_ingest(self) -> None: ...
    def compact(self) -> float: ...
    def count(self, start_us: int, end_us: int) -> dict[str, Any]: ...
    def flush_log(self) -> str: ...
    def api(self) -> Api: ...
    def username(self) -> str | None: ...
    def analytics(self, reps: int, budget_s: float) -> dict[str, Any]: ...
    def peak_rss_mb(self) -> dict[str, float]: ...
    def parquet_bytes_before_compaction(self) -> int | None: ...


@dataclass
class DayOutcome:
    """Everything a day run measured (the report is written from this)."""

    params: DayParams
    accounting: Accounting
    raw_json_bytes: int
    parquet_bytes: dict[str, dict[str, int]]
    ingest: dict[str, Any]
    flush_batches: list[dict[str, Any]]
    samples: list[dict[str, Any]]
    queries: dict[str, dict[str, Any]]
    analytics: dict[str, Any]
    peak_rss_mb: dict[str, float]
    restarts: list[dict[str, Any]]
    timings: dict[str, float]
    notes: list[str]
    trusted: dict[str, Any] = field(default_factory=dict)
    queries_uncompacted: dict[str, dict[str, Any]] = field(default_factory=dict)


def parse_flush_batches(log_text: str) -> list[dict[str, Any]]:
    """The per-batch lines of flush logs: entries, duplicates dropped, files, KiB and seconds."""
    return [{"first": m.group(1), "last": m.group(2), "entries": int(m.group(3)), "duplicates": int(m.group(4)),
             "files": int(m.group(5)), "kib": float(m.group(6)), "seconds": float(m.group(7))}
            for m in FLUSH_BATCH.finditer(log_text)]


def drive_ingest(sim: Simulator, target: DayTarget, events: int, say: Callable[[str], None],
                 timeout: float) -> tuple[list[dict[str, Any]], list[int]]:
    """Let the ingester read every event, restarting it per RESTART_PLAN; return restarts and connection ends."""
    restarts, ends = [], []
    for how, fraction in RESTART_PLAN:
        index = max(1, int(events * fraction)) - 1
        sim.wait_index(index, timeout, target.ingester_alive)
        recognised = target.ingest_duplicates()
        target.stop_ingester(hard=how == "kill")
        stats = sim.wait_disconnected()
        ends.append(stats["highest_index_sent"] + 1)
        restarts.append({"how": how, "at_event": stats["highest_index_sent"] + 1,
                         "duplicates_recognised_before": recognised, "time": time.time()})
        say(f"  ingester {'killed (SIGKILL)' if how == 'kill' else 'stopped (SIGTERM)'} after "
            f"{stats['highest_index_sent'] + 1:,} events; restarting")
        target.start_ingester()
    sim.wait_index(events - 1, timeout, target.ingester_alive)
    wait_stored(target, sim.spec.generator().event_json(events - 1), timeout)
    return restarts, ends


def wait_stored(target: DayTarget, last_event: bytes, timeout: float) -> None:
    """Wait until the ingester has appended `last_event`, the last event the simulator sent, to the buffer.

    A connection sends its events in order and the ingester appends them in the order it reads them, so then the
    buffer holds everything the last connection delivered (what an earlier one failed to deliver shows in the
    accounting). A condition, not a quiet period: a machine that stalls longer than one ended that wait early.
    """
    deadline = time.monotonic() + timeout
    want = json.loads(last_event)
    while (newest := target.newest_event()) is None or json.loads(newest) != want:
        if time.monotonic() > deadline:
            raise TimeoutError(f"the ingester had not stored the simulator's last event after {timeout:g}s (the "
                               f"newest stored: {(newest or 'none')[:160]})")
        time.sleep(0.2)


def wait_drained(target: DayTarget, timeout: float, say: Callable[[str], None]) -> float:
    """Wait until the flush (on its own cadence) has written and acknowledged every entry; return the wait."""
    started = time.monotonic()
    while not probe.drained(state := target.stream_state()):
        if time.monotonic() - started > timeout:
            raise TimeoutError(f"the flush did not drain the buffer within {timeout:g}s (lag "
                               f"{state.get('group_lag')}, pending {state.get('group_pending')})")
        time.sleep(0.5)
    say(f"  flush drained the buffer {time.monotonic() - started:.0f}s after the last event was buffered")
    return time.monotonic() - started


def ingest_figures(samples: list[dict[str, Any]], final: dict[str, Any]) -> dict[str, Any]:
    """Events appended to Redis per second, from the append times recorded in the stream ids.

    (events appended - those of the first append) / (time of the last append - time of the first append). The
    first entry is read from the earliest sample (the flush trims only entries older than its keep window).
    """
    first = next((s for s in samples if s.get("first_id")), None)
    last_id = final.get("last_id")
    added = int(final.get("events_added") or 0)
    if first is None or not last_id:
        return {"events_appended": added, "seconds": 0.0, "events_per_s": 0.0}
    seconds = max(0.001, (int(last_id.split("-")[0]) - int(first["first_id"].split("-")[0])) / 1000)
    return {"events_appended": added, "seconds": seconds, "events_per_s": (added - first["first_events"]) / seconds}


def run_day(params: DayParams, target: DayTarget, sim_factory: Callable[[SimSpec, str], Simulator],
            say: Callable[[str], None] = print) -> DayOutcome:
    """Run the whole day on `target`; the caller owns (and cleans up) the target and the processes."""
    spec = params.sim_spec()
    timings: dict[str, float] = {}
    notes: list[str] = []
    t0 = time.monotonic()
    sim = sim_factory(spec, target.sim_host)
    say(f"simulator: {spec.events:,} events over 1 simulated day from {spec.start} at {sim.url}")
    generator = spec.generator()
    # the ground truth, computed meanwhile on the CPU the pipeline leaves idle
    truth = in_background(hidden_truth, spec.generator(), spec.events)
    target.start(sim.url, params.rewind_seconds, params.flush_interval)
    timeout = max(600.0, spec.events / 2000)
    api = target.api()  # up while the ingester works: the freshness probe polls it (served from the hot tier)
    with FreshnessProbe(api.base_url, sim_window(spec)) as freshness:
        restarts, ends = drive_ingest(sim, target, spec.events, say, timeout)
    timings["ingest_s"] = time.monotonic() - t0
    newest = newest_post_check(target, spec, truth, say)
    stats = sim.stats()
    ingest = ingest_figures(target.samples(), target.stream_state())
    recognised = sum(r["duplicates_recognised_before"] for r in restarts) + target.ingest_duplicates()
    timings["drain_wait_s"] = wait_drained(target, params.flush_interval * 3 + spec.events / 5000, say)
    target.finish_ingest()
    flushed_bytes = target.parquet_bytes_before_compaction()
    today = run_today(params, target, spec, say, timings)
    t1 = time.monotonic()
    timings["compact_s"] = target.compact()
    say(f"  compacted the day in {time.monotonic() - t1:.1f}s")
    counts = target.count(spec.start_us - 60_000_000, spec.end_us + 60_000_000)
    batches = parse_flush_batches(target.flush_log())
    starts = sim.connection_starts()
    ranges = replayed_ranges(starts, ends)
    raw = int(stats["bytes_produced"]) - replayed_bytes(generator, ranges)
    flush_dropped = sum(b["duplicates"] for b in batches)
    duplicate = int(stats["events_produced"]) - (int(stats["highest_index_sent"]) + 1)
    breakdown = {"replayed_by_simulator": sum(b - a for a, b in ranges),
                 "recognised_by_ingester": recognised, "dropped_by_flush": flush_dropped,
                 "lost_with_stopped_ingester": duplicate - recognised - flush_dropped,
                 "connections": len(starts)}
    accounting = simulator_accounting(stats, generator, counts["rows"], counts["duplicate_keys"], breakdown)
    if breakdown["replayed_by_simulator"] != accounting.events_duplicate:
        notes.append(f"replayed ranges from the simulator log ({breakdown['replayed_by_simulator']}) differ from "
                     f"events_produced - distinct ({accounting.events_duplicate}); raw_json_bytes is approximate")
    if flushed_bytes is not None:
        notes.append(f"Parquet as flushed (before the daily compaction): {flushed_bytes:,} bytes")
    say(f"accounting: generated {accounting.events_generated:,}, duplicate {accounting.events_duplicate:,}, "
        f"stored {accounting.events_stored:,} -> {'OK' if accounting.ok else 'FAILED'}")
    queries, analytics = run_queries(params, target, spec, say, timings)
    trusted = {**trusted_figures(target, spec, truth.result(), freshness, say), "fresh_post": newest}
    return DayOutcome(params, accounting, raw, counts["bytes"], ingest, batches, target.samples(), queries,
                      analytics, target.peak_rss_mb(), restarts, timings, notes, trusted, today)


def sim_window(spec: SimSpec) -> dict[str, str]:
    """The simulated days as /search's start and end parameters (midnight UTC to midnight UTC)."""
    end_day = dt.datetime.fromtimestamp(spec.end_us / 1e6, tz=dt.UTC).date()
    return {"start": iso(end_day - dt.timedelta(days=max(1, int(spec.days)))), "end": iso(end_day)}


def in_background(fn: Callable[..., T], *args: Any) -> Future[T]:
    """`fn(*args)` in a daemon thread at the lowest CPU priority (Linux nices threads one by one), so the pipeline
    being measured runs first; an interrupted run exits without waiting for it (a thread pool would)."""
    future: Future[T] = Future()

    def run() -> None:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)
        try:
            future.set_result(fn(*args))
        except BaseException as exc:  # handed to whoever waits for the result
            future.set_exception(exc)

    threading.Thread(target=run, name=getattr(fn, "__name__", "background"), daemon=True).start()
    return future


def newest_post_check(target: DayTarget, spec: SimSpec, truth: Future[Truth], say: Say) -> dict[str, Any]:
    """The run's newest servable post, looked up as soon as the ingester stored it (it must be found)."""
    found = fresh_post(target.api().base_url, newest_servable_post(spec.generator(), spec.events, truth.result()),
                       sim_window(spec))
    if found["found"]:
        say(f"  the newest post of the run is served {found['seconds']:.2f} s after it was stored ({found['uri']})")
    elif found["found"] is False:
        say(f"  the newest post of the run ({found['uri']}) was NOT served within the deadline")
    return found


def trusted_figures(target: DayTarget, spec: SimSpec, truth: Truth, freshness: FreshnessProbe,
                    say: Callable[[str], None]) -> dict[str, Any]:
    """Hidden posts served (against the generator's ground truth; must be 0) and the freshness lag."""
    window = sim_window(spec)
    searches = [{**window, **q} for q in ({}, {"text": COMMON_WORD}, {"sort": "oldest"}, {"tag": TAG})]
    hidden = served_hidden(target.api().base_url, searches, window, truth)
    fresh = freshness_figures(freshness, target.samples())
    lag = fresh["lag_s"] or {"p50": float("nan"), "p95": float("nan")}
    say(f"trusted search: {hidden['served_hidden']} hidden posts and {hidden['served_doubled']} doubled rows served "
        f"of {hidden['rows_checked']:,} rows checked "
        f"({hidden['archived_posts_deleted']:,} archived posts deleted, {hidden['archived_posts_by_inactive']:,} by "
        f"inactive accounts, in the ground truth); freshness lag p50 {lag['p50']:.2f} s, p95 {lag['p95']:.2f} s "
        f"({fresh['polls']} polls while ingesting)")
    return {"hidden": hidden, "freshness": fresh}


def run_today(params: DayParams, target: DayTarget, spec: SimSpec, say: Say,
              timings: dict[str, float]) -> dict[str, dict[str, Any]]:
    """The HTTP suite over the day as the flush left it, before its compaction: every batch file and the index
    the flush updated batch by batch (how "today" is served all day long)."""
    end_day = dt.datetime.fromtimestamp(spec.end_us / 1e6, tz=dt.UTC).date()
    suite = build_suite(end_day, int(spec.days), target.username())
    say(f"query suite over the day before its compaction: {len(suite)} requests x ({params.cold_reps} cold + "
        f"{params.warm_reps} warm)")
    t0 = time.monotonic()
    queries = run_suite(target.api(), suite, params.warm_reps, params.cold_reps, say)
    timings["http_queries_uncompacted_s"] = time.monotonic() - t0
    return queries


def run_queries(params: DayParams, target: DayTarget, spec: SimSpec, say: Callable[[str], None],
                timings: dict[str, float]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The HTTP suite and the analytical queries, timed."""
    end_day = dt.datetime.fromtimestamp(spec.end_us / 1e6, tz=dt.UTC).date()
    username = target.username()
    suite = build_suite(end_day, int(spec.days), username)
    say(f"query suite: {len(suite)} requests x ({params.cold_reps} cold + {params.warm_reps} warm); "
        f"username {username}")
    t0 = time.monotonic()
    queries = run_suite(target.api(), suite, params.warm_reps, params.cold_reps, say)
    timings["http_queries_s"] = time.monotonic() - t0
    t0 = time.monotonic()
    analytics = target.analytics(params.analytics_reps, params.analytics_budget_s)
    timings["analytics_s"] = time.monotonic() - t0
    for name, r in analytics.items():
        say(f"  {name:38} p50 {r['p50']:8.1f} ms p95 {r['p95']:8.1f} ms rows {r['rows']} ({r['reps']} reps)")
    return queries, analytics
