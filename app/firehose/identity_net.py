"""The network half of identity resolution: DNS TXT, HTTPS well-known, XRPC resolveHandle and DID documents.

Every function takes a `deadline` (time.monotonic()) and gives each network call a timeout no longer than the
time left (and no longer than the configured per-call timeout). Each returns the answer, None when the source
definitely has none, or raises `Unavailable` when it could not tell (timeout, server error): the caller caches
the first two and retries the third later.
"""

from __future__ import annotations

import http.client
import logging
import socket
import ssl
import time
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import dns.exception
import dns.name
import dns.nameserver
import dns.resolver
import orjson

from firehose.identity_syntax import (
    did_from_txt,
    did_from_wellknown,
    did_web_host,
    is_did,
    resolvable_handle,
)

log = logging.getLogger(__name__)

MAX_BODY = 256 * 1024
MAX_REDIRECTS = 3
USER_AGENT = "firehose-api (identity resolution)"


class Unavailable(Exception):
    """A source could not answer now (timeout, server error); ask again later."""


class Disabled(Unavailable):
    """The source is switched off by configuration."""


class OutOfTime(Unavailable):
    """The request's deadline passed before the call could start (not the source's fault)."""


@dataclass(frozen=True)
class HttpsTarget:
    """Where HTTPS requests to handle and did:web hosts go: normally the host itself on `port`; in tests
    `connect_host` (the Host header and TLS SNI stay the handle's) verified against `ca_file`."""

    port: int = 443
    connect_host: str = ""
    ca_file: Path | None = None

    def context(self) -> ssl.SSLContext:
        """A verifying TLS context: the system's CAs, or `ca_file`'s."""
        return ssl.create_default_context(cafile=str(self.ca_file) if self.ca_file else None)


class _PinnedHTTPSConnection(http.client.HTTPSConnection):
    """HTTPS to `host` (Host header, SNI and certificate name) over a TCP connection to `address` instead."""

    def __init__(self, host: str, address: tuple[str, int], context: ssl.SSLContext, timeout: float) -> None:
        super().__init__(host, 443, timeout=timeout, context=context)
        self._address = address
        self._tls = context

    def connect(self) -> None:
        sock = socket.create_connection(self._address, self.timeout)
        self.sock = self._tls.wrap_socket(sock, server_hostname=self.host)


def time_left(deadline: float, limit: float) -> float:
    """Seconds a call may take: the time left until `deadline`, at most `limit`; Unavailable when none is left."""
    left = min(limit, deadline - time.monotonic())
    if left <= 0:
        raise OutOfTime("out of time")
    return left


def http_get(url: str, deadline: float, limit: float, target: HttpsTarget | None = None,
             context: ssl.SSLContext | None = None) -> tuple[int, bytes]:
    """GET `url` (following up to MAX_REDIRECTS redirects): (status, body). With `target`, https URLs go where it
    says. Raises OSError (incl. timeouts and TLS errors) and http.client.HTTPException."""
    for _ in range(MAX_REDIRECTS + 1):
        parts = urllib.parse.urlsplit(url)
        host = parts.hostname or ""
        timeout = time_left(deadline, limit)
        conn: http.client.HTTPConnection
        if parts.scheme == "https" and target is not None:
            tls = context or target.context()
            if target.connect_host:
                conn = _PinnedHTTPSConnection(host, (target.connect_host, target.port), tls, timeout)
            else:
                conn = http.client.HTTPSConnection(host, parts.port or target.port, timeout=timeout, context=tls)
        elif parts.scheme == "https":
            conn = http.client.HTTPSConnection(host, parts.port, timeout=timeout, context=context)
        elif parts.scheme == "http":
            conn = http.client.HTTPConnection(host, parts.port, timeout=timeout)
        else:
            raise http.client.HTTPException(f"unsupported URL scheme in {url!r}")
        try:
            path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
            conn.request("GET", path, headers={"User-Agent": USER_AGENT, "Accept": "*/*"})
            resp = conn.getresponse()
            location = resp.getheader("Location")
            if resp.status in (301, 302, 303, 307, 308) and location:
                url = urllib.parse.urljoin(url, location)
                continue
            return resp.status, resp.read(MAX_BODY)
        finally:
            conn.close()
    raise http.client.HTTPException(f"more than {MAX_REDIRECTS} redirects from {url!r}")


def _json(body: bytes) -> Any:
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        return None


class Network:
    """The resolvers one API worker asks, configured once."""

    def __init__(self, *, plc_url: str, plc_timeout: float, resolve_handle_url: str, dns_enabled: bool,
                 nameservers: list[tuple[str, int]], wellknown_enabled: bool, target: HttpsTarget,
                 timeout: float) -> None:
        self.plc_url = plc_url.rstrip("/")
        self.plc_timeout = plc_timeout
        self.resolve_handle_url = resolve_handle_url
        self.wellknown_enabled = wellknown_enabled
        self.target = target
        self.timeout = timeout
        self._tls = target.context()
        self._dns = _dns_resolver(nameservers) if dns_enabled else None

    # --- handle -> DID

    def did_by_dns(self, handle: str, deadline: float) -> str | None:
        """The DID in the `_atproto.<handle>` TXT record (exactly one distinct `did=` value), or None."""
        if self._dns is None:
            raise Disabled("DNS lookups are off (FIREHOSE_DNS_ENABLED)")
        name = f"_atproto.{handle}."
        if len(name) > 254:
            return None
        try:
            answer = self._dns.resolve(name, "TXT", lifetime=time_left(deadline, self.timeout), search=False)
        except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer, dns.resolver.YXDOMAIN, dns.name.NameTooLong):
            return None
        except (dns.resolver.NoNameservers, dns.exception.Timeout) as exc:
            raise Unavailable(f"DNS: {exc}") from None
        return did_from_txt([b"".join(rdata.strings) for rdata in answer])

    def did_by_wellknown(self, handle: str, deadline: float) -> str | None:
        """The DID served at `https://<handle>/.well-known/atproto-did`, or None."""
        if not self.wellknown_enabled:
            raise Disabled("well-known lookups are off (FIREHOSE_WELLKNOWN_ENABLED)")
        try:
            status, body = http_get(f"https://{handle}/.well-known/atproto-did", deadline, self.timeout,
                                    self.target, self._tls)
        except TimeoutError as exc:
            raise Unavailable(f"well-known: {exc!r}") from None
        except (OSError, http.client.HTTPException):
            return None  # no such host, nobody listening, bad certificate: this handle has no well-known DID
        if status >= 500:
            raise Unavailable(f"well-known: HTTP {status}")
        return did_from_wellknown(body) if 200 <= status < 300 else None

    def did_by_xrpc(self, handle: str, deadline: float) -> str | None:
        """The DID `com.atproto.identity.resolveHandle` at FIREHOSE_RESOLVE_HANDLE_URL answers, or None."""
        if not self.resolve_handle_url:
            raise Disabled("no XRPC resolver configured (FIREHOSE_RESOLVE_HANDLE_URL)")
        separator = "&" if "?" in self.resolve_handle_url else "?"
        url = f"{self.resolve_handle_url}{separator}{urllib.parse.urlencode({'handle': handle})}"
        _, doc = self._get_json(url, deadline, self.timeout, "XRPC resolveHandle")  # 400: HandleNotFound
        did = doc.get("did") if isinstance(doc, dict) else None
        return did if isinstance(did, str) and is_did(did) else None

    # --- DID -> document

    def did_document(self, did: str, deadline: float) -> dict[str, Any] | None:
        """The current DID document of a did:plc (PLC directory) or did:web (`/.well-known/did.json`), None when
        there is none, the method is unsupported or the document is for another DID."""
        if did.startswith("did:plc:"):
            if not self.plc_url:
                raise Disabled("no PLC directory configured (FIREHOSE_PLC_URL)")
            url = f"{self.plc_url}/{urllib.parse.quote(did, safe=':')}"
            status, doc = self._get_json(url, deadline, self.plc_timeout, "PLC directory")
        elif (host := did_web_host(did)) is not None and resolvable_handle(host):
            status, doc = self._get_json(f"https://{host}/.well-known/did.json", deadline, self.timeout,
                                         "did:web", self.target)
        else:
            return None
        if status in (404, 410) or not isinstance(doc, dict) or doc.get("id") != did:
            return None
        return doc

    def _get_json(self, url: str, deadline: float, limit: float, what: str,
                  target: HttpsTarget | None = None) -> tuple[int, Any]:
        """(status, parsed JSON body or None) of a GET; Unavailable on network errors and 5xx answers."""
        try:
            status, body = http_get(url, deadline, limit, target, self._tls if target else None)
        except (OSError, http.client.HTTPException) as exc:
            raise Unavailable(f"{what} {url}: {exc!r}") from None
        if status >= 500 or status == 429:
            raise Unavailable(f"{what} {url}: HTTP {status}")
        return status, _json(body) if 200 <= status < 300 else None


def _dns_resolver(nameservers: list[tuple[str, int]]) -> dns.resolver.Resolver | None:
    """A resolver asking `nameservers`, or the system's (/etc/resolv.conf); None when there is none to ask."""
    try:
        if not nameservers:
            return dns.resolver.Resolver()
        resolver = dns.resolver.Resolver(configure=False)
        resolver.nameservers = [dns.nameserver.Do53Nameserver(address, port) for address, port in nameservers]
        return resolver
    except (dns.resolver.NoResolverConfiguration, OSError) as exc:
        log.warning("no DNS resolver (%s): handles resolve by well-known and XRPC only; set "
                    "FIREHOSE_DNS_NAMESERVERS", exc)
        return None
