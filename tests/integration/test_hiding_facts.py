"""The hiding facts files through the real flush and compaction (a real redis-server, real Parquet): written with
each batch, rewritten by compaction, healed when missing, and what a fresh API worker reads instead of the
`deletes` and `account` Parquet (which it falls back to whenever a file is stale)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import orjson
import pytest

from firehose import hiding_facts, storage
from firehose.buffer import Buffer
from firehose.compact import Compactor
from firehose.config import Settings
from firehose.flush import Flusher
from firehose.hiding import Hiding
from firehose.hiding_facts import DayFacts
from firehose.hot import HotSnapshot
from firehose.index import uri_key
from firehose.schema import partition_date, post_uri
from tests.support.events import T0, account, delete_post, post_event
from tests.support.services import RedisServer

DAY_US = 86_400_000_000
DAY1, DAY2 = "2026-05-25", "2026-05-26"


@pytest.fixture
def settings(redis_server: RedisServer, tmp_path: Path) -> Settings:
    return Settings.from_env({"FIREHOSE_REDIS_URL": redis_server.url, "FIREHOSE_DATA_DIR": str(tmp_path / "data"),
                              "FIREHOSE_FLUSH_TRIM_KEEP_SECONDS": "0"})


def next_day(event: bytes) -> bytes:
    """`event` one day later."""
    decoded = orjson.loads(event)
    decoded["time_us"] += DAY_US
    return orjson.dumps(decoded)


def hidden(settings: Settings, did: str, rkey: str) -> bool:
    """Whether a fresh worker's rules (nothing buffered) hide the post."""
    rules = Hiding(settings.data_dir, min_interval=0).current(HotSnapshot())
    return not rules.keep_mask([post_uri(did, rkey)], [did])[0]


def flush(settings: Settings, events: list[bytes]) -> None:
    buffer = Buffer.connect(settings)
    buffer.append(events, 1)
    Flusher(settings, buffer).run_once()


def test_each_flush_batch_brings_its_days_facts_up_to_date(settings: Settings) -> None:
    assert partition_date(T0) == DAY1
    flush(settings, [post_event("did:plc:a", "1", "x"), delete_post("did:plc:a", "1"),
                     next_day(account("did:plc:b", False, "takendown"))])
    flush(settings, [delete_post("did:plc:a", "2")])
    for date in (DAY1, DAY2):
        facts = hiding_facts.read(hiding_facts.facts_path(settings.data_dir, date))
        assert facts is not None and dict(facts.covers) == hiding_facts.current_covers(settings.data_dir, date)
    day1 = hiding_facts.read(hiding_facts.facts_path(settings.data_dir, DAY1))
    assert day1 is not None and len(day1.covers["deletes"]) == 2
    assert sorted(day1.deleted.tolist()) == sorted([uri_key(post_uri("did:plc:a", "1")),
                                                    uri_key(post_uri("did:plc:a", "2"))])
    assert hidden(settings, "did:plc:a", "1") and hidden(settings, "did:plc:a", "2")
    assert hidden(settings, "did:plc:b", "9") and not hidden(settings, "did:plc:c", "1")


def test_a_fresh_worker_reads_the_file_and_falls_back_to_the_parquet_when_it_is_stale(settings: Settings) -> None:
    flush(settings, [post_event("did:plc:a", "1", "x"), delete_post("did:plc:a", "1")])
    path = hiding_facts.facts_path(settings.data_dir, DAY1)
    real = hiding_facts.read(path)
    assert real is not None
    # a file that says more than the Parquet (a deletion of a:2) but covers the same files: the worker believes it
    extra = DayFacts(real.covers, np.unique(np.array([*real.deleted.tolist(), uri_key(post_uri("did:plc:a", "2"))],
                                                       dtype=np.int64)))
    hiding_facts.write(settings.data_dir, DAY1, extra)
    assert hidden(settings, "did:plc:a", "2") and hidden(settings, "did:plc:a", "1")
    # the same file naming other files: stale, so the worker reads the day's Parquet (which has a:1 only)
    hiding_facts.write(settings.data_dir, DAY1, DayFacts({"deletes": frozenset({("other.parquet", 1)})}, extra.deleted))
    assert not hidden(settings, "did:plc:a", "2") and hidden(settings, "did:plc:a", "1")
    path.unlink()  # no file at all: the same
    assert not hidden(settings, "did:plc:a", "2") and hidden(settings, "did:plc:a", "1")
    path.write_bytes(b"damaged")
    assert hidden(settings, "did:plc:a", "1")


def test_a_crash_between_a_batchs_parquet_and_its_facts_file(settings: Settings) -> None:
    """The facts file still says what it said before the last batch: readers complete it from the one Parquet file
    it lacks, and the next batch's flush writes it whole again."""
    flush(settings, [post_event("did:plc:a", "1", "x"), delete_post("did:plc:a", "1")])
    path = hiding_facts.facts_path(settings.data_dir, DAY1)
    before = path.read_bytes()
    flush(settings, [delete_post("did:plc:a", "2")])
    path.write_bytes(before)  # as if the flush died after renaming the batch's files
    assert hidden(settings, "did:plc:a", "1") and hidden(settings, "did:plc:a", "2")
    flush(settings, [delete_post("did:plc:a", "3")])
    facts = hiding_facts.read(path)
    assert facts is not None and dict(facts.covers) == hiding_facts.current_covers(settings.data_dir, DAY1)
    assert facts.deleted.size == 3


def test_a_second_compaction_under_the_same_file_name_is_not_mistaken_for_the_first(settings: Settings) -> None:
    """A late batch lands in a compacted day and the flush dies before its facts file (here: the file put back as
    it was); the next compaction writes `compact-0000.parquet` again, now with the late deletion in it."""
    flush(settings, [post_event("did:plc:a", "1", "x"), delete_post("did:plc:a", "1")])
    compact = Compactor(settings)
    compact.run(dates=[DAY1], now=dt.datetime(2026, 5, 28, tzinfo=dt.UTC))
    path = hiding_facts.facts_path(settings.data_dir, DAY1)
    compacted = path.read_bytes()
    flush(settings, [delete_post("did:plc:a", "2")])  # late, into the compacted day
    path.write_bytes(compacted)
    assert hidden(settings, "did:plc:a", "2")  # completed from the late file
    compact.run(dates=[DAY1], now=dt.datetime(2026, 5, 28, tzinfo=dt.UTC))
    names = {name for name, _ in hiding_facts.current_covers(settings.data_dir, DAY1)["deletes"]}
    assert names == {"compact-0000.parquet"}
    facts = hiding_facts.read(path)
    assert facts is not None and dict(facts.covers) == hiding_facts.current_covers(settings.data_dir, DAY1)
    assert facts.deleted.size == 2 and hidden(settings, "did:plc:a", "2") and hidden(settings, "did:plc:a", "1")


def test_a_running_worker_follows_each_batch(settings: Settings) -> None:
    hiding = Hiding(settings.data_dir, min_interval=0)
    flush(settings, [post_event("did:plc:a", "1", "x"), post_event("did:plc:a", "2", "y")])
    assert hiding.current(HotSnapshot()).keep_mask([post_uri("did:plc:a", "1")], ["did:plc:a"]) == [True]
    flush(settings, [delete_post("did:plc:a", "1")])
    flush(settings, [account("did:plc:a", False, "deactivated")])
    rules = hiding.current(HotSnapshot())
    assert rules.is_inactive("did:plc:a")
    flush(settings, [account("did:plc:a", True)])
    rules = hiding.current(HotSnapshot())
    assert rules.keep_mask([post_uri("did:plc:a", "1"), post_uri("did:plc:a", "2")], ["did:plc:a"] * 2) == [False,
                                                                                                           True]


def test_compaction_rewrites_the_facts_and_heals_missing_or_orphaned_ones(settings: Settings) -> None:
    flush(settings, [post_event("did:plc:a", "1", "x"), delete_post("did:plc:a", "1"),
                     next_day(delete_post("did:plc:a", "3"))])
    flush(settings, [account("did:plc:b", False, "suspended")])
    hiding_facts.facts_path(settings.data_dir, DAY2).unlink()
    orphan = hiding_facts.facts_path(settings.data_dir, "2020-01-01")
    orphan.write_bytes(b"left behind")
    Compactor(settings).run(dates=[DAY1], now=dt.datetime(2026, 5, 28, tzinfo=dt.UTC))
    names = {t: {f.name for f in storage.partition_files(settings.data_dir, t, DAY1)} for t in ("deletes", "account")}
    assert all(n and all(name.startswith("compact-") for name in n) for n in names.values())
    for date in (DAY1, DAY2):  # the compacted day rewritten, the missing one healed
        facts = hiding_facts.read(hiding_facts.facts_path(settings.data_dir, date))
        assert facts is not None and dict(facts.covers) == hiding_facts.current_covers(settings.data_dir, date)
    assert not orphan.exists()
    assert hidden(settings, "did:plc:a", "1") and hidden(settings, "did:plc:a", "3") and hidden(settings,
                                                                                               "did:plc:b", "1")
    flush(settings, [delete_post("did:plc:a", "4")])  # a batch after the compaction: its old file is stale
    facts = hiding_facts.read(hiding_facts.facts_path(settings.data_dir, DAY1))
    assert facts is not None and dict(facts.covers) == hiding_facts.current_covers(settings.data_dir, DAY1)
    assert hidden(settings, "did:plc:a", "4") and hidden(settings, "did:plc:a", "1")
