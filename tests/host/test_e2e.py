"""End to end on the host: simulator -> ingester -> Redis -> flush -> Parquet on the volume -> /search."""

from __future__ import annotations

import json
import re
import shlex
import urllib.parse

import pytest
from prometheus_client.parser import text_string_to_metric_families

from firehose.matching import tokens
from tests.support.host import poll_until, why


@pytest.fixture(scope="module")
def venv_bin(host) -> str:
    out = host.run("systemctl show -p ExecStart --value firehose-flush.service").stdout
    m = re.search(r"path=(\S+)", out)
    assert m, f"cannot read ExecStart of firehose-flush.service: {out!r}"
    return m.group(1).rsplit("/", 1)[0]


@pytest.fixture(scope="module")
def simulator(host) -> str:
    out = host.run("systemctl list-units --all --plain --no-legend --type=service 'firehose-sim*'").stdout.split()
    names = [w for w in out if w.endswith(".service")]
    units = host.run("systemctl list-units --all --plain --no-legend 'firehose*'").stdout
    assert names, f"no firehose-sim* service on the host (the test inventory should run the simulator):\n{units}"
    return names[0]


@pytest.fixture(scope="module")
def flushed(host, simulator, redis_cli, env_file, data_dir) -> str:
    """Wait for events in the stream, run one flush, and return the posts directory."""
    assert host.service(simulator).is_running, f"{simulator} is not running" + why(host, simulator)
    assert host.service("firehose-ingest").is_running, "firehose-ingest is not running" + why(host, "firehose-ingest")
    stream = env_file.get("FIREHOSE_STREAM", "firehose:events")

    def buffered() -> int:
        return int(redis_cli("XLEN", stream) or 0)

    n = poll_until(lambda: buffered() >= 50, timeout=90)
    context = why(host, "firehose-ingest") + why(host, simulator) if not n else ""
    assert n, f"no events reached the Redis stream {stream} in 90 s{context}"
    out = host.run("systemctl start firehose-flush.service")
    assert out.rc == 0, f"firehose-flush.service failed: {out.stderr}" + why(host, "firehose-flush.service")
    posts = f"{data_dir}/posts"
    found = poll_until(host.run(f"find {shlex.quote(posts)} -name '*.parquet' | head -1").stdout.strip, 30)
    assert found, f"no Parquet file under {posts} after a flush" + why(host, "firehose-flush.service")
    return posts


def test_flush_wrote_parquet_on_the_volume(host, flushed, mount_path):
    out = host.run(f"find {shlex.quote(flushed)} -name '*.parquet' -size +0")
    files = out.stdout.split()
    assert files, f"no Parquet files under {flushed}"
    assert all(re.search(r"/date=\d{4}-\d{2}-\d{2}/", f) for f in files), files
    assert host.run(f"findmnt -n -o TARGET --target {shlex.quote(flushed)}").stdout.strip() == mount_path


def test_the_flush_built_the_full_text_index_on_the_volume(host, flushed, data_dir, mount_path, venv_bin):
    index = f"{data_dir}/index"
    metas = host.run(f"find {shlex.quote(index)} -path '*/date=*/meta.json'").stdout.split()
    assert metas, f"no day index (date=*/meta.json) under {index} after a flush" + why(host, "firehose-flush.service")
    assert host.run(f"findmnt -n -o TARGET --target {shlex.quote(index)}").stdout.strip() == mount_path
    # each indexed day holds exactly its Parquet rows (what the API checks before it uses a day's index)
    check = (f"from pathlib import Path; from firehose import index as i; d = Path({data_dir!r}); "
             "print(all(i.doc_count(d, day) == i.parquet_rows(d, day) for day in i.indexed_dates(d)))")
    out = host.run(f"runuser -u firehose -- {venv_bin}/python -c {shlex.quote(check)}")
    assert out.rc == 0 and out.stdout.strip() == "True", out.stdout + out.stderr


def test_the_compaction_timer_verifies_the_index_and_writes_its_metrics(host, flushed, env_file):
    out = host.run("systemctl cat firehose-compact.service")
    assert re.search(r"^ExecStart=\S+/firehose .*reindex$", out.stdout, re.M), out.stdout
    metrics = env_file.get("FIREHOSE_INDEX_METRICS_FILE")
    assert metrics, "FIREHOSE_INDEX_METRICS_FILE is not set in /etc/firehose/firehose.env"
    run = host.run("systemctl start firehose-compact.service")  # today is unfinished: only the index check runs
    assert run.rc == 0, run.stderr + why(host, "firehose-compact.service")
    text = host.file(metrics).content_string
    assert "firehose_index_bytes" in text and "firehose_index_days_out_of_sync 0.0" in text, text


def test_flush_metrics_reach_node_exporter(host, flushed):
    def metric() -> bool:
        out = host.run("curl -fsS --max-time 10 http://127.0.0.1:9100/metrics")
        return out.rc == 0 and "firehose_flush" in out.stdout

    assert poll_until(metric, timeout=30), "no firehose_flush_* metric on node exporter's /metrics"


@pytest.fixture(scope="module")
def word(host, flushed, venv_bin) -> str:
    """A whole word of one of the newest flushed posts, as the API matches words (firehose.matching)."""
    sql = (
        f"select text, uri from read_parquet('{flushed}/**/*.parquet', hive_partitioning=true) "
        "where regexp_matches(text, '[A-Za-z]{5,}') order by time_us desc limit 20"
    )
    code = f"import duckdb, json; print(json.dumps(duckdb.sql({sql!r}).fetchall()))"
    out = host.run(f"{venv_bin}/python -c {shlex.quote(code)}")
    assert out.rc == 0, f"reading the posts with DuckDB on the host failed: {out.stderr}"
    # a whole word as the API matches words (firehose.matching): letters inside a longer token (`abcde1`, a
    # combining mark after them) are not one, and searching for them rightly finds nothing
    words = [max(found, key=len) for text, _uri in json.loads(out.stdout)
             if (found := [t for t in tokens(text) if t.isascii() and t.isalpha() and len(t) >= 5])]
    assert words, "the flushed posts hold no text with a whole word to search for"
    return words[0]


def test_search_finds_flushed_posts(host, proxy, word):
    url = "/search?" + urllib.parse.urlencode({"text": word})

    def search():
        status, _, body = proxy.get(url)
        if status != 200:
            return None
        data = json.loads(body)
        return data if data.get("results") else None

    data = poll_until(search, timeout=60, interval=2)
    status, _, body = proxy.get(url)
    assert data, f"GET {url} found nothing within 60 s (last: {status} {body[:500]!r})" + why(host, "firehose-api")
    assert data["meta"]["count"] >= 1
    for r in data["results"]:
        assert {"timestamp", "username", "text", "uri", "did"} <= set(r), sorted(r)
        assert word.lower() in r["text"].lower(), (word, r["text"])
    assert len(data["results"]) <= 50
    # the flushed day's index was read, not skipped (the API once could not take tantivy's reader lock)
    journal = host.run("journalctl -u firehose-api --no-pager -o cat").stdout
    assert "cannot be read" not in journal, [line for line in journal.splitlines() if "cannot be read" in line][:3]


def test_the_api_reads_an_archived_day_from_its_index(host, proxy, word, data_dir, env_file):
    """Index and scan give the same results, so only `meta.days` and the API's metric tell them apart: a search
    reads the newest flushed day through its index (polled: a flush between renaming its files and committing
    the index makes that day scanned for a moment, `out_of_sync`), and /metrics counts it."""
    listing = host.run(f"ls {shlex.quote(data_dir)}/posts").stdout.split()
    days = sorted(d.removeprefix("date=") for d in listing if re.fullmatch(r"date=\d{4}-\d{2}-\d{2}", d))
    assert days, f"no date partitions under {data_dir}/posts: {listing}"
    newest = days[-1]
    url = "/search?" + urllib.parse.urlencode({"text": word})
    seen: list = []

    def read_by_index() -> bool:
        status, _, body = proxy.get(url)
        seen[:] = [status, json.loads(body).get("meta", {}).get("days") if status == 200 else body[:300]]
        return status == 200 and {"date": newest, "via": "index"} in seen[1]

    journal = "journalctl -u firehose-api --no-pager -o cat | grep 'instead of reading its index' | tail -5"
    assert poll_until(read_by_index, timeout=60, interval=2), (
        f"GET {url} did not read {newest} through its index within 60 s; last answer {seen}; the API's reasons:\n"
        + host.run(journal).stdout + why(host, "firehose-api"))
    bind = env_file.get("FIREHOSE_API_BIND", "127.0.0.1:8080")
    out = host.run(f"curl -fsS --max-time 10 http://{bind}/metrics")
    assert out.rc == 0, f"GET http://{bind}/metrics on the host: {out.stderr}"
    counts = {(s.labels["endpoint"], s.labels["via"], s.labels["reason"]): s.value
              for family in text_string_to_metric_families(out.stdout) if family.name == "firehose_api_search_days"
              for s in family.samples if s.name == "firehose_api_search_days_total"}
    assert counts.get(("/search", "index", ""), 0) >= 1, counts
    assert not counts.get(("/search", "scan", "unreadable")), counts


def test_export_streams_csv(host, proxy, flushed):
    status, headers, body = proxy.get("/export?" + urllib.parse.urlencode({"limit": 5}))
    assert status == 200, f"/export -> {status}: {body[:300]!r}" + why(host, "firehose-api")
    assert "csv" in headers.get("content-type", ""), headers
    assert body.splitlines(), "empty CSV"
