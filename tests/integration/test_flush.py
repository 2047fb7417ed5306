"""Flush and compaction against a real redis-server and real Parquet files, including kill -9 recovery."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import duckdb
import orjson
import pyarrow.parquet as pq
import pytest
from prometheus_client.parser import text_string_to_metric_families

from firehose import index, storage
from firehose.buffer import Buffer
from firehose.compact import Compactor
from firehose.config import Settings
from firehose.flush import Flusher, write_textfile_metrics
from firehose.schema import TABLE_NAMES, TABLES
from tests.support.events import GOLDEN_LINES, synthetic_events
from tests.support.pipeline import all_rows, append, run_stage, stage_env, stage_settings, table_rows
from tests.support.services import RedisServer


def test_golden_events_land_field_for_field(redis_server: RedisServer, tmp_path: Path) -> None:
    settings = stage_settings(redis_server, tmp_path / "data")
    buffer = Buffer.connect(settings)
    buffer.append(GOLDEN_LINES, 1779719010689411)
    result = Flusher(settings, buffer).run_once()
    assert result.events == 10
    rows = all_rows(settings.data_dir)
    assert {t: len(r) for t, r in rows.items()} == {
        "posts": 1, "likes": 1, "reposts": 1, "follows": 1, "blocks": 1, "profiles": 1, "deletes": 1,
        "identity": 1, "account": 1, "records": 1}
    events = [orjson.loads(line) for line in GOLDEN_LINES]
    like, post = events[0], events[1]
    [like_row] = rows["likes"]
    assert like_row["did"] == like["did"]
    assert like_row["time_us"] == like["time_us"]
    assert like_row["cid"] == like["commit"]["cid"]
    assert like_row["subject_uri"] == like["commit"]["record"]["subject"]["uri"]
    assert like_row["created_at"] == like["commit"]["record"]["createdAt"]
    [post_row] = rows["posts"]
    assert post_row["text"] == post["commit"]["record"]["text"]
    assert post_row["reply_root_cid"] == post["commit"]["record"]["reply"]["root"]["cid"]
    [record_row] = rows["records"]
    assert orjson.loads(record_row["raw"]) == events[6]
    [identity_row] = rows["identity"]
    assert identity_row["seq"] == events[7]["identity"]["seq"]
    [account_row] = rows["account"]
    assert account_row["active"] is True
    files = list((settings.data_dir / "posts").glob("date=2026-05-25/*.parquet"))
    assert len(files) == 1
    count = duckdb.sql(f"SELECT count(*) FROM '{settings.data_dir}/posts/**/*.parquet'").fetchall()
    assert count == [(1,)]


def test_flush_acknowledges_and_trims_only_what_it_wrote(redis_server: RedisServer, tmp_path: Path) -> None:
    settings = stage_settings(redis_server, tmp_path / "data", FIREHOSE_FLUSH_TRIM_KEEP_SECONDS="0",
                              FIREHOSE_FLUSH_CHUNK="300")
    buffer = Buffer.connect(settings)
    events = synthetic_events(1000)
    append(buffer, events)
    result = Flusher(settings, buffer).run_once()
    assert [b.events for b in result.batches] == [300, 300, 300, 100]
    assert buffer.unflushed_events() == 0
    assert sum(len(r) for r in all_rows(settings.data_dir).values()) == 1000
    assert buffer.client.xpending(settings.stream_key, settings.flush_group)["pending"] == 0
    assert buffer.length() == 0
    assert Flusher(settings, buffer).run_once().events == 0


def test_replays_within_a_batch_are_written_once(redis_server: RedisServer, tmp_path: Path) -> None:
    settings = stage_settings(redis_server, tmp_path / "data")
    buffer = Buffer.connect(settings)
    append(buffer, GOLDEN_LINES + GOLDEN_LINES[:4], per_entry=7)
    result = Flusher(settings, buffer).run_once()
    assert result.batches[0].duplicates == 4
    assert sum(len(r) for r in all_rows(settings.data_dir).values()) == 10


def test_unparseable_stream_entries_still_land_in_records(redis_server: RedisServer, tmp_path: Path) -> None:
    settings = stage_settings(redis_server, tmp_path / "data")
    buffer = Buffer.connect(settings)
    buffer.append([b"{broken", b'{"kind": "commit"}'], 1)
    Flusher(settings, buffer).run_once()
    raws = sorted(r["raw"] for r in table_rows(settings.data_dir, "records"))
    assert raws == ['{"kind": "commit"}', "{broken"]


@pytest.mark.parametrize(
    "failpoint",
    ["flush.after_begin", "flush.after_rename:1", "flush.after_rename:3", "flush.after_index:1",
     "flush.after_index:2", "flush.before_commit:2", "flush.after_commit:1"],
)
def test_kill_9_during_flush_loses_and_doubles_nothing(redis_server: RedisServer, tmp_path: Path,
                                                       failpoint: str) -> None:
    reference_dir = tmp_path / "reference"
    data_dir = tmp_path / "data"
    events = synthetic_events(3000)
    # reference: the same events flushed without a crash, in a separate Redis database
    ref_settings = stage_settings(redis_server, reference_dir)
    ref_settings = Settings.from_env({"FIREHOSE_REDIS_URL": redis_server.url[:-1] + "1",
                                      "FIREHOSE_DATA_DIR": str(reference_dir), "FIREHOSE_FLUSH_CHUNK": "1000"})
    ref_buffer = Buffer.connect(ref_settings)
    append(ref_buffer, events)
    Flusher(ref_settings, ref_buffer).run_once()

    append(Buffer.connect(stage_settings(redis_server, data_dir)), events)
    env = stage_env(redis_server.url, data_dir, FIREHOSE_FLUSH_CHUNK="1000")
    crashed = run_stage(["flush"], {**env, "FIREHOSE_FAILPOINT": failpoint})
    assert crashed.returncode == -9, crashed.stderr
    rerun = run_stage(["flush"], env)
    assert rerun.returncode == 0, rerun.stderr
    assert all_rows(data_dir) == all_rows(reference_dir)
    assert sum(len(r) for r in all_rows(data_dir).values()) == 3000
    assert not list((data_dir / ".staging").iterdir())
    # the full-text index holds every post once: a redone batch replaced its documents, never doubled them
    days = storage.list_dates(data_dir, "posts")
    assert days and [index.doc_count(data_dir, d) for d in days] == [index.parquet_rows(data_dir, d) for d in days]


def test_compaction_merges_a_day_into_sorted_files(redis_server: RedisServer, tmp_path: Path) -> None:
    settings = stage_settings(redis_server, tmp_path / "data", FIREHOSE_FLUSH_CHUNK="500",
                              FIREHOSE_COMPACT_ROW_GROUP="100")
    buffer = Buffer.connect(settings)
    append(buffer, synthetic_events(2000))
    Flusher(settings, buffer).run_once()
    before = all_rows(settings.data_dir)
    likes_day = settings.data_dir / "likes" / "date=2026-05-24"
    assert len(list(likes_day.glob("*.parquet"))) == 4
    results = Compactor(settings).run(now=dt.datetime(2026, 5, 27, tzinfo=dt.UTC))
    assert {(r.table, r.date) for r in results} >= {("likes", "2026-05-24"), ("likes", "2026-05-25")}
    assert [p.name for p in likes_day.glob("*.parquet")] == ["compact-0000.parquet"]
    assert all_rows(settings.data_dir) == before
    times = [r[0] for r in duckdb.sql(f"SELECT time_us FROM '{likes_day}/*.parquet'").fetchall()]
    assert times == sorted(times)
    # small, time-ordered row groups: what lets a newest-first search stop early
    metadata = pq.ParquetFile(likes_day / "compact-0000.parquet").metadata
    assert metadata.num_row_groups == -(-len(times) // 100)
    # written by the flush's writer with the one policy, at the compaction level
    flushed = pq.ParquetFile(next((settings.data_dir / "posts").glob("date=*/*.parquet"))).metadata
    assert metadata.created_by == flushed.created_by
    assert metadata.schema.to_arrow_schema().equals(TABLES["likes"].schema)
    time_us = metadata.row_group(0).column(metadata.schema.names.index("time_us"))
    assert (time_us.compression, "DELTA_BINARY_PACKED" in time_us.encodings) == ("ZSTD", True)
    did = metadata.row_group(0).column(metadata.schema.names.index("did"))
    assert did.bloom_filter_length is not None and did.bloom_filter_length > 0
    assert Compactor(settings).run(now=dt.datetime(2026, 5, 27, tzinfo=dt.UTC)) == []


def test_compaction_leaves_unfinished_days_alone(redis_server: RedisServer, tmp_path: Path) -> None:
    settings = stage_settings(redis_server, tmp_path / "data", FIREHOSE_FLUSH_CHUNK="500")
    buffer = Buffer.connect(settings)
    append(buffer, synthetic_events(1000))
    Flusher(settings, buffer).run_once()
    results = Compactor(settings).run(now=dt.datetime(2026, 5, 25, 0, 30, tzinfo=dt.UTC))
    assert {r.date for r in results} == set()
    results = Compactor(settings).run(now=dt.datetime(2026, 5, 25, 1, 30, tzinfo=dt.UTC))
    assert {r.date for r in results} == {"2026-05-24"}


@pytest.mark.parametrize("failpoint", ["compact.before_exchange", "compact.after_exchange:3"])
def test_kill_9_during_compaction_loses_and_doubles_nothing(redis_server: RedisServer, tmp_path: Path,
                                                            failpoint: str) -> None:
    data_dir = tmp_path / "data"
    settings = stage_settings(redis_server, data_dir, FIREHOSE_FLUSH_CHUNK="500")
    buffer = Buffer.connect(settings)
    append(buffer, synthetic_events(2000))
    Flusher(settings, buffer).run_once()
    before = all_rows(data_dir)
    env = stage_env(redis_server.url, data_dir)
    dates = ["--date", "2026-05-24", "--date", "2026-05-25"]
    crashed = run_stage(["compact", *dates], {**env, "FIREHOSE_FAILPOINT": failpoint})
    assert crashed.returncode == -9, crashed.stderr
    assert all_rows(data_dir) == before  # readers never see a half-compacted partition
    rerun = run_stage(["compact", *dates], env)
    assert rerun.returncode == 0, rerun.stderr
    assert all_rows(data_dir) == before
    assert not [p for p in (data_dir / ".staging").iterdir() if p.name.startswith("compact-")]


def test_textfile_metrics_are_written(redis_server: RedisServer, tmp_path: Path) -> None:
    metrics = tmp_path / "textfile" / "firehose_flush.prom"
    env = stage_env(redis_server.url, tmp_path / "data", FIREHOSE_FLUSH_METRICS_FILE=str(metrics))
    append(Buffer.connect(stage_settings(redis_server, tmp_path / "data")), GOLDEN_LINES)
    done = run_stage(["flush"], env)
    assert done.returncode == 0, done.stderr
    samples = textfile_samples(metrics)
    assert set(samples) == {(name, ()) for name in FLUSH_GAUGES} | {
        ("firehose_flush_last_rows", (("table", t),)) for t in TABLE_NAMES}  # the names the alert rules use
    assert samples["firehose_flush_last_rows", (("table", "posts"),)] == 1
    assert samples["firehose_flush_last_run_success", ()] == 1
    assert samples["firehose_flush_last_events", ()] == 10
    assert samples["firehose_flush_unflushed_events", ()] == 0
    assert (samples["firehose_flush_last_indexed_posts", ()], samples["firehose_flush_last_unindexed_posts", ()]) \
        == (1, 0)
    succeeded_at = samples["firehose_flush_last_success_timestamp_seconds", ()]
    assert succeeded_at == samples["firehose_flush_last_run_timestamp_seconds", ()] > 0

    write_textfile_metrics(metrics, None, None, ok=False)  # what a failed run writes
    failed = textfile_samples(metrics)
    assert failed["firehose_flush_last_run_success", ()] == 0
    assert failed["firehose_flush_last_success_timestamp_seconds", ()] == succeeded_at
    assert failed["firehose_flush_last_run_timestamp_seconds", ()] >= succeeded_at
    assert "firehose_flush_last_events" not in {name for name, _ in failed}


FLUSH_GAUGES = (
    "firehose_flush_last_run_timestamp_seconds", "firehose_flush_last_success_timestamp_seconds",
    "firehose_flush_last_run_success", "firehose_flush_last_duration_seconds", "firehose_flush_last_batch_max_seconds",
    "firehose_flush_last_events", "firehose_flush_last_duplicates", "firehose_flush_last_bytes",
    "firehose_flush_unflushed_events", "firehose_flush_last_indexed_posts", "firehose_flush_last_unindexed_posts",
)


def textfile_samples(path: Path) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """The gauges of a textfile-collector file, parsed as Prometheus parses them."""
    out = {}
    for family in text_string_to_metric_families(path.read_text()):
        assert family.type == "gauge", family.name
        for sample in family.samples:
            out[sample.name, tuple(sorted(sample.labels.items()))] = sample.value
    return out
