"""`make run` (`firehose dev`): the whole pipeline on this machine starts, answers searches and stops cleanly on
Ctrl-C; restarts what dies, like the appliance's systemd units; and leaves nothing behind when killed outright."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import dns.message
import dns.query
import duckdb
import pytest
import redis

from firehose.simulator.identity import handle_for
from tests.support.pipeline import CLI, stage_env
from tests.support.services import free_port, wait_until


@dataclass
class DevStack:
    """A `firehose dev` process on free ports, its output going to `log`."""

    proc: subprocess.Popen
    api: int
    redis: int
    sim: int
    metrics: int
    dns: int
    state: Path
    log: Path

    @property
    def ports(self) -> list[int]:
        return [self.api, self.redis, self.sim, self.metrics, self.dns]

    def output(self) -> str:
        return self.log.read_text(errors="replace")


def start_dev(tmp_path: Path, *flags: str, under_shell: bool = False, **settings: str) -> DevStack:
    """`firehose dev` on free ports, with `settings` (FIREHOSE_* variables) in its environment; `under_shell`:
    started by a shell that waits for it, as make starts it (then `proc` is that shell)."""
    api, redis_port, sim, metrics, dns_port = free_port(), free_port(), free_port(), free_port(), free_port()
    state, log = tmp_path / "var", tmp_path / "dev.log"
    env = stage_env("redis://unused", tmp_path / "unused", **settings)
    argv = [*CLI, "dev", "--state-dir", str(state), "--api-port", str(api), "--redis-port", str(redis_port),
            "--sim-port", str(sim), "--ingest-metrics-port", str(metrics), "--sim-dns-port", str(dns_port), *flags]
    if under_shell:
        argv = ["bash", "-c", '"$@" & wait', "make-like", *argv]
    with log.open("wb") as out:
        proc = subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.STDOUT)
    stack = DevStack(proc, api, redis_port, sim, metrics, dns_port, state, log)
    wait_until(lambda: "firehose is running" in stack.output() or proc.poll() is not None, what="the dev stack")
    assert proc.poll() is None, stack.output()
    return stack


def get_json(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=30) as response:
        return json.load(response)


def search(api: int) -> list[dict]:
    """Results of a common word; none while the API or the first flush is not there yet."""
    try:
        return get_json(f"http://127.0.0.1:{api}/search?text=the")["results"]
    except OSError:
        return []


def parent_of(pid: int) -> int | None:
    """The parent pid of a live process; None when it is gone (or a zombie: it holds nothing any more)."""
    try:
        state, ppid = (Path("/proc") / str(pid) / "stat").read_text().rsplit(")", 1)[1].split()[:2]
    except (OSError, ValueError):
        return None
    return None if state == "Z" else int(ppid)


def descendants(root: int) -> dict[int, str]:
    """Every live process below `root` (pid -> command line), from /proc."""
    parent: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and (ppid := parent_of(int(entry.name))) is not None:
            parent[int(entry.name)] = ppid
    found: dict[int, str] = {}
    frontier = [root]
    while frontier:
        pid = frontier.pop()
        for child, ppid in parent.items():
            if ppid == pid and child not in found:
                try:
                    found[child] = (Path("/proc") / str(child) / "cmdline").read_text().replace("\0", " ")
                except OSError:
                    continue
                frontier.append(child)
    return found


def child_pid(stack: DevStack, marker: str) -> int | None:
    """The pid of the dev stack's child whose command line contains `marker`."""
    return next((pid for pid, cmd in descendants(stack.proc.pid).items() if marker in cmd), None)


def events_in(stack: DevStack) -> int:
    """Events the ingester has buffered so far (-1 while Redis is away)."""
    try:
        return int(redis.Redis(host="127.0.0.1", port=stack.redis).hget("firehose:cursor", "events_in") or 0)
    except redis.ConnectionError:
        return -1


def port_open(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def test_dev_stack_runs_end_to_end_and_stops_cleanly(tmp_path: Path) -> None:
    stack = start_dev(tmp_path, "--flush-interval", "2", "--sim-rate", "500")
    try:
        wait_until(lambda: bool(search(stack.api)), what="search results")
        # usernames are handles, from identity events or the simulator's PLC directory, not bare DIDs (the first
        # page may hold only a few whole-word matches whose authors are still being looked up: ask again)
        wait_until(lambda: any(not r["username"].startswith("did:") for r in search(stack.api)),
                   what="a result whose username is a handle")
        assert get_json(f"http://127.0.0.1:{stack.api}/health")["status"] == "ok"
    finally:
        stack.proc.send_signal(signal.SIGINT)
        stack.proc.wait(90)
    output = stack.output()
    assert stack.proc.returncode == 0, output
    assert "final flush" in output
    assert "overcommit_memory=1 (kernel-wide" in output or "overcommit" not in output
    # after the last flush, every event the ingester buffered is in Parquet
    server = subprocess.Popen(["redis-server", "--port", str(stack.redis), "--dir", str(stack.state / "redis"),
                               "--appendonly", "yes"], stdout=subprocess.DEVNULL)
    try:
        wait_until(lambda: events_in(stack) >= 0, what="redis-server with the dev stack's files")
        client = redis.Redis(host="127.0.0.1", port=stack.redis)
        [group] = client.xinfo_groups("firehose:events")
        assert group["lag"] == 0 and group["pending"] == 0
        written = int(client.hget("firehose:cursor", "time_us"))
    finally:
        server.terminate()
        server.wait(10)
    data = stack.state / "data"
    # what a researcher types: the DuckDB CLI over the hive-partitioned glob
    cli = subprocess.run([str(Path(sys.executable).with_name("duckdb")), "-csv", "-noheader", "-c",
                          f"select count(*) from '{data}/posts/**/*.parquet'"], capture_output=True, text=True,
                         check=True)
    assert int(cli.stdout.strip()) > 0
    newest = duckdb.sql(f"SELECT max(time_us) FROM read_parquet('{data}/*/*/*.parquet', union_by_name=true)").fetchall()
    assert newest[0][0] == written


def kill_9_and_see_it_restarted(stack: DevStack, marker: str) -> None:
    """kill -9 the child whose command line contains `marker`; a new one must appear and events keep coming."""
    old = child_pid(stack, marker)
    assert old is not None, f"no {marker} under firehose dev"
    wait_until(lambda: events_in(stack) > 0, what="events flowing")
    os.kill(old, signal.SIGKILL)
    wait_until(lambda: child_pid(stack, marker) not in (None, old), what=f"{marker} restarted")
    wait_until(lambda: events_in(stack) >= 0, what="Redis answering")
    before = events_in(stack)
    wait_until(lambda: events_in(stack) > before + 300, what=f"events flowing after {marker} was killed")
    assert stack.proc.poll() is None


def test_dead_children_are_restarted_and_the_pipeline_keeps_flowing(tmp_path: Path) -> None:
    stack = start_dev(tmp_path, "--flush-interval", "5", "--sim-rate", "300", "--restart-sec", "0.5")
    try:
        kill_9_and_see_it_restarted(stack, "firehose.cli ingest")
        kill_9_and_see_it_restarted(stack, "redis-server")
        children = descendants(stack.proc.pid)
    finally:
        stack.proc.send_signal(signal.SIGHUP)  # the terminal closed: a clean stop, like Ctrl-C
        stack.proc.wait(90)
    output = stack.output()
    assert stack.proc.returncode == 0, output
    assert output.count("restarting it in") >= 2 and "restarting ingest" in output and "restarting redis" in output
    assert "final flush" in output
    assert all(parent_of(pid) is None for pid in children)


@pytest.mark.parametrize("victim", ["firehose dev", "make run"])
def test_killing_dev_or_make_outright_leaves_no_process_and_no_port_behind(tmp_path: Path, victim: str) -> None:
    stack = start_dev(tmp_path, "--flush-interval", "5", "--sim-rate", "100", "--stop-with-parent",
                      under_shell=victim == "make run")
    children = descendants(stack.proc.pid)
    assert len(children) >= 5, children  # redis, simulator, ingester, flush loop, gunicorn (+ its workers)
    stack.proc.send_signal(signal.SIGKILL)
    stack.proc.wait(30)
    wait_until(lambda: all(parent_of(pid) is None for pid in children), what="every child of firehose dev to exit")
    wait_until(lambda: not any(port_open(p) for p in stack.ports), what="the dev stack's ports to be free")


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


def txt_answer(port: int, name: str) -> list[bytes]:
    """The TXT strings the DNS server on 127.0.0.1:`port` answers for `name` (over TCP); [] while it is not up."""
    try:
        reply = dns.query.tcp(dns.message.make_query(name, "TXT"), "127.0.0.1", port=port, timeout=5)
    except OSError:
        return []
    return [b"".join(rr.strings) for rrset in reply.answer for rr in rrset]


def test_dev_stack_passes_the_callers_settings_to_every_child_and_resolves_on_loopback(tmp_path: Path) -> None:
    stack = start_dev(tmp_path, "--flush-interval", "600", "--sim-rate", "50",
                      FIREHOSE_API_PAGE_SIZE="3", FIREHOSE_PLC_TIMEOUT="1.5")
    try:
        wait_until(lambda: len(children_of(stack.proc.pid)) == 4, what="simulate, ingest, flush and api")
        for child in children_of(stack.proc.pid).values():
            assert child["FIREHOSE_API_PAGE_SIZE"] == "3" and child["FIREHOSE_PLC_TIMEOUT"] == "1.5"
            assert child["FIREHOSE_DNS_NAMESERVERS"] == f"127.0.0.1:{stack.dns}"
            assert child["FIREHOSE_PLC_URL"] == f"http://127.0.0.1:{stack.sim}/plc"
            assert child["FIREHOSE_WELLKNOWN_ENABLED"] == "false"
        # the simulator answers its handles' _atproto TXT records on the port the children were given
        did = "did:plc:" + "c" * 24
        wait_until(lambda: txt_answer(stack.dns, f"_atproto.{handle_for(did)}") == [f"did={did}".encode()],
                   what="the simulator's DNS answer")
    finally:
        stack.proc.send_signal(signal.SIGINT)
        stack.proc.wait(timeout=90)
    assert stack.proc.returncode == 0, stack.output()
