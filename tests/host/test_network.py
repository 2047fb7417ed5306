"""Listening sockets, the firewall, and the HTTP endpoints seen from outside the host."""

from __future__ import annotations

import ipaddress
import json
import shlex
import socket

import pytest

from tests.host.conftest import http_get, var, wait_until, why

API_PORT = 8080
NODE_EXPORTER_PORT = 9100
INGEST_METRICS_PORT = 9101


def listening(host) -> set[str]:
    return set(host.socket.get_listening_sockets())


def test_redis_listens_on_loopback_only(host):
    socks = listening(host)
    assert "tcp://127.0.0.1:6379" in socks, sorted(socks)
    exposed = [s for s in socks if s.endswith(":6379") and "127.0.0.1" not in s and "::1" not in s]
    assert not exposed, f"redis is reachable beyond loopback: {exposed}"


@pytest.mark.parametrize(
    "port,unit",
    [
        (API_PORT, "firehose-api"),
        (NODE_EXPORTER_PORT, "prometheus-node-exporter"),
        (INGEST_METRICS_PORT, "firehose-ingest"),
    ],
)
def test_port_listens(host, port, unit):
    socks = listening(host)
    assert any(s.endswith(f":{port}") for s in socks), f"nothing listens on :{port}: {sorted(socks)}" + why(host, unit)


def test_api_listens_on_all_addresses(host):
    socks = listening(host)
    assert f"tcp://0.0.0.0:{API_PORT}" in socks or f"tcp://:::{API_PORT}" in socks, sorted(socks)


def test_nftables_ruleset(host):
    rules = host.run("nft list ruleset")
    assert rules.rc == 0, rules.stderr
    text = rules.stdout
    assert "hook input" in text, text
    assert "policy drop" in text, f"the input chain does not drop by default:\n{text}"
    assert "tcp dport 22 accept" in text or "dport ssh accept" in text or "22," in text, f"SSH not allowed:\n{text}"
    assert str(API_PORT) in text, f"API port {API_PORT} not in the ruleset:\n{text}"
    assert str(NODE_EXPORTER_PORT) in text, f"node exporter port not in the ruleset:\n{text}"
    assert "ct state established,related accept" in text or "ct state { established, related }" in text, text


def test_nftables_config_is_persistent(host):
    conf = host.file("/etc/nftables.conf")
    assert conf.exists
    assert host.run_test("nft -c -f /etc/nftables.conf").succeeded, host.run("nft -c -f /etc/nftables.conf").stderr


def test_health_from_outside(host, host_ip):
    code, headers, body = http_get(f"http://{host_ip}:{API_PORT}/health")
    assert code == 200, f"/health -> {code}: {body[:500]!r}" + why(host, "firehose-api")
    assert headers.get("Content-Type", "").startswith("application/json")
    json.loads(body)


def test_metrics_from_outside(host, host_ip):
    code, _, body = http_get(f"http://{host_ip}:{API_PORT}/metrics")
    assert code == 200, f"/metrics -> {code}: {body[:500]!r}" + why(host, "firehose-api")
    assert b"# TYPE" in body


def test_openapi_from_outside(host, host_ip):
    code, _, body = http_get(f"http://{host_ip}:{API_PORT}/openapi.json")
    assert code == 200, f"/openapi.json -> {code}"
    assert "/search" in json.loads(body).get("paths", {})


def test_exporters_answer_on_the_host(host):
    for port, needle in ((NODE_EXPORTER_PORT, "node_exporter_build_info"), (INGEST_METRICS_PORT, "# TYPE")):
        out = host.run(f"curl -fsS --max-time 10 http://127.0.0.1:{port}/metrics")
        assert out.rc == 0, f"127.0.0.1:{port}/metrics: {out.stderr}"
        assert needle in out.stdout


def test_textfile_collector_is_wired(host):
    args = host.run("systemctl show -p ExecStart prometheus-node-exporter; cat /etc/default/prometheus-node-exporter")
    assert "textfile" in args.stdout, args.stdout


def test_node_exporter_follows_the_allowlist(host, host_ip):
    """From this machine (not on the scraper allowlist unless the test inventory says so)."""
    allow = var("firewall_scraper_allowlist", None) or var("firewall_scrapers", None)
    if allow is None:
        pytest.fail("no firewall_scraper_allowlist variable: the test cannot tell what the firewall should allow")
    gateway = ipaddress.ip_address(host_ip.rsplit(".", 1)[0] + ".1")
    allowed = any(gateway in ipaddress.ip_network(str(a), strict=False) for a in allow)
    try:
        code, _, _ = http_get(f"http://{host_ip}:{NODE_EXPORTER_PORT}/metrics", timeout=3)
    except OSError:
        code = None
    if allowed:
        assert code == 200, f"the allowlist {allow} includes {gateway}, yet :9100 answered {code}"
    else:
        assert code is None, f"the allowlist {allow} excludes {gateway}, yet :9100 answered {code}"


def test_firewall_drops_other_ports(host, host_ip):
    """A listener on a port the firewall does not open is unreachable from this machine (dropped, not refused)."""
    port = 18555
    probe = (
        "import socket, time; s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); "
        f"s.bind(('0.0.0.0', {port})); s.listen(); time.sleep(30)"
    )
    host.run("systemctl stop testhost-fw-probe 2>/dev/null; systemctl reset-failed testhost-fw-probe 2>/dev/null")
    started = host.run(f"systemd-run --unit=testhost-fw-probe --collect python3 -c {shlex.quote(probe)}")
    assert started.rc == 0, started.stderr
    try:
        assert wait_until(lambda: f"tcp://0.0.0.0:{port}" in listening(host), timeout=10), "the probe did not listen"
        # On the host itself the port answers ...
        local = f"python3 -c \"import socket; socket.create_connection(('127.0.0.1', {port}), 3)\""
        assert host.run_test(local).succeeded
        # ... from outside it must not.
        with socket.socket() as s:
            s.settimeout(3)
            try:
                s.connect((host_ip, port))
                reached = "connected"
            except TimeoutError:
                reached = None
            except ConnectionRefusedError:
                reached = "refused (a reject rule or no firewall; the ruleset should drop)"
        assert reached is None, f"{host_ip}:{port} from this machine: {reached}"
    finally:
        host.run("systemctl stop testhost-fw-probe")
