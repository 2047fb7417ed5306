"""Listening sockets, the firewall, and the API seen from outside the host: HTTPS through the proxy only."""

from __future__ import annotations

import http.client
import json
import re
import shlex
import socket
import ssl
from pathlib import Path

import pytest

from tests.support.host import Proxy, poll_until, var, why

API_PORT = 8080
NODE_EXPORTER_PORT = 9100
INGEST_METRICS_PORT = 9101
REDIS_EXPORTER_PORT = 9121
PROXY_PORTS = [80, 443]


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
        (REDIS_EXPORTER_PORT, "prometheus-redis-exporter"),
    ],
)
def test_listens_on_loopback_only(host, port, unit):
    """Gunicorn and the exporters: on 127.0.0.1 only (the proxy and the on-box Prometheus reach them there)."""
    socks = {s for s in listening(host) if s.endswith(f":{port}")}
    assert socks, f"nothing listens on :{port}" + why(host, unit)
    assert socks <= {f"tcp://127.0.0.1:{port}", f"tcp://::1:{port}"}, f":{port} beyond loopback: {sorted(socks)}"


@pytest.mark.parametrize("port", PROXY_PORTS)
def test_proxy_listens_on_every_address(host, port):
    socks = listening(host)
    assert f"tcp://0.0.0.0:{port}" in socks or f"tcp://:::{port}" in socks, sorted(socks)


def test_nftables_ruleset(host):
    rules = host.run("nft list ruleset")
    assert rules.rc == 0, rules.stderr
    text = rules.stdout
    assert "hook input" in text, text
    assert "policy drop" in text, f"the input chain does not drop by default:\n{text}"
    assert "tcp dport 22" in text or "dport ssh" in text, f"SSH not allowed:\n{text}"
    assert "443" in text and "80" in text, f"the proxy's ports are not in the ruleset:\n{text}"
    assert str(API_PORT) not in text, f"Gunicorn's port {API_PORT} is opened, yet it must stay on loopback:\n{text}"
    assert "ct state established,related accept" in text or "ct state { established, related }" in text, text
    # Brute force on SSH slowed: new connections per address are rate-limited, the excess dropped.
    assert re.search(r"ct state new update @ssh_meter_v4 \{ ip saddr limit rate over \d+/minute burst \d+ packets \} "
                     r"drop", text), f"no per-address rate limit on new SSH connections:\n{text}"


def test_nftables_config_is_persistent(host):
    conf = host.file("/etc/nftables.conf")
    assert conf.exists
    assert host.run_test("nft -c -f /etc/nftables.conf").succeeded, host.run("nft -c -f /etc/nftables.conf").stderr


def test_health_over_https_with_the_local_ca(host, proxy):
    status, headers, body = proxy.get("/health")
    assert status == 200, f"/health -> {status}: {body[:500]!r}" + why(host, "caddy") + why(host, "firehose-api")
    assert headers.get("content-type", "").startswith("application/json")
    assert "max-age" in headers.get("strict-transport-security", ""), headers
    json.loads(body)


def test_tls_refuses_an_unknown_ca(proxy):
    """The chain is Caddy's local CA: without it, verification fails (so the test above did verify)."""
    untrusting = Proxy(proxy.ip, proxy.domain, _unrelated_ca(), proxy.api_key)
    with pytest.raises(ssl.SSLCertVerificationError):
        untrusting.get("/health")


def _unrelated_ca() -> str:
    """A CA certificate that signed nothing on the host: the first one of this machine's bundle."""
    bundle = ssl.get_default_verify_paths().cafile or "/etc/ssl/certs/ca-certificates.crt"
    text = Path(bundle).read_text()
    return text[: text.index("-----END CERTIFICATE-----") + len("-----END CERTIFICATE-----")]


def test_http_redirects_to_https(host_ip, proxy):
    conn = http.client.HTTPConnection(host_ip, 80, timeout=10)
    try:
        conn.request("GET", "/health", headers={"Host": proxy.domain})
        resp = conn.getresponse()
        assert resp.status in (301, 308), resp.status
        assert resp.getheader("Location") == f"https://{proxy.domain}/health"
    finally:
        conn.close()


def test_metrics_are_not_public(proxy):
    status, headers, body = proxy.get("/metrics")
    assert status == 404, status
    assert json.loads(body) == {"error": {"parameter": None, "message": "no such endpoint here (404)"}}
    assert headers.get("content-type") == "application/json"


def test_metrics_on_loopback(host):
    out = host.run(f"curl -fsS --max-time 10 http://127.0.0.1:{API_PORT}/metrics")
    assert out.rc == 0 and "# TYPE" in out.stdout, out.stderr


def test_proxy_refuses_long_urls_in_json(proxy):
    status, headers, body = proxy.get("/search?text=" + "a" * 5000)
    assert status == 414, status
    assert headers.get("content-type") == "application/json"
    error = json.loads(body)["error"]
    assert error["parameter"] is None and "longer than" in error["message"]


def test_openapi_through_the_proxy(proxy):
    status, _, body = proxy.get("/openapi.json")
    assert status == 200, f"/openapi.json -> {status}"
    assert "/search" in json.loads(body).get("paths", {})


def test_burst_gets_429_with_retry_after(proxy):
    """Anonymous requests from this machine: past the burst, 429 with Retry-After and the JSON error shape."""
    burst = int(var("app_api_rate_burst", 30))
    statuses = []
    for _ in range(burst + 10):
        status, headers, body = proxy.get("/openapi.json", keyed=False)
        statuses.append(status)
        if status == 429:
            break
    assert statuses[-1] == 429, f"no 429 after {len(statuses)} requests: {statuses}"
    assert int(headers["retry-after"]) >= 1, headers
    assert json.loads(body)["error"]["message"].startswith("too many requests")
    # A client with an API key has its own, higher limit.
    assert proxy.get("/openapi.json")[0] == 200


@pytest.mark.parametrize("port", [API_PORT, NODE_EXPORTER_PORT, INGEST_METRICS_PORT, REDIS_EXPORTER_PORT])
def test_loopback_services_unreachable_from_outside(host_ip, port):
    with socket.socket() as s:
        s.settimeout(3)
        try:
            s.connect((host_ip, port))
            reached = "connected"
        except (TimeoutError, ConnectionRefusedError):
            reached = None
    assert reached is None, f"{host_ip}:{port} answers from this machine"


def test_exporters_answer_on_the_host(host):
    for port, needle in ((NODE_EXPORTER_PORT, "node_exporter_build_info"), (INGEST_METRICS_PORT, "# TYPE"),
                         (REDIS_EXPORTER_PORT, "redis_up 1")):
        out = host.run(f"curl -fsS --max-time 10 http://127.0.0.1:{port}/metrics")
        assert out.rc == 0, f"127.0.0.1:{port}/metrics: {out.stderr}"
        assert needle in out.stdout, f"{needle!r} not in 127.0.0.1:{port}/metrics"


def test_textfile_collector_is_wired(host):
    args = host.run("systemctl show -p ExecStart prometheus-node-exporter; cat /etc/default/prometheus-node-exporter")
    assert "textfile" in args.stdout, args.stdout


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
        assert poll_until(lambda: f"tcp://0.0.0.0:{port}" in listening(host), timeout=10), "the probe did not listen"
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
