"""TARGET=host: the day run against the booted test host (`make host-up`, docs/testhost.md).

The host's own services do the work; the simulator runs on this machine and listens on the veth address the host
routes to (`TESTHOST_GATEWAY` in var/test-host/host.env, 10.213.77.1 by default). For the run, the harness
reconfigures the host with runtime-only systemd drop-ins (under /run, so a reboot drops them too):

- `firehose-ingest.service.d/validation.conf`: `EnvironmentFile=/run/firehose-validation.env` (read after the
  appliance's env file, so it wins) with `FIREHOSE_JETSTREAM_URLS=ws://<gateway>:<port>/subscribe` and the run's
  `FIREHOSE_REWIND_SECONDS`;
- `firehose-flush.timer.d/validation.conf`: the timer fires every `--flush-interval` seconds instead of every 5
  minutes (`OnCalendar=` cleared, `OnUnitActiveSec=`);
- the resume cursor's `time_us` field is removed while the ingester is stopped, so it starts at the simulator's
  first event (the buffer's event counters stay).

Afterwards (also after a failure or Ctrl-C) the drop-ins are removed, the saved cursor is put back, and the
ingester and the timer restart as provisioned. Measurements come from the host: the stream and process memory
from `probe.py sample` run there over SSH, the flush batches from its journal, Parquet counts and the analytical
queries from `probe.py` with the appliance's venv, the HTTP suite from this machine against the host's Gunicorn on
127.0.0.1:8080 through an SSH forward (the API is restarted with `systemctl restart firehose-api` before every
cold sample; requests from the host's loopback are not rate-limited), the ingester's counters from its loopback
:9101 over SSH. Commands run as root through sudo: the SSH login is the deploy user.
"""

from __future__ import annotations

import json
import shlex
import socket
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

from tests.validation import probe
from tests.validation.day import Say
from tests.validation.local import metric_total
from tests.validation.procs import Processes, free_port, wait_for_http
from tests.validation.report import machine_info
from tests.validation.simulator import SimSpec, Simulator

HOST_DAY_PATH = (
    "Real pipeline end to end on the booted test host (TARGET=host): `firehose simulate` on this machine (rate 0, "
    "zstd frames) listening on the veth address -> websocket across the test network -> the host's "
    "`firehose-ingest.service` -> its Redis (redis-server.service, AOF) -> `firehose-flush.service` started by "
    "its timer (cadence shortened for the run) -> Parquet on the host's volume -> `firehose-compact.service` -> "
    "the host's `firehose-api.service` (Gunicorn) at <host>:8080 for the HTTP suite; DuckDB on the host (the "
    "appliance venv) for the counts and the analytical queries.")
REDIS_ADMIN_URL_FILE = "/etc/redis/admin.url"

@dataclass(frozen=True)
class RemotePaths:
    """Where the run's files go on the host: under /run (gone after a reboot), or persistent ones that survive it."""

    probe: str
    env: str
    ingest_dropin: str
    timer_dropin: str


RUNTIME_PATHS = RemotePaths("/run/firehose-validation-probe.py", "/run/firehose-validation.env",
                            "/run/systemd/system/firehose-ingest.service.d/validation.conf",
                            "/run/systemd/system/firehose-flush.timer.d/validation.conf")
PERSISTENT_PATHS = RemotePaths("/var/lib/firehose-validation/probe.py", "/var/lib/firehose-validation/validation.env",
                               "/etc/systemd/system/firehose-ingest.service.d/zz-validation.conf",
                               "/etc/systemd/system/firehose-flush.timer.d/zz-validation.conf")
UNITS = {"redis-server": "unit:redis-server", "ingester": "unit:firehose-ingest", "flush": "unit:firehose-flush",
         "api": "unit:firehose-api"}


class HostUnavailable(RuntimeError):
    """The test host is not up or not reachable; the message says what to do."""


def read_host_env(repo: Path) -> dict[str, str]:
    """The facts tests/host/testhost.sh writes for scripts (var/test-host/host.env)."""
    path = repo / "var" / "test-host" / "host.env"
    if not path.exists():
        raise HostUnavailable(f"the test host is not up ({path} is missing): run `make host-up` first "
                              "(docs/testhost.md), or use TARGET=local")
    facts = {}
    for line in path.read_text().splitlines():
        key, sep, value = line.partition("=")
        if sep:
            facts[key.strip()] = value.strip().strip("'\"")
    for key in ("TESTHOST_IP", "TESTHOST_GATEWAY", "TESTHOST_SSH_KEY"):
        if key not in facts:
            raise HostUnavailable(f"{path} has no {key}; re-create the host with `make host-down host-up`")
    return facts


class Ssh:
    """Commands on the test host over SSH (the key and options of tests/host/testhost.sh), as root: the login is
    the deploy user (root logins are off), every command runs through `sudo -n`. One shared connection
    (ControlMaster), so the run stays under the firewall's per-address rate of new SSH connections."""

    def __init__(self, facts: dict[str, str]) -> None:
        self.ip = facts["TESTHOST_IP"]
        user = facts.get("TESTHOST_SSH_USER", "deploy")
        self.options = ["-i", facts["TESTHOST_SSH_KEY"], "-p", facts.get("TESTHOST_SSH_PORT", "22"),
                        "-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR",
                        "-o", "ConnectTimeout=5", "-o", "BatchMode=yes", "-o", "ControlMaster=auto",
                        "-o", f"ControlPath=/tmp/firehose-validation-{self.ip}-%C", "-o", "ControlPersist=60"]
        self.base = ["ssh", *self.options, f"{user}@{self.ip}"]
        self.sudo = user != "root"
        self._tunnels: list[subprocess.Popen] = []

    def _remote(self, command: str) -> str:
        return f"sudo -n sh -c {shlex.quote(command)}" if self.sudo else command

    def forward(self, remote_port: int) -> int:
        """A local port forwarded to 127.0.0.1:`remote_port` on the host (Gunicorn and the exporters listen on
        loopback only); closed by `close`."""
        local = free_port("127.0.0.1")
        # a connection of its own (ControlPath=none, first: ssh keeps the first value of an option): through the
        # shared master, a forwarding client may hand the forward to the master and exit at once
        tunnel = subprocess.Popen(["ssh", "-o", "ControlPath=none", *self.options, "-N",
                                   "-o", "ExitOnForwardFailure=yes",
                                   "-L", f"127.0.0.1:{local}:127.0.0.1:{remote_port}", self.base[-1]],
                                  stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self._tunnels.append(tunnel)
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and tunnel.poll() is None:
            with socket.socket() as probe_socket:
                if probe_socket.connect_ex(("127.0.0.1", local)) == 0:
                    return local
            time.sleep(0.1)
        raise HostUnavailable(f"the SSH forward to the host's 127.0.0.1:{remote_port} did not come up")

    def close(self) -> None:
        """Stop the forwards."""
        for tunnel in self._tunnels:
            tunnel.terminate()
            tunnel.wait(10)
        self._tunnels.clear()

    def run(self, command: str, check: bool = True, stdin: bytes | None = None, timeout: float = 600) -> str:
        result = subprocess.run([*self.base, self._remote(command)], input=stdin, capture_output=True,
                                timeout=timeout, check=False)
        if check and result.returncode != 0:
            raise RuntimeError(f"on the test host: `{command}` failed ({result.returncode}): "
                               f"{result.stderr.decode(errors='replace').strip()[-500:]}")
        return result.stdout.decode(errors="replace")

    def popen(self, command: str) -> subprocess.Popen:
        return subprocess.Popen([*self.base, self._remote(command)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                stderr=subprocess.DEVNULL)


class HostApi:
    """The host's API; `restart()` restarts firehose-api.service and waits until it answers."""

    def __init__(self, ssh: Ssh, port: int) -> None:
        self.ssh = ssh
        self.base_url = f"http://127.0.0.1:{ssh.forward(port)}"

    def restart(self) -> None:
        self.ssh.run("systemctl restart firehose-api.service")
        wait_for_http(f"{self.base_url}/openapi.json", timeout=120)
        time.sleep(0.3)


class HostDayTarget:
    """The day run's pipeline on the test host (see the module docstring)."""

    flush_note = "the host's firehose-flush.timer, every {interval} s for the run (provisioned: every 5 minutes)"

    def __init__(self, repo: Path, logs: Path, say: Say, paths: RemotePaths = RUNTIME_PATHS) -> None:
        facts = read_host_env(repo)
        self.paths = paths
        self.ssh = Ssh(facts)
        self.sim_host = facts["TESTHOST_GATEWAY"]
        self.logs = logs
        self.say = say
        self.env: dict[str, str] = {}
        self.python = "/opt/firehose/current/venv/bin/python"
        self.saved_cursor: str | None = None
        self.configured = False
        self.started_at = time.time()
        self._samples: list[dict[str, Any]] = []
        self._sampler: subprocess.Popen | None = None
        self._reader: threading.Thread | None = None
        self._hard_restart = False
        self.admin_url = ""

    @classmethod
    def open(cls, repo: Path, logs: Path, say: Say, paths: RemotePaths = RUNTIME_PATHS) -> HostDayTarget:
        """Check the host is up, read its env file and copy the probe there (`paths`: where the run's files go)."""
        target = cls(repo, logs, say, paths)
        try:
            target.ssh.run("systemctl is-active --quiet firehose-ingest.service firehose-api.service "
                           "redis-server.service", timeout=30)
        except (RuntimeError, subprocess.TimeoutExpired) as exc:
            raise HostUnavailable(f"the test host at {target.ssh.ip} is not reachable or its services are not "
                                  f"running ({exc}); `make host-status` shows why, `make host-up` boots it") from exc
        target.env = dict(line.split("=", 1) for line in target.ssh.run(
            "cat /etc/firehose/firehose.env").splitlines() if "=" in line and not line.startswith("#"))
        target.admin_url = target.ssh.run(f"cat {REDIS_ADMIN_URL_FILE}").strip()
        target.ssh.run(f"mkdir -p {Path(paths.probe).parent} && cat > {paths.probe}",
                       stdin=Path(probe.__file__).read_bytes())
        return target

    def __enter__(self) -> HostDayTarget:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.close()

    # -- configuration ---------------------------------------------------------------------------------------------

    @property
    def redis_url(self) -> str:
        return self.env.get("FIREHOSE_REDIS_URL", "redis://127.0.0.1:6379/0")

    @property
    def data_dir(self) -> str:
        return self.env.get("FIREHOSE_DATA_DIR", "/srv/firehose/data")

    def redis_cli(self, args: str, check: bool = True) -> str:
        """redis-cli as the Redis admin user (the app's user may not touch the cursor's fields this way)."""
        return self.ssh.run(f"redis-cli --no-auth-warning -u {shlex.quote(self.admin_url)} {args}", check=check).strip()

    def start(self, sim_url: str, rewind_seconds: float, flush_interval: float) -> None:
        self.flush_note = self.flush_note.format(interval=f"{flush_interval:g}")
        self.started_at = time.time()
        self.configured = True
        self.ssh.run("systemctl stop firehose-ingest.service")
        self.saved_cursor = self.redis_cli("hget firehose:cursor time_us") or None
        script = (
            f"printf 'FIREHOSE_JETSTREAM_URLS={sim_url}\\nFIREHOSE_REWIND_SECONDS={rewind_seconds:g}\\n' "
            f"> {self.paths.env} && mkdir -p {Path(self.paths.ingest_dropin).parent} "
            f"{Path(self.paths.timer_dropin).parent} && "
            f"printf '[Service]\\nEnvironmentFile={self.paths.env}\\n' > {self.paths.ingest_dropin} && "
            f"printf '[Timer]\\nOnCalendar=\\nOnActiveSec=1s\\nOnUnitActiveSec={flush_interval:g}s\\n"
            f"AccuracySec=1s\\n' > {self.paths.timer_dropin} && systemctl daemon-reload && "
            "systemctl restart firehose-flush.timer")
        self.ssh.run(script)
        self.redis_cli("hdel firehose:cursor time_us")
        self._start_sampler()
        self.start_ingester()

    def close(self) -> None:
        """Put the host back as provisioned (drop-ins removed, cursor restored, services restarted)."""
        self.ssh.close()
        if self._sampler is not None:
            try:
                self._sampler.stdin.close()  # type: ignore[union-attr]
                self._sampler.wait(10)
            except (OSError, subprocess.TimeoutExpired):
                self._sampler.kill()
            self._sampler = None
        if not self.configured:
            return
        self.say("restoring the test host's configuration")
        restore = (f"hset firehose:cursor time_us {int(self.saved_cursor)}" if self.saved_cursor
                   else "hdel firehose:cursor time_us")
        self.ssh.run("systemctl stop firehose-ingest.service", check=False)
        self.redis_cli(restore, check=False)
        self.ssh.run(f"rm -f {self.paths.ingest_dropin} {self.paths.timer_dropin} {self.paths.env} && "
                     "systemctl daemon-reload && "
                     "systemctl restart firehose-flush.timer && systemctl start firehose-ingest.service", check=False)
        self.configured = False

    # -- sampling ----------------------------------------------------------------------------------------------

    def _start_sampler(self) -> None:
        targets = " ".join(f"{k}={v}" for k, v in UNITS.items())
        self._sampler = self.ssh.popen(f"{self.python} {self.paths.probe} sample {shlex.quote(self.redis_url)} "
                                       f"firehose:events flush 0.5 {targets}")
        self._reader = threading.Thread(target=self._read_samples, name="host-sampler", daemon=True)
        self._reader.start()

    def _read_samples(self) -> None:
        assert self._sampler is not None and self._sampler.stdout is not None
        for line in self._sampler.stdout:
            try:
                self._samples.append(json.loads(line))
            except json.JSONDecodeError:
                continue

    def stream_state(self) -> dict[str, Any]:
        fresh = [s for s in self._samples[-3:] if "events_added" in s and time.time() - s["t"] < 5]
        if fresh:
            return fresh[-1]
        out = self.ssh.run(f"{self.python} {self.paths.probe} stream {shlex.quote(self.redis_url)} firehose:events "
                           "flush")
        return dict(json.loads(out))

    def newest_event(self) -> str | None:
        return json.loads(self.ssh.run(f"{self.python} {self.paths.probe} newest {shlex.quote(self.redis_url)} "
                                       "firehose:events"))

    def samples(self) -> list[dict[str, Any]]:
        return list(self._samples)

    # -- ingester ----------------------------------------------------------------------------------------------

    def ingest_duplicates(self) -> int:
        port = self.env.get("FIREHOSE_INGEST_METRICS_PORT", "9101")
        page = self.ssh.run(f"curl -fsS --max-time 5 http://127.0.0.1:{port}/metrics", check=False)
        return int(metric_total(page, "firehose_ingest_duplicates_total"))

    def ingester_alive(self) -> bool:
        return True  # systemd restarts it (Restart=always); a dead feed ends in the simulator's timeout

    def stop_ingester(self, hard: bool) -> None:
        self._hard_restart = hard
        if hard:
            self.ssh.run("systemctl kill -s SIGKILL firehose-ingest.service")
        else:
            self.ssh.run("systemctl stop firehose-ingest.service")

    def start_ingester(self) -> None:
        """Start the ingester (after a SIGKILL, systemd restarts it by itself: wait for that instead)."""
        if not self._hard_restart:
            self.ssh.run("systemctl start firehose-ingest.service")
        self._hard_restart = False
        deadline = time.monotonic() + 60
        while self.ssh.run("systemctl is-active firehose-ingest.service", check=False).strip() != "active":
            if time.monotonic() > deadline:
                raise RuntimeError("firehose-ingest.service did not become active again within 60 s")
            time.sleep(0.5)

    def finish_ingest(self) -> None:
        self.ssh.run("systemctl stop firehose-ingest.service")

    # -- results -----------------------------------------------------------------------------------------------

    def compact(self) -> float:
        t0 = time.monotonic()
        self.ssh.run("systemctl start firehose-compact.service", timeout=7200)
        return time.monotonic() - t0

    def parquet_bytes_before_compaction(self) -> int | None:
        out = self.ssh.run(f"find {shlex.quote(self.data_dir)} -path '*/date=*' -name '*.parquet' -newermt "
                           f"@{int(self.started_at)} -printf '%s\\n' | awk '{{s+=$1}} END {{print s+0}}'")
        return int(out.strip() or 0)

    def count(self, start_us: int, end_us: int) -> dict[str, Any]:
        return dict(json.loads(self.ssh.run(f"{self.python} {self.paths.probe} count {shlex.quote(self.data_dir)} "
                                            f"{start_us} {end_us}", timeout=3600)))

    def flush_log(self) -> str:
        text = self.ssh.run(f"journalctl -u firehose-flush.service --since @{int(self.started_at)} -o cat "
                            "--no-pager")
        (self.logs / "host-flush.log").write_text(text)
        return text

    def api(self) -> HostApi:
        port = int(self.env.get("FIREHOSE_API_BIND", "0.0.0.0:8080").rsplit(":", 1)[1])
        return HostApi(self.ssh, port)

    def username(self) -> str | None:
        return json.loads(self.ssh.run(f"{self.python} {self.paths.probe} username {shlex.quote(self.data_dir)}"))

    def analytics(self, reps: int, budget_s: float) -> dict[str, Any]:
        return dict(json.loads(self.ssh.run(f"{self.python} {self.paths.probe} analytics {shlex.quote(self.data_dir)} "
                                            f"{reps} {budget_s:g}", timeout=7200)))

    def peak_rss_mb(self) -> dict[str, float]:
        peaks: dict[str, float] = {}
        for sample in self._samples:
            for name, mem in sample.get("memory", {}).items():
                peaks[name] = max(peaks.get(name, 0.0), mem["hwm_mb"])
        return {k: round(v, 1) for k, v in sorted(peaks.items())}

    def machine(self) -> dict[str, str]:
        return machine_info(lambda cmd: self.ssh.run(cmd, check=False), self.data_dir)


def host_simulator(procs: Processes, target: HostDayTarget) -> Any:
    """A factory starting the simulator on this machine's end of the test network."""

    def factory(spec: SimSpec, host: str) -> Simulator:
        sim = Simulator.start(procs, spec, host, free_port(host))
        try:
            out = target.ssh.run(f"{target.python} -c \"import urllib.request as u; print(u.urlopen("
                                 f"'http://{host}:{sim.port}/health', timeout=5).status)\"", timeout=30)
        except RuntimeError as exc:
            raise RuntimeError(f"the test host cannot reach the simulator at {host}:{sim.port} ({exc}): check "
                               "this machine's firewall for the veth interface") from exc
        if out.strip() != "200":
            raise RuntimeError(f"the simulator's /health answered {out.strip()} to the test host")
        return sim

    return factory

