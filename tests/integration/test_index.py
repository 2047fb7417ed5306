"""The full-text index beside the Parquet: built by the flush, rebuilt by compaction and `firehose reindex`,
used by search only while it holds exactly the day's Parquet rows (else that day is scanned), over a real
redis-server, real Parquet files and real tantivy indexes."""

from __future__ import annotations

import datetime as dt
import logging
import shutil
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from firehose import index, storage
from firehose.buffer import Buffer
from firehose.compact import Compactor
from firehose.config import Settings
from firehose.filters import Filters
from firehose.flush import Flusher
from firehose.matching import needles_of
from firehose.search import Searcher
from firehose.sources import DaySource, Sources
from tests.support.archive import post_row, search_settings, write_posts
from tests.support.events import post_event
from tests.support.pipeline import append, run_stage, stage_env, stage_settings
from tests.support.services import RedisServer

DAY = "2026-05-24"
DAY_US = int(dt.datetime(2026, 5, 24, tzinfo=dt.UTC).timestamp() * 1_000_000)
TEXTS = ["Coffee first, then #coffee", "concatenate cats", "東京都庁に行きました", "the cat sat", "decaf coffee?"]


def post_events(texts: list[str], first: int = 0) -> list[bytes]:
    """One create-post event per text, a second apart on DAY, each from its own account."""
    return [post_event(f"did:plc:{i:024d}", f"3kpost{i:06d}", text, DAY_US + 3_600_000_000 + i * 1_000_000)
            for i, text in enumerate(texts, start=first)]


def flushed_texts(redis_server: RedisServer, tmp_path: Path) -> tuple[Settings, Buffer]:
    """TEXTS flushed in one batch into `tmp_path/data` (indexed by the flush); the settings and the buffer."""
    settings = stage_settings(redis_server, tmp_path / "data")
    buffer = Buffer.connect(settings)
    append(buffer, post_events(TEXTS))
    Flusher(settings, buffer).run_once()
    return settings, buffer


def found(searcher: Searcher, text: str) -> list[str]:
    needles, _ = needles_of(text, tuple(text.split()), False)
    return [r["text"] for r in searcher.search(Filters(needles=needles), 50, None, cap=1000).rows]


def test_the_flush_indexes_each_batch_and_search_uses_it(redis_server: RedisServer, tmp_path: Path) -> None:
    settings = stage_settings(redis_server, tmp_path / "data", FIREHOSE_FLUSH_CHUNK="2")
    buffer = Buffer.connect(settings)
    append(buffer, post_events(TEXTS), per_entry=1)
    result = Flusher(settings, buffer).run_once()
    assert len(result.batches) == 3 and sum(b.indexed for b in result.batches) == len(TEXTS)
    data = settings.data_dir
    assert index.doc_count(data, DAY) == index.parquet_rows(data, DAY) == len(TEXTS)
    searcher = Searcher(search_settings(data))
    assert searcher.day_index(DAY) is not None
    assert found(searcher, "coffee") == ["decaf coffee?", "Coffee first, then #coffee"]
    assert found(searcher, "cat") == ["the cat sat"]
    assert found(searcher, "cat*") == ["the cat sat", "concatenate cats"]
    assert found(searcher, "京都") == ["東京都庁に行きました"]


def test_a_missing_index_is_scanned_meanwhile_and_rebuilt(redis_server: RedisServer, tmp_path: Path) -> None:
    settings, buffer = flushed_texts(redis_server, tmp_path)
    data = settings.data_dir
    shutil.rmtree(index.day_dir(data, DAY))
    searcher = Searcher(search_settings(data))
    assert searcher.day_index(DAY) is None  # scanned, same answers
    assert found(searcher, "coffee") == ["decaf coffee?", "Coffee first, then #coffee"]
    # a flush into a day that has files but no index does not start a partial one
    append(buffer, post_events(["more coffee"], first=10))
    Flusher(settings, buffer).run_once()
    assert index.doc_count(data, DAY) is None
    assert found(searcher, "coffee")[0] == "more coffee"
    metrics = tmp_path / "textfile" / "firehose_index.prom"
    done = run_stage(["reindex"], stage_env(redis_server.url, data, FIREHOSE_INDEX_METRICS_FILE=str(metrics)))
    assert done.returncode == 0, done.stderr
    samples = {s.name: s.value for f in text_string_to_metric_families(metrics.read_text()) for s in f.samples}
    assert samples["firehose_index_days"] == 1 and samples["firehose_index_last_rebuilt_days"] == 1
    assert samples["firehose_index_days_out_of_sync"] == samples["firehose_index_unindexed_posts"] == 0
    assert samples["firehose_index_bytes"] == index.index_bytes(data) > 0
    assert index.doc_count(data, DAY) == index.parquet_rows(data, DAY) == len(TEXTS) + 1
    assert searcher.day_index(DAY) is not None
    assert found(searcher, "coffee") == ["more coffee", "decaf coffee?", "Coffee first, then #coffee"]


def test_a_count_mismatch_falls_back_to_the_scan_until_reindexed(tmp_path: Path) -> None:
    data = tmp_path / "data"
    write_posts(data, [post_row("coffee one", DAY, 10), post_row("tea two", DAY, 20)], name="a")
    assert [c.rebuilt for c in index.verify(data)] == [True]
    searcher = Searcher(search_settings(data))
    assert searcher.day_index(DAY) is not None
    write_posts(data, [post_row("coffee three", DAY, 30)], name="b")  # a file the index does not know
    assert searcher.day_index(DAY) is None
    assert found(searcher, "coffee") == ["coffee three", "coffee one"]
    checks = index.verify(data)  # what `firehose reindex` and the compaction timer run
    assert [(c.rows, c.docs, c.rebuilt) for c in checks] == [(3, 3, True)]
    assert searcher.day_index(DAY) is not None
    assert found(searcher, "coffee") == ["coffee three", "coffee one"]
    assert [c.rebuilt for c in index.verify(data)] == [False]  # in sync: nothing to do
    shutil.rmtree(storage.partition_dir(data, "posts", DAY))
    index.verify(data)
    assert index.indexed_dates(data) == []  # an index without posts is removed


def test_compaction_rebuilds_and_swaps_the_day_index(redis_server: RedisServer, tmp_path: Path) -> None:
    settings = stage_settings(redis_server, tmp_path / "data", FIREHOSE_FLUSH_CHUNK="2")
    buffer = Buffer.connect(settings)
    append(buffer, post_events(TEXTS), per_entry=1)
    Flusher(settings, buffer).run_once()
    data = settings.data_dir
    before = index.day_dir(data, DAY).stat().st_ino
    Compactor(settings).run(now=dt.datetime(2026, 5, 27, tzinfo=dt.UTC))
    assert [p.name for p in storage.partition_files(data, "posts", DAY)] == ["compact-0000.parquet"]
    assert index.day_dir(data, DAY).stat().st_ino != before  # a new directory, swapped in
    assert index.doc_count(data, DAY) == len(TEXTS)
    assert not list(storage.staging_dir(data).iterdir())
    searcher = Searcher(search_settings(data))
    assert searcher.day_index(DAY) is not None
    assert found(searcher, "coffee") == ["decaf coffee?", "Coffee first, then #coffee"]
    # late posts after compaction go into the rebuilt index
    append(buffer, post_events(["late coffee"], first=20))
    Flusher(settings, buffer).run_once()
    assert index.doc_count(data, DAY) == index.parquet_rows(data, DAY) == len(TEXTS) + 1


def test_a_broken_index_never_stops_the_flush(redis_server: RedisServer, tmp_path: Path) -> None:
    settings, buffer = flushed_texts(redis_server, tmp_path)
    data = settings.data_dir
    (index.day_dir(data, DAY) / "meta.json").write_text("not json")
    append(buffer, post_events(["more coffee"], first=10))
    result = Flusher(settings, buffer).run_once()
    assert result.rows()["posts"] == 1 and sum(b.indexed for b in result.batches) == 0
    searcher = Searcher(search_settings(data))
    assert searcher.day_index(DAY) is None  # unreadable: scanned
    assert found(searcher, "coffee")[0] == "more coffee"
    assert [(c.rebuilt, c.docs) for c in index.verify(data)] == [(True, len(TEXTS) + 1)]
    assert searcher.day_index(DAY) is not None


def test_each_day_says_how_it_was_read_and_a_scan_why(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    data = tmp_path / "data"
    days = ["2026-05-20", "2026-05-21", "2026-05-22", "2026-05-23"]
    write_posts(data, [post_row(f"coffee on {day}", day, 10) for day in days])
    index.verify(data)
    shutil.rmtree(index.day_dir(data, days[2]))  # missing
    (index.day_dir(data, days[1]) / "meta.json").write_text("not json")  # unreadable (as a lock error would be)
    write_posts(data, [post_row("coffee again", days[0], 20)], name="late")  # out of sync: a file the index lacks
    searcher = Searcher(search_settings(data))
    needles, _ = needles_of("coffee", ("coffee",), False)
    caplog.set_level(logging.WARNING, logger="firehose.index")
    for _ in range(2):  # the reasons are logged once per worker, not per search
        sources = Sources()
        page = searcher.search(Filters(needles=needles), 50, None, cap=1000, sources=sources)
        assert [r["text"] for r in page.rows] == ["coffee on 2026-05-23", "coffee on 2026-05-22",
                                                  "coffee on 2026-05-21", "coffee again", "coffee on 2026-05-20"]
        assert sources.days == [DaySource(days[3], "index"), DaySource(days[2], "scan", index.MISSING),
                                DaySource(days[1], "scan", index.UNREADABLE),
                                DaySource(days[0], "scan", index.OUT_OF_SYNC)]
    logged = [r.getMessage() for r in caplog.records if r.name == "firehose.index"]
    assert len(logged) == 3 and all("instead of reading its index" in m for m in logged), logged
    assert "cannot be read" in logged[1] and "write access" in logged[1] and days[1] in logged[1]
    # a search reads only the days it needs (here for its page and one key past it); one without text scans
    sources = Sources()
    searcher.search(Filters(needles=needles), 1, None, cap=1000, sources=sources)
    assert sources.as_json() == [{"date": days[3], "via": "index"},
                                 {"date": days[2], "via": "scan", "reason": "missing"}]
    sources = Sources()
    searcher.search(Filters(), 50, None, cap=1000, sources=sources)
    assert sorted(d.date for d in sources.days) == days
    assert {(d.via, d.reason) for d in sources.days} == {("scan", "no_text")}
    # the export reads the days the same way
    sources = Sources()
    assert sum(b.num_rows for b in searcher.export(Filters(needles=needles), 100, sources)) == 5
    assert [(d.date, d.via) for d in sources.days] == [(days[3], "index"), *((d, "scan") for d in days[2::-1])]
    index.verify(data)  # what `firehose reindex` runs: every day is read from its index again
    sources = Sources()
    searcher.search(Filters(needles=needles), 50, None, cap=1000, sources=sources)
    assert [(d.date, d.via) for d in sources.days] == [(d, "index") for d in reversed(days)]
