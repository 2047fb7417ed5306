"""Fair use under load on the test host: do 40 clients exporting at once starve /health and /search?

Prints figures; asserts nothing about time (a shared 2-core machine decides those). Steps:

1. A fixed archive: one simulated day of `--events` events (default 405,000: `validate-day SCALE=0.05`), seed
   `--seed`, generated here through the flush's writer and compacted (tests/validation/bulk.py's code), then
   copied into the host's data directory (dated yesterday, so /search's default window covers it).
2. `--clients` source addresses (198.18.<n>.1..: the benchmarking range, RFC 2544) on this machine's end of the
   test network, so each exporter is a client of its own to the proxy and the API's per-client limits.
3. Baseline for `--baseline` seconds: one prober asks /health every 0.2 s, another /search (a word of the
   archive, cycling) every 0.5 s, both with the API key of the host's env file (their own limits).
4. Load for `--seconds` seconds: the probers go on while every exporter loops over `GET /export` (the whole day,
   up to 100,000 rows), reading the CSV as it streams; a refused export (429) is retried after 1 s (more eager than
   its Retry-After: the worst case).

Everything goes through the reverse proxy over HTTPS (Caddy's local CA). Usage (the host up: `make host-up`):
    TESTHOST_NAME=... TESTHOST_NET=... .venv/bin/python -m tests.bench.fair_use [--events N] [--seconds S]
"""

from __future__ import annotations

import argparse
import datetime as dt
import itertools
import os
import ssl
import statistics
import subprocess
import tarfile
import tempfile
import threading
import time
import urllib.parse
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from tests.support.https import CADDY_ROOT_CA, HostHttps
from tests.validation import probe
from tests.validation.bulk import compact_one, write_day
from tests.validation.host import Ssh, read_host_env

REPO = Path(__file__).resolve().parents[2]
WORDS = ("coffee", "hello", "today", "music", "really", "people", "love", "think")


@dataclass
class Samples:
    """Latencies (ms) and statuses of one kind of request in one phase."""

    ms: list[float] = field(default_factory=list)
    statuses: Counter = field(default_factory=Counter)
    rows: int = 0

    def line(self, name: str) -> str:
        if not self.ms:
            return f"  {name:<22} no requests"
        ordered = sorted(self.ms)
        p95 = ordered[min(len(ordered) - 1, int(0.95 * len(ordered)))]
        return (f"  {name:<22} n={len(ordered):<5} p50 {statistics.median(ordered):7.1f} ms  p95 {p95:7.1f} ms  "
                f"max {ordered[-1]:7.1f} ms  statuses {dict(sorted(self.statuses.items()))}"
                + (f"  rows {self.rows:,}" if self.rows else ""))


class Target:
    """The proxy of the test host, as one client (`source` address) sees it."""

    def __init__(self, ip: str, domain: str, ca: str, api_key: str) -> None:
        self.ip, self.domain, self.api_key = ip, domain, api_key
        self.context = ssl.create_default_context(cadata=ca)

    def get(self, target: str, *, keyed: bool, source: str | None = None, timeout: float = 700.0
            ) -> tuple[int, int, float]:
        """GET `target`, reading the whole body: (status, CSV lines or 0, milliseconds to the last byte)."""
        started = time.perf_counter()
        conn = HostHttps(self.ip, self.domain, self.context, timeout, source)
        try:
            conn.request("GET", target, headers={"X-API-Key": self.api_key} if keyed else {})
            resp = conn.getresponse()
            lines = 0
            while chunk := resp.read(1 << 16):
                lines += chunk.count(b"\n")
            return resp.status, lines, (time.perf_counter() - started) * 1000
        finally:
            conn.close()


def build_archive(events: int, seed: int, day: dt.date, work: Path) -> Path:
    """One day of generated events in `work`/data, as the flush writes them and the compaction leaves them."""
    data_dir = work / "data"
    start_us = int(dt.datetime(day.year, day.month, day.day, tzinfo=dt.UTC).timestamp() * 1_000_000)
    write_day({"day": 0, "lo": 0, "hi": events, "seed": seed, "start_us": start_us, "rate": events / 86_400,
               "data_dir": str(data_dir)})
    for table in probe.TABLES:
        for date in sorted(p.name.removeprefix("date=") for p in (data_dir / table).glob("date=*")):
            compact_one({"data_dir": str(data_dir), "table": table, "date": date})
    return data_dir


def ship(ssh: Ssh, data_dir: Path, remote: str, owner: str) -> None:
    """Copy the archive's partitions into the host's data directory (owned by the app's user)."""
    with tempfile.NamedTemporaryFile(suffix=".tar") as tar_file:
        with tarfile.open(tar_file.name, "w") as tar:
            for part in sorted(data_dir.glob("*/date=*")):
                tar.add(part, arcname=str(part.relative_to(data_dir)))
        ssh.run(f"tar -xf - -C {remote} && chown -R {owner}:{owner} {remote}", stdin=Path(tar_file.name).read_bytes())


def add_sources(veth: str, net_octet: str, count: int) -> list[str]:
    """`count` addresses on this machine's end of the test network, one per simulated client."""
    sources = [f"198.18.{net_octet}.{i}" for i in range(1, count + 1)]
    for address in sources:
        subprocess.run(["ip", "addr", "replace", f"{address}/32", "dev", veth], check=True)
    return sources


def remove_sources(veth: str, sources: list[str]) -> None:
    for address in sources:
        subprocess.run(["ip", "addr", "del", f"{address}/32", "dev", veth], check=False, capture_output=True)


@dataclass
class Run:
    """What the client threads share: the target, the current phase, stop signals and the samples."""

    target: Target
    phase: str = "baseline"
    stop: threading.Event = field(default_factory=threading.Event)
    stop_exports: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)
    samples: dict[str, Samples] = field(default_factory=dict)
    exports: Samples = field(default_factory=Samples)

    def probe_loop(self, paths: itertools.cycle, every: float, kind: str) -> None:
        """One prober: a request every `every` seconds into samples["<phase> <kind>"]."""
        while not self.stop.is_set():
            started = time.monotonic()
            try:
                status, _, ms = self.target.get(next(paths), keyed=True, timeout=60)
            except OSError as exc:
                status, ms = type(exc).__name__, 60_000.0
            with self.lock:
                bucket = self.samples.setdefault(f"{self.phase} {kind}", Samples())
                bucket.ms.append(ms)
                bucket.statuses[status] += 1
            self.stop.wait(max(0.0, every - (time.monotonic() - started)))

    def export_loop(self, path: str, source: str) -> None:
        """One exporting client: export, export again; after a refusal wait 1 s."""
        while not self.stop_exports.is_set():
            try:
                status, lines, ms = self.target.get(path, keyed=False, source=source)
            except OSError as exc:
                status, lines, ms = type(exc).__name__, 0, 0.0
            with self.lock:
                self.exports.statuses[status] += 1
                if status == 200:
                    self.exports.ms.append(ms)
                    self.exports.rows += max(0, lines - 1)
            if status != 200:
                self.stop_exports.wait(1.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=405_000, help="events in the archive (405,000 = SCALE 0.05)")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--clients", type=int, default=40, help="exporting clients at once")
    parser.add_argument("--baseline", type=float, default=20.0, help="seconds of probing without exports")
    parser.add_argument("--seconds", type=float, default=60.0, help="seconds of probing under the exports")
    parser.add_argument("--domain", default="firehose.test", help="proxy_domain of the test inventory")
    parser.add_argument("--skip-archive", action="store_true", help="the archive is on the host already")
    args = parser.parse_args()

    facts = read_host_env(REPO)
    ssh = Ssh(facts)
    env = dict(line.split("=", 1) for line in ssh.run("cat /etc/firehose/firehose.env").splitlines()
               if "=" in line and not line.startswith("#"))
    day = dt.datetime.now(dt.UTC).date() - dt.timedelta(days=1)
    if not args.skip_archive:
        with tempfile.TemporaryDirectory(prefix="fair-use-") as work:
            t0 = time.monotonic()
            data_dir = build_archive(args.events, args.seed, day, Path(work))
            ship(ssh, data_dir, env.get("FIREHOSE_DATA_DIR", "/srv/firehose/data"), "firehose")
            print(f"archive: {args.events:,} events of {day} (seed {args.seed}) generated, compacted and copied "
                  f"in {time.monotonic() - t0:.0f} s")
    target = Target(facts["TESTHOST_IP"], args.domain, ssh.run(f"cat {CADDY_ROOT_CA}"),
                    next((k for k in env.get("FIREHOSE_API_KEYS", "").split(",") if k), ""))
    window = urllib.parse.urlencode({"start": day.isoformat(), "end": day.isoformat()})
    searches = itertools.cycle([f"/search?text={w}&{window}" for w in WORDS])
    export_path = f"/export?{window}&limit=100000"

    veth = os.environ.get("TESTHOST_NAME", "fhtest") + "-o"
    sources = add_sources(veth, facts["TESTHOST_GATEWAY"].split(".")[2], args.clients)
    run = Run(target)
    probers = [threading.Thread(target=run.probe_loop, args=(itertools.cycle(["/health"]), 0.2, "/health"),
                                daemon=True),
               threading.Thread(target=run.probe_loop, args=(searches, 0.5, "/search"), daemon=True)]
    exporters = [threading.Thread(target=run.export_loop, args=(export_path, s), daemon=True) for s in sources]
    try:
        for t in probers:
            t.start()
        run.stop.wait(args.baseline)
        with run.lock:
            run.phase = f"{args.clients} exporting"
        for t in exporters:
            t.start()
        run.stop.wait(args.seconds)
        run.stop.set()
        run.stop_exports.set()
        for t in probers:
            t.join(70)
        for t in exporters:
            t.join(700)
    finally:
        remove_sources(veth, sources)
        ssh.close()

    print(f"fair use through the proxy (https://{args.domain}, {facts['TESTHOST_IP']}): {args.clients} clients "
          f"exporting {export_path} for {args.seconds:.0f} s, after {args.baseline:.0f} s of baseline")
    print(f"  API limits: {env.get('FIREHOSE_API_EXPORT_SLOTS')} anonymous export slots, "
          f"{env.get('FIREHOSE_API_EXPORTS_PER_CLIENT', '1')} per client, rate "
          f"{env.get('FIREHOSE_API_RATE_PER_MINUTE')}/min burst {env.get('FIREHOSE_API_RATE_BURST')}")
    for name in sorted(run.samples, key=lambda n: (not n.startswith("baseline"), n)):
        print(run.samples[name].line(name))
    print(run.exports.line("exports (completed)"))


if __name__ == "__main__":
    main()
