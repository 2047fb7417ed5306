"""The simulated Hetzner volume: a loop device seen as /dev/disk/by-id/scsi-0HC_Volume_<id>, mounted by a unit."""

from __future__ import annotations

import os
import shlex

from tests.support.host import var, why


def volume_id() -> str:
    env_id = os.environ.get("TESTHOST_VOLUME_ID")
    return str(env_id or var("parquet_volume_id", None) or "100001")


def unit_name(host, path: str) -> str:
    return host.run(f"systemd-escape --path --suffix=mount {shlex.quote(path)}").stdout.strip()


def test_volume_device_link(host):
    link = f"/dev/disk/by-id/scsi-0HC_Volume_{volume_id()}"
    assert host.file(link).exists, f"{link} is missing (the test host creates it at boot)"


def test_mount_unit_active_and_enabled(host, mount_path):
    unit = unit_name(host, mount_path)
    assert host.file(f"/etc/systemd/system/{unit}").exists, f"no /etc/systemd/system/{unit}"
    assert host.run(f"systemctl is-active {unit}").stdout.strip() == "active", why(host, unit)
    assert host.run(f"systemctl is-enabled {unit}").stdout.strip() == "enabled", why(host, unit)


def test_mount_unit_options(host, mount_path):
    unit = unit_name(host, mount_path)
    text = host.file(f"/etc/systemd/system/{unit}").content_string
    what = [line.split("=", 1)[1].strip() for line in text.splitlines() if line.startswith("What=")]
    assert what, text
    assert what[0] == f"/dev/disk/by-id/scsi-0HC_Volume_{volume_id()}" or what[0].startswith(
        ("LABEL=", "/dev/disk/by-label/")
    ), what
    options = [line.split("=", 1)[1] for line in text.splitlines() if line.startswith("Options=")]
    assert options, text
    opts = options[0].split(",")
    assert "nofail" in opts, opts
    assert "discard" in opts, opts


def test_mounted_from_the_volume(host, mount_path):
    mp = host.mount_point(mount_path)
    assert mp.exists, f"{mount_path} is not a mount point"
    device = host.run(f"readlink -f /dev/disk/by-id/scsi-0HC_Volume_{volume_id()}").stdout.strip()
    assert mp.device == device, f"{mount_path} is mounted from {mp.device}, not the volume {device}"
    assert mp.filesystem in ("ext4", "xfs"), mp.filesystem
    assert "discard" in mp.options, mp.options
    assert "rw" in mp.options, mp.options


def test_data_dir_writable_by_the_app_only(host, data_dir, app_user):
    d = host.file(data_dir)
    assert d.is_directory
    assert app_user in (d.user, d.group), f"{data_dir} is {d.user}:{d.group}"
    assert d.mode & 0o002 == 0, oct(d.mode)
