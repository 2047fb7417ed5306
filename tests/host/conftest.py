"""pytest-testinfra against the booted test host (`make host-up`), through its Ansible inventory.

The inventory is `var/test-host/inventory` (override with TESTHOST_INVENTORY). Every test here is marked `host`.
Without a running host the tests fail (they never skip): the point of `make image-test` is to prove the image.
The fixtures are here; the helpers they and the tests use are in tests/support/host.py.
"""

from __future__ import annotations

import os
import shutil
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import testinfra

from tests.support.host import INVENTORY, Proxy, inventory_vars, redis_as, var, why
from tests.support.https import CADDY_ROOT_CA

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
    return str(inventory_vars()["ansible_host"])


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

@pytest.fixture(scope="session")
def proxy(host, host_ip, env_file) -> Proxy:
    ca = host.file(CADDY_ROOT_CA)
    assert ca.exists, f"{CADDY_ROOT_CA} is missing: Caddy has not made its local CA (proxy_tls internal)" + why(
        host, "caddy")
    keys = [k for k in env_file.get("FIREHOSE_API_KEYS", "").split(",") if k]
    return Proxy(host_ip, str(var("proxy_domain", "firehose.test")), ca.content_string, keys[0] if keys else "")
