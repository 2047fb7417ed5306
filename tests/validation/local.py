"""TARGET=local: the `make run` stack's components, started directly on private ports under the run's work dir.

What `firehose dev` starts, as separate processes so the run can restart the ingester and read each log:
a private redis-server (AOF everysec, noeviction), `firehose ingest`, `firehose flush --loop <interval>` (the
timer's cadence, shortened for the run), and the API under Gunicorn with the appliance's gunicorn_conf.
"""

from __future__ import annotations

import os
import resource
import signal
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

from tests.validation import probe
from tests.validation.procs import CLI, GUNICORN, Proc, Processes, free_port, redis_argv, wait_for_http, wait_for_port
from tests.validation.simulator import SimSpec, Simulator

STREAM, GROUP = "firehose:events", "flush"


def base_env(work: Path, redis_port: int) -> dict[str, str]:
    """Environment of every stage: this run's Redis and data directory, no PLC directory, no stray FIREHOSE_*."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FIREHOSE_", "PROMETHEUS_"))}
    env.update({"FIREHOSE_REDIS_URL": f"redis://127.0.0.1:{redis_port}/0", "FIREHOSE_DATA_DIR": str(work / "data"),
                "FIREHOSE_PLC_URL": "", "FIREHOSE_INGEST_METRICS_PORT": "0", "PYTHONUNBUFFERED": "1"})
    return env


def scrape(url: str, metric: str) -> float:
    """Sum of a metric's samples in a Prometheus text page (0 when the page or the metric is missing)."""
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            text = response.read().decode()
    except OSError:
        return 0.0
    return metric_total(text, metric)


def metric_total(text: str, metric: str) -> float:
    """Sum of a metric's samples in the Prometheus text `text` (0 when it is missing)."""
    total = 0.0
    for line in text.splitlines():
        if line.startswith(metric) and (len(line) == len(metric) or line[len(metric)] in " {"):
            total += float(line.rsplit(" ", 1)[1])
    return total


def dir_parquet_bytes(data_dir: Path) -> int:
    """Bytes of every live Parquet file under a data directory."""
    return sum(p.stat().st_size for p in data_dir.glob("*/date=*/*.parquet"))


class LocalApi:
    """The API under Gunicorn on a private port; `restart()` gives a fresh process (a cold API).

    A restart starts the new Gunicorn on a new port while the old one shuts down, so the two overlap for the
    old one's last second; the timed request goes to the new one only after the old one has exited.
    """

    def __init__(self, procs: Processes, env: dict[str, str], work: Path) -> None:
        self.procs = procs
        self.env = {**env, "FIREHOSE_API_METRICS_DIR": str(work / "api-metrics")}
        self.work = work
        self.port = 0
        self.base_url = ""
        self.proc: Proc | None = None
        self.restarts = 0

    def start(self) -> None:
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        env = {**self.env, "FIREHOSE_API_BIND": f"127.0.0.1:{self.port}"}
        self.proc = self.procs.start("api", [GUNICORN, "-c", "python:firehose.gunicorn_conf",
                                             "firehose.api:create_app()"], env)
        wait_for_port(self.port)
        wait_for_http(f"{self.base_url}/openapi.json")
        time.sleep(0.3)  # the other workers finish importing the app (DuckDB itself opens on the first search)

    def restart(self) -> None:
        old = self.proc
        if old is not None:
            self.procs.note_peak(old, tree=True)
            old.popen.send_signal(signal.SIGINT)  # Gunicorn's quick shutdown (no request is in flight)
        self.start()
        if old is not None:
            self.procs.stop(old, signal.SIGINT)
        self.restarts += 1

    def stop(self) -> None:
        if self.proc is not None:
            self.procs.stop(self.proc, signal.SIGINT)
            self.proc = None


class LocalDayTarget:
    """The day run's pipeline on this machine."""

    sim_host = "127.0.0.1"
    flush_note = "`firehose flush --loop {interval}` (the systemd timer's cadence, shortened from 300 s)"

    def __init__(self, procs: Processes, work: Path, redis_extra: tuple[str, ...] = ()) -> None:
        self.procs = procs
        self.work = work
        self.redis_extra = redis_extra  # more redis-server flags (e.g. a maxmemory)
        self.redis_port = free_port()
        self.env = base_env(work, self.redis_port)
        self.metrics_port = 0
        self.ingester: Proc | None = None
        self.flusher: Proc | None = None
        self._samples: list[dict[str, Any]] = []
        self._targets: dict[str, str] = {}
        self._stop_sampling = threading.Event()
        self._sampler: threading.Thread | None = None
        self._client: Any = None
        self._api: LocalApi | None = None
        self._ingest_env: dict[str, str] = {}
        self._start_us = 0

    # -- pipeline ----------------------------------------------------------------------------------------------

    def start(self, sim_url: str, rewind_seconds: float, flush_interval: float) -> None:
        redis = self.procs.start("redis", [*redis_argv(self.redis_port, self.work / "redis"), *self.redis_extra])
        wait_for_port(self.redis_port)
        self._client = probe.redis_client(self.env["FIREHOSE_REDIS_URL"])
        self._targets.update(redis=f"pid:{redis.pid}")
        self.flusher = self.procs.start("flush", [*CLI, "flush", "--loop", f"{flush_interval:g}"], self.env)
        self._targets["flush"] = f"pid:{self.flusher.pid}"
        self.metrics_port = free_port()
        self._ingest_env = {**self.env, "FIREHOSE_JETSTREAM_URLS": sim_url,
                            "FIREHOSE_INGEST_METRICS_PORT": str(self.metrics_port),
                            "FIREHOSE_REWIND_SECONDS": f"{rewind_seconds:g}"}
        self.flush_note = self.flush_note.format(interval=f"{flush_interval:g}")
        self.start_ingester()
        self._sampler = threading.Thread(
            target=probe.sample_forever, name="sampler", daemon=True,
            args=(self.env["FIREHOSE_REDIS_URL"], STREAM, GROUP, 1.0),
            kwargs={"targets": self._targets, "emit": self._samples.append, "stop": self._stop_sampling})
        self._sampler.start()

    def start_ingester(self) -> None:
        # --cursor 1: the first connection starts at the simulator's first event (later ones use Redis' cursor)
        self.ingester = self.procs.start("ingest", [*CLI, "ingest", "--cursor", "1"], self._ingest_env)
        self._targets["ingest"] = f"pid:{self.ingester.pid}"
        wait_for_port(self.metrics_port, timeout=30)

    def stop_ingester(self, hard: bool) -> None:
        if self.ingester is not None:
            self.procs.stop(self.ingester, signal.SIGKILL if hard else signal.SIGTERM)
            self.ingester = None

    def ingester_alive(self) -> bool:
        return self.ingester is not None and self.ingester.alive()

    def ingest_duplicates(self) -> int:
        return int(scrape(f"http://127.0.0.1:{self.metrics_port}/metrics", "firehose_ingest_duplicates_total"))

    def stream_state(self) -> dict[str, Any]:
        return probe.stream_state(self._client, STREAM, GROUP)

    def redis(self) -> Any:
        """The run's Redis client (after `start`)."""
        return self._client

    def newest_event(self) -> str | None:
        return probe.newest_event(self._client, STREAM)

    def samples(self) -> list[dict[str, Any]]:
        return list(self._samples)

    def finish_ingest(self) -> None:
        """Stop the flush loop between runs (SIGINT: it is sleeping) and the ingester; stop sampling."""
        if self.flusher is not None:
            self.procs.stop(self.flusher, signal.SIGINT)
            self.flusher = None
        self.stop_ingester(hard=False)
        self._stop_sampling.set()
        if self._sampler is not None:
            self._sampler.join(5)

    def compact(self) -> float:
        """`firehose compact` as the daily timer runs it (every finished day); return its seconds."""
        t0 = time.monotonic()
        proc = self.procs.start("compact", [*CLI, "compact"], self.env)
        while proc.alive():
            self.procs.note_peak(proc)
            time.sleep(0.2)
        status = self.procs.stop(proc)
        if status != 0:
            raise RuntimeError(f"firehose compact failed with status {status}; see {proc.log}")
        return time.monotonic() - t0

    def parquet_bytes_before_compaction(self) -> int | None:
        return dir_parquet_bytes(self.work / "data")

    # -- results -----------------------------------------------------------------------------------------------

    def count(self, start_us: int, end_us: int) -> dict[str, Any]:
        return probe.count(self.work / "data", start_us, end_us)

    def flush_log(self) -> str:
        path = self.procs.log_dir / "flush.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def api(self) -> LocalApi:
        if self._api is None:
            self._api = LocalApi(self.procs, self.env, self.work)
            self._api.start()
        return self._api

    def username(self) -> str | None:
        return probe.pick_username(self.work / "data")

    def analytics(self, reps: int, budget_s: float) -> dict[str, Any]:
        return probe.analytics(self.work / "data", reps, budget_s)

    def peak_rss_mb(self) -> dict[str, float]:
        """Peak RSS per process name: the sampled VmHWM and the VmHWM read just before each stop."""
        for proc in self.procs.running:  # the simulator, Redis and the API, still running
            self.procs.note_peak(proc, tree=True)
        peaks = dict(self.procs.peak_rss_mb)
        for sample in self._samples:
            for name, mem in sample.get("memory", {}).items():
                peaks[name] = max(peaks.get(name, 0.0), mem["hwm_mb"])
        peaks["harness (analytics)"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        return {k: round(v, 1) for k, v in sorted(peaks.items())}


def local_simulator(procs: Processes) -> Any:
    """A factory starting the simulator on a free loopback port."""

    def factory(spec: SimSpec, host: str) -> Simulator:
        return Simulator.start(procs, spec, host, free_port(host))

    return factory


class LosingDeletes(LocalDayTarget):
    """A local target that loses the archived deletions right after the count (`--inject lose-deletes`): the
    accounting stays exact, but the API then serves deleted posts, and the run must exit 1 for it."""

    def count(self, start_us: int, end_us: int) -> dict[str, Any]:
        counted = super().count(start_us, end_us)
        for path in (self.work / "data").glob("deletes/date=*/*.parquet"):
            path.unlink()
        return counted
