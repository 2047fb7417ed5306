"""Checks of the validation harness itself: accounting, replay bookkeeping, log parsing, summary keys, a tiny run.

`make test-validation` runs them (they are not part of `make test`: the last one runs the whole day pipeline).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from firehose.schema import TABLE_NAMES
from firehose.simulator.clock import Profile
from firehose.simulator.generator import EventGenerator
from firehose.simulator.profiles import PROFILES
from tests.validation import bulk, harness, probe
from tests.validation.accounting import Accounting, expected_rows, table_of
from tests.validation.day import parse_flush_batches
from tests.validation.report import SUMMARY_KEYS, RunResult, summary, write_all
from tests.validation.simulator import replayed_ranges

pytestmark = pytest.mark.validation

START_US = 1_779_667_200_000_000


@pytest.mark.parametrize("profile", tuple(PROFILES))
def test_expected_rows_match_the_kind_sequence(profile: str) -> None:
    gen = EventGenerator(3, START_US, Profile(rate=10.0), network=PROFILES[profile])
    for start, stop in ((0, 2500), (17, 3333), (990, 1010), (0, 0)):
        want = dict.fromkeys(TABLE_NAMES, 0)
        for i in range(start, stop):
            want[table_of(gen.kind_of(i))] += 1
        assert expected_rows(gen, start, stop) == want


@pytest.mark.parametrize("profile", tuple(PROFILES))
def test_expected_rows_match_what_the_flush_writes(tmp_path: Path, profile: str) -> None:
    task = {"day": 0, "lo": 0, "hi": 3000, "seed": 5, "start_us": START_US, "rate": 3000 / 86_400,
            "profile": profile, "data_dir": str(tmp_path)}
    written = bulk.write_day(task)
    gen = bulk.bulk_generator(PROFILES[profile], 5, START_US, 3000 / 86_400)
    counts = probe.count(tmp_path, START_US - 60_000_000, START_US + 86_460_000_000)
    assert counts["rows"] == expected_rows(gen, 0, 3000) == {t: written["rows"].get(t, 0) for t in TABLE_NAMES}
    assert not any(counts["duplicate_keys"].values())
    assert written["raw_bytes"] == sum(len(gen.event_json(i)) for i in range(3000))


def _accounting(stored_delta: int = 0, dup_keys: int = 0) -> Accounting:
    expected = dict.fromkeys(TABLE_NAMES, 10)
    stored = {**expected, "likes": 10 + stored_delta}
    return Accounting(120, 20, expected, stored, {**dict.fromkeys(TABLE_NAMES, 0), "posts": dup_keys})


def test_accounting_passes_only_when_exact() -> None:
    assert _accounting().ok
    assert _accounting().events_stored == 100
    missing = _accounting(stored_delta=-1)
    assert not missing.ok
    assert any("events_stored 99 != events_generated 120 - events_duplicate 20" in p for p in missing.problems())
    assert any("table likes" in p for p in missing.problems())
    assert not _accounting(dup_keys=1).ok


def test_accounting_names_events_never_sent() -> None:
    # a resume without its cursor: the second connection started at the live position, 40 events past the first
    # one's end, so 1000 numbered events came as 960 deliveries; the stored rows match the deliveries
    expected = dict.fromkeys(TABLE_NAMES, 100)
    skipped = Accounting(960, -40, expected, {**expected, "likes": 60}, dict.fromkeys(TABLE_NAMES, 0))
    assert not skipped.ok
    assert any("40 of the 1000 events numbered up to the highest sent were never sent" in p
               for p in skipped.problems())


def test_replayed_ranges() -> None:
    # connection 2 started at 900 after connection 1 ended at 1000; connection 3 at 1900 after 2 ended at 2000
    assert replayed_ranges([0, 900, 1900], [1000, 2000]) == [(900, 1000), (1900, 2000)]
    assert replayed_ranges([0], []) == []
    assert replayed_ranges([0, 1000], [1000]) == []


def test_flush_log_parsing_both_formats() -> None:
    text = ("x INFO firehose.flush: batch 1-0..2-0: 300000 events, 5 duplicates, 11 files, 31599.7 KiB in 5.85s\n"
            "x INFO firehose.flush: batch 3-0..4-0: 200 entries, 0 duplicates, 2 files, 3.5 KiB in 0.01s\n")
    batches = parse_flush_batches(text)
    assert [(b["entries"], b["duplicates"], b["seconds"]) for b in batches] == [(300000, 5, 5.85), (200, 0, 0.01)]


def _result(**overrides: Any) -> RunResult:
    base: dict[str, Any] = dict(
        kind="day", run_id="unit", target="local", path="p", params={"scale": 0.001, "days": 1},
        accounting=_accounting(), raw_json_bytes=1000, parquet_bytes_by_table={"likes": {"2026-05-25": 100}},
        ingest_events_per_s=25_000.0, ingest_note="n",
        flush_batches=[{"entries": 300, "duplicates": 0, "seconds": 0.5}, {"entries": 300, "duplicates": 0,
                                                                          "seconds": 1.5}],
        samples=[{"t": 1.0, "events_added": 0, "length": 0, "events_buffered": 0},
                 {"t": 2.0, "events_added": 50, "length": 1, "events_buffered": 50}],
        queries={"common_word_1d": {"p50": 10.0, "p95": 20.0, "rows": 50},
                 "common_word_1d_cold": {"p50": 100.0, "p95": 200.0, "rows": 50}},
        analytics={"earliest_posters": {"p50": 1.0, "p95": 2.0, "rows": 3, "reps": 20, "sample": [["did", 1]]}},
        peak_rss_mb={"ingest": 50.0}, timings={"ingest_s": 1.0}, machine={"cores": "2"})
    base.update(overrides)
    return RunResult(**base)


def test_summary_has_exactly_the_issue_keys(tmp_path: Path) -> None:
    data = summary(_result())
    assert tuple(k for k in data if k != "extra") == SUMMARY_KEYS
    assert data["storage_ratio"] == 0.1
    assert data["flush_batch_seconds_p50"] == 1.0 and data["flush_batch_seconds_p95"] == 1.5
    assert set(data["query_ms"]["earliest_posters"]) == {"p50", "p95", "rows"}
    out = tmp_path / "unit"
    write_all(_result(), out, tmp_path)
    assert json.loads((out / "summary.json").read_text())["events_stored"] == 100
    assert (tmp_path / "latest").resolve() == out.resolve()
    for name in ("REPORT.md", "ingest_rate.png", "stream_depth.png", "flush_batches.png", "parquet_bytes.png",
                 "query_latency.png"):
        assert (out / name).stat().st_size > 0


@pytest.mark.slow
def test_tiny_local_day_run(tmp_path: Path) -> None:
    """The whole day path on 4.5k events of the real profile: exit 0, exact accounting, every file written."""
    status = harness.main(["day", "--target", "local", "--scale", "0.0001", "--run-id", "tiny",
                           "--results", str(tmp_path / "results"), "--work", str(tmp_path / "work"),
                           "--flush-interval", "2", "--warm-reps", "2", "--cold-reps", "1", "--analytics-reps", "2"])
    out = tmp_path / "results" / "tiny"
    data = json.loads((out / "summary.json").read_text())
    assert status == 0, data["extra"]["accounting_problems"]
    assert data["events_stored"] == data["events_generated"] - data["events_duplicate"] == 4500
    assert data["events_duplicate"] > 0  # the deliberate restarts replayed events
    assert not (tmp_path / "work" / "tiny").exists()  # the data is removed after the run
    assert "Profile real: 45,000,000 events a day" in (out / "REPORT.md").read_text()


@pytest.mark.slow
def test_a_day_run_that_serves_a_deleted_post_fails(tmp_path: Path) -> None:
    """`--inject lose-deletes` deletes the archived deletions after the count: the accounting is still exact, the
    API serves deleted posts, and the run exits 1 naming them (a correctness target, not a speed one)."""
    status = harness.main(["day", "--target", "local", "--scale", "0.001", "--run-id", "lossy", "--inject",
                           "lose-deletes", "--results", str(tmp_path / "results"), "--work", str(tmp_path / "work"),
                           "--flush-interval", "2", "--warm-reps", "1", "--cold-reps", "1", "--analytics-reps", "1"])
    out = tmp_path / "results" / "lossy"
    data = json.loads((out / "summary.json").read_text())
    hidden = data["extra"]["trusted_search"]["hidden"]
    assert data["events_stored"] == data["events_generated"] - data["events_duplicate"]  # the accounting is exact
    assert hidden["served_deleted"] > 0 and hidden["served_doubled"] == 0
    assert data["extra"]["trusted_search"]["fresh_post"]["found"] is True
    assert status == 1
    assert "**NOT MET**" in (out / "REPORT.md").read_text()


@pytest.mark.slow
def test_tiny_catchup_run(tmp_path: Path) -> None:
    """An ingester back from a 72 s outage catches up with the live simulator: every event once, a report."""
    status = harness.main(["catchup", "--hours", "0.02", "--flush-interval", "5", "--follow-seconds", "3",
                           "--run-id", "catchup", "--results", str(tmp_path / "results"), "--work",
                           str(tmp_path / "work")])
    out = tmp_path / "results" / "catchup"
    data = json.loads((out / "summary.json").read_text())
    assert status == 0, data["problems"]
    assert data["backlog_events"] > 20_000 and data["catchup_s"] > 0
    assert data["events_stored"] == data["events_generated"] > data["backlog_events"]  # and the live ones after
    assert data["searches"]["errors"] == 0
    assert "catch-up speed" in (out / "REPORT.md").read_text()


def test_history_report_has_the_index_targets_and_the_growth_plot(tmp_path: Path) -> None:
    queries = {}
    for days, ms in ((1, 20.0), (7, 25.0), (30, 40.0), (90, 60.0)):
        queries[f"common_word_{days}d"] = {"p50": ms, "p95": 2 * ms, "rows": 50}
        queries[f"no_match_{days}d"] = {"p50": 5.0, "p95": ms / 2, "rows": 0}
        queries[f"no_match_{days}d_cold"] = {"p50": 10 * ms, "p95": 20 * ms, "rows": 0}
    ix = {"bytes": 30, "posts_parquet_bytes": 100, "build_seconds_max_whole_day": 2.0, "posts_per_whole_day": 930_000}
    out = tmp_path / "history"
    write_all(_result(kind="history", queries=queries, index=ix), out, tmp_path)
    report = (out / "REPORT.md").read_text()
    assert (out / "search_vs_history.png").stat().st_size > 0
    assert "| index size | <= 35% of the posts Parquet bytes | 30 bytes = 30.0% of 100 | **met** |" in report
    assert "2.0 s scaled to 930k posts) | **met** |" in report
    assert "worst p50 40.0 ms (common_word), worst p95 80.0 ms (common_word)" in report
    assert "| a word with no match over 30 days | < 300 ms | warm p50 5.0 ms, p95 20.0 ms | **met** |" in report
    assert "worst cold p50 400.0 ms (no_match) | **met** |" in report
    assert "worst: common_word, p50 x3.00 from 1 to 90 days (x90 the days)" in report  # 3 <= sqrt(90): met


@pytest.mark.slow
def test_interrupted_history_run_resumes_without_losing_or_doubling(tmp_path: Path) -> None:
    """A history run whose first attempt wrote days 1 and 2 but stopped before recording day 2 as done carries on
    with --resume: day 1 is not generated again, day 2 is redone over its own files (same names, replaced), and
    every event is stored once. (A day is written chunk by chunk, each chunk's files named after its first and
    last event, so an attempt stopped inside a day leaves whole chunks that the redo replaces the same way.)"""
    argv = ["history", "--days", "3", "--scale", "0.00004", "--run-id", "hist", "--results", str(tmp_path / "r"),
            "--work", str(tmp_path / "w"), "--warm-reps", "1", "--cold-reps", "1", "--analytics-reps", "1",
            "--workers", "1"]
    args = harness.parse_args([*argv, "--resume"])
    work = tmp_path / "w" / "hist"
    _, tasks = bulk.plan(args, 3, work / "data")
    progress = bulk.Progress(work, bulk.run_params(args, 3), resume=False)
    progress.save("day-000", bulk.write_day(tasks[0]))
    bulk.write_day(tasks[1])  # the attempt stopped before saving this day's marker
    assert harness.main(argv) == 2  # an unfinished run is never overwritten or mixed with a new one
    assert harness.main([*argv, "--resume"]) == 0
    data = json.loads((tmp_path / "r" / "hist" / "summary.json").read_text())
    assert data["events_stored"] == data["events_generated"] == tasks[-1]["hi"]
    assert not any(data["extra"]["duplicate_keys_by_table"].values())
    assert data["extra"]["index"]["days_indexed"] >= 3 and data["extra"]["index"]["days_out_of_sync"] == 0
    assert {"common_word_1d", "common_word_3d"} <= set(data["query_ms"])
    assert not work.exists()  # a finished run removes its data
