"""Child processes of a local run: started with their output in a log file, stopped (and reaped) for sure.

`Processes` is a context manager: whatever it started is stopped when the `with` block ends, also after an
exception or Ctrl-C (SIGTERM first, SIGKILL after a grace period, always by pid, never by name). It remembers each
process's peak RSS (VmHWM) read just before it is stopped, so processes that a run restarts are measured too.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType

from tests.validation import probe

CLI = [sys.executable, "-m", "firehose.cli"]
GUNICORN = str(Path(sys.executable).with_name("gunicorn"))


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port on `host` that nothing listens on right now."""
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def wait_for_port(port: int, host: str = "127.0.0.1", timeout: float = 30.0) -> None:
    """Block until something accepts connections on host:port."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as s:
            if s.connect_ex((host, port)) == 0:
                return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listens on {host}:{port} after {timeout:g}s")


def wait_for_http(url: str, timeout: float = 60.0) -> None:
    """Block until `url` answers with any HTTP status."""
    deadline = time.monotonic() + timeout
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=5):
                return
        except urllib.error.HTTPError:
            return
        except OSError as exc:
            last = exc
            time.sleep(0.1)
    raise TimeoutError(f"{url} did not answer within {timeout:g}s ({last})")


@dataclass
class Proc:
    """One started process and its log."""

    name: str
    popen: subprocess.Popen
    log: Path

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None


@dataclass
class Processes:
    """Starts processes for a run and guarantees they are gone afterwards."""

    log_dir: Path
    env: dict[str, str]
    running: list[Proc] = field(default_factory=list)
    peak_rss_mb: dict[str, float] = field(default_factory=dict)

    def start(self, name: str, argv: list[str], env: dict[str, str] | None = None) -> Proc:
        """Start `argv` in its own session with stdout+stderr appended to `<log_dir>/<name>.log`."""
        self.log_dir.mkdir(parents=True, exist_ok=True)
        log = self.log_dir / f"{name}.log"
        with open(log, "ab") as fh:
            popen = subprocess.Popen(argv, env=env or self.env, stdout=fh, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, start_new_session=True)
        proc = Proc(name, popen, log)
        self.running.append(proc)
        return proc

    def note_peak(self, proc: Proc, tree: bool = False) -> None:
        """Remember the peak RSS of a process (and, with `tree`, of each child: Gunicorn workers)."""
        pids = [proc.pid, *probe.children(proc.pid)] if tree else [proc.pid]
        for n, pid in enumerate(pids):
            mem = probe.memory_kb(pid)
            if mem is None:
                continue
            name = proc.name if n == 0 else f"{proc.name}-worker"
            self.peak_rss_mb[name] = max(self.peak_rss_mb.get(name, 0.0), mem[1] / 1024)

    def stop(self, proc: Proc, sig: int = signal.SIGTERM, timeout: float = 30.0) -> int:
        """Send `sig`, wait (SIGKILL after `timeout`), and return the exit status."""
        self.note_peak(proc, tree=True)
        if proc.alive():
            proc.popen.send_signal(sig)
            try:
                proc.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.popen.kill()
                proc.popen.wait()
        self._kill_group(proc)
        if proc in self.running:
            self.running.remove(proc)
        return int(proc.popen.returncode)

    @staticmethod
    def _kill_group(proc: Proc) -> None:
        """Kill what the process left behind in its own session (e.g. Gunicorn workers after a SIGKILL)."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)

    def stop_all(self) -> None:
        """Stop everything still running, newest first."""
        for proc in reversed(list(self.running)):
            self.stop(proc, timeout=15)

    def __enter__(self) -> Processes:
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop_all()


def redis_argv(port: int, directory: Path) -> list[str]:
    """A private redis-server configured as the appliance's (AOF everysec, noeviction), loopback only."""
    exe = shutil.which("redis-server")
    if exe is None:
        raise RuntimeError("redis-server is not installed: run `make deps` (apt-get install redis-server)")
    directory.mkdir(parents=True, exist_ok=True)
    return [exe, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(directory), "--appendonly", "yes",
            "--appendfsync", "everysec", "--save", "", "--maxmemory-policy", "noeviction", "--daemonize", "no"]
