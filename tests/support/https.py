"""HTTPS to the test host's proxy: connect to its address while Host and SNI name the proxy's domain (the test
host has no DNS name), trusting Caddy's local CA. Used by tests/support/host.py (tests/host) and
tests/bench/fair_use.py."""

from __future__ import annotations

import http.client
import socket
import ssl

CADDY_ROOT_CA = "/var/lib/caddy/.local/share/caddy/pki/authorities/local/root.crt"


class HostHttps(http.client.HTTPSConnection):
    """An HTTPS connection to `ip`:443 for `domain`, optionally from the local address `source`."""

    def __init__(self, ip: str, domain: str, context: ssl.SSLContext, timeout: float,
                 source: str | None = None) -> None:
        super().__init__(domain, 443, context=context, timeout=timeout)
        self._ip = ip
        self._source = source

    def connect(self) -> None:
        sock = socket.create_connection((self._ip, self.port), self.timeout,
                                        source_address=(self._source, 0) if self._source else None)
        self.sock = self._context.wrap_socket(sock, server_hostname=self.host)  # type: ignore[attr-defined]
