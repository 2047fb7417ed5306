"""Operating the box for real (docs/operations.md): alerts reach a webhook, backup -> wipe -> restore gives the same
data, a reboot mid-ingest loses and doubles nothing, and `make rollback` returns to the previous release.

These tests change the host (they stop units, wipe and restore the volume, reboot it, switch releases) and put it
back as provisioned; conftest runs this module after every other one. The SFTP target and the webhook receiver run on
this machine's end of the test network (TESTHOST_GATEWAY), on TESTHOST_SFTP_PORT (10022) and TESTHOST_WEBHOOK_PORT
(19095), the ports the test inventory gives the host.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import os
import re
import shlex
import shutil
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from tests.support.host import INVENTORY, poll_until, why
from tests.support.paths import REPO
from tests.support.sftp_target import SftpTarget
from tests.support.webhook import WebhookReceiver
from tests.validation import day, probe
from tests.validation.accounting import simulator_accounting
from tests.validation.host import PERSISTENT_PATHS, HostDayTarget, Ssh, read_host_env
from tests.validation.procs import Processes, free_port
from tests.validation.simulator import SimSpec, Simulator

pytestmark = pytest.mark.disruptive

API_PORT = 8080
# The bounds docs/operations.md states: an alert reaches the webhook within ALERT_BOUND_S of the ingester stopping
# (test inventory: for 15s, 5 s scrape/evaluation, 5 s group wait: about 30 s), and /health answers 200 within
# REBOOT_HEALTH_BOUND_S of `systemctl reboot`. Generous for a loaded 2-core machine.
ALERT_BOUND_S = 180
REBOOT_HEALTH_BOUND_S = 240
REMOTE_PROBE = "/root/firehose-test-probe.py"
UNITS_IN_BOOT_ORDER = ["srv-firehose.mount", "redis-server.service", "firehose-ingest.service"]


@pytest.fixture(scope="module")
def facts() -> dict[str, str]:
    return read_host_env(REPO)


@pytest.fixture(scope="module")
def playbook() -> Any:
    """Run ansible-playbook from the repository root against the test host; fail with the end of its output."""

    def run(*args: str, timeout: float = 1800) -> str:
        exe = shutil.which("ansible-playbook") or str(REPO / ".venv" / "bin" / "ansible-playbook")
        out = subprocess.run([exe, "-i", str(INVENTORY), *args], cwd=REPO, capture_output=True, text=True,
                             timeout=timeout, check=False, env={**os.environ, "ANSIBLE_NOCOLOR": "1"})
        assert out.returncode == 0, f"ansible-playbook {' '.join(args)} failed:\n{out.stdout[-6000:]}\n{out.stderr}"
        return out.stdout

    return run


def health_ok(proxy) -> bool:
    """/health answers 200 through the TLS proxy (Gunicorn listens on the host's loopback only)."""
    try:
        return proxy.get("/health", timeout=5)[0] == 200
    except OSError:  # ssl.SSLError is an OSError too
        return False


def start_enabled_units(host) -> None:
    out = host.run("systemctl start $(systemctl list-unit-files --plain --no-legend --state=enabled "
                   "'firehose-*.service' 'firehose-*.timer' | awk '{print $1}')")
    assert out.rc == 0, out.stderr


# --- alerts -----------------------------------------------------------------------------------------------------


def test_alertmanager_runs_with_the_inventorys_receivers(host):
    assert host.service("prometheus.service").is_running, why(host, "prometheus.service")
    assert host.service("prometheus-alertmanager.service").is_running, why(host, "prometheus-alertmanager.service")
    check = host.run("amtool check-config /etc/prometheus/alertmanager.yml")
    assert check.rc == 0, check.stdout + check.stderr
    config = host.file("/etc/prometheus/alertmanager.yml").content_string
    assert "email_configs" in config and "webhook_configs" in config, config

    def alertmanager_known() -> bool:
        out = host.run("curl -fsS --max-time 5 http://127.0.0.1:9090/api/v1/alertmanagers")
        return out.rc == 0 and "127.0.0.1:9093" in out.stdout

    assert poll_until(alertmanager_known, timeout=60, interval=2), "Prometheus does not know the Alertmanager"
    rules = host.run("curl -fsS --max-time 5 http://127.0.0.1:9090/api/v1/rules").stdout
    for name in ("FirehoseIngestDown", "FirehoseDeadLetters", "FirehoseBackupStale", "FirehoseBackupFailed"):
        assert f'"name":"{name}"' in rules, f"rule {name} is not loaded"


def test_a_stopped_ingester_alerts_the_webhook(host, facts):
    port = int(os.environ.get("TESTHOST_WEBHOOK_PORT", "19095"))
    with WebhookReceiver(facts["TESTHOST_GATEWAY"], port) as hook:
        assert host.run("systemctl stop firehose-ingest.service").rc == 0
        t0 = time.monotonic()
        try:
            fired = poll_until(lambda: hook.alerts("FirehoseIngestDown"), timeout=ALERT_BOUND_S + 120, interval=1)
            elapsed = time.monotonic() - t0
        finally:
            assert host.run("systemctl start firehose-ingest.service").rc == 0
    context = (host.run("curl -sS --max-time 5 http://127.0.0.1:9090/api/v1/alerts").stdout
               + why(host, "prometheus-alertmanager.service"))
    assert fired, f"no FirehoseIngestDown reached the webhook in {ALERT_BOUND_S + 120} s\n{context}"
    print(f"FirehoseIngestDown reached the webhook {elapsed:.0f} s after the ingester stopped")
    assert elapsed < ALERT_BOUND_S, f"the alert took {elapsed:.0f} s (bound {ALERT_BOUND_S} s)"
    assert fired[0]["labels"]["severity"] == "critical", fired[0]


# --- backup -> wipe -> restore ----------------------------------------------------------------------------------


def data_state(host, data_dir: str, redis_cli) -> dict[str, Any]:
    """What must come back identical: every file's checksum, the rows per table, the Redis buffer's keys."""
    sums = host.run(f"cd {shlex.quote(data_dir)} && find . -type f -print0 | LC_ALL=C sort -z | xargs -0r sha256sum")
    assert sums.rc == 0, sums.stderr
    files = {line[66:]: line[:64] for line in sums.stdout.splitlines()}
    counted = host.run(f"/opt/firehose/current/venv/bin/python {REMOTE_PROBE} count {shlex.quote(data_dir)} 0 "
                       f"{2**62}")
    assert counted.rc == 0, counted.stderr
    keys = sorted(redis_cli("--raw", "KEYS", "*").split())
    redis = {"keys": keys, "events": redis_cli("XLEN", "firehose:events"),
             "last": redis_cli("--raw", "XREVRANGE", "firehose:events", "+", "-", "COUNT", "1")[:200],
             "cursor": redis_cli("--raw", "HGETALL", "firehose:cursor")}
    return {"files": files, "rows": json.loads(counted.stdout)["rows"], "redis": redis}


def back_up(host, target: SftpTarget) -> None:
    """Run one backup to the SFTP target and check its snapshot and metrics."""
    backup = host.run("systemctl start firehose-backup.service")
    assert backup.rc == 0, f"the backup failed{why(host, 'firehose-backup.service')}\n{target.log_text()[-2000:]}"
    metrics = host.file("/var/lib/prometheus/node-exporter/firehose_backup.prom").content_string
    assert "firehose_backup_last_run_success 1" in metrics, metrics
    assert any(p.name == "config" for p in target.repo.iterdir()), "no restic repository on the SFTP target"
    # bash: the library is a bash script (pipefail), and testinfra runs commands with sh through sudo
    snapshots = host.run("bash -c '. /usr/local/lib/firehose/backup-lib.sh && rst snapshots --json --tag firehose'")
    assert snapshots.rc == 0 and len(json.loads(snapshots.stdout)) == 1, snapshots.stdout + snapshots.stderr

    def exported() -> bool:
        out = host.run("curl -fsS --max-time 10 http://127.0.0.1:9100/metrics")
        return "firehose_backup_last_success_timestamp_seconds" in out.stdout

    assert poll_until(exported, timeout=60), "node_exporter does not export the backup metrics"


def wipe_volume(host, device: str) -> None:
    """Every unit on the volume stopped, the volume unmounted and its file system signature erased."""
    host.run("systemctl stop $(systemctl list-units --plain --no-legend 'firehose-*' | awk '{print $1}') "
             "redis-server.service")
    assert host.run("systemctl stop srv-firehose.mount").rc == 0, why(host, "srv-firehose.mount")
    wipe = host.run(f"wipefs -a {shlex.quote(device)} && blkid -p {shlex.quote(device)}")
    assert wipe.rc == 2, f"the volume still has a signature after wipefs: {wipe.stdout} {wipe.stderr}"


def test_backup_wipe_restore_gives_the_same_data(host, facts, playbook, data_dir, redis_cli, proxy):  # noqa: PLR0917
    Ssh(facts).run(f"cat > {REMOTE_PROBE}", stdin=Path(probe.__file__).read_bytes())
    device = host.run("findmnt -n -o SOURCE --mountpoint /srv/firehose").stdout.strip()
    assert device, "the volume is not mounted on /srv/firehose"
    assert poll_until(lambda: int(redis_cli("XLEN", "firehose:events") or 0) > 0, timeout=120), "nothing ingested"
    pubkey = host.file("/etc/firehose/backup_ed25519.pub").content_string
    port = int(os.environ.get("TESTHOST_SFTP_PORT", "10022"))
    try:
        # Quiesce: the state compared is the one backed up (the backup itself also holds the flush timer).
        host.run("systemctl stop firehose-flush.timer firehose-simulator.service firehose-ingest.service")
        assert host.run("systemctl start firehose-flush.service").rc == 0, why(host, "firehose-flush.service")
        before = data_state(host, data_dir, redis_cli)
        assert any(n.endswith(".parquet") for n in before["files"]), f"no Parquet to back up: {before['files']}"
        assert sum(before["rows"].values()) > 0
        with SftpTarget(facts["TESTHOST_GATEWAY"], port, pubkey, REPO / "var" / "test-host") as target:
            back_up(host, target)
            wipe_volume(host, device)
            # A fresh box: the playbook formats and mounts the blank volume and starts everything empty, then the
            # restore (make restore's playbook) brings the data back; the units stay stopped to compare first.
            playbook("site.yml")
            wiped = {"./" + os.path.relpath(f, data_dir)
                     for f in host.run(f"find {shlex.quote(data_dir)} -name '*.parquet'").stdout.split()}
            assert not set(before["files"]) & wiped, "the wipe kept data"
            playbook("playbooks/restore.yml", "-e", "backup_restore_force=true", "-e", "backup_restore_start=false")
            after = data_state(host, data_dir, redis_cli)
    finally:
        start_enabled_units(host)
    assert after["files"] == before["files"], "restored files differ: " + str(
        {k: (before["files"].get(k), after["files"].get(k)) for k in set(before["files"]) ^ set(after["files"])})
    assert after["rows"] == before["rows"]
    assert after["redis"] == before["redis"]
    assert poll_until(lambda: health_ok(proxy), timeout=120), why(host, "firehose-api.service")


# --- reboot mid-ingest ------------------------------------------------------------------------------------------


def boots(facts: dict[str, str]) -> int:
    state = Path(facts.get("TESTHOST_STATE", REPO / "var" / "test-host"))
    return int((state / "boots").read_text().strip() or 0)


def active_since(host, unit: str) -> int:
    value = host.run(f"systemctl show -p ActiveEnterTimestampMonotonic --value {unit}").stdout.strip()
    return int(value or 0)


@pytest.mark.reboot
def test_reboot_mid_ingest_comes_back_in_order_losing_and_doubling_nothing(host, facts, proxy):
    # A day of 2025 of its own per run (a rerun on the same host must not count an earlier run's events).
    day_of_run = datetime.date(2025, 1, 1) + datetime.timedelta(days=int(time.time() // 60) % 365)
    spec = SimSpec(events=12_000, days=0.05, start=f"{day_of_run.isoformat()}T00:00:00Z", seed=12, rate=300)
    logs = REPO / "var" / "test-host" / "reboot-test"  # the simulator's log (kept for a failure's diagnosis)
    shutil.rmtree(logs, ignore_errors=True)
    booted = boots(facts)
    with Processes(logs, dict(os.environ)) as procs, \
            HostDayTarget.open(REPO, logs, print, PERSISTENT_PATHS) as target:
        sim = Simulator.start(procs, spec, facts["TESTHOST_GATEWAY"], free_port(facts["TESTHOST_GATEWAY"]))
        target.start(sim.url, rewind_seconds=5.0, flush_interval=10)
        # The simulator is paced (300 events/s from the first subscriber): at a quarter, most are still to come.
        sent_at_reboot = sim.wait_index(spec.events // 4, timeout=600)["highest_index_sent"]
        assert sent_at_reboot < spec.events - 1, "the simulator had sent everything before the reboot"
        t0 = time.monotonic()
        with contextlib.suppress(subprocess.TimeoutExpired):  # the connection may go down with the host
            target.ssh.run("systemctl reboot", check=False, timeout=30)
        assert poll_until(lambda: boots(facts) > booted, timeout=180), "the host did not boot again"
        healthy = poll_until(lambda: health_ok(proxy), timeout=REBOOT_HEALTH_BOUND_S)
        health_s = time.monotonic() - t0
        assert healthy, (f"/health is not 200 {REBOOT_HEALTH_BOUND_S} s (the stated bound) after the reboot"
                         f"{why(host, 'firehose-api.service')}")
        print(f"/health answered 200 {health_s:.0f} s after `systemctl reboot` (the host booted again)")
        host.run("true")  # a new SSH connection after the reboot (testinfra reconnects)
        since = {u: active_since(host, u) for u in [*UNITS_IN_BOOT_ORDER, "firehose-api.service"]}
        assert all(since.values()), f"not every unit came back by itself: {since}"
        order = [since[u] for u in UNITS_IN_BOOT_ORDER]
        assert order == sorted(order), f"boot order is not volume -> Redis -> ingester: {since}"
        assert since["srv-firehose.mount"] < since["firehose-api.service"], since
        # The end: the simulator has sent its last event, the ingester has stored it (then everything its last
        # connection delivered is in Redis) and the flush has written and acknowledged the whole buffer.
        sim.wait_index(spec.events - 1, timeout=900)
        day.wait_stored(target, spec.generator().event_json(spec.events - 1), 300)
        day.wait_drained(target, 300, print)
        # The whole day: the diurnal curve spreads these events past spec.end_us (from a night-time start).
        counts = target.count(spec.start_us - 60_000_000, spec.start_us + 86_400_000_000)
        accounting = simulator_accounting(sim.stats(), spec.generator(), counts["rows"], counts["duplicate_keys"])
        connections = sim.connection_starts()
    print(f"reboot accounting: generated {accounting.events_generated}, duplicate deliveries "
          f"{accounting.events_duplicate}, stored {accounting.events_stored}, by table {accounting.stored_by_table}; "
          f"connections started at indices {connections}, {sent_at_reboot + 1} events sent at the reboot")
    assert len(connections) >= 2, f"the ingester did not connect again after the reboot: {connections}"
    assert accounting.ok, (accounting.problems(), f"connection start indices {connections}, sent at the reboot "
                           f"{sent_at_reboot + 1}, logs in {logs} (and the host's journal of the boot before: "
                           "journalctl -b -1 -u redis-server -u firehose-ingest)")


# --- releases: deploy another, roll back ------------------------------------------------------------------------


def release_of(host, unit: str) -> str:
    """The release directory the unit's main process runs from (its interpreter's path in the release's venv)."""
    pid = host.run(f"systemctl show -p MainPID --value {unit}").stdout.strip()
    cmdline = host.run(f"tr '\\0' ' ' < /proc/{pid}/cmdline").stdout
    m = re.search(r"(/opt/firehose/releases/[^/ ]+)/", cmdline)
    assert m, f"{unit} (pid {pid}) does not run from a release: {cmdline!r}"
    return m.group(1)


def test_rollback_returns_to_the_previous_release(host, facts, playbook, proxy):
    first = host.run("readlink /opt/firehose/current").stdout.strip()
    assert first.startswith("/opt/firehose/releases/"), first
    source = REPO / "var" / "test-host" / "rollback-app"
    shutil.rmtree(source, ignore_errors=True)
    shutil.copytree(REPO / "app", source / "app",
                    ignore=shutil.ignore_patterns("__pycache__", "*.egg-info", "build", "dist", ".*"))
    pyproject = source / "app" / "pyproject.toml"
    text = pyproject.read_text()
    version = re.search(r'^version\s*=\s*"([^"]+)"', text, re.M).group(1)  # type: ignore[union-attr]
    pyproject.write_text(text.replace(f'version = "{version}"', f'version = "{version}+rollback.test"', 1))
    try:
        playbook("site.yml", "--tags", "app,services", "-e", f"app_source={source / 'app'}")
    finally:
        shutil.rmtree(source, ignore_errors=True)
    second = host.run("readlink /opt/firehose/current").stdout.strip()
    assert second != first and "+rollback.test" in second, second
    assert host.run("/opt/firehose/current/venv/bin/firehose --version").stdout.strip().endswith("+rollback.test")
    assert host.file("/opt/firehose/previous").content_string.strip() == first
    assert poll_until(lambda: release_of(host, "firehose-api.service") == second, timeout=60)

    out = subprocess.run(["make", "--no-print-directory", "rollback", f"APPLIANCE_INVENTORY={INVENTORY}"], cwd=REPO,
                         capture_output=True, text=True, timeout=1800, check=False)
    assert out.returncode == 0, f"make rollback failed:\n{out.stdout[-6000:]}\n{out.stderr}"
    assert host.run("readlink /opt/firehose/current").stdout.strip() == first
    assert host.file("/opt/firehose/previous").content_string.strip() == second
    assert host.file(second).is_directory, "the deploy did not keep the release it replaced"
    for unit in ("firehose-api.service", "firehose-ingest.service"):
        assert poll_until(lambda u=unit: host.service(u).is_running and release_of(host, u) == first, timeout=90), \
            why(host, unit)
    assert host.run("/opt/firehose/current/venv/bin/firehose --version").stdout.strip() == f"firehose {version}"
    assert poll_until(lambda: health_ok(proxy), timeout=120), why(host, "firehose-api.service")
