"""`make bench`: measure and print the figures the spec sets targets for. Not part of the test suite.

1. ingest: the simulator (its own process, as fast as the ingester reads, zstd-compressed) -> the real ingester
   process -> a private redis-server; events/s from the first to the last event buffered, and the ingester's CPU
   seconds (it is single-threaded: events per CPU-second is its one-core throughput).
2. flush: the same events, already in Redis, through one `Flusher.run_once()` in this process; events/s.
3. storage: Parquet bytes / raw JSON bytes for those events, as flushed and after compaction.
4. search: one day of generated events (8.1M by default) written through the flush's writer into a fresh data
   directory and compacted, then the API under Gunicorn; p50/p95 of /search latency for a set of queries.
5. freshness: the simulator live at 1,000 events/s -> ingester -> Redis, no flush at all, the API under Gunicorn
   serving the hot tier: how old the newest post /search shows is when asked (p50/p95: the time from an event's
   creation to its being searchable, plus up to one polling interval), and /search p50 while the hot tier fills.
6. overlap: one day in Parquet whose newest `--overlap-tail` events were flushed by the real flush but are still
   in Redis (the tail it keeps for the replay dedupe: 60k events is 2 min at the real rate; 800k a catch-up),
   plus 5,000 unflushed events; /search p50 with the hot tier on against the same searches with it off, same
   archive and Redis, and a fresh API's first search in both.
7. index: `--index-days` generated days (posts only, compacted: each day indexed), the index build CPU time per day
   and per 300k-event flush batch, its size against the posts Parquet, and /search p50 over 1 and 7 days through
   the index and, with the index moved away, through the scan.
8. history: a day of posts behind `--history-days` days of `deletes` and `account` rows at the real firehose's
   rate (135k post deletions and 135k account events a day: 3 per mille each of 45M, the real profile's mix), one
   compacted file per table and day, with their hiding facts files; a fresh API worker's hiding rules (time and
   private memory) and a fresh Gunicorn's first search, with the facts files and, moved away, read from the
   Parquet the way every worker did before them.

Usage: python tests/bench/run.py [--ingest-events N] [--day-events N] [--skip-search] [--freshness-seconds N]
       [--index-days N] [--index-day-events N] [--only-index] [--history-days N ...] [--only-history]
"""

from __future__ import annotations

import argparse
import datetime as dt
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

import orjson
import pyarrow as pa
import pyarrow.parquet as pq

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "app"))

from firehose import hiding_facts, index, storage  # noqa: E402
from firehose.buffer import Buffer, split_events  # noqa: E402
from firehose.compact import Compactor  # noqa: E402
from firehose.config import Settings  # noqa: E402
from firehose.flush import Flusher, build_tables  # noqa: E402
from firehose.hiding import Hiding  # noqa: E402
from firehose.hot import HotSnapshot  # noqa: E402
from firehose.schema import TABLES, post_uri  # noqa: E402
from firehose.simulator.clock import Profile  # noqa: E402
from firehose.simulator.generator import EventGenerator  # noqa: E402
from firehose.simulator.vocabulary import CJK_WORD, COMMON_WORD, PHRASE, RARE_WORD, TAG  # noqa: E402
from tests.support.services import free_port, start_redis, stop_process, wait_for_port  # noqa: E402

CLI = [sys.executable, "-m", "firehose.cli"]
DAY_START = "2026-05-25T00:00:00Z"
DAY_START_US = 1_779_667_200_000_000


# The /search queries timed over one day (also by tests/bench/compare_search.py).
DAY_QUERIES: dict[str, dict[str, str]] = {
    "common word": {"text": COMMON_WORD},
    "rare word": {"text": RARE_WORD},
    "phrase exact": {"text": PHRASE, "exact": "true"},
    "hashtag": {"tag": TAG},
    "no filter": {},
    "two words": {"text": f"{COMMON_WORD} the"},
}


def dir_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*.parquet") if ".staging" not in p.parts)


def bench_ingest_flush(work: Path, events: int) -> dict[str, float]:
    """Ingest `events` from the simulator, then flush them; return the figures."""
    server = start_redis(work / "redis", "--appendfsync", "everysec")
    sim_port = free_port()
    env = {**os.environ, "FIREHOSE_REDIS_URL": server.url, "FIREHOSE_DATA_DIR": str(work / "data"),
           "FIREHOSE_INGEST_METRICS_PORT": "0"}
    sim = subprocess.Popen([*CLI, "--log-level", "WARNING", "simulate", "--port", str(sim_port), "--rate", "0",
                            "--start", DAY_START, "--events", str(events), "--seed", "7"], env=env)
    ingester = None
    try:
        wait_for_port(sim_port)
        client = server.client()
        started = time.monotonic()
        ingester = subprocess.Popen([*CLI, "--log-level", "WARNING", "ingest", "--url",
                                     f"ws://127.0.0.1:{sim_port}/subscribe", "--cursor", "1"], env=env)
        first = None
        while True:
            n = int(client.hget("firehose:cursor", "events_in") or 0)  # events appended so far
            if first is None and n > 0:
                first = time.monotonic()
            if n >= events:
                break
            if ingester.poll() is not None:
                raise RuntimeError("the ingester exited early")
            time.sleep(0.05)
        done = time.monotonic()
        cpu = _cpu_seconds(ingester.pid)
    finally:
        if ingester is not None:
            stop_process(ingester)
        stop_process(sim)
    settings = Settings.from_env({"FIREHOSE_REDIS_URL": server.url, "FIREHOSE_DATA_DIR": str(work / "data")})
    buffer = Buffer(server.client(), settings)
    raw_bytes = sum(len(raw) for _, fields in buffer.client.xrange(settings.stream_key)
                    for raw in split_events(fields[b"e"]))
    t0 = time.perf_counter()
    result = Flusher(settings, buffer).run_once()
    flush_s = time.perf_counter() - t0
    flushed_bytes = dir_bytes(settings.data_dir)
    Compactor(settings).run(dates=storage.list_dates(settings.data_dir, "likes"))
    compacted_bytes = dir_bytes(settings.data_dir)
    stop_process(server.proc)
    return {
        "events": events,
        "ingest_events_per_s": events / (done - (first or started)),
        "ingest_events_per_cpu_s": events / cpu if cpu else float("nan"),
        "flush_events_per_s": result.events / flush_s,
        "raw_json_bytes": raw_bytes,
        "parquet_bytes_flushed": flushed_bytes,
        "parquet_bytes_compacted": compacted_bytes,
        "ratio_flushed": flushed_bytes / raw_bytes,
        "ratio_compacted": compacted_bytes / raw_bytes,
    }


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def day_generator(events: int) -> EventGenerator:
    """The generator of a day of `events` events from DAY_START."""
    return EventGenerator(seed=11, start_us=DAY_START_US, profile=Profile(rate=events / 86_400, diurnal=True))


def write_day(data_dir: Path, events: int, chunk: int = 200_000, day_events: int | None = None) -> tuple[int, float]:
    """Generate the first `events` events of a day of `day_events` (default: `events`) and write them with the
    flush's writer, compacted; return raw bytes and seconds."""
    settings = Settings.from_env({"FIREHOSE_DATA_DIR": str(data_dir)})
    generator = day_generator(day_events or events)
    storage.ensure_layout(data_dir)
    raw_bytes = 0
    started = time.perf_counter()
    for first in range(0, events, chunk):
        last = min(events, first + chunk)
        entries = [(f"{DAY_START_US // 1000 + i}-0".encode(), orjson.dumps(e))
                   for i, e in enumerate(generator.iter_events(first, last), start=first)]
        raw_bytes += sum(len(raw) for _, raw in entries)
        tables, _, _ = build_tables(entries)
        name = f"{entries[0][0].decode()}_{entries[-1][0].decode()}.parquet"
        for (table, date), arrow_table in tables.items():
            storage.write_parquet(data_dir, arrow_table, storage.partition_dir(data_dir, table, date) / name,
                                  storage.ParquetPolicy.for_flush(settings))
        print(f"  wrote {last:,}/{events:,} events", end="\r", flush=True)
    print()
    Compactor(settings).run(dates=storage.list_dates(data_dir, "posts"))
    return raw_bytes, time.perf_counter() - started


def bench_search(work: Path, events: int, repetitions: int = 25) -> dict[str, dict[str, float]]:
    """Latency of /search over one generated day, through Gunicorn."""
    data = work / "day"
    raw_bytes, seconds = write_day(data, events)
    print(f"  one day: {events:,} events, {raw_bytes / 1e9:.2f} GB raw -> {dir_bytes(data) / 1e9:.3f} GB Parquet "
          f"(ratio {dir_bytes(data) / raw_bytes:.3f}) in {seconds:.0f}s")
    return api_latency(data, DAY_QUERIES, repetitions)  # the first request of each query is discarded


def bench_freshness(work: Path, rate: int, seconds: float) -> dict[str, float]:
    """Lag from an event's time to its appearing in /search, and search latency, served from the hot tier only."""
    server = start_redis(work / "fresh-redis", "--appendfsync", "everysec")
    sim_port, api_port = free_port(), free_port()
    env = {**os.environ, "FIREHOSE_REDIS_URL": server.url, "FIREHOSE_DATA_DIR": str(work / "fresh-data"),
           "FIREHOSE_INGEST_METRICS_PORT": "0", "FIREHOSE_PLC_URL": "", "FIREHOSE_DNS_ENABLED": "false",
           "FIREHOSE_WELLKNOWN_ENABLED": "false", "FIREHOSE_API_BIND": f"127.0.0.1:{api_port}",
           "FIREHOSE_JETSTREAM_URLS": f"ws://127.0.0.1:{sim_port}/subscribe"}
    (work / "fresh-data").mkdir()
    quiet = {"stdout": subprocess.DEVNULL, "stderr": subprocess.DEVNULL, "env": env}
    procs = [
        subprocess.Popen([*CLI, "--log-level", "WARNING", "simulate", "--port", str(sim_port), "--rate", str(rate),
                          "--start", "now"], **quiet),
    ]
    try:
        wait_for_port(sim_port, timeout=30)
        procs.append(subprocess.Popen([*CLI, "--log-level", "WARNING", "ingest"], **quiet))
        gunicorn = Path(sys.executable).with_name("gunicorn")
        procs.append(subprocess.Popen([str(gunicorn), "-c", "python:firehose.gunicorn_conf",
                                       "firehose.api:create_app()"], **quiet))
        wait_for_port(api_port, timeout=30)
        newest_url = f"http://127.0.0.1:{api_port}/search?limit=1"
        word_url = f"http://127.0.0.1:{api_port}/search?" + urllib.parse.urlencode({"text": COMMON_WORD})
        lags, latencies, end = [], [], time.monotonic() + seconds
        while time.monotonic() < end:
            with urllib.request.urlopen(newest_url, timeout=60) as response:
                results = json.load(response)["results"]
            if results:
                lags.append(time.time() - results[0]["time_us"] / 1e6)
            t0 = time.perf_counter()
            with urllib.request.urlopen(word_url, timeout=60) as response:
                json.load(response)
            latencies.append((time.perf_counter() - t0) * 1000)
            time.sleep(0.1)  # a polling interval, not a wait for a condition: this loop only samples
        with urllib.request.urlopen(f"http://127.0.0.1:{api_port}/health", timeout=60) as response:
            hot_posts = json.load(response)["checks"]["hot_tier"]["posts"]
    finally:
        for proc in reversed(procs):
            stop_process(proc)
        stop_process(server.proc)
    lags.sort()
    latencies.sort()
    return {"lag_p50_s": statistics.median(lags), "lag_p95_s": lags[int(0.95 * (len(lags) - 1))],
            "samples": len(lags), "search_p50_ms": statistics.median(latencies),
            "search_p95_ms": latencies[int(0.95 * (len(latencies) - 1))], "hot_posts": hot_posts}
def bench_overlap(work: Path, archive_events: int, tail_events: int, fresh_events: int = 5_000,
                  repetitions: int = 15) -> dict[str, dict[str, dict[str, float]]]:
    """/search latency with the hot tier on and off over the same archive and Redis, whose stream still holds
    `tail_events` flushed events (and `fresh_events` unflushed ones)."""
    total = archive_events + tail_events + fresh_events
    data = work / f"overlap-{tail_events}"
    write_day(data, archive_events, day_events=total)
    server = start_redis(work / f"overlap-redis-{tail_events}")
    try:
        settings = Settings.from_env({"FIREHOSE_REDIS_URL": server.url, "FIREHOSE_DATA_DIR": str(data),
                                      "FIREHOSE_FLUSH_TRIM_KEEP_SECONDS": "86400"})
        buffer = Buffer(server.client(), settings)
        generator = day_generator(total)

        def append(first: int, last: int) -> None:
            for start in range(first, last, 1000):
                buffer.append([orjson.dumps(e) for e in generator.iter_events(start, min(last, start + 1000))], 1)

        append(archive_events, archive_events + tail_events)
        flushed = Flusher(settings, buffer).run_once().events  # the real flush: written, indexed, kept in Redis
        append(archive_events + tail_events, total)
        print(f"  overlap: {flushed:,} events flushed and still in the buffer ({buffer.length():,} entries), "
              f"{buffer.unflushed_events():,} unflushed")
        out = {}
        for hot in ("true", "false"):
            extra = {"FIREHOSE_REDIS_URL": server.url, "FIREHOSE_API_HOT_TIER": hot}
            out[hot] = api_latency(data, DAY_QUERIES, repetitions, extra)
    finally:
        stop_process(server.proc)
    return out


def write_days(data_dir: Path, days: int, events_per_day: int, chunk: int = 300_000) -> None:
    """`days` generated days ending with DAY_START's day, written with the flush's writer and compacted (which
    builds each day's full-text index)."""
    settings = Settings.from_env({"FIREHOSE_DATA_DIR": str(data_dir)})
    start = DAY_START_US - (days - 1) * 86_400_000_000
    generator = EventGenerator(seed=13, start_us=start, profile=Profile(rate=events_per_day / 86_400, diurnal=True))
    storage.ensure_layout(data_dir)
    total = days * events_per_day
    for first in range(0, total, chunk):
        last = min(total, first + chunk)
        entries = [(f"{generator.base_us(i) // 1000}-{i}".encode(), orjson.dumps(e))
                   for i, e in enumerate(generator.iter_events(first, last), start=first)]
        tables, _, _ = build_tables(entries)
        name = f"{entries[0][0].decode()}_{entries[-1][0].decode()}.parquet"
        for (table, date), arrow_table in tables.items():
            if table == "posts":
                storage.write_parquet(data_dir, arrow_table, storage.partition_dir(data_dir, table, date) / name,
                                      storage.ParquetPolicy.for_flush(settings))
        print(f"  wrote {last:,}/{total:,} events", end="\r", flush=True)
    print()
    Compactor(settings).run(dates=storage.list_dates(data_dir, "posts"))


def bench_index(work: Path, days: int, events_per_day: int, repetitions: int = 15) -> None:
    """Index build time per day and per flush batch, index size against the posts Parquet, and /search p50 over
    1 and `days` days through the index and (index moved away) through the scan. Prints the figures."""
    data = work / "index-days"
    write_days(data, days, events_per_day)
    dates = storage.list_dates(data, "posts")
    newest = dates[0]
    posts = index.parquet_rows(data, newest)
    t0 = time.process_time()
    index.rebuild(data, newest)
    build_cpu = time.process_time() - t0
    per_day = build_cpu * 930_000 / max(1, posts)
    print(f"index  : build {posts:,} posts in {build_cpu:.1f} CPU-s (one core) -> {per_day:.0f} s per 930k-post day"
          "   target <= 90 s")
    batch = pq.read_table(storage.partition_files(data, "posts", newest)[0]).slice(0, round(300_000 * 0.115))
    t0 = time.perf_counter()
    index.add_batch(data, newest, "bench-batch", batch, create=False)
    print(f"index  : a 300k-event flush batch ({batch.num_rows:,} posts) adds {time.perf_counter() - t0:.2f} s"
          "   target <= 0.5 s")
    index.rebuild(data, newest)
    posts_bytes = sum(f.stat().st_size for d in dates for f in storage.partition_files(data, "posts", d))
    size = index.index_bytes(data)
    print(f"index  : {size / 1e6:.1f} MB = {size / posts_bytes:.1%} of the posts Parquet ({posts_bytes / 1e6:.1f} MB)"
          "   target <= 35%")
    day = dt.datetime.fromisoformat(newest).replace(tzinfo=dt.UTC)
    queries = {"rare word": {"text": RARE_WORD}, "no match": {"text": "zyzzyvaquux"}, "CJK": {"text": CJK_WORD},
               "phrase": {"text": PHRASE, "exact": "true"}, "common word": {"text": COMMON_WORD}}
    for label in ("index", "scan"):
        if label == "scan":
            shutil.move(index.index_root(data), work / "index-moved")
        for span in (1, days):
            start = (day - dt.timedelta(days=span - 1)).strftime("%Y-%m-%d")
            end = (day + dt.timedelta(days=1)).strftime("%Y-%m-%d")
            ranged = {name: {**q, "start": start, "end": end} for name, q in queries.items()}
            for name, r in api_latency(data, ranged, repetitions).items():
                print(f"search : {label:5} {span:2} d {name:12} p50 {r['p50_ms']:7.1f} ms  p95 {r['p95_ms']:7.1f} ms "
                      f"({r['rows']} rows)")


def api_latency(data: Path, queries: dict[str, dict[str, str]], repetitions: int,
                env_extra: dict[str, str] | None = None, booted: bool = False) -> dict[str, dict[str, float]]:
    """Warm /search latency of each query (first request discarded, its time kept as `first_ms`: the first one
    of all is a fresh API process's) from a fresh Gunicorn over `data`. `booted`: one worker, and the first
    search timed only once it answers /openapi.json (its imports done, nothing of the data read yet)."""
    port = free_port()
    env = {**os.environ, "FIREHOSE_DATA_DIR": str(data), "FIREHOSE_API_BIND": f"127.0.0.1:{port}",
           "FIREHOSE_PLC_URL": "", "FIREHOSE_REDIS_URL": "redis://127.0.0.1:1/0", **(env_extra or {})}
    if booted:
        env["FIREHOSE_API_WORKERS"] = "1"
    gunicorn = Path(sys.executable).with_name("gunicorn")
    api = subprocess.Popen([str(gunicorn), "-c", "python:firehose.gunicorn_conf", "firehose.api:create_app()"],
                           env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    results = {}
    try:
        wait_for_port(port, timeout=30)
        deadline = time.monotonic() + 60
        while booted:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/openapi.json", timeout=60):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        for name, params in queries.items():
            url = f"http://127.0.0.1:{port}/search?" + urllib.parse.urlencode(params)
            timings, rows = [], 0
            for _ in range(repetitions + 1):
                t0 = time.perf_counter()
                with urllib.request.urlopen(url, timeout=120) as response:
                    rows = len(json.load(response)["results"])
                timings.append((time.perf_counter() - t0) * 1000)
            first, timings = timings[0], sorted(timings[1:])
            results[name] = {"p50_ms": statistics.median(timings), "p95_ms": timings[int(0.95 * (len(timings) - 1))],
                             "rows": rows, "first_ms": first}
    finally:
        stop_process(api)
    return results

def write_history_days(data_dir: Path, first: int, last: int, per_day: int) -> None:
    """Days `first`..`last`-1 before DAY_START of `deletes` (post deletions) and `account` rows, `per_day` of each,
    one compacted file per table and day (what `firehose compact` leaves)."""
    policy = storage.ParquetPolicy.for_compaction(Settings.from_env({"FIREHOSE_DATA_DIR": str(data_dir)}))
    for back in range(first, last):
        start = DAY_START_US - (back + 1) * 86_400_000_000
        times = [start + i * (86_400_000_000 // per_day) for i in range(per_day)]
        dids = [f"did:plc:{back:06d}{i:018d}" for i in range(per_day)]
        date = dt.datetime.fromtimestamp(start / 1e6, dt.UTC).strftime("%Y-%m-%d")
        tables = {
            "deletes": {"did": dids, "time_us": times, "rev": ["3l" + "a" * 11] * per_day,
                        "collection": ["app.bsky.feed.post"] * per_day,
                        "rkey": [f"3m{i:011d}" for i in range(per_day)]},
            "account": {"did": dids, "time_us": times, "active": [i % 3 != 0 for i in range(per_day)],
                        "status": [None if i % 3 else "deactivated" for i in range(per_day)],
                        "seq": list(range(per_day)), "time": ["2026-05-25T00:00:00.000Z"] * per_day},
        }
        for table, columns in tables.items():
            schema = TABLES[table].schema
            part = storage.partition_dir(data_dir, table, date)
            part.mkdir(parents=True, exist_ok=True)
            storage.write_file(part / "compact-0000.parquet", schema, [pa.table(columns, schema=schema)], per_day,
                               policy)
        print(f"  wrote history day {back + 1}/{last}", end="\r", flush=True)
    print()


def rss_anon_kib() -> int:
    """This process's private resident memory (memory-mapped files are not in it)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("RssAnon:"):
            return int(line.split()[1])
    return 0


def fresh_rules(data: Path) -> dict[str, float]:
    """A fresh worker's hiding rules over `data`: seconds to build them, to check one page of 100 candidates, and
    the private memory they cost."""
    gc_before = rss_anon_kib()
    t0 = time.perf_counter()
    rules = Hiding(data, min_interval=0).current(HotSnapshot())
    built = time.perf_counter() - t0
    uris = [post_uri(f"did:plc:{i:06d}{i:018d}", f"3m{i:011d}") for i in range(100)]
    t0 = time.perf_counter()
    kept = sum(rules.keep_mask(uris, [u.split("/")[2] for u in uris]))
    page = time.perf_counter() - t0
    return {"build_s": built, "page_ms": page * 1000, "private_mb": (rss_anon_kib() - gc_before) / 1024,
            "facts": rules.size, "kept": kept}


def bench_history(work: Path, day_events: int, days_list: list[int], per_day: int, parquet_up_to: int) -> None:
    """Section 8 of the module docstring."""
    data = work / "history"
    write_day(data, day_events)
    written = 0
    for days in sorted(days_list):
        write_history_days(data, written, days, per_day)
        written = days
        t0 = time.perf_counter()
        rebuilt = hiding_facts.ensure(data)
        facts_bytes = sum(p.stat().st_size for p in hiding_facts.facts_root(data).glob("*.facts"))
        print(f"history: {days} days of {per_day:,} post deletions and {per_day:,} account events a day; "
              f"facts files written for {len(rebuilt)} days in {time.perf_counter() - t0:.1f} s, "
              f"{facts_bytes / 1e6:,.0f} MB on disk")
        new = fresh_rules(data)
        api = api_latency(data, {"common word": {"text": COMMON_WORD}}, 10, booted=True)["common word"]
        print(f"history: facts files: a fresh worker's rules in {new['build_s'] * 1000:,.0f} ms "
              f"({new['facts']:,} facts, {new['private_mb']:,.0f} MB private), a page of 100 checked in "
              f"{new['page_ms']:.1f} ms; a booted fresh worker's first search {api['first_ms']:,.0f} ms, "
              f"then p50 {api['p50_ms']:,.0f} ms   target: first search < 1 s")
        if days > parquet_up_to:
            continue
        aside = work / "facts-aside"
        hiding_facts.facts_root(data).rename(aside)
        try:
            old = fresh_rules(data)
            api = api_latency(data, {"common word": {"text": COMMON_WORD}}, 3, booted=True)["common word"]
        finally:
            shutil.rmtree(hiding_facts.facts_root(data), ignore_errors=True)
            aside.rename(hiding_facts.facts_root(data))
        print(f"history: from the Parquet (no facts files): rules in {old['build_s'] * 1000:,.0f} ms "
              f"({old['private_mb']:,.0f} MB private), a page in {old['page_ms']:.1f} ms; first search "
              f"{api['first_ms']:,.0f} ms, then p50 {api['p50_ms']:,.0f} ms")


def print_overlap(tail: int, figures: dict[str, dict[str, dict[str, float]]]) -> None:
    """One line per query: p50 with the hot tier on and off, and their ratio (target: on within 10% of off)."""
    on, off = figures["true"], figures["false"]
    first_on, first_off = next(iter(on.values()))["first_ms"], next(iter(off.values()))["first_ms"]
    print(f"overlap: {tail:,} flushed events still buffered; a fresh API's first search {first_on:.0f} ms hot on, "
          f"{first_off:.0f} ms off")
    for name in on:
        ratio = on[name]["p50_ms"] / off[name]["p50_ms"]
        print(f"overlap: {name:13} p50 hot on {on[name]['p50_ms']:7.1f} ms, off {off[name]['p50_ms']:7.1f} ms: "
              f"{ratio:.2f}x   target <= 1.10x")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ingest-events", type=int, default=300_000)
    parser.add_argument("--day-events", type=int, default=8_100_000)
    parser.add_argument("--skip-search", action="store_true")
    parser.add_argument("--freshness-seconds", type=float, default=60, help="length of the freshness run (0 = skip)")
    parser.add_argument("--freshness-rate", type=int, default=1000, help="simulated events/s of the freshness run")
    parser.add_argument("--index-days", type=int, default=7, help="days generated for the index figures")
    parser.add_argument("--index-day-events", type=int, default=1_000_000,
                        help="events per day for the index figures (8.1M is a full day)")
    parser.add_argument("--only-index", action="store_true", help="only the index figures")
    parser.add_argument("--overlap-archive-events", type=int, default=2_000_000,
                        help="events of the day in Parquet for the overlap figures (0 = skip them)")
    parser.add_argument("--overlap-tail", type=int, nargs="*", default=[60_000, 800_000],
                        help="flushed events still in the buffer, one overlap run each")
    parser.add_argument("--only-overlap", action="store_true", help="only the overlap figures")
    parser.add_argument("--history-days", type=int, nargs="*", default=[],
                        help="days of real-rate hiding history behind a day of posts, one measurement each")
    parser.add_argument("--history-day-events", type=int, default=300_000, help="events of the day of posts")
    parser.add_argument("--history-parquet-up-to", type=int, default=60,
                        help="also measure reading the hiding rules from the Parquet up to this many days")
    parser.add_argument("--only-history", action="store_true", help="only the history figures")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="firehose-bench-"))
    try:
        print(f"machine: {os.cpu_count()} cores; work dir {work}")
        if args.history_days:
            bench_history(work, args.history_day_events, args.history_days, 135_000, args.history_parquet_up_to)
        if args.only_history:
            return 0
        if args.overlap_archive_events:
            for tail in args.overlap_tail:
                print_overlap(tail, bench_overlap(work, args.overlap_archive_events, tail))
        if args.only_overlap:
            return 0
        if args.index_days:
            bench_index(work, args.index_days, args.index_day_events)
        if args.only_index:
            return 0
        figures = bench_ingest_flush(work, args.ingest_events)
        print(f"ingest : {figures['ingest_events_per_s']:,.0f} events/s wall "
              f"({figures['ingest_events_per_cpu_s']:,.0f} per ingester CPU-second)   target >= 20,000 on one core")
        print(f"flush  : {figures['flush_events_per_s']:,.0f} events/s (one process)          target >= 100,000")
        print(f"storage: Parquet/raw {figures['ratio_flushed']:.3f} as flushed, {figures['ratio_compacted']:.3f} "
              f"compacted ({figures['raw_json_bytes'] / 1e6:.0f} MB raw)   target <= 0.15")
        if not args.skip_search:
            search = bench_search(work, args.day_events)
            for name, r in search.items():
                print(f"search : {name:13} p50 {r['p50_ms']:7.1f} ms  p95 {r['p95_ms']:7.1f} ms  ({r['rows']} rows)"
                      "   target p50 < 300 ms")
        if args.freshness_seconds > 0:
            fresh = bench_freshness(work, args.freshness_rate, args.freshness_seconds)
            print(f"fresh  : at {args.freshness_rate:,} events/s with no flush, the newest searchable post is "
                  f"{fresh['lag_p50_s']:.2f} s old p50, {fresh['lag_p95_s']:.2f} s p95 ({fresh['samples']} samples)"
                  "   target: searchable within 10 s")
            print(f"fresh  : /search common word from the hot tier ({fresh['hot_posts']:,} posts) p50 "
                  f"{fresh['search_p50_ms']:.1f} ms, p95 {fresh['search_p95_ms']:.1f} ms")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
