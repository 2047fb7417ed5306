"""Compare /search latency of two versions of the API over the same data: has a change made search slower?

One day of generated events is written through the flush's writer (as `make bench` does) and compacted; then the
API of this checkout and the API of `--base` (a git revision, checked out into a temporary worktree and imported
through PYTHONPATH) answer the same queries in alternating rounds, each under Gunicorn with the appliance's
settings and a real redis-server (this checkout's API reads its hot tier from it). Prints p50 per query and
version, and the ratio. A measurement, not a test.

Usage: python tests/bench/compare_search.py [--base REV] [--events N] [--reps N] [--rounds N] [--data DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "app"))

from tests.bench.run import DAY_QUERIES as QUERIES  # noqa: E402
from tests.bench.run import write_day  # noqa: E402
from tests.support.services import free_port, start_redis, stop_process, wait_for_port  # noqa: E402


def serve(app_dir: Path, data: Path, redis_url: str) -> tuple[subprocess.Popen, str]:
    """Gunicorn serving the firehose package found in `app_dir`."""
    port = free_port()
    env = {**os.environ, "PYTHONPATH": str(app_dir), "FIREHOSE_DATA_DIR": str(data), "FIREHOSE_REDIS_URL": redis_url,
           "FIREHOSE_API_BIND": f"127.0.0.1:{port}", "FIREHOSE_PLC_URL": "", "FIREHOSE_DNS_ENABLED": "false",
           "FIREHOSE_WELLKNOWN_ENABLED": "false"}
    gunicorn = Path(sys.executable).with_name("gunicorn")
    proc = subprocess.Popen([str(gunicorn), "-c", "python:firehose.gunicorn_conf", "firehose.api:create_app()"],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=app_dir)
    wait_for_port(port, timeout=60)
    return proc, f"http://127.0.0.1:{port}"


def timings(base_url: str, reps: int) -> dict[str, list[float]]:
    """`reps` timed requests per query (after one untimed warm-up request)."""
    out: dict[str, list[float]] = {}
    for name, params in QUERIES.items():
        url = f"{base_url}/search?" + urllib.parse.urlencode(params)
        urllib.request.urlopen(url, timeout=120).read()
        out[name] = []
        for _ in range(reps):
            t0 = time.perf_counter()
            with urllib.request.urlopen(url, timeout=120) as response:
                json.load(response)
            out[name].append((time.perf_counter() - t0) * 1000)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", default="8aaa639", help="git revision to compare with (default: before the "
                        "hot tier and the hiding rules)")
    parser.add_argument("--events", type=int, default=2_000_000, help="events in the generated day")
    parser.add_argument("--reps", type=int, default=20, help="timed requests per query per round")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds per version")
    parser.add_argument("--data", type=Path, help="a data directory to read instead of writing a new day "
                        "(e.g. one kept from an earlier run: it is left in place)")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="firehose-compare-"))
    base_tree = work / "base"
    subprocess.run(["git", "-C", str(REPO), "worktree", "add", "-q", "--detach", str(base_tree), args.base],
                   check=True)
    redis = start_redis(work / "redis")
    try:
        data = args.data or work / "day"
        if args.data is None:
            write_day(data, args.events)
        print(f"data {data}; base {args.base}, head this checkout; {args.rounds} rounds x "
              f"{args.reps} requests per query")
        samples: dict[str, dict[str, list[float]]] = {"base": {}, "head": {}}
        for _ in range(args.rounds):
            for version, app_dir in (("base", base_tree / "app"), ("head", REPO / "app")):
                proc, url = serve(app_dir, data, redis.url)
                try:
                    for name, values in timings(url, args.reps).items():
                        samples[version].setdefault(name, []).extend(values)
                finally:
                    stop_process(proc)
        print(f"{'query':14} {'base p50':>10} {'head p50':>10} {'head/base':>10}")
        for name in QUERIES:
            base, head = statistics.median(samples["base"][name]), statistics.median(samples["head"][name])
            print(f"{name:14} {base:8.1f}ms {head:8.1f}ms {head / base:10.2f}")
    finally:
        stop_process(redis.proc)
        subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force", str(base_tree)], check=False)
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
