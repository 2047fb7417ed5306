"""Week, month and history runs: events generated straight into the flush's writer, then compacted, served and
queried.

A week at scale 1 is 56.7M events and a month 243M, more than the websocket path can carry on one machine in
reasonable time, so these runs skip the websocket, the ingester and Redis and use the flush's own code from the
stream entry onwards:

1. the generator (the simulator's, same seed, network profile and diurnal curve) makes the events of one day,
   serialised exactly as the simulator sends them, `flush_chunk` events at a time;
2. each chunk becomes stream-like entries `(id, json)` and goes through `flush.build_tables` (decode, dedupe,
   route into TableBatch columns, Arrow tables per (table, date)) and `storage.write_parquet` (zstd, the
   flush's row groups and encodings, temp file + fsync + rename) under the flush's file name scheme
   `<first id>_<last id>.parquet`; the ids carry the chunk's simulated time in ms;
3. when every day is written, each (table, day) partition is compacted by `Compactor.compact_partition` (the
   daily compaction's code: DuckDB sort, zstd 9, atomic directory exchange);
4. the API runs under Gunicorn over the data directory for the HTTP suite; DuckDB runs the analytical queries.

Raw JSON is never written: its bytes are counted as each event is serialised. Days are generated in parallel
by `--workers` processes (default: one per core).

Resumable (`--resume`): every finished day and every compacted partition leaves a marker (its result, as JSON)
under `<work>/progress/`; a resumed run skips them and redoes only what was unfinished. Redoing a half-written
day is safe: its files get the same names and contents, and each replaces its namesake atomically. Compaction
starts only once every day is written, so no compacted partition receives a file afterwards.
"""

from __future__ import annotations

import argparse
import datetime as dt
import itertools
import json
import multiprocessing
import os
import resource
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson

from firehose import index, storage
from firehose.compact import Compactor
from firehose.config import Settings
from firehose.flush import build_tables, file_name
from firehose.simulator.clock import parse_time
from firehose.simulator.generator import EventGenerator
from firehose.simulator.profiles import NetworkProfile, profile_named
from tests.validation import probe
from tests.validation.accounting import Accounting, expected_rows
from tests.validation.day import Say
from tests.validation.local import LocalApi, base_env
from tests.validation.procs import Processes
from tests.validation.queries import RANGES, build_suite, run_suite
from tests.validation.report import RunResult, this_machine
from tests.validation.simulator import profile_params

BULK_PATH = (
    "Generated straight into the flush's writer on this machine (the week/month path): the simulator's generator "
    "(same seed, diurnal profile and JSON bytes) -> `flush.build_tables` (decode, dedupe, route, Arrow) -> "
    "`storage.write_parquet` with the flush's file names, {chunk:,} events per batch, {workers} days in "
    "parallel -> `Compactor.compact_partition` per table and finished day -> the API under Gunicorn for the HTTP "
    "suite, DuckDB directly on the Parquet for the analytical queries. No websocket, ingester or Redis: those "
    "are measured by the day run. Raw JSON bytes are counted as events are serialised, never stored.")

HISTORY_RANGES = (1, 7, 30, 90, 180, 365, 730)
"""Days searched by a history run (those up to its length, and its length itself)."""


class RunMismatch(RuntimeError):
    """`--resume` of a run whose parameters differ from this one's."""


class Progress:
    """The finished steps of a run, one JSON marker each under `<work>/progress/` (see the module docstring)."""

    def __init__(self, work: Path, params: dict[str, Any], *, resume: bool) -> None:
        self.dir = work / "progress"
        self.dir.mkdir(parents=True, exist_ok=True)
        recorded = self.load("params")
        if recorded is not None and recorded != params:
            raise RunMismatch(f"{work} holds a run with {recorded}, not {params}: resume it with the same "
                              "parameters, or choose another RUN_ID")
        unfinished = any(self.dir.iterdir()) if recorded is None else not resume
        if unfinished:
            raise RunMismatch(f"{work} holds an unfinished run: pass --resume (make ... RESUME=1) to continue it")
        self.save("params", params)

    def load(self, name: str) -> dict[str, Any] | None:
        path = self.dir / f"{name}.json"
        return json.loads(path.read_text()) if path.exists() else None

    def save(self, name: str, value: dict[str, Any]) -> None:
        tmp = self.dir / f".{name}.json.tmp"
        tmp.write_text(json.dumps(value))
        os.replace(tmp, self.dir / f"{name}.json")


def day_bounds(generator: EventGenerator, start_us: int, days: int, total: int) -> list[tuple[int, int]]:
    """Event index range [lo, hi) of each simulated day (by base time; the last day ends at `total`)."""
    edges = [min(total, generator.index_at_or_after(start_us + d * 86_400_000_000)) for d in range(days)] + [total]
    edges[0] = 0
    return list(itertools.pairwise(edges))


def chunk_ids(count: int, base_ms: int) -> list[bytes]:
    """Stream-like ids for a chunk: the chunk's simulated time in ms, then the position within the chunk."""
    return [f"{base_ms}-{k}".encode() for k in range(count)]


def write_day(task: dict[str, Any]) -> dict[str, Any]:
    """Generate one day's events into Parquet through the flush's writer (runs in a worker process)."""
    settings = Settings.from_env({"FIREHOSE_DATA_DIR": task["data_dir"]})
    data_dir = settings.data_dir
    generator = bulk_generator(profile_named(task["profile"]), task["seed"], task["start_us"], task["rate"])
    lo, hi, chunk = task["lo"], task["hi"], settings.flush_chunk
    raw_bytes, duplicates, rows, batches = 0, 0, Counter(), []
    dumps = orjson.dumps
    started = time.perf_counter()
    for first in range(lo, hi, chunk):
        last = min(hi, first + chunk)
        jsons = [dumps(event) for event in generator.iter_events(first, last)]
        raw_bytes += sum(len(j) for j in jsons)
        t0 = time.perf_counter()
        entries = list(zip(chunk_ids(len(jsons), generator.base_us(first) // 1000), jsons, strict=True))
        tables, dropped, _ = build_tables(entries)
        name = file_name(entries[0][0], entries[-1][0])
        for (table, date), arrow_table in sorted(tables.items()):
            storage.write_parquet(data_dir, arrow_table, storage.partition_dir(data_dir, table, date) / name,
                                  storage.ParquetPolicy.for_flush(settings))
            rows[table] += arrow_table.num_rows
        duplicates += dropped
        batches.append({"entries": len(entries), "duplicates": dropped, "seconds": time.perf_counter() - t0,
                        "files": len(tables), "kib": 0.0, "first": entries[0][0].decode(),
                        "last": entries[-1][0].decode()})
    return {"day": task["day"], "events": hi - lo, "raw_bytes": raw_bytes, "duplicates": duplicates,
            "rows": dict(rows), "batches": batches, "seconds": time.perf_counter() - started,
            "maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def compact_one(task: dict[str, str]) -> dict[str, Any]:
    """Compact one (table, date) partition (runs in a worker process; nothing else writes meanwhile)."""
    settings = Settings.from_env({"FIREHOSE_DATA_DIR": task["data_dir"]})
    table, date = task["table"], task["date"]
    files = storage.partition_files(settings.data_dir, table, date)
    done = Compactor(settings).compact_partition(table, date, files)
    return {"table": table, "date": date, "seconds": done.seconds, "index_seconds": done.index_seconds,
            "rows": done.rows, "maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def day_marker(step: dict[str, Any]) -> str:
    """The marker of a day's task or result."""
    return f"day-{step['day']:03d}"


def partition_marker(step: dict[str, Any]) -> str:
    """The marker of a partition's compaction task or result."""
    return f"compact-{step['table']}-{step['date']}"


def run_steps(pool: Any, work: Callable[[Any], dict[str, Any]], tasks: list[dict[str, Any]],
              marker: Callable[[dict[str, Any]], str], progress: Progress, *, what: str, say: Say,
              done_one: Callable[[dict[str, Any]], None] = lambda result: None) -> list[dict[str, Any]]:
    """The results of `work` on every task, in the pool: those an earlier attempt finished from their markers,
    the others computed now, each saved as its marker the moment it is done."""
    done = [r for t in tasks if (r := progress.load(marker(t))) is not None]
    if done:
        say(f"  resuming: {len(done)} of {len(tasks)} {what} were done by an earlier attempt")
    finished = {marker(r) for r in done}
    for result in pool.imap_unordered(work, [t for t in tasks if marker(t) not in finished]):
        progress.save(marker(result), result)
        done.append(result)
        done_one(result)
    return done


def generate(pool: Any, tasks: list[dict[str, Any]], progress: Progress, days: int, say: Say) -> list[dict[str, Any]]:
    """Every day's events into Parquet (the days an earlier attempt finished are taken from their markers)."""
    def told(result: dict[str, Any]) -> None:
        say(f"  day {result['day'] + 1}/{days}: {result['events']:,} events in {result['seconds']:.0f}s "
            f"({result['events'] / result['seconds']:,.0f}/s)")

    done = run_steps(pool, write_day, tasks, day_marker, progress, what="days", say=say, done_one=told)
    return sorted(done, key=lambda r: r["day"])


def compact(pool: Any, data_dir: Path, progress: Progress, say: Say) -> list[dict[str, Any]]:
    """Compact every (table, day) partition, its day's index included (finished ones taken from their markers)."""
    parts = [{"data_dir": str(data_dir), "table": t, "date": d}
             for t in probe.TABLES for d in storage.list_dates(data_dir, t)]
    return run_steps(pool, compact_one, parts, partition_marker, progress, what="partitions", say=say)


def index_figures(data_dir: Path, compacted: list[dict[str, Any]], days: int, scale: float) -> dict[str, Any]:
    """Size and build time of the full-text index, as the compaction built it, for the report."""
    posts = [r for r in compacted if r["table"] == "posts"]
    posts_bytes = sum(p.stat().st_size for p in data_dir.glob("posts/date=*/*.parquet"))
    checks = index.verify(data_dir)  # every day indexed by its compaction: nothing to rebuild
    # the whole days: the first and the last date may hold only the jitter around the run's edges
    whole = [r for r in posts if r["rows"] >= 0.5 * max((x["rows"] for x in posts), default=0)]
    return {"bytes": index.index_bytes(data_dir), "posts_parquet_bytes": posts_bytes,
            "days_out_of_sync": sum(c.rebuilt for c in checks), "days_indexed": len(posts),
            "build_seconds": {r["date"]: round(r["index_seconds"], 2) for r in posts},
            "posts": {r["date"]: r["rows"] for r in posts},
            "build_seconds_max_whole_day": max((r["index_seconds"] for r in whole), default=0.0),
            "posts_per_whole_day": round(sum(r["rows"] for r in whole) / max(1, len(whole))),
            "scale": scale, "days": days}


def bulk_generator(network: NetworkProfile, seed: int, start_us: int, rate: float) -> EventGenerator:
    """The generator of a week, month or history run: the profile's events at `rate`, on its diurnal curve."""
    return EventGenerator(seed, start_us, network.timing(rate, diurnal=True), network=network)


def plan(args: argparse.Namespace, days: int, data_dir: Path) -> tuple[EventGenerator, list[dict[str, Any]]]:
    """The run's generator and its per-day tasks for `write_day` (a day with no event has none)."""
    network = profile_named(args.profile)
    total = max(1000, round(network.events_per_day * days * args.scale))
    start_us = parse_time(args.start)
    rate = total / (days * 86_400)
    generator = bulk_generator(network, args.seed, start_us, rate)
    bounds = day_bounds(generator, start_us, days, total)
    return generator, [{"day": d, "lo": lo, "hi": hi, "seed": args.seed, "start_us": start_us, "rate": rate,
                        "profile": network.name, "data_dir": str(data_dir)}
                       for d, (lo, hi) in enumerate(bounds) if hi > lo]


def run_params(args: argparse.Namespace, days: int) -> dict[str, Any]:
    """What must not change between a run and its resumption."""
    return {"days": days, "scale": args.scale, "seed": args.seed, "start": args.start, "profile": args.profile}


def run_bulk(args: argparse.Namespace, days: int, logs: Path, work: Path, say: Say) -> RunResult:
    """The week, month or history run (see the module docstring)."""
    data_dir = work / "data"
    storage.ensure_layout(data_dir)
    progress = Progress(work, run_params(args, days), resume=args.resume)
    generator, tasks = plan(args, days, data_dir)
    total = tasks[-1]["hi"]
    start_us = parse_time(args.start)
    end_us = start_us + days * 86_400_000_000
    workers = args.workers or multiprocessing.cpu_count()
    say(f"generating {total:,} events over {days} days into {data_dir} with {workers} workers")
    timings: dict[str, float] = {}
    t0 = time.monotonic()
    with multiprocessing.get_context("spawn").Pool(workers) as pool:
        done = generate(pool, tasks, progress, days, say)
        timings["generate_write_s"] = time.monotonic() - t0
        flushed = sum(p.stat().st_size for p in data_dir.glob("*/date=*/*.parquet"))
        t1 = time.monotonic()
        compacted = compact(pool, data_dir, progress, say)
        timings["compact_s"] = time.monotonic() - t1
    peaks = {"generate-worker": max(r["maxrss_mb"] for r in done),
             "compact-worker": max(r["maxrss_mb"] for r in compacted)}
    say(f"  wrote and compacted in {timings['generate_write_s']:.0f}s + {timings['compact_s']:.0f}s")
    counts = probe.count(data_dir, start_us - 60_000_000, end_us + 60_000_000)
    written = Counter()
    for r in done:
        written.update(r["rows"])
    generated = sum(r["events"] for r in done)
    duplicate = sum(r["duplicates"] for r in done)
    accounting = Accounting(generated, duplicate, expected_rows(generator, 0, total), counts["rows"],
                            counts["duplicate_keys"], {"rows_written_by_the_writer": sum(written.values()),
                                                       "dropped_by_writer_dedupe": duplicate})
    say(f"accounting: generated {generated:,}, duplicate {duplicate:,}, stored {accounting.events_stored:,} -> "
        f"{'OK' if accounting.ok else 'FAILED'}")
    indexed = index_figures(data_dir, compacted, days, args.scale)
    ranges = tuple(sorted({r for r in HISTORY_RANGES if r < days} | {days})) if args.kind == "history" else RANGES
    queries, analytics = bulk_queries(args, days, data_dir, logs, work, ranges=ranges, say=say, timings=timings,
                                      peaks=peaks)
    raw = sum(r["raw_bytes"] for r in done)
    batches = [b for r in done for b in r["batches"]]
    per_day = {dt.datetime.fromtimestamp((start_us + r["day"] * 86_400_000_000) / 1e6, tz=dt.UTC).strftime(
        "%m-%d"): r["events"] / r["seconds"] for r in done}
    params = {"scale": args.scale, "days": days, "events (target)": total, **profile_params(args.profile),
              "simulated start": args.start, "seed": args.seed, "workers": workers,
              "batch (flush_chunk)": Settings().flush_chunk, "warm reps": args.warm_reps,
              "cold reps": args.cold_reps, "analytics reps (max)": args.analytics_reps,
              "days searched": ", ".join(map(str, ranges))}
    rate_all = generated / sum(r["seconds"] for r in done) * workers  # resume-proof: per-day process time
    notes = [f"Parquet as written, before compaction: {flushed:,} bytes (ratio {flushed / raw:.4f})",
             f"full-text index (built per day by the compaction): {indexed['bytes']:,} bytes = "
             f"{indexed['bytes'] / max(1, indexed['posts_parquet_bytes']):.1%} of the posts Parquet "
             f"({indexed['posts_parquet_bytes']:,} bytes); days out of sync after the run: "
             f"{indexed['days_out_of_sync']}",
             f"`ingest_events_per_s` here is the generate + build_tables + write_parquet rate of {workers} "
             "workers together (no websocket or Redis); the ingest target is measured by the day run."]
    return RunResult(
        args.kind, args.run_id, "local",
        BULK_PATH.format(chunk=Settings().flush_chunk, workers=workers), params, accounting, raw, counts["bytes"],
        rate_all, f"{generated:,} events generated and written by {workers} processes at {rate_all:,.0f} "
        "events/s together (not an ingest rate)", batches, [], queries, analytics,
        {k: round(v, 1) for k, v in peaks.items()}, timings, this_machine(work), per_day_rates=per_day, notes=notes,
        index=indexed)


def bulk_queries(args: argparse.Namespace, days: int, data_dir: Path, logs: Path, work: Path, *,
                 ranges: tuple[int, ...], say: Say, timings: dict[str, float],
                 peaks: dict[str, float]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The HTTP suite over the generated data (API under Gunicorn) and the analytical queries."""
    end_day = dt.datetime.fromtimestamp(parse_time(args.start) / 1e6, tz=dt.UTC).date() + dt.timedelta(days=days)
    username = probe.pick_username(data_dir)
    suite = build_suite(end_day, days, username, ranges)
    say(f"query suite: {len(suite)} requests x ({args.cold_reps} cold + {args.warm_reps} warm); username {username}")
    t0 = time.monotonic()
    with Processes(logs, base_env(work, 1)) as procs:
        api = LocalApi(procs, {**base_env(work, 1), "FIREHOSE_DATA_DIR": str(data_dir)}, work)
        api.start()
        queries = run_suite(api, suite, args.warm_reps, args.cold_reps, say)
        if api.proc is not None:
            procs.note_peak(api.proc, tree=True)
        api.stop()
        peaks.update(procs.peak_rss_mb)
    timings["http_queries_s"] = time.monotonic() - t0
    t0 = time.monotonic()
    analytics = probe.analytics(data_dir, args.analytics_reps, 60.0)
    timings["analytics_s"] = time.monotonic() - t0
    for name, r in analytics.items():
        say(f"  {name:38} p50 {r['p50']:8.1f} ms p95 {r['p95']:8.1f} ms rows {r['rows']} ({r['reps']} reps)")
    peaks["harness"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return queries, analytics
