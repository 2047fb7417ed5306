"""`make run`: the whole pipeline on this machine starts, answers searches, and stops cleanly on Ctrl-C."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import duckdb
import redis

from tests.conftest import free_port
from tests.integration.pipeline import CLI, stage_env


def get_json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.load(response)


def test_dev_stack_runs_end_to_end_and_stops_cleanly(tmp_path: Path) -> None:
    api, redis_port, sim = free_port(), free_port(), free_port()
    env = stage_env("redis://unused", tmp_path / "unused")
    proc = subprocess.Popen(
        [*CLI, "dev", "--state-dir", str(tmp_path / "var"), "--api-port", str(api), "--redis-port", str(redis_port),
         "--sim-port", str(sim), "--flush-interval", "2", "--sim-rate", "500"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        deadline = time.monotonic() + 60
        found = []
        while time.monotonic() < deadline and not found:
            time.sleep(1)
            try:
                found = get_json(f"http://127.0.0.1:{api}/search?text=the")["results"]
            except OSError:
                continue
        assert found, "no search results within 60 s"
        # usernames are handles, from identity events or the simulator's PLC directory, not bare DIDs
        assert any(not r["username"].startswith("did:") for r in found)
        assert get_json(f"http://127.0.0.1:{api}/health")["status"] == "ok"
    finally:
        proc.send_signal(signal.SIGINT)
        output, _ = proc.communicate(timeout=90)
    assert proc.returncode == 0, output
    assert "firehose is running" in output
    assert "final flush" in output
    # after the last flush, every event the ingester buffered is in Parquet
    server = subprocess.Popen(["redis-server", "--port", str(redis_port), "--dir", str(tmp_path / "var" / "redis"),
                               "--appendonly", "yes"], stdout=subprocess.DEVNULL)
    try:
        client = redis.Redis(port=redis_port)
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        [group] = client.xinfo_groups("firehose:events")
        assert group["lag"] == 0 and group["pending"] == 0
        written = int(client.hget("firehose:cursor", "time_us"))
    finally:
        server.terminate()
        server.wait(10)
    data = tmp_path / "var" / "data"
    # what a researcher types: the DuckDB CLI over the hive-partitioned glob
    cli = subprocess.run([str(Path(sys.executable).with_name("duckdb")), "-csv", "-noheader", "-c",
                          f"select count(*) from '{data}/posts/**/*.parquet'"], capture_output=True, text=True,
                         check=True)
    assert int(cli.stdout.strip()) > 0
    newest = duckdb.sql(f"SELECT max(time_us) FROM read_parquet('{data}/*/*/*.parquet', union_by_name=true)").fetchall()
    assert newest[0][0] == written
