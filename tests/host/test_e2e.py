"""End to end on the host: simulator -> ingester -> Redis -> flush -> Parquet on the volume -> /search."""

from __future__ import annotations

import json
import re
import shlex
import urllib.parse

import pytest

from tests.host.conftest import wait_until, why


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

    n = wait_until(lambda: buffered() >= 50, timeout=90)
    context = why(host, "firehose-ingest") + why(host, simulator) if not n else ""
    assert n, f"no events reached the Redis stream {stream} in 90 s{context}"
    out = host.run("systemctl start firehose-flush.service")
    assert out.rc == 0, f"firehose-flush.service failed: {out.stderr}" + why(host, "firehose-flush.service")
    posts = f"{data_dir}/posts"
    found = wait_until(host.run(f"find {shlex.quote(posts)} -name '*.parquet' | head -1").stdout.strip, 30)
    assert found, f"no Parquet file under {posts} after a flush" + why(host, "firehose-flush.service")
    return posts


def test_flush_wrote_parquet_on_the_volume(host, flushed, mount_path):
    out = host.run(f"find {shlex.quote(flushed)} -name '*.parquet' -size +0")
    files = out.stdout.split()
    assert files, f"no Parquet files under {flushed}"
    assert all(re.search(r"/date=\d{4}-\d{2}-\d{2}/", f) for f in files), files
    assert host.run(f"findmnt -n -o TARGET --target {shlex.quote(flushed)}").stdout.strip() == mount_path


def test_flush_metrics_reach_node_exporter(host, flushed):
    def metric() -> bool:
        out = host.run("curl -fsS --max-time 10 http://127.0.0.1:9100/metrics")
        return out.rc == 0 and "firehose_flush" in out.stdout

    assert wait_until(metric, timeout=30), "no firehose_flush_* metric on node exporter's /metrics"


def test_search_finds_flushed_posts(host, proxy, flushed, venv_bin):
    sql = (
        f"select text, uri from read_parquet('{flushed}/**/*.parquet', hive_partitioning=true) "
        "where regexp_matches(text, '[A-Za-z]{5,}') order by time_us desc limit 20"
    )
    code = f"import duckdb, json; print(json.dumps(duckdb.sql({sql!r}).fetchall()))"
    out = host.run(f"{venv_bin}/python -c {shlex.quote(code)}")
    assert out.rc == 0, f"reading the posts with DuckDB on the host failed: {out.stderr}"
    rows = json.loads(out.stdout)
    assert rows, "the flushed posts hold no text with a word to search for"
    text, _uri = rows[0]
    word = max(re.findall(r"[A-Za-z]{5,}", text), key=len)
    url = "/search?" + urllib.parse.urlencode({"text": word})

    def search():
        status, _, body = proxy.get(url)
        if status != 200:
            return None
        data = json.loads(body)
        return data if data.get("results") else None

    data = wait_until(search, timeout=60, interval=2)
    status, _, body = proxy.get(url)
    assert data, f"GET {url} found nothing within 60 s (last: {status} {body[:500]!r})" + why(host, "firehose-api")
    assert data["meta"]["count"] >= 1
    for r in data["results"]:
        assert {"timestamp", "username", "text", "uri", "did"} <= set(r), sorted(r)
        assert word.lower() in r["text"].lower(), (word, r["text"])
    assert len(data["results"]) <= 50


def test_export_streams_csv(host, proxy, flushed):
    status, headers, body = proxy.get("/export?" + urllib.parse.urlencode({"limit": 5}))
    assert status == 200, f"/export -> {status}: {body[:300]!r}" + why(host, "firehose-api")
    assert "csv" in headers.get("content-type", ""), headers
    assert body.splitlines(), "empty CSV"
