"""The one Parquet writer: policy, row groups, atomic publication inside an explicit data directory."""

from __future__ import annotations

from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from firehose import storage
from firehose.cli import build_parser
from firehose.config import Settings
from firehose.schema import TABLES

SCHEMA = pa.schema([("did", pa.string()), ("time_us", pa.int64()), ("rkey", pa.string()), ("text", pa.string())])


def rows(start: int, n: int) -> pa.Table:
    return pa.table({"did": [f"did:plc:{i % 7}" for i in range(start, start + n)],
                     "time_us": list(range(start, start + n)),
                     "rkey": [f"k{i:06d}" for i in range(start, start + n)],
                     "text": [f"post {i}" for i in range(start, start + n)]}, schema=SCHEMA)


def test_row_groups_are_recut_to_the_policy_size() -> None:
    parts = [rows(0, 5).to_batches()[0], rows(5, 1), rows(6, 17), rows(23, 2)]
    groups = list(storage.row_groups(parts, SCHEMA, 10))
    assert [g.num_rows for g in groups] == [10, 10, 5]
    assert pa.concat_tables(groups).column("time_us").to_pylist() == list(range(25))


def test_a_file_follows_the_policy(tmp_path: Path) -> None:
    path = tmp_path / "f.parquet"
    size = storage.write_file(path, SCHEMA, [rows(0, 250)], 250, storage.ParquetPolicy(5, 100))
    assert size == path.stat().st_size
    metadata = pq.ParquetFile(path).metadata
    assert [metadata.row_group(i).num_rows for i in range(metadata.num_row_groups)] == [100, 100, 50]
    columns = {metadata.schema.column(i).name: metadata.row_group(0).column(i) for i in range(4)}
    assert {c.compression for c in columns.values()} == {"ZSTD"}
    assert "DELTA_BINARY_PACKED" in columns["time_us"].encodings
    assert "DELTA_BYTE_ARRAY" in columns["rkey"].encodings
    assert "RLE_DICTIONARY" in columns["text"].encodings
    assert all(c.is_stats_set for c in columns.values())
    blooms = duckdb.sql(f"SELECT path_in_schema, bloom_filter_length FROM parquet_metadata('{path}') "
                        "WHERE row_group_id = 0 ORDER BY column_id").fetchall()
    assert [(name, length is not None and length > 0) for name, length in blooms] == [
        ("did", True), ("time_us", False), ("rkey", False), ("text", False)]
    probe = duckdb.sql(f"SELECT bloom_filter_excludes FROM parquet_bloom_probe('{path}', 'did', 'did:plc:nobody') "
                       "WHERE row_group_id = 0").fetchall()
    assert probe == [(True,)]


def test_the_stages_differ_only_in_level_and_row_group_size() -> None:
    settings = Settings.from_env({"FIREHOSE_PARQUET_ZSTD_LEVEL": "2", "FIREHOSE_COMPACT_ZSTD_LEVEL": "7",
                                  "FIREHOSE_PARQUET_ROW_GROUP": "1000", "FIREHOSE_COMPACT_ROW_GROUP": "500"})
    flush, compact = storage.ParquetPolicy.for_flush(settings), storage.ParquetPolicy.for_compaction(settings)
    assert (flush, compact) == (storage.ParquetPolicy(2, 1000), storage.ParquetPolicy(7, 500))
    schema = TABLES["posts"].schema
    differing = {k for k, v in flush.writer_options(schema, 10**6).items()
                 if v != compact.writer_options(schema, 10**6)[k]}
    assert differing == {"compression_level", "bloom_filter_options"}  # Bloom filters sized per row group


def test_write_parquet_publishes_atomically_inside_the_data_dir(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    storage.ensure_layout(data_dir)
    path = storage.partition_dir(data_dir, "posts", "2026-05-25") / "a.parquet"
    storage.write_parquet(data_dir, rows(0, 3), path, storage.ParquetPolicy(1, 10))
    assert pq.read_table(path).equals(rows(0, 3))
    assert list(storage.staging_dir(data_dir).iterdir()) == []
    with pytest.raises(ValueError, match="outside the data directory"):
        storage.write_parquet(tmp_path / "elsewhere", rows(0, 3), path, storage.ParquetPolicy(1, 10))



@pytest.mark.parametrize("command", ["compact", "reindex"])
def test_the_day_commands_take_and_check_dates_alike(command: str, tmp_path: Path,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    args = build_parser(command).parse_args([command, "--date", "2026-05-24", "--date", "24.05.2026"])
    assert args.dates == ["2026-05-24", "24.05.2026"]
    assert storage.date_error(["2026-05-24"]) is None
    assert args._module.run(args, Settings(data_dir=tmp_path / "data")) == 2  # before any work
    assert "--date '24.05.2026' is not a YYYY-MM-DD date" in caplog.text
    assert not (tmp_path / "data").exists()
