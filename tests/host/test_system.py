"""Packages, the app user, configuration files and their permissions."""

from __future__ import annotations

import json
import re
import tomllib

import pytest

from tests.support.host import var
from tests.support.paths import REPO

PACKAGES = ["redis-server", "prometheus-node-exporter", "nftables", "python3-venv", "unattended-upgrades"]


@pytest.mark.parametrize("name", PACKAGES)
def test_package_installed(host, name):
    assert host.package(name).is_installed, f"Debian package {name} is not installed"


def test_os_is_debian_12(host):
    assert host.system_info.distribution == "debian"
    assert host.system_info.release.split(".")[0] == "12"


def test_app_user_is_a_system_account_without_login(host, app_user):
    user = host.user(app_user)
    assert user.exists, f"user {app_user} is missing"
    assert user.uid < 1000, f"{app_user} is not a system account (uid {user.uid})"
    assert user.shell in ("/usr/sbin/nologin", "/bin/false", "/usr/bin/false"), user.shell
    assert user.group == app_user


def test_config_dir_and_env_file_permissions(host, app_user):
    d = host.file("/etc/firehose")
    assert d.is_directory
    assert d.user == "root"
    assert d.mode & 0o002 == 0, f"/etc/firehose is world-writable: {oct(d.mode)}"
    f = host.file("/etc/firehose/firehose.env")
    assert f.is_file
    assert (f.user, f.group) == ("root", app_user), f"owner {f.user}:{f.group}"
    assert f.mode == 0o640, f"mode {oct(f.mode)}"


def test_env_file_contents(env_file, data_dir, mount_path):
    for key in ("FIREHOSE_REDIS_URL", "FIREHOSE_DATA_DIR", "FIREHOSE_JETSTREAM_URLS"):
        assert key in env_file, f"{key} missing from /etc/firehose/firehose.env: {sorted(env_file)}"
    user = var("redis_app_user", "firehose")
    assert env_file["FIREHOSE_REDIS_URL"].startswith(f"redis://{user}:"), "the app does not log in as its ACL user"
    assert env_file["FIREHOSE_REDIS_URL"].endswith("@127.0.0.1:6379/0"), "the app's Redis is not on loopback"
    assert data_dir == mount_path or data_dir.startswith(mount_path + "/"), (
        f"the data dir {data_dir} is not on the volume mounted at {mount_path}"
    )
    # The test inventory points the ingester at the simulator on the host, never at the public Jetstream.
    urls = env_file["FIREHOSE_JETSTREAM_URLS"].split(",")
    assert urls and all(u.startswith("ws://127.0.0.1") or u.startswith("ws://localhost") for u in urls), urls


def test_env_file_holds_no_example_secret(env_file):
    for key, value in env_file.items():
        if "PASSWORD" in key or "SECRET" in key or "TOKEN" in key:
            assert value.lower() not in ("changeme", "secret", "password"), f"{key} has a placeholder value"


def _venv_bin(host) -> str:
    home = var("firehose_home", "/opt/firehose")
    out = host.run(f"ls -d {home}/current/venv/bin/firehose {home}/venv*/bin/firehose {home}/*/bin/firehose "
                   "2>/dev/null | head -1")
    exe = out.stdout.strip()
    assert exe, f"no firehose entry point in a venv under {home}"
    return exe.rsplit("/", 1)[0]


def test_app_is_installed_in_a_venv(host):
    venv_bin = _venv_bin(host)
    assert host.run_test(f"{venv_bin}/firehose --version").succeeded, host.run(f"{venv_bin}/firehose --version").stderr
    assert host.run_test(f"{venv_bin}/python -c 'import duckdb, pyarrow, redis, bottle'").succeeded


def test_installed_version_is_the_pyproject_version(host):
    """app/pyproject.toml is the one place the version is set; `firehose --version` reads it from the install."""
    expected = tomllib.loads((REPO / "app" / "pyproject.toml").read_text())["project"]["version"]
    out = host.run(f"{_venv_bin(host)}/firehose --version")
    assert out.stdout.strip() == f"firehose {expected}", out.stdout + out.stderr


def test_runtime_dependencies_match_the_pins(host):
    """The app role installs with requirements.txt as pip constraints: every pinned package present has its pin."""
    pins = {}
    for raw in (REPO / "requirements.txt").read_text().splitlines():
        line = raw.split("#", 1)[0].strip()
        if "==" in line:
            name, _, pinned = line.partition("==")
            pins[_canonical(name)] = pinned.strip()
    out = host.run(f"{_venv_bin(host)}/python -m pip list --format=json --disable-pip-version-check")
    assert out.succeeded, out.stderr
    installed = {_canonical(p["name"]): p["version"] for p in json.loads(out.stdout)}
    wrong = {n: (installed[n], pinned) for n, pinned in pins.items() if n in installed and installed[n] != pinned}
    assert not wrong, f"installed versions differ from requirements.txt (installed, pinned): {wrong}"
    for name in ("duckdb", "pyarrow", "redis", "bottle", "gunicorn"):
        if name in pins:
            assert name in installed, f"{name} is pinned but not installed in the venv"


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def test_journald_is_limited(host):
    out = host.run("cat /etc/systemd/journald.conf.d/*.conf 2>/dev/null")
    assert "SystemMaxUse" in out.stdout, "journald has no size limit"
