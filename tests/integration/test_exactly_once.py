"""Exactly once across flush, compaction and reindex: every flush failpoint, then a compaction and/or a reindex,
then a normal flush; and random interleavings of all three. Every event is stored once, the index in step."""

from __future__ import annotations

import random
from collections import Counter
from pathlib import Path

import orjson
import pytest

from firehose import index, storage
from firehose.buffer import Buffer
from firehose.faults import Failpoint
from firehose.schema import route
from tests.support.events import synthetic_events
from tests.support.pipeline import all_rows, append, run_stage, stage_env, stage_settings
from tests.support.services import RedisServer

FLUSH_POINTS = [p.value for p in Failpoint if p.value.startswith("flush.")]
DAYS = ["2026-05-24", "2026-05-25"]


def expected_tables(events: list[bytes]) -> Counter[str]:
    """How many rows each table must hold for `events` (all distinct)."""
    return Counter(route(orjson.loads(e), e)[0] for e in events)


def assert_exactly_once(data_dir: Path, events: list[bytes], settled: bool = True) -> None:
    """Every event stored once per table (at most once unless `settled`), each day's index as its posts rows."""
    rows = all_rows(data_dir)
    if settled:
        assert Counter({t: len(r) for t, r in rows.items() if r}) == expected_tables(events)
    keys = [(r["time_us"], r.get("did")) for rs in rows.values() for r in rs]
    assert len(keys) == len(set(keys)), "an event is stored twice"
    for day in storage.list_dates(data_dir, "posts"):
        if index.day_dir(data_dir, day).exists():
            assert index.doc_count(data_dir, day) == index.parquet_rows(data_dir, day), day


def test_redo_after_compaction_stores_each_event_once(redis_server: RedisServer, tmp_path: Path) -> None:
    """The issue's reproduction: flush killed before its commit, the day compacted, flush again."""
    data = tmp_path / "data"
    events = synthetic_events(20000, days=1)
    append(Buffer.connect(stage_settings(redis_server, data)), events)
    env = stage_env(redis_server.url, data, FIREHOSE_FLUSH_CHUNK="50000")
    crashed = run_stage(["flush"], {**env, "FIREHOSE_FAILPOINT": "flush.before_commit"})
    assert crashed.returncode == -9, crashed.stderr
    compacted = run_stage(["compact", "--date", DAYS[0]], env)
    assert compacted.returncode == 0, compacted.stderr
    rerun = run_stage(["flush"], env)
    assert rerun.returncode == 0, rerun.stderr
    assert sum(len(r) for r in all_rows(data).values()) == 20000
    assert_exactly_once(data, events)


@pytest.mark.parametrize("between", [["compact"], ["reindex"], ["compact", "reindex"]])
@pytest.mark.parametrize("failpoint", FLUSH_POINTS)
def test_every_flush_failpoint_then_compaction_or_reindex(redis_server: RedisServer, tmp_path: Path,
                                                          failpoint: str, between: list[str]) -> None:
    """A batch crossing midnight, killed at `failpoint`; only the first day compacted in between."""
    data = tmp_path / "data"
    events = synthetic_events(3000, days=2)
    append(Buffer.connect(stage_settings(redis_server, data)), events)
    env = stage_env(redis_server.url, data, FIREHOSE_FLUSH_CHUNK="1000")
    crashed = run_stage(["flush"], {**env, "FIREHOSE_FAILPOINT": f"{failpoint}:2"})
    assert crashed.returncode == -9, crashed.stderr
    for stage in between:
        args = ["compact", "--date", DAYS[0]] if stage == "compact" else ["reindex", "--all"]
        done = run_stage(args, env)
        assert done.returncode == 0, done.stderr
    rerun = run_stage(["flush"], env)
    assert rerun.returncode == 0, rerun.stderr
    assert_exactly_once(data, events)
    assert not list((data / ".staging").iterdir())


@pytest.mark.parametrize("seed", range(6))
def test_random_interleavings_store_each_event_once(redis_server: RedisServer, tmp_path: Path, seed: int) -> None:
    """Random flush runs (random failpoint and count), compactions (also killed), reindexes and new events."""
    rng = random.Random(seed)
    data = tmp_path / "data"
    buffer = Buffer.connect(stage_settings(redis_server, data))
    env = stage_env(redis_server.url, data, FIREHOSE_FLUSH_CHUNK="400")
    pool = synthetic_events(2400, seed=seed + 10, days=2)
    sent: list[bytes] = []
    for _ in range(5):
        if pool and rng.random() < 0.6:
            n = rng.randrange(200, 900)
            take, pool = pool[:n], pool[n:]
            append(buffer, take)
            sent.extend(take)
        step = rng.choice(["flush", "flush", "compact", "reindex"])
        point = ""
        if step == "flush":
            point = f"{rng.choice(FLUSH_POINTS)}:{rng.randrange(1, 4)}" if rng.random() < 0.7 else ""
            args = ["flush"]
        elif step == "compact":
            point = rng.choice(["", "compact.before_exchange", "compact.after_exchange"])
            args = ["compact", "--date", rng.choice(DAYS)]
        else:
            args = ["reindex", "--all"]
        done = run_stage(args, {**env, "FIREHOSE_FAILPOINT": point})
        assert done.returncode in (0, -9), done.stderr
        assert_exactly_once(data, sent, settled=False)  # after each step: nothing doubled, the index in step
    assert run_stage(["flush"], env).returncode == 0
    assert_exactly_once(data, sent)
