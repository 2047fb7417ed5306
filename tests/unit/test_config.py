"""Settings: one place, documented defaults, clear errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from firehose.config import ConfigError, Settings, markdown_table


def test_defaults_need_no_environment() -> None:
    settings = Settings.from_env({})
    assert settings.rewind_seconds == 5.0
    assert settings.api_page_size == 50
    assert settings.api_max_results == 1000
    assert len(settings.jetstream_urls) == 4


def test_values_are_parsed_to_their_types() -> None:
    settings = Settings.from_env({
        "FIREHOSE_JETSTREAM_URLS": "ws://a/subscribe, ws://b/subscribe",
        "FIREHOSE_COMPRESS": "false",
        "FIREHOSE_FLUSH_CHUNK": "10_000",
        "FIREHOSE_DATA_DIR": "/srv/x",
        "FIREHOSE_FLUSH_METRICS_FILE": "/tmp/m.prom",
        "FIREHOSE_REWIND_SECONDS": "2.5",
    })
    assert settings.jetstream_urls == ("ws://a/subscribe", "ws://b/subscribe")
    assert settings.compress is False
    assert settings.flush_chunk == 10_000
    assert settings.data_dir == Path("/srv/x")
    assert settings.flush_metrics_file == Path("/tmp/m.prom")
    assert settings.rewind_seconds == 2.5


@pytest.mark.parametrize(
    ("env", "names"),
    [
        ({"FIREHOSE_FLUSH_CHUNK": "lots"}, "FIREHOSE_FLUSH_CHUNK"),
        ({"FIREHOSE_COMPRESS": "maybe"}, "FIREHOSE_COMPRESS"),
        ({"FIREHOSE_JETSTREAM_URLS": "http://x"}, "FIREHOSE_JETSTREAM_URLS"),
        ({"FIREHOSE_API_PAGE_SIZE": "0"}, "FIREHOSE_API_PAGE_SIZE"),
        ({"FIREHOSE_PARQUET_ZSTD_LEVEL": "30"}, "FIREHOSE_PARQUET_ZSTD_LEVEL"),
    ],
)
def test_bad_values_name_the_variable(env: dict[str, str], names: str) -> None:
    with pytest.raises(ConfigError, match=names):
        Settings.from_env(env)


def test_reference_table_lists_every_variable() -> None:
    table = markdown_table()
    assert "`FIREHOSE_REDIS_URL`" in table
    assert table.count("\n| `FIREHOSE_") == len(Settings.__dataclass_fields__)


def test_configuration_doc_is_current() -> None:
    from firehose.config import DOC_HEADER
    from tests.support.paths import REPO

    assert (REPO / "docs" / "configuration.md").read_text() == DOC_HEADER + markdown_table(), \
        "docs/configuration.md is stale: run `make config-doc`"
