"""`make run`: the whole pipeline on this machine starts, answers searches, and stops cleanly on Ctrl-C."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import dns.message
import dns.query
import duckdb
import redis

from firehose.simulator.identity import handle_for
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
         "--sim-port", str(sim), "--sim-dns-port", str(free_port()), "--flush-interval", "2", "--sim-rate", "500"],
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


def children_of(pid: int) -> dict[str, dict[str, str]]:
    """The environment of every live child process of `pid`, read from /proc, by command line.

    redis-server is left out: it writes its process title over the memory /proc/<pid>/environ shows.
    """
    found = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            if int(stat.read_text().rsplit(")", 1)[1].split()[1]) != pid:
                continue
            cmdline = (stat.parent / "cmdline").read_bytes().replace(b"\0", b" ").decode()
            raw = (stat.parent / "environ").read_bytes().decode()
        except (OSError, IndexError, ValueError):
            continue  # exited while we looked
        if "redis-server" not in cmdline:
            found[cmdline] = dict(v.split("=", 1) for v in raw.split("\0") if "=" in v)
    return found


def test_dev_stack_passes_the_callers_settings_to_every_child_and_resolves_on_loopback(tmp_path: Path) -> None:
    api, redis_port, sim, dns_port = free_port(), free_port(), free_port(), free_port()
    env = stage_env("redis://unused", tmp_path / "unused", FIREHOSE_API_PAGE_SIZE="3", FIREHOSE_PLC_TIMEOUT="1.5")
    proc = subprocess.Popen(
        [*CLI, "dev", "--state-dir", str(tmp_path / "var"), "--api-port", str(api), "--redis-port", str(redis_port),
         "--sim-port", str(sim), "--sim-dns-port", str(dns_port), "--flush-interval", "600", "--sim-rate", "50"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        deadline = time.monotonic() + 60
        children: dict[str, dict[str, str]] = {}
        while time.monotonic() < deadline and len(children) < 4:  # simulate, ingest, flush, api (and redis)
            time.sleep(0.5)
            children = children_of(proc.pid)
        assert len(children) == 4, list(children)
        for child in children.values():
            assert child["FIREHOSE_API_PAGE_SIZE"] == "3" and child["FIREHOSE_PLC_TIMEOUT"] == "1.5"
            assert child["FIREHOSE_DNS_NAMESERVERS"] == f"127.0.0.1:{dns_port}"
            assert child["FIREHOSE_PLC_URL"] == f"http://127.0.0.1:{sim}/plc"
            assert child["FIREHOSE_WELLKNOWN_ENABLED"] == "false"
        # the simulator answers its handles' _atproto TXT records on the port the children were given
        did = "did:plc:" + "c" * 24
        query = dns.message.make_query(f"_atproto.{handle_for(did)}", "TXT")
        deadline = time.monotonic() + 30
        while True:
            try:
                reply = dns.query.tcp(query, "127.0.0.1", port=dns_port, timeout=5)
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        assert [b"".join(rr.strings) for rr in reply.answer[0]] == [f"did={did}".encode()]
    finally:
        proc.send_signal(signal.SIGINT)
        output, _ = proc.communicate(timeout=90)
    assert proc.returncode == 0, output
