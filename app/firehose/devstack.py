"""`firehose dev`: the whole pipeline on this machine, as `make run` starts it.

Starts, under `--state-dir` (default ./var): a private redis-server (AOF on), the Jetstream simulator (unless
`--jetstream-url` points elsewhere), the ingester, a flush every `--flush-interval` seconds, and the API under
Gunicorn. Each child's log lines are printed with its name in front. Ctrl-C (or SIGTERM) stops the feed, lets the
ingester write what it holds, runs a last flush so everything buffered is on disk, then stops the API and Redis.

Every child gets the caller's environment, so any `FIREHOSE_*` setting given to `make run` reaches every process;
`firehose dev` sets only what it owns (see `_child_env`): the Redis URL, data and metrics paths, the API bind and
the Jetstream URL, and, when it runs the simulator, every identity resolver pointed at the simulator on loopback
(PLC directory, DNS on `--sim-dns-port`, XRPC resolveHandle; no HTTPS well-known), so nothing leaves the machine.
"""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from firehose.config import Settings

log = logging.getLogger("firehose.dev")


@dataclass
class Child:
    """A supervised child process."""

    name: str
    proc: subprocess.Popen


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Flags of `firehose dev`."""
    parser.add_argument("--state-dir", type=Path, default=Path("var"), help="where Redis, data and logs live")
    parser.add_argument("--api-port", type=int, default=8080, help="API port on 127.0.0.1 (default 8080)")
    parser.add_argument("--redis-port", type=int, default=6390, help="port of the private redis-server")
    parser.add_argument("--flush-interval", type=float, default=300, help="seconds between flushes (default 300)")
    parser.add_argument("--jetstream-url", default="", help="ingest from this Jetstream instead of the simulator")
    parser.add_argument("--sim-port", type=int, default=6008, help="simulator port (default 6008)")
    parser.add_argument("--sim-dns-port", type=int, default=6053,
                        help="port (UDP and TCP) of the simulator's DNS server for its handles (default 6053)")
    parser.add_argument("--sim-rate", type=float, default=200, help="simulated events per second (default 200)")
    parser.add_argument("--sim-seed", type=int, default=1, help="simulator seed (default 1)")


def run(args: argparse.Namespace, settings: Settings) -> int:
    """Start everything, supervise, stop cleanly on Ctrl-C; 1 if a child died unexpectedly."""
    state = args.state_dir.resolve()
    for sub in ("redis", "data", "metrics", "prometheus"):
        (state / sub).mkdir(parents=True, exist_ok=True)
    redis_exe = shutil.which("redis-server")
    if redis_exe is None:
        log.error("redis-server is not installed: `apt-get install redis-server` (make run does this for you)")
        return 2
    for port, what in ((args.redis_port, "--redis-port"), (args.api_port, "--api-port")):
        if _port_in_use(port):
            log.error("port %d is already in use: stop what listens there or pass %s", port, what)
            return 2
    jetstream = args.jetstream_url or f"ws://127.0.0.1:{args.sim_port}/subscribe"
    env = _child_env(state, args, jetstream, os.environ)
    exe = [sys.executable, "-m", "firehose.cli"]
    children: list[Child] = []
    stopping = threading.Event()

    def start(name: str, argv: list[str]) -> Child:
        proc = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                start_new_session=True)
        threading.Thread(target=_pump, args=(name, proc), daemon=True).start()
        child = Child(name, proc)
        children.append(child)
        return child

    for sig in (signal.SIGTERM, signal.SIGINT):  # SIGINT explicitly: a background job inherits it ignored
        signal.signal(sig, lambda *_: stopping.set())
    try:
        start("redis", [redis_exe, "--port", str(args.redis_port), "--bind", "127.0.0.1", "--dir",
                        str(state / "redis"), "--appendonly", "yes", "--appendfsync", "everysec",
                        "--save", "3600 1", "--maxmemory-policy", "noeviction"])
        _wait_port(args.redis_port)
        if not args.jetstream_url:
            start("simulate", [*exe, "simulate", "--host", "127.0.0.1", "--port", str(args.sim_port),
                               "--rate", str(args.sim_rate), "--seed", str(args.sim_seed), "--start", "now",
                               "--dns-port", str(args.sim_dns_port)])
            _wait_port(args.sim_port)
        start("ingest", [*exe, "ingest"])
        start("flush", [*exe, "flush", "--loop", str(args.flush_interval)])
        start("api", [os.path.join(os.path.dirname(sys.executable), "gunicorn"), "-c",
                      "python:firehose.gunicorn_conf", "firehose.api:create_app()"])
        _wait_port(args.api_port, timeout=30)
        print(f"\n  firehose is running. Try:\n    curl 'http://127.0.0.1:{args.api_port}/search?text=the'\n"
              f"    curl 'http://127.0.0.1:{args.api_port}/health'\n"
              f"  Parquet lands in {state / 'data'} every {args.flush_interval:g}s. Ctrl-C stops everything.\n",
              flush=True)
        while not stopping.is_set():
            dead = [c for c in children if c.proc.poll() is not None]
            if dead:
                log.error("%s exited with status %s; stopping everything", dead[0].name, dead[0].proc.returncode)
                return _shutdown(children, exe, env, 1)
            stopping.wait(0.5)
    except RuntimeError as exc:
        log.error("%s", exc)
        return _shutdown(children, exe, env, 1)
    log.info("stopping: feed, ingester, last flush, API, Redis")
    return _shutdown(children, exe, env, 0)


def _shutdown(children: list[Child], exe: list[str], env: dict[str, str], status: int) -> int:
    """Stop in data-flow order, with a last flush between the ingester and Redis."""
    by_name = {c.name: c for c in children}
    for name in ("simulate", "ingest", "flush"):
        if name in by_name:
            _stop(by_name[name])
    if "redis" in by_name and by_name["redis"].proc.poll() is None:
        log.info("final flush of everything buffered")
        subprocess.run([*exe, "flush"], env=env, check=False)
    for name in ("api", "redis"):
        if name in by_name:
            _stop(by_name[name])
    return status


def _stop(child: Child, timeout: float = 20) -> None:
    if child.proc.poll() is not None:
        return
    child.proc.send_signal(signal.SIGTERM)
    try:
        child.proc.wait(timeout)
    except subprocess.TimeoutExpired:
        log.warning("%s did not stop in %ss; killing it", child.name, timeout)
        child.proc.kill()
        child.proc.wait()


def _child_env(state: Path, args: argparse.Namespace, jetstream: str, environ: Mapping[str, str]) -> dict[str, str]:
    """The environment of every child: the caller's `environ` (every `FIREHOSE_*` setting passes through), overridden
    only where `firehose dev` owns the value: the ports, paths and URLs of the processes it starts, and, with the
    simulator, the identity resolvers (its accounts exist nowhere else, and nothing may leave the machine)."""
    env = dict(environ)
    env.update({
        "FIREHOSE_REDIS_URL": f"redis://127.0.0.1:{args.redis_port}/0",
        "FIREHOSE_DATA_DIR": str(state / "data"),
        "FIREHOSE_JETSTREAM_URLS": jetstream,
        "FIREHOSE_FLUSH_METRICS_FILE": str(state / "metrics" / "firehose_flush.prom"),
        "FIREHOSE_API_BIND": f"127.0.0.1:{args.api_port}",
        "FIREHOSE_API_METRICS_DIR": str(state / "prometheus"),
        "PYTHONUNBUFFERED": "1",
    })
    if not args.jetstream_url:  # the simulator's accounts exist nowhere else: it resolves them itself, on loopback
        simulator = f"http://127.0.0.1:{args.sim_port}"
        env.update({
            "FIREHOSE_PLC_URL": f"{simulator}/plc",
            "FIREHOSE_RESOLVE_HANDLE_URL": f"{simulator}/xrpc/com.atproto.identity.resolveHandle",
            "FIREHOSE_DNS_NAMESERVERS": f"127.0.0.1:{args.sim_dns_port}",
            "FIREHOSE_WELLKNOWN_ENABLED": "false",  # HTTPS to the handle's host would leave the machine
        })
    return env


def _pump(name: str, proc: subprocess.Popen) -> None:
    """Copy a child's output to ours, each line prefixed with the child's name."""
    assert proc.stdout is not None
    for line in iter(proc.stdout.readline, b""):
        sys.stdout.write(f"[{name:8}] {line.decode(errors='replace')}")
        sys.stdout.flush()


def _port_in_use(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def _wait_port(port: int, timeout: float = 15) -> None:
    deadline = time.monotonic() + timeout
    while not _port_in_use(port):
        if time.monotonic() > deadline:
            raise RuntimeError(f"nothing listens on 127.0.0.1:{port} after {timeout}s; see the log lines above")
        time.sleep(0.1)
