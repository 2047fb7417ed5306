"""Scaled validation runs: `python -m tests.validation.harness day|week|month|history|catchup [--scale S] ...`.

Writes `results/<run-id>/` (summary.json, REPORT.md, PNG plots, logs/) and points `results/latest` at it.
A week, month or history run that stops before its end keeps its data; `--resume` with the same run id carries on.
Exit status: 0 when every correctness target is met (exact accounting; for a day run also no hidden or doubled
row served and the newest post found), 1 when one is not, 2 when the run could not be carried out. Speed targets
are judged in REPORT.md, never in the exit status.
See docs/validation.md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import shutil
import signal
import sys
import time
import traceback
from pathlib import Path
from types import FrameType

from firehose.simulator.profiles import DEFAULT_PROFILE, PROFILES, profile_named
from tests.validation import bulk, catchup, day, local
from tests.validation.procs import Processes
from tests.validation.report import RunResult, point_latest, this_machine, write_all
from tests.validation.simulator import profile_params

REPO = Path(__file__).resolve().parents[2]
KINDS = {"day": 1, "week": 7, "month": 30, "history": 0, "catchup": 0}  # history: --days; catchup: --hours


class RunFailed(RuntimeError):
    """The run could not be carried out (not an accounting failure)."""


def parse_args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m tests.validation.harness", description=__doc__.splitlines()[0])
    p.add_argument("kind", choices=tuple(KINDS))
    p.add_argument("--scale", type=float, default=1.0,
                   help="fraction of the profile's events per day (real 45M, seed 8.1M; default 1)")
    p.add_argument("--profile", choices=tuple(PROFILES), default=DEFAULT_PROFILE,
                   help="network profile of the simulated days (default %(default)s)")
    p.add_argument("--target", choices=("local", "host"), default="local",
                   help="local: the make-run stack on private ports here; host: the booted test host")
    p.add_argument("--run-id", default="",
                   help="results/<run-id> (default <kind>-<scale or hours>-<target>-<UTC time>)")
    p.add_argument("--results", type=Path, default=REPO / "results", help="results root (default ./results)")
    p.add_argument("--work", type=Path, default=REPO / "var" / "validation", help="data and Redis of runs")
    p.add_argument("--flush-interval", type=float, default=None,
                   help="day and catch-up runs: seconds between flushes (the appliance's timer: 300; default 30 for "
                        "a day, 300 for a catch-up)")
    p.add_argument("--hours", type=float, default=6.0,
                   help="catch-up run: hours of the outage the ingester catches up from (default 6)")
    p.add_argument("--rate", type=float, default=0.0,
                   help="catch-up run: the live rate in events/s (default 0: the profile's mean, real 520.8)")
    p.add_argument("--follow-seconds", type=float, default=60.0,
                   help="catch-up run: seconds live after catching up, before the accounting (default 60)")
    p.add_argument("--maxmemory-mb", type=int, default=4096,
                   help="catch-up run: Redis maxmemory (default 4096: the appliance's on a CX32)")
    p.add_argument("--warm-reps", type=int, default=20, help="warm repetitions per HTTP query (default 20)")
    p.add_argument("--cold-reps", type=int, default=20,
                   help="cold repetitions per HTTP query, each on a freshly started API (default 20)")
    p.add_argument("--analytics-reps", type=int, default=20, help="repetitions per analytical query (default 20)")
    p.add_argument("--workers", type=int, default=0, help="week/month: generator processes (default: cores)")
    p.add_argument("--seed", type=int, default=7, help="generator seed (default 7)")
    p.add_argument("--start", default="2026-05-25T00:00:00Z", help="first simulated day (default 2026-05-25)")
    p.add_argument("--keep-data", action="store_true", help="keep the Parquet data and Redis files of the run")
    p.add_argument("--days", type=int, default=365, help="history run: simulated days (default 365)")
    p.add_argument("--inject", choices=("lose-deletes",), default=None,
                   help="day run, local target: a fault proving the exit status (lose-deletes: the archived "
                        "deletions vanish after the count, so deleted posts are served and the run exits 1)")
    p.add_argument("--resume", action="store_true",
                   help="week/month/history: carry on the unfinished run --run-id (its data was kept)")
    args = p.parse_args(argv)
    if not 0 < args.scale <= 10:
        p.error("--scale must be in (0, 10]")
    if not 1 <= args.days <= 3650:
        p.error("--days must be in [1, 3650]")
    if args.resume and (args.kind == "day" or not args.run_id):
        p.error("--resume carries on a week, month or history run: give its --run-id (make ... RUN_ID=... RESUME=1)")
    if args.inject and (args.kind != "day" or args.target != "local"):
        p.error("--inject is for day runs on the local target")
    if args.flush_interval is None:
        args.flush_interval = 300.0 if args.kind == "catchup" else 30.0
    if args.kind == "catchup" and not 0 < args.hours <= 72:
        p.error("--hours must be in (0, 72]")
    if args.target == "host" and args.kind != "day":
        p.error("week, month and history runs write straight to Parquet on this machine; use --target local "
                "(the test host's 4 GiB volume does not hold a month at scale 1 either)")
    size = f"{args.hours:g}h" if args.kind == "catchup" else f"{args.scale:g}"
    args.run_id = args.run_id or (f"{args.kind}-{size}-{args.target}-"
                                  f"{dt.datetime.now(dt.UTC).strftime('%Y%m%dT%H%M%SZ')}")
    return args


def raise_on_sigterm(signum: int, frame: FrameType | None) -> None:
    """Turn SIGTERM into an exception so every `finally` and context manager cleans up."""
    raise KeyboardInterrupt(f"signal {signum}")


def day_result(outcome: day.DayOutcome, args: argparse.Namespace, target_name: str, path: str, *,
               flush_note: str, machine: dict[str, str], target_machine: dict[str, str]) -> RunResult:
    """A RunResult from a day run's outcome."""
    p = outcome.params
    params = {"scale": p.scale, "days": 1, "events (target)": p.events, **profile_params(p.profile),
              "simulated start": p.start, "seed": p.seed, "simulator rate": "0 (as fast as "
              "the ingester reads)", "flush cadence": flush_note, "FIREHOSE_REWIND_SECONDS": p.rewind_seconds,
              "deliberate restarts": ", ".join(f"{h} at {f:.0%}" for h, f in day.RESTART_PLAN),
              "warm reps": p.warm_reps, "cold reps": p.cold_reps, "analytics reps (max)": p.analytics_reps}
    ingest = outcome.ingest
    note = (f"{ingest['events_appended']:,} events appended over {ingest['seconds']:.1f} s from the first to the "
            "last append, restart pauses included")
    return RunResult("day", args.run_id, target_name, path, params, outcome.accounting, outcome.raw_json_bytes,
                     outcome.parquet_bytes, ingest["events_per_s"], note, outcome.flush_batches, outcome.samples,
                     outcome.queries, outcome.analytics, outcome.peak_rss_mb, outcome.timings, machine,
                     target_machine, outcome.restarts, notes=outcome.notes, trusted=outcome.trusted,
                     queries_uncompacted=outcome.queries_uncompacted)


LOCAL_DAY_PATH = (
    "Real pipeline end to end on this machine (TARGET=local): `firehose simulate` (rate 0: as fast as the "
    "ingester reads; zstd-compressed frames) -> websocket -> `firehose ingest` -> a private redis-server "
    "(AOF everysec, noeviction) -> `firehose flush --loop` on its cadence -> Parquet -> `firehose compact` (the "
    "daily timer's job) -> the API under Gunicorn (the appliance's gunicorn_conf) for the HTTP suite, DuckDB "
    "directly on the Parquet files for the analytical queries. Each stage is its own process, as `make run` "
    "starts them.")


def run_day_local(args: argparse.Namespace, logs: Path, work: Path, say: day.Say) -> RunResult:
    params = day_params(args)
    with Processes(logs, local.base_env(work, 0)) as procs:
        target = (local.LosingDeletes if args.inject == "lose-deletes" else local.LocalDayTarget)(procs, work)
        outcome = day.run_day(params, target, local.local_simulator(procs), say)
    return day_result(outcome, args, "local", LOCAL_DAY_PATH, flush_note=target.flush_note,
                      machine=this_machine(work), target_machine={})


def run_day_host(args: argparse.Namespace, logs: Path, work: Path, say: day.Say) -> RunResult:
    from tests.validation import host

    params = day_params(args)
    with Processes(logs, local.base_env(work, 0)) as procs, host.HostDayTarget.open(REPO, logs, say) as target:
        outcome = day.run_day(params, target, host.host_simulator(procs, target), say)
        target_machine = target.machine()
    return day_result(outcome, args, "host", host.HOST_DAY_PATH, flush_note=target.flush_note,
                      machine=this_machine(work), target_machine=target_machine)


def day_params(args: argparse.Namespace) -> day.DayParams:
    return day.DayParams(scale=args.scale, start=args.start, seed=args.seed, flush_interval=args.flush_interval,
                         warm_reps=args.warm_reps, cold_reps=args.cold_reps, analytics_reps=args.analytics_reps,
                         profile=args.profile)



def run_catchup(args: argparse.Namespace, out: Path, logs: Path, work: Path, say: day.Say) -> int:
    """A catch-up run and its report; the exit status (0 correct, 1 not)."""
    params = catchup.CatchupParams(hours=args.hours, rate=args.rate, seed=args.seed, profile=args.profile,
                                   flush_interval=args.flush_interval, maxmemory_mb=args.maxmemory_mb,
                                   follow_s=args.follow_seconds)
    with Processes(logs, local.base_env(work, 0)) as procs:
        outcome = catchup.run_catchup(params, procs, work, say)
    catchup.write_report(outcome, out, args.run_id, this_machine(work))
    point_latest(args.results, out)
    say(f"wrote {out}/REPORT.md and summary.json; caught up {params.hours:g} h in {outcome.catchup_s:,.0f} s "
        f"({outcome.speed:.1f}x real time); Redis peak {outcome.redis_peak_mb:,.0f} MB of "
        f"{outcome.redis_maxmemory_mb:,.0f} MB")
    for problem in outcome.problems():
        say(f"CORRECTNESS FAILED: {problem}")
    return 1 if outcome.problems() else 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    signal.signal(signal.SIGTERM, raise_on_sigterm)
    out = args.results / args.run_id
    logs = out / "logs"
    work = args.work / args.run_id
    if args.resume and not work.exists():
        print(f"validation: nothing to resume: {work} does not exist", file=sys.stderr)
        return 2
    if not args.resume and (out.exists() or work.exists()):
        print(f"validation: {out} or {work} exists already; choose another RUN_ID (or RESUME=1 to carry on an "
              "unfinished week, month or history run)", file=sys.stderr)
        return 2
    logs.mkdir(parents=True, exist_ok=True)
    work.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    finished = False

    def say(message: str) -> None:
        print(f"[{time.monotonic() - started:7.1f}s] {message}", flush=True)

    size = f"a {args.hours:g} h outage" if args.kind == "catchup" else f"scale {args.scale:g}"
    say(f"validation run {args.run_id}: {args.kind}, {size}, target {args.target}, profile "
        f"{profile_named(args.profile).describe()}")
    try:
        if args.kind == "catchup":
            status = run_catchup(args, out, logs, work, say)
            finished = True
            return status
        if args.kind == "day":
            runner = run_day_host if args.target == "host" else run_day_local
            result = runner(args, logs, work, say)
        else:
            result = bulk.run_bulk(args, KINDS[args.kind] or args.days, logs, work, say)
        finished = True
    except KeyboardInterrupt:
        say("interrupted; every process this run started has been stopped")
        return 2
    except Exception as exc:
        (logs / "error.txt").write_text(traceback.format_exc())
        say(f"the run could not be completed: {exc} (traceback in {logs / 'error.txt'})")
        return 2
    finally:
        if args.kind not in ("day", "catchup") and not finished:
            say(f"the data so far is kept in {work}: carry on with `--resume --run-id {args.run_id}` "
                f"(make validate-{args.kind} ... RUN_ID={args.run_id} RESUME=1), or delete it")
        elif not args.keep_data:
            shutil.rmtree(work, ignore_errors=True)
    result.timings["total_s"] = time.monotonic() - started
    summary = write_all(result, out, args.results)
    say(f"wrote {out}/REPORT.md, summary.json and plots; results/latest -> {out.name}")
    say(f"events generated {summary['events_generated']:,}, duplicate {summary['events_duplicate']:,}, stored "
        f"{summary['events_stored']:,}; storage ratio {summary['storage_ratio']}; ingest "
        f"{summary['ingest_events_per_s']:,} events/s; flush p50/p95 {summary['flush_batch_seconds_p50']}/"
        f"{summary['flush_batch_seconds_p95']} s")
    problems = result.problems()
    for problem in problems:
        say(f"CORRECTNESS FAILED: {problem}")
    if problems:
        return 1
    say("correct: every generated event stored once" + (", nothing hidden or doubled served, the newest post found"
                                                        if result.trusted else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
