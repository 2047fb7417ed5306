"""`firehose dev`: the whole pipeline on this machine, as `make run` starts it.

Starts, under `--state-dir` (default ./var): a private redis-server (AOF on), the Jetstream simulator (unless
`--jetstream-url` points elsewhere), the ingester, a flush every `--flush-interval` seconds, and the API under
Gunicorn. Each child's log lines are printed with its name in front.

It behaves like the appliance it demonstrates:
- a child that dies is started again after a delay that doubles from `--restart-sec` up to 30 s (systemd's
  Restart=on-failure with RestartSec); a child that stayed up for a minute starts its backoff over;
- Ctrl-C, SIGTERM or SIGHUP (the terminal closed) stops the feed, lets the ingester write what it holds, runs a
  last flush so everything buffered is on disk, then stops the API and Redis;
- if `firehose dev` itself is killed outright (SIGKILL), the kernel kills its children too (`PR_SET_PDEATHSIG`;
  Gunicorn's workers follow their master): nothing is left holding the ports for the next `make run`;
- with `--stop-with-parent` (what `make run` passes), the death of the process that started it (make, killed
  outright) is a SIGTERM: a clean stop.

Every child gets the caller's environment, so any `FIREHOSE_*` setting given to `make run` reaches every process;
`firehose dev` sets only what it owns (see `_child_env`): the Redis URL, data and metrics paths, the API bind and
the Jetstream URL, and, when it runs the simulator, every identity resolver pointed at the simulator on loopback
(PLC directory, DNS on `--sim-dns-port`, XRPC resolveHandle; no HTTPS well-known), so nothing leaves the machine.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from firehose.config import Settings

log = logging.getLogger("firehose.dev")

PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
RESTART_MAX_SECONDS = 30.0  # the longest wait before a restart
STABLE_SECONDS = 60.0  # a child that ran this long counts as healthy again: its next restart waits --restart-sec
POLL_SECONDS = 0.2  # how often the supervisor looks at its children


@dataclass
class Child:
    """A supervised child process: how to start it, the running process and its restart state."""

    name: str
    argv: list[str]
    proc: subprocess.Popen | None = None
    started_at: float = 0.0
    failures: int = 0  # deaths in a row (a run of STABLE_SECONDS or more starts the count over), for the backoff
    restart_at: float | None = None  # when a dead child is due to start again


def configure_parser(parser: argparse.ArgumentParser) -> None:
    """Flags of `firehose dev`."""
    parser.add_argument("--state-dir", type=Path, default=Path("var"), help="where Redis, data and logs live")
    parser.add_argument("--api-port", type=int, default=8080, help="API port on 127.0.0.1 (default 8080)")
    parser.add_argument("--redis-port", type=int, default=6390, help="port of the private redis-server (6390)")
    parser.add_argument("--flush-interval", type=float, default=300, help="seconds between flushes (default 300)")
    parser.add_argument("--jetstream-url", default="", help="ingest from this Jetstream instead of the simulator")
    parser.add_argument("--sim-port", type=int, default=6008, help="simulator port (default 6008)")
    parser.add_argument("--sim-dns-port", type=int, default=6053,
                        help="port (UDP and TCP) of the simulator's DNS server for its handles (default 6053)")
    parser.add_argument("--sim-rate", type=float, default=200, help="simulated events per second (default 200)")
    parser.add_argument("--sim-seed", type=int, default=1, help="simulator seed (default 1)")
    parser.add_argument("--ingest-metrics-port", type=int, default=9101,
                        help="port of the ingester's Prometheus metrics (default 9101; 0 = off)")
    parser.add_argument("--restart-sec", type=float, default=1.0,
                        help="first delay before a dead child is restarted; doubles up to 30 s (default 1)")
    parser.add_argument("--stop-with-parent", action="store_true",
                        help="stop cleanly (as on SIGTERM) when the process that started us dies (make run sets it)")


class Supervisor:
    """Starts children (always from the thread that created it: PR_SET_PDEATHSIG is tied to the forking thread),
    restarts the ones that die, and stops them in data-flow order."""

    def __init__(self, env: dict[str, str], restart_sec: float) -> None:
        self.env = env
        self.restart_sec = restart_sec
        self.children: dict[str, Child] = {}
        self._preexec = die_with_parent(os.getpid())

    def start(self, name: str, argv: list[str]) -> Child:
        """Start a new child called `name`."""
        child = Child(name, argv)
        self.children[name] = child
        self._spawn(child)
        return child

    def _spawn(self, child: Child) -> None:
        child.proc = subprocess.Popen(child.argv, env=self.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                      start_new_session=True,
                                      preexec_fn=self._preexec)  # noqa: PLW1509 (only a prctl call, no locks)
        child.started_at = time.monotonic()
        child.restart_at = None
        threading.Thread(target=_pump, args=(child.name, child.proc), daemon=True).start()
        log.info("started %s (pid %d)", child.name, child.proc.pid)

    def tend(self) -> None:
        """Schedule a restart for every child that died; start the ones whose delay is over."""
        now = time.monotonic()
        for child in self.children.values():
            assert child.proc is not None
            if child.restart_at is None and child.proc.poll() is not None:
                child.failures = 1 if now - child.started_at >= STABLE_SECONDS else child.failures + 1
                delay = restart_delay(self.restart_sec, child.failures)
                child.restart_at = now + delay
                log.warning("%s exited with status %s; restarting it in %.1f s (failure %d in a row)",
                            child.name, child.proc.returncode, delay, child.failures)
            elif child.restart_at is not None and now >= child.restart_at:
                log.warning("restarting %s", child.name)
                self._spawn(child)

    def run_once(self, argv: list[str]) -> None:
        """Run a one-off command to completion (the final flush), dying with us like the children."""
        subprocess.run(argv, env=self.env, check=False, preexec_fn=self._preexec)

    def stop(self, name: str, timeout: float = 20) -> None:
        """SIGTERM the child `name` (if running) and wait for it; SIGKILL after `timeout` seconds."""
        child = self.children.get(name)
        if child is None or child.proc is None or child.proc.poll() is not None:
            return
        child.proc.send_signal(signal.SIGTERM)
        try:
            child.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            log.warning("%s did not stop in %ss; killing it", name, timeout)
            child.proc.kill()
            child.proc.wait()

    def running(self, name: str) -> bool:
        """Whether the child `name` exists and is alive."""
        child = self.children.get(name)
        return child is not None and child.proc is not None and child.proc.poll() is None


def restart_delay(first: float, failures: int) -> float:
    """Seconds to wait after the `failures`-th death in a row: `first`, then doubling, at most 30 s."""
    return min(RESTART_MAX_SECONDS, first * 2 ** min(max(failures - 1, 0), 16))


def die_with_parent(parent: int) -> Callable[[], None]:
    """A Popen `preexec_fn` that has the kernel SIGKILL the child when `parent` dies, even by SIGKILL (Linux
    PR_SET_PDEATHSIG; children are started from the main thread, whose exit is what the kernel watches). SIGKILL,
    not SIGTERM: our death is a crash, every stage is crash-safe (cursor and events are stored atomically), and an
    ingester asked to stop would keep retrying a Redis that is going away with it. libc is resolved here, before
    any fork."""
    prctl = ctypes.CDLL(None, use_errno=True).prctl

    def preexec() -> None:
        prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        if os.getppid() != parent:  # the parent died between fork and prctl: nobody would stop us
            os._exit(1)

    return preexec


def run(args: argparse.Namespace, settings: Settings) -> int:
    """Start everything, restart what dies, stop cleanly on Ctrl-C / SIGTERM / SIGHUP."""
    if args.stop_with_parent:  # `make run` killed outright: we get SIGTERM and stop like on Ctrl-C
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
    state = args.state_dir.resolve()
    for sub in ("redis", "data", "metrics", "prometheus"):
        (state / sub).mkdir(parents=True, exist_ok=True)
    redis_exe = shutil.which("redis-server")
    if redis_exe is None:
        log.error("redis-server is not installed: `apt-get install redis-server` (make run does this for you)")
        return 2
    ports = [(args.redis_port, "--redis-port (make run REDIS_PORT=...)"),
             (args.api_port, "--api-port (make run API_PORT=...)")]
    if not args.jetstream_url:
        ports.append((args.sim_port, "--sim-port (make run SIM_PORT=...)"))
        ports.append((args.sim_dns_port, "--sim-dns-port (make run SIM_DNS_PORT=...)"))
    if args.ingest_metrics_port:
        ports.append((args.ingest_metrics_port, "--ingest-metrics-port (make run INGEST_METRICS_PORT=...)"))
    for port, what in ports:
        if _port_in_use(port):
            log.error("port %d is already in use: stop what listens there or pass another %s", port, what)
            return 2
    jetstream = args.jetstream_url or f"ws://127.0.0.1:{args.sim_port}/subscribe"
    exe = [sys.executable, "-m", "firehose.cli"]
    supervisor = Supervisor(_child_env(state, args, jetstream, os.environ), args.restart_sec)
    stopping = threading.Event()
    # SIGINT explicitly: a background job inherits it ignored. SIGHUP: the terminal closed.
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, lambda *_: stopping.set())
    try:
        supervisor.start("redis", [redis_exe, "--port", str(args.redis_port), "--bind", "127.0.0.1", "--dir",
                                   str(state / "redis"), "--appendonly", "yes", "--appendfsync", "everysec",
                                   "--save", "3600 1", "--maxmemory-policy", "noeviction"])
        _wait_port(args.redis_port)
        if not args.jetstream_url:
            supervisor.start("simulate", [*exe, "simulate", "--host", "127.0.0.1", "--port", str(args.sim_port),
                                          "--rate", str(args.sim_rate), "--seed", str(args.sim_seed),
                                          "--start", "now", "--dns-port", str(args.sim_dns_port)])
            _wait_port(args.sim_port)
        supervisor.start("ingest", [*exe, "ingest"])
        supervisor.start("flush", [*exe, "flush", "--loop", str(args.flush_interval)])
        supervisor.start("api", [os.path.join(os.path.dirname(sys.executable), "gunicorn"), "-c",
                                 "python:firehose.gunicorn_conf", "firehose.api:create_app()"])
        _wait_port(args.api_port, timeout=60)
    except RuntimeError as exc:
        log.error("%s", exc)
        return _shutdown(supervisor, exe, 1)
    print(f"\n  firehose is running. Try:\n    curl 'http://127.0.0.1:{args.api_port}/search?text=the'\n"
          f"    curl 'http://127.0.0.1:{args.api_port}/health'\n"
          f"  Parquet lands in {state / 'data'} every {args.flush_interval:g}s. A process that dies is restarted."
          f"\n  Ctrl-C stops everything.\n", flush=True)
    while not stopping.is_set():
        supervisor.tend()
        stopping.wait(POLL_SECONDS)
    log.info("stopping: feed, ingester, last flush, API, Redis")
    return _shutdown(supervisor, exe, 0)


def _shutdown(supervisor: Supervisor, exe: list[str], status: int) -> int:
    """Stop in data-flow order, with a last flush between the ingester and Redis."""
    for name in ("simulate", "ingest", "flush"):
        supervisor.stop(name)
    if supervisor.running("redis"):
        log.info("final flush of everything buffered")
        supervisor.run_once([*exe, "flush"])
    for name in ("api", "redis"):
        supervisor.stop(name)
    return status


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
        "FIREHOSE_INGEST_METRICS_PORT": str(args.ingest_metrics_port),
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


# Redis' advice to set vm.overcommit_memory=1 (a kernel setting for the whole machine) is for the appliance, whose
# Ansible role sets it; on a development machine it is not ours to change, so the log line is replaced by this.
OVERCOMMIT_NOTE = ("note: Redis advises vm.overcommit_memory=1 (kernel-wide; the appliance sets it, a dev machine "
                   "does not need it)\n")


def _pump(name: str, proc: subprocess.Popen) -> None:
    """Copy a child's output to ours, each line prefixed with the child's name."""
    assert proc.stdout is not None
    for raw in iter(proc.stdout.readline, b""):
        line = raw.decode(errors="replace")
        if "overcommit_memory" in line:
            line = OVERCOMMIT_NOTE
        with contextlib.suppress(OSError):  # our terminal is gone (SIGHUP): keep draining the child
            sys.stdout.write(f"[{name:8}] {line}")
            sys.stdout.flush()


def _port_in_use(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def _wait_port(port: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not _port_in_use(port):
        if time.monotonic() > deadline:
            raise RuntimeError(f"nothing listens on 127.0.0.1:{port} after {timeout}s; see the log lines above")
        time.sleep(0.1)
