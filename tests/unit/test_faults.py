"""Failpoints: typed names, a clear start-up error for an unknown one, and a real SIGKILL at the n-th arrival."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from firehose.config import ConfigError, Settings
from firehose.faults import Failpoint, parse_spec
from tests.support.paths import REPO

CLI = [sys.executable, "-m", "firehose.cli"]


def test_every_point_is_named_by_stage_and_says_what_it_proves() -> None:
    for point in Failpoint:
        assert re.fullmatch(r"(ingest|flush|compact)\.[a-z_]+", point.value), point
        assert point.name == point.value.upper().replace(".", "_")
        assert len(point.proves.split()) >= 5, f"{point.value} needs a sentence on the recovery it proves"


def test_every_point_is_used_by_a_crash_test() -> None:
    """A failpoint that no crash test sets proves nothing."""
    tests = "".join(p.read_text() for p in (REPO / "tests" / "integration").glob("test_*.py"))
    assert [p.value for p in Failpoint if f'"{p.value}' not in tests] == []


@pytest.mark.parametrize(
    ("spec", "expected"),
    [("", (None, 1)), ("flush.after_rename", (Failpoint.FLUSH_AFTER_RENAME, 1)),
     ("compact.after_exchange:3", (Failpoint.COMPACT_AFTER_EXCHANGE, 3))],
)
def test_specs_parse(spec: str, expected: tuple[Failpoint | None, int]) -> None:
    assert parse_spec(spec) == expected
    assert Settings.from_env({"FIREHOSE_FAILPOINT": spec}).failpoint == spec


def test_an_unknown_name_is_a_config_error_listing_the_valid_names() -> None:
    with pytest.raises(ConfigError, match="FIREHOSE_FAILPOINT") as caught:
        Settings.from_env({"FIREHOSE_FAILPOINT": "flush.after_renmae:2"})
    message = str(caught.value)
    assert "'flush.after_renmae'" in message
    assert all(point.value in message for point in Failpoint)


@pytest.mark.parametrize("spec", ["flush.after_rename:0", "flush.after_rename:x", "flush.after_rename:-1"])
def test_a_bad_count_is_a_config_error(spec: str) -> None:
    with pytest.raises(ConfigError, match="whole number >= 1"):
        Settings.from_env({"FIREHOSE_FAILPOINT": spec})


def test_a_stage_refuses_to_start_with_an_unknown_failpoint(tmp_path: Path) -> None:
    env = {"FIREHOSE_FAILPOINT": "ingest.somewhere", "FIREHOSE_DATA_DIR": str(tmp_path), "PATH": "/usr/bin:/bin"}
    done = subprocess.run([*CLI, "flush"], env=env, capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 2
    assert "configuration error" in done.stderr
    assert "valid names: ingest.before_append, ingest.after_append" in done.stderr
    assert not (tmp_path / ".lock").exists()  # nothing ran


def test_the_nth_arrival_at_the_point_kills_the_process() -> None:
    script = (
        "from firehose.faults import Failpoint as P, Failpoints\n"
        "f = Failpoints('flush.after_rename:2')\n"
        "f.reached(P.FLUSH_AFTER_RENAME); print('first', flush=True)\n"
        "f.reached(P.FLUSH_AFTER_BEGIN); print('other point', flush=True)\n"
        "f.reached(P.FLUSH_AFTER_RENAME); print('survived')\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == -9
    assert done.stdout.splitlines() == ["first", "other point"]
