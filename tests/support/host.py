"""Helpers for the tests against the booted test host (tests/host; its conftest.py holds the fixtures built on them):
the inventory and the Ansible variables as the host sees them, redis-cli on the host, the API through the reverse
proxy, a failing unit's status and journal for an assertion's message, and polling the host until something holds.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.support.https import HostHttps
from tests.support.paths import REPO

INVENTORY = Path(os.environ.get("TESTHOST_INVENTORY", REPO / "var" / "test-host" / "inventory"))


# --- variables: inventory (group_vars of the test inventory) over role defaults over the spec's values ----------


@cache
def inventory_vars() -> dict[str, Any]:
    """The host variables of the one host in group `appliance` of the test inventory (`ansible-inventory --list`)."""
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
    for source in (inventory_vars(), _role_defaults()):
        if name in source:
            value = source[name]
            if isinstance(value, str) and "{{" in value:
                continue
            return value
    return default


# --- commands on the host -----------------------------------------------------------------------------------------


def redis_as(host, url: str, *args: str) -> Any:
    """redis-cli on the host as the user of `url` (testinfra's CommandResult: rc, stdout, stderr)."""
    return host.run("redis-cli --no-auth-warning -u " + shlex.quote(url) + " " + " ".join(shlex.quote(a) for a in args))


def journal(host, unit: str, lines: int = 50) -> str:
    """The last `lines` lines of `unit`'s journal on the host."""
    return host.run(f"journalctl -u {shlex.quote(unit)} -n {lines} --no-pager -o short-iso").stdout


def status(host, unit: str) -> str:
    """`systemctl status` of `unit` on the host."""
    return host.run(f"systemctl status {shlex.quote(unit)} --no-pager -l -n 0").stdout


def why(host, unit: str) -> str:
    """What an assertion about `unit` prints when it fails: its status and the end of its journal."""
    return f"\n--- systemctl status {unit}\n{status(host, unit)}\n--- journalctl -u {unit} -n 50\n{journal(host, unit)}"


def poll_until(predicate: Callable[[], Any], timeout: float, interval: float = 1.0) -> Any:
    """Poll `predicate` until it returns something truthy or `timeout` seconds pass; return its last value (the
    caller asserts on it with a message of its own: unlike tests.support.services.wait_until, this never raises)."""
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
