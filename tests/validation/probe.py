"""Measurements taken where the data lives: Redis stream state, process memory, Parquet counts and analytics.

This module imports only the standard library, `redis` and `duckdb` (never `firehose` or the harness), so the
harness can run it unchanged on the test host through SSH (`python - <command> ... < probe.py`, with the
appliance's venv) as well as import it here for TARGET=local. Every command prints one JSON document (or, for
`sample`, one JSON line per interval) on stdout.

Commands:
- `stream REDIS_URL STREAM GROUP`: entries, events added and buffered, first/last ids, the flush group's progress.
- `newest REDIS_URL STREAM`: the newest event in the stream (its JSON as the ingester stored it), or null.
- `sample REDIS_URL STREAM GROUP INTERVAL [name=pid|unit:NAME ...]`: stream state and each process's RSS and
  peak RSS (VmHWM) every INTERVAL seconds, until killed or stdin closes.
- `count DATA_DIR START_US END_US`: rows and duplicate event keys per table, Parquet bytes per (table, date).
- `analytics DATA_DIR REPS BUDGET_S`: the analytical DuckDB queries, timed.
- `username DATA_DIR`: a handle (from identity events) of one of the most active posters, else a DID.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

TABLES = ("posts", "likes", "reposts", "follows", "blocks", "profiles", "deletes", "identity", "account", "records")
COLLECTION_OF = {
    "posts": "app.bsky.feed.post", "likes": "app.bsky.feed.like", "reposts": "app.bsky.feed.repost",
    "follows": "app.bsky.graph.follow", "blocks": "app.bsky.graph.block", "profiles": "app.bsky.actor.profile",
}
EVENT_KEYS = {
    **{t: "did, time_us, rkey, operation, rev" for t in COLLECTION_OF},
    "deletes": "did, time_us, collection, rkey, rev",
    "identity": "did, time_us",
    "account": "did, time_us",
    "records": "did, time_us, kind, collection, rkey, operation, rev",
}
"""Columns that identify an event in each table (the flush's `schema.event_key`, per table)."""


# -- Redis --------------------------------------------------------------------------------------------------------


def stream_state(client: Any, stream: str, group: str, cursor_key: str = "firehose:cursor") -> dict[str, Any]:
    """The buffer's state: stream entries, events appended so far, events not yet flushed, the group's progress.

    Works with both buffer layouts: one event per entry, or one ingest batch per entry with the event counters
    `events_in`/`events_out` in the cursor hash (then `events_added` counts events, not entries).
    """
    state: dict[str, Any] = {"t": time.time(), "length": 0, "entries_added": 0, "events_added": 0,
                             "events_buffered": 0, "first_id": None, "first_events": 1, "last_id": None,
                             "group_lag": None, "group_pending": None, "last_delivered_id": None}
    try:
        info = client.xinfo_stream(stream)
    except Exception:  # no such key yet
        return state
    first = info.get("first-entry")
    state.update(length=int(info["length"]), entries_added=int(info.get("entries-added", 0)),
                 first_id=_text(first[0]) if first else None, last_id=_text(info.get("last-generated-id")))
    if first and first[1] and b"n" in first[1]:
        state["first_events"] = int(first[1][b"n"])
    counters = client.hmget(cursor_key, "events_in", "events_out", "time_us")
    if counters[2] is not None:
        state["cursor_time_us"] = int(counters[2])  # the newest event time stored (freshness lag)
    if counters[0] is not None:
        state["events_added"] = int(counters[0])
        state["events_buffered"] = int(counters[0]) - int(counters[1] or 0)
    else:
        state["events_added"], state["events_buffered"] = state["entries_added"], state["length"]
    for g in client.xinfo_groups(stream):
        if _text(g["name"]) == group:
            state.update(group_lag=g.get("lag"), group_pending=int(g["pending"]),
                         last_delivered_id=_text(g["last-delivered-id"]))
    return state


def drained(state: dict[str, Any]) -> bool:
    """True when the flush group has read and acknowledged every entry of the stream."""
    return (state["last_id"] is not None and state["last_delivered_id"] == state["last_id"]
            and state["group_pending"] == 0)


def newest_event(client: Any, stream: str) -> str | None:
    """The last event of the stream's newest entry (one ingest batch: events joined by newlines), None if empty.

    The flush trims only behind a recent tail, so the newest entry is always there."""
    rows = client.xrevrange(stream, count=1)
    blob = rows[0][1].get(b"e") if rows else None
    return blob.rsplit(b"\n", 1)[-1].decode() if blob else None


def _text(value: Any) -> str | None:
    return value.decode() if isinstance(value, bytes) else (None if value is None else str(value))


def redis_client(url: str) -> Any:
    """A Redis client for `url` (imported lazily: the analytics never need it)."""
    import redis

    return redis.Redis.from_url(url, socket_timeout=10, socket_connect_timeout=5)


# -- processes ----------------------------------------------------------------------------------------------------


def memory_kb(pid: int) -> tuple[int, int] | None:
    """(VmRSS, VmHWM) of a process in KiB, or None if it is gone."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    values = {}
    for line in text.splitlines():
        if line.startswith(("VmRSS:", "VmHWM:")):
            values[line[:5]] = int(line.split()[1])
    return values.get("VmRSS", 0), values.get("VmHWM", 0)


def children(pid: int) -> list[int]:
    """Direct children of a process (from /proc/<pid>/task/*/children)."""
    out: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            out += [int(c) for c in (task / "children").read_text().split()]
        except OSError:
            continue
    return out


def unit_pids(unit: str) -> list[int]:
    """The main PID of a systemd unit and its children (empty when it is not running)."""
    result = subprocess.run(["systemctl", "show", "-p", "MainPID", "--value", unit], capture_output=True,
                            text=True, check=False)
    try:
        main = int(result.stdout.strip() or 0)
    except ValueError:
        return []
    return [main, *children(main)] if main > 0 else []


def process_memory(targets: dict[str, str]) -> dict[str, dict[str, float]]:
    """RSS and peak RSS in MiB per named target (`pid:N`, `tree:N` = N and its children, or `unit:NAME`).

    For several processes under one name (Gunicorn workers), `rss_mb` is their sum and `hwm_mb` the largest
    single peak.
    """
    out = {}
    for name, spec in targets.items():
        kind, _, value = spec.partition(":")
        if kind == "unit":
            pids = unit_pids(value)
        elif kind == "tree":
            pids = [int(value), *children(int(value))]
        else:
            pids = [int(value)]
        mems = [m for m in (memory_kb(p) for p in pids) if m is not None]
        if mems:
            out[name] = {"rss_mb": sum(m[0] for m in mems) / 1024, "hwm_mb": max(m[1] for m in mems) / 1024}
    return out


def sample_forever(redis_url: str, stream: str, group: str, interval: float, *, targets: dict[str, str],
                   emit: Callable[[dict[str, Any]], None], stop: threading.Event) -> None:
    """Emit a stream-state and memory sample every `interval` seconds until `stop` is set."""
    client = redis_client(redis_url)
    while not stop.is_set():
        try:
            sample = stream_state(client, stream, group)
        except Exception as exc:  # Redis restarting: report and keep sampling
            sample = {"t": time.time(), "error": str(exc)}
        sample["memory"] = process_memory(dict(targets))
        emit(sample)
        stop.wait(interval)


# -- Parquet ------------------------------------------------------------------------------------------------------


def table_files(data_dir: Path, table: str) -> list[str]:
    """The live Parquet files of a table (staging excluded)."""
    return sorted(str(p) for p in (data_dir / table).glob("date=*/*.parquet"))


def count(data_dir: Path, start_us: int, end_us: int) -> dict[str, Any]:
    """Rows and duplicate event keys per table within [start_us, end_us), and Parquet bytes per table and date.

    Bytes are per partition directory of every date that has a row in the range (the partitions are whole days).
    """
    import duckdb

    con = duckdb.connect()
    rows: dict[str, int] = {}
    dup: dict[str, int] = {}
    sizes: dict[str, dict[str, int]] = {}
    for table in TABLES:
        files = table_files(data_dir, table)
        if not files:
            rows[table] = dup[table] = 0
            continue
        n, distinct = con.execute(
            f"SELECT count(*), count(DISTINCT ({EVENT_KEYS[table]})) FROM read_parquet($f, hive_partitioning = false)"
            " WHERE time_us >= $s AND time_us < $e", {"f": files, "s": start_us, "e": end_us}).fetchone()
        rows[table], dup[table] = int(n), int(n) - int(distinct)
        dates = {r[0] for r in con.execute(
            "SELECT DISTINCT strftime(make_timestamp(time_us), '%Y-%m-%d') FROM read_parquet($f, "
            "hive_partitioning = false) WHERE time_us >= $s AND time_us < $e",
            {"f": files, "s": start_us, "e": end_us}).fetchall()}
        sizes[table] = {d: sum(p.stat().st_size for p in (data_dir / table / f"date={d}").glob("*.parquet"))
                        for d in sorted(dates)}
    con.close()
    return {"rows": rows, "duplicate_keys": dup, "bytes": sizes}


def pick_username(data_dir: Path) -> str | None:
    """The handle (from identity events) of the account with the most posts among those still active at the end
    (a deactivated or taken-down author's posts are not served), else that account's DID."""
    import duckdb

    if not table_files(data_dir, "posts"):
        return None
    con = duckdb.connect()
    inactive = "SELECT NULL AS did WHERE false"
    if table_files(data_dir, "account"):
        inactive = (f"SELECT did FROM {_source(data_dir, 'account')} GROUP BY did "
                    "HAVING NOT arg_max(active, time_us)")
    top = con.execute(f"SELECT did FROM {_source(data_dir, 'posts')} WHERE did NOT IN ({inactive}) GROUP BY did "
                      "ORDER BY count(*) DESC, did LIMIT 20").fetchall()
    dids = [r[0] for r in top]
    handle = None
    if dids and table_files(data_dir, "identity"):
        row = con.execute(f"SELECT handle FROM {_source(data_dir, 'identity')} WHERE did IN (SELECT unnest($d)) "
                          "AND handle IS NOT NULL ORDER BY time_us DESC LIMIT 1", {"d": dids}).fetchone()
        handle = row[0] if row else None
    con.close()
    return handle or (dids[0] if dids else None)


def _source(data_dir: Path, table: str) -> str:
    return f"read_parquet('{data_dir / table}/date=*/*.parquet', hive_partitioning = false)"


def analytic_queries(data_dir: Path) -> dict[str, str]:
    """The analytical queries over whatever tables have files, as SQL."""
    have = [t for t in TABLES if table_files(data_dir, t)]
    typed = [t for t in COLLECTION_OF if t in have]
    per_collection = [f"SELECT '{COLLECTION_OF[t]}' AS collection FROM {_source(data_dir, t)}" for t in typed]
    per_collection += [f"SELECT collection FROM {_source(data_dir, t)}" for t in ("deletes",) if t in have]
    per_collection += [f"SELECT coalesce(collection, '#' || kind) FROM {_source(data_dir, t)}"
                       for t in ("records",) if t in have]
    per_collection += [f"SELECT '#{t}' FROM {_source(data_dir, t)}" for t in ("identity", "account") if t in have]
    creates = [f"SELECT '{COLLECTION_OF[t]}' AS collection, did FROM {_source(data_dir, t)} "
               "WHERE operation = 'create'" for t in typed]
    creates += [f"SELECT collection, did FROM {_source(data_dir, 'records')} WHERE operation = 'create'"
                for _ in ("records",) if "records" in have]
    by_hour = [f"SELECT '{t}' AS tbl, time_us FROM {_source(data_dir, t)} WHERE operation = 'create'"
               for t in ("posts", "reposts", "likes") if t in have]
    queries = {
        "events_per_collection": f"SELECT collection, count(*) AS events FROM ({' UNION ALL '.join(per_collection)}) "
                                 "GROUP BY 1 ORDER BY 2 DESC",
        "creates_per_collection_distinct_users":
            f"SELECT collection, count(*) AS creates, count(DISTINCT did) AS users FROM "
            f"({' UNION ALL '.join(creates)}) GROUP BY 1 ORDER BY 2 DESC",
        "posts_reposts_likes_by_hour":
            f"SELECT tbl, hour(make_timestamp(time_us)) AS hour_utc, count(*) AS events FROM "
            f"({' UNION ALL '.join(by_hour)}) GROUP BY 1, 2 ORDER BY 1, 2",
    }
    if "posts" in have:
        queries["earliest_posters"] = (f"SELECT did, min(time_us) AS first_post_us FROM {_source(data_dir, 'posts')} "
                                       "GROUP BY did ORDER BY 2, 1 LIMIT 3")
        queries["longest_posting_spans"] = (
            f"SELECT did, (max(time_us) - min(time_us)) / 1e6 AS span_s, count(*) AS posts FROM "
            f"{_source(data_dir, 'posts')} GROUP BY did ORDER BY 2 DESC, 1 LIMIT 3")
    return queries


def analytics(data_dir: Path, reps: int, budget_s: float, threads: int = 0) -> dict[str, Any]:
    """Run each analytical query up to `reps` times (at least 3, fewer when it has used `budget_s`).

    Returns {name: {p50, p95, rows, reps, sample}} with times in ms; `sample` is the first few result rows.
    """
    import duckdb

    con = duckdb.connect(config={"threads": threads} if threads else {})
    out: dict[str, Any] = {}
    for name, sql in analytic_queries(data_dir).items():
        times: list[float] = []
        result: list[Any] = []
        spent = 0.0
        while len(times) < reps and (len(times) < 3 or spent < budget_s):
            t0 = time.perf_counter()
            result = con.execute(sql).fetchall()
            elapsed = time.perf_counter() - t0
            spent += elapsed
            times.append(elapsed * 1000)
        out[name] = {**percentiles(times), "rows": len(result), "reps": len(times),
                     "sample": [[_jsonable(v) for v in row] for row in result[:30]]}
    con.close()
    return out


def _jsonable(value: Any) -> Any:
    return value if isinstance(value, (int, float, str, bool)) or value is None else str(value)


def percentiles(times_ms: list[float]) -> dict[str, float]:
    """p50 (median) and p95 (nearest rank) of a list of durations."""
    ordered = sorted(times_ms)
    if not ordered:
        return {"p50": float("nan"), "p95": float("nan")}
    rank = max(0, min(len(ordered) - 1, -(-95 * len(ordered) // 100) - 1))
    return {"p50": round(statistics.median(ordered), 3), "p95": round(ordered[rank], 3)}


# -- command line (for the test host) ----------------------------------------------------------------------------


def main(argv: list[str]) -> int:
    """Run one command (see the module docstring) and print its JSON."""
    command, args = argv[0], argv[1:]
    if command == "stream":
        print(json.dumps(stream_state(redis_client(args[0]), args[1], args[2])))
    elif command == "newest":
        print(json.dumps(newest_event(redis_client(args[0]), args[1])))
    elif command == "sample":
        targets = dict(a.split("=", 1) for a in args[4:])
        stop = threading.Event()
        threading.Thread(target=lambda: (sys.stdin.read(), stop.set()), daemon=True).start()

        def emit(sample: dict[str, Any]) -> None:
            print(json.dumps(sample), flush=True)

        sample_forever(args[0], args[1], args[2], float(args[3]), targets=targets, emit=emit, stop=stop)
    elif command == "count":
        print(json.dumps(count(Path(args[0]), int(args[1]), int(args[2]))))
    elif command == "username":
        print(json.dumps(pick_username(Path(args[0]))))
    elif command == "analytics":
        print(json.dumps(analytics(Path(args[0]), int(args[1]), float(args[2]))))
    else:
        print(f"unknown command {command!r}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    os.environ.setdefault("TZ", "UTC")
    sys.exit(main(sys.argv[1:]))
