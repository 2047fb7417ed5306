"""pytest-testinfra against the booted test host (`make host-up`), through its Ansible inventory.

The inventory is `var/test-host/inventory` (override with TESTHOST_INVENTORY). Every test here is marked `host`.
Without a running host the tests fail (they never skip): the point of `make image-test` is to prove the image.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import testinfra
import yaml

from tests.host.https import CADDY_ROOT_CA, HostHttps

REPO = Path(__file__).resolve().parents[2]
INVENTORY = Path(os.environ.get("TESTHOST_INVENTORY", REPO / "var" / "test-host" / "inventory"))
HOSTS_DIR = Path(__file__).resolve().parent

# testinfra's ansible backend runs `ansible-inventory`: find the venv's even when PATH lacks it.
if shutil.which("ansible-inventory") is None:
    os.environ["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if HOSTS_DIR in Path(str(item.fspath)).resolve().parents:
            item.add_marker(pytest.mark.host)
    # Tests that stop, wipe, reboot or redeploy the host (test_ops.py) run after all the others, in file order.
    items.sort(key=lambda item: item.get_closest_marker("disruptive") is not None)


# --- variables: inventory (group_vars of the test inventory) over role defaults over the spec's values ----------


@cache
def _inventory_vars() -> dict[str, Any]:
    exe = shutil.which("ansible-inventory") or str(REPO / ".venv" / "bin" / "ansible-inventory")
    out = subprocess.run([exe, "-i", str(INVENTORY), "--list"], capture_output=True, text=True, cwd=REPO, check=False)
    if out.returncode != 0:
        pytest.fail(f"ansible-inventory -i {INVENTORY} failed:\n{out.stderr}")
    data = json.loads(out.stdout)
    hosts = data.get("_meta", {}).get("hostvars", {})
    appliance = list(_group_hosts(data, "appliance"))
    if len(appliance) != 1:
        pytest.fail(f"expected one host in group 'appliance' of {INVENTORY}, found {appliance}")
    return hosts.get(appliance[0], {})


def _group_hosts(data: dict, group: str):
    yield from data.get(group, {}).get("hosts", [])
    for child in data.get(group, {}).get("children", []):
        yield from _group_hosts(data, child)


@cache
def _role_defaults() -> dict[str, Any]:
    merged: dict[str, Any] = {}
    for f in sorted(REPO.glob("roles/*/defaults/main.yml")):
        merged.update(yaml.safe_load(f.read_text()) or {})
    return merged


def var(name: str, default: Any = None) -> Any:
    """An Ansible variable as the host sees it, where it is a plain value (no Jinja); else `default`."""
    for source in (_inventory_vars(), _role_defaults()):
        if name in source:
            value = source[name]
            if isinstance(value, str) and "{{" in value:
                continue
            return value
    return default


# --- the host -----------------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def host():
    """The test host as a testinfra host (SSH backend built from the Ansible inventory's variables)."""
    if not (INVENTORY / "hosts.yml").is_file():
        pytest.fail(f"no test host inventory at {INVENTORY}: run `make host-up` (or `make image-test`) first")
    hosts = testinfra.get_hosts([f"ansible://appliance?ansible_inventory={INVENTORY}"])
    if len(hosts) != 1:
        pytest.fail(f"expected one host in group 'appliance', got {len(hosts)}")
    h = hosts[0]
    try:
        h.run_test("true")
    except Exception as exc:
        pytest.fail(f"cannot reach the test host over SSH: {exc}")
    return h


@pytest.fixture(scope="session")
def host_ip() -> str:
    return str(_inventory_vars()["ansible_host"])


@pytest.fixture(scope="session")
def app_user() -> str:
    return var("firehose_user", "firehose")


@pytest.fixture(scope="session")
def env_file(host) -> dict[str, str]:
    """/etc/firehose/firehose.env parsed (KEY=VALUE lines)."""
    f = host.file("/etc/firehose/firehose.env")
    assert f.exists, "/etc/firehose/firehose.env is missing"
    values: dict[str, str] = {}
    for raw in f.content_string.splitlines():
        line = raw.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.partition("=")
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            value = value[1:-1]
        values[key.strip()] = value
    return values


@pytest.fixture(scope="session")
def data_dir(env_file) -> str:
    return env_file.get("FIREHOSE_DATA_DIR", "/srv/firehose").rstrip("/")


@pytest.fixture(scope="session")
def mount_path(data_dir) -> str:
    """The volume's mount point: the data directory or the nearest parent the volume role mounts."""
    return var("parquet_volume_mount_point", None) or var("firehose_mount_point", None) or "/srv/firehose"


REDIS_ADMIN_URL_FILE = "/etc/redis/admin.url"


def redis_as(host, url: str, *args: str) -> Any:
    """redis-cli on the host as the user of `url` (testinfra's CommandResult: rc, stdout, stderr)."""
    return host.run("redis-cli --no-auth-warning -u " + shlex.quote(url) + " " + " ".join(shlex.quote(a) for a in args))


@pytest.fixture(scope="session")
def redis_admin_url(host) -> str:
    """The operators' Redis URL (root-only file the redis role writes at deploy time)."""
    f = host.file(REDIS_ADMIN_URL_FILE)
    assert f.exists, f"{REDIS_ADMIN_URL_FILE} is missing: the deploy did not place the Redis admin secret"
    return f.content_string.strip()


@pytest.fixture(scope="session")
def redis_cli(host, redis_admin_url) -> Callable[..., str]:
    """Run redis-cli on the host as the Redis admin user (the app's user may not run CONFIG and the like)."""

    def run(*args: str) -> str:
        out = redis_as(host, redis_admin_url, *args)
        assert out.rc == 0 and not out.stdout.startswith(("NOPERM", "NOAUTH", "WRONGPASS")), \
            f"redis-cli {' '.join(args)}: rc={out.rc} {out.stdout} {out.stderr}"
        return out.stdout.strip()

    return run


# --- the API through the reverse proxy (HTTPS with Caddy's local CA, SNI = proxy_domain) ---------------------------

class Proxy:
    """The public face of the API: https://<proxy_domain>/ at the host's address, trusting Caddy's local CA."""

    def __init__(self, ip: str, domain: str, ca_pem: str, api_key: str) -> None:
        self.ip, self.domain, self.api_key = ip, domain, api_key
        self.context = ssl.create_default_context(cadata=ca_pem)

    def get(self, target: str, headers: dict[str, str] | None = None, keyed: bool = True,
            timeout: float = 30.0) -> tuple[int, dict[str, str], bytes]:
        """GET `target`; with the API key unless `keyed` is false (anonymous: the per-address limits apply)."""
        conn = HostHttps(self.ip, self.domain, self.context, timeout)
        sent = dict(headers or {})
        if keyed and self.api_key:
            sent["X-API-Key"] = self.api_key
        try:
            conn.request("GET", target, headers=sent)
            resp = conn.getresponse()
            return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
        finally:
            conn.close()


@pytest.fixture(scope="session")
def proxy(host, host_ip, env_file) -> Proxy:
    ca = host.file(CADDY_ROOT_CA)
    assert ca.exists, f"{CADDY_ROOT_CA} is missing: Caddy has not made its local CA (proxy_tls internal)" + why(
        host, "caddy")
    keys = [k for k in env_file.get("FIREHOSE_API_KEYS", "").split(",") if k]
    return Proxy(host_ip, str(var("proxy_domain", "firehose.test")), ca.content_string, keys[0] if keys else "")


def journal(host, unit: str, lines: int = 50) -> str:
    return host.run(f"journalctl -u {shlex.quote(unit)} -n {lines} --no-pager -o short-iso").stdout


def status(host, unit: str) -> str:
    return host.run(f"systemctl status {shlex.quote(unit)} --no-pager -l -n 0").stdout


def why(host, unit: str) -> str:
    """What an assertion about `unit` prints when it fails: its status and the end of its journal."""
    return f"\n--- systemctl status {unit}\n{status(host, unit)}\n--- journalctl -u {unit} -n 50\n{journal(host, unit)}"


def wait_until(predicate: Callable[[], Any], timeout: float, interval: float = 1.0) -> Any:
    """Poll `predicate` until it returns something truthy or `timeout` seconds pass; return its last value."""
    deadline = time.monotonic() + timeout
    value = predicate()
    while not value and time.monotonic() < deadline:
        time.sleep(interval)
        value = predicate()
    return value


def http_get(url: str, timeout: float = 10.0) -> tuple[int, dict[str, str], bytes]:
    """GET from this machine (across the veth pair, through the host's firewall)."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.status, dict(resp.headers), resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()
