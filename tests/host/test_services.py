"""Units enabled and running, timers active, hardening, and restart after kill -9."""

from __future__ import annotations

import pytest

from tests.support.host import poll_until, why

RUNNING = ["redis-server", "firehose-ingest", "firehose-api", "prometheus-node-exporter"]
APP_SERVICES = ["firehose-ingest", "firehose-api", "firehose-flush"]
TIMERS = ["firehose-flush.timer", "firehose-compact.timer"]


@pytest.mark.parametrize("name", RUNNING)
def test_service_enabled_and_running(host, name):
    svc = host.service(name)
    assert svc.is_enabled, f"{name} is not enabled" + why(host, name)
    assert svc.is_running, f"{name} is not running" + why(host, name)


def test_nftables_enabled_and_loaded(host):
    svc = host.service("nftables")
    assert svc.is_enabled, "nftables.service is not enabled" + why(host, "nftables")
    # nftables.service is a oneshot with RemainAfterExit: "active (exited)".
    assert host.run("systemctl is-active nftables").stdout.strip() == "active", why(host, "nftables")


def test_no_failed_units(host):
    out = host.run("systemctl --failed --no-legend --plain")
    assert out.stdout.strip() == "", f"failed units:\n{out.stdout}"


@pytest.mark.parametrize("name", TIMERS)
def test_timer_enabled_active_persistent(host, name):
    timer = host.service(name)
    assert timer.is_enabled, f"{name} is not enabled" + why(host, name)
    assert host.run(f"systemctl is-active {name}").stdout.strip() == "active", why(host, name)
    props = timer.systemd_properties
    assert props.get("Persistent") == "yes", f"{name}: Persistent={props.get('Persistent')}"
    assert props.get("NextElapseUSecRealtime") or props.get("NextElapseUSecMonotonic"), f"{name} is not scheduled"


def test_flush_timer_every_five_minutes(host):
    cat = host.run("systemctl cat firehose-flush.timer").stdout
    assert "OnCalendar" in cat or "OnUnitActiveSec" in cat or "OnUnitInactiveSec" in cat, cat


def test_flush_is_a_oneshot(host):
    props = host.service("firehose-flush").systemd_properties
    assert props.get("Type") == "oneshot", props.get("Type")


@pytest.mark.parametrize("name", APP_SERVICES)
def test_hardening(host, name, app_user, mount_path):
    props = host.service(name).systemd_properties
    assert props.get("User") == app_user, f"{name}: User={props.get('User')}"
    assert props.get("NoNewPrivileges") == "yes", f"{name}: NoNewPrivileges={props.get('NoNewPrivileges')}"
    assert props.get("ProtectSystem") == "strict", f"{name}: ProtectSystem={props.get('ProtectSystem')}"
    assert props.get("PrivateTmp") == "yes", f"{name}: PrivateTmp={props.get('PrivateTmp')}"
    needs = props.get("RequiresMountsFor", "").split()
    if name != "firehose-ingest":  # the ingester only talks to Redis; flush and API read/write the volume
        assert any(p == mount_path or p.startswith(mount_path + "/") for p in needs), (
            f"{name}: RequiresMountsFor={needs}, expected the volume {mount_path}"
        )


@pytest.mark.parametrize("name", ["firehose-ingest", "firehose-api"])
def test_long_running_services_restart_always(host, name):
    props = host.service(name).systemd_properties
    assert props.get("Restart") == "always", f"{name}: Restart={props.get('Restart')}"


def test_ingester_comes_back_after_kill_9(host):
    unit = "firehose-ingest"

    def main_pid() -> int:
        return int(host.service(unit).systemd_properties.get("MainPID", "0") or 0)

    old = poll_until(main_pid, timeout=30)
    assert old, f"{unit} has no main PID" + why(host, unit)
    restarts = int(host.service(unit).systemd_properties.get("NRestarts", "0") or 0)
    assert host.run_test(f"kill -9 {old}").succeeded

    def back() -> bool:
        props = host.service(unit).systemd_properties
        pid = int(props.get("MainPID", "0") or 0)
        return props.get("ActiveState") == "active" and pid not in (0, old)

    assert poll_until(back, timeout=60), f"{unit} did not come back within 60 s after kill -9" + why(host, unit)
    assert int(host.service(unit).systemd_properties.get("NRestarts", "0")) > restarts
