"""Authors' names at real network latency: how many of a first page's 50 authors show as handles, and how long the
page takes, when the PLC directory and the handle hosts answer in ~100 ms. Not part of the test suite.

A real redis-server holds `--events` buffered events of the real profile (the hot tier serves their posts); a
local server answers the simulator's PLC documents and resolveHandle `--delay` seconds late; a fresh Gunicorn
(and a fresh Redis, so no name is cached) per `--resolve-workers` value then answers `/search` for the ten most
frequent words of the buffered posts, one after the other, 50 posts a page. Per page: the names shown as
verified handles, as handles their DID document claims while the check back runs (`meta.unverified_dids`),
and as bare DIDs; and the latency.

    .venv/bin/python tests/bench/author_names.py [--events 200000] [--delay 0.1] [--resolve-workers 8 32]
"""

from __future__ import annotations

import argparse
import collections
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

import orjson

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "app"))

from firehose.buffer import Buffer  # noqa: E402
from firehose.config import Settings  # noqa: E402
from firehose.simulator.generator import EventGenerator  # noqa: E402
from firehose.simulator.profiles import profile_named  # noqa: E402
from tests.support.api_server import start_gunicorn  # noqa: E402
from tests.support.identity_servers import SimulatedIdentityServer  # noqa: E402
from tests.support.services import start_redis, stop_process  # noqa: E402

WORD = re.compile(r"[a-z]{4,}")


def fill(buffer: Buffer, events: int) -> list[str]:
    """Append `events` real-profile events (dated up to now) as the ingester would; return the posts' texts."""
    rate = profile_named("real").events_per_day / 86_400
    start_us = int((time.time() - events / rate - 5) * 1_000_000)
    generator = EventGenerator(seed=23, start_us=start_us, network=profile_named("real"))
    texts = []
    for first in range(0, events, 500):
        batch = list(generator.iter_events(first, min(events, first + 500)))
        texts += [e["commit"]["record"].get("text", "") for e in batch if e.get("kind") == "commit"
                  and e["commit"].get("collection") == "app.bsky.feed.post" and e["commit"].get("record")]
        buffer.append([orjson.dumps(e) for e in batch], batch[-1]["time_us"])
    return texts


def top_words(texts: list[str], n: int) -> list[str]:
    counts = collections.Counter(w for t in texts for w in set(WORD.findall(t.lower())))
    return [w for w, _ in counts.most_common(n)]


def run(work: Path, events: int, delay: float, workers: int) -> dict[str, float]:
    redis = start_redis(work / f"redis-{workers}")
    names = SimulatedIdentityServer(delay)
    api = None
    try:
        buffer = Buffer(redis.client(), Settings.from_env({"FIREHOSE_REDIS_URL": redis.url}))
        words = top_words(fill(buffer, events), 10)
        api = start_gunicorn(work, work / "data", redis.url, FIREHOSE_PLC_URL=names.plc_url,
                             FIREHOSE_RESOLVE_HANDLE_URL=names.xrpc_url, FIREHOSE_RESOLVE_WORKERS=str(workers),
                             FIREHOSE_API_WORKERS="1")
        api.json("/search", text="warmup-never-matches")  # the worker's imports and hot tier, not timed
        verified = unverified = dids = 0
        latencies = []
        for word in words:
            t0 = time.perf_counter()
            status, body = api.json("/search", text=word, limit=50)
            latencies.append((time.perf_counter() - t0) * 1000)
            if status != 200:
                raise SystemExit(f"/search {word!r} answered {status}: {body}")
            claimed = set(body["meta"]["unverified_dids"])
            for row in body["results"]:
                if row["username"] == row["did"]:
                    dids += 1
                elif row["did"] in claimed:
                    unverified += 1
                else:
                    verified += 1
        shown = verified + unverified + dids
        latencies.sort()
        return {"pages": len(words), "names": shown, "verified": verified / shown, "unverified": unverified / shown,
                "dids": dids / shown, "p50_ms": statistics.median(latencies),
                "p95_ms": latencies[int(0.95 * (len(latencies) - 1))], "lookups": len(names.hits)}
    finally:
        if api is not None:
            stop_process(api.proc)
        names.stop()
        stop_process(redis.proc)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--delay", type=float, default=0.1, help="seconds each PLC and resolveHandle answer takes")
    parser.add_argument("--resolve-workers", type=int, nargs="+", default=[8, 32])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="firehose-names-") as tmp:
        for workers in args.resolve_workers:
            r = run(Path(tmp), args.events, args.delay, workers)
            print(f"names  : FIREHOSE_RESOLVE_WORKERS={workers}, {args.delay * 1000:.0f} ms per PLC/resolveHandle "
                  f"answer, {r['pages']:.0f} pages of never-seen authors: {r['verified']:.0%} verified handles, "
                  f"{r['unverified']:.0%} claimed (unverified), {r['dids']:.0%} bare DIDs of {r['names']:.0f} "
                  f"names; page p50 {r['p50_ms']:.0f} ms, p95 {r['p95_ms']:.0f} ms; {r['lookups']:.0f} lookups"
                  "   target: >= 80% handles, p95 < 1 s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
