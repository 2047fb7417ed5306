"""Real servers for identity resolution tests, each on a free loopback port in a thread:

- `DnsServer`: an authoritative DNS server (dnslib, UDP) answering `_atproto.<handle>` TXT queries from a dict;
- `WebServer`: HTTPS with a certificate from a throwaway test CA (trustme) for the test handles, serving
  `/.well-known/atproto-did` and did:web's `/.well-known/did.json` by Host header;
- `PlcServer`: plain HTTP serving PLC directory documents (`/<did>`) and an XRPC
  `/xrpc/com.atproto.identity.resolveHandle` endpoint;
- `SimulatedIdentityServer`: the simulator's PLC directory and resolveHandle for its accounts, answering late;
- `BlackHole`: UDP and TCP sockets that accept whatever arrives and never answer (a dead or hung resolver).
"""

from __future__ import annotations

import http.server
import select
import socket
import ssl
import threading
import time
import urllib.parse
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import trustme
from dnslib import QTYPE, RCODE, RR, TXT
from dnslib.server import BaseResolver, DNSLogger, DNSServer

from firehose.simulator import identity as simulated

TEST_HOSTS = ("alice.test", "bob.test", "carol.test", "dave.test", "eve.test", "mallory.test", "nobody.test",
              "twice.test")


class _TxtResolver(BaseResolver):
    """Answers TXT queries from `records` (name -> values); names it does not know are NXDOMAIN."""

    def __init__(self) -> None:
        self.records: dict[str, list[str]] = {}
        self.queries: list[str] = []

    def resolve(self, request: Any, handler: Any) -> Any:
        reply = request.reply()
        name = str(request.q.qname).rstrip(".").lower()
        self.queries.append(name)
        values = self.records.get(name)
        if values is None:
            reply.header.rcode = RCODE.NXDOMAIN
        elif request.q.qtype == QTYPE.TXT:
            for value in values:
                reply.add_answer(RR(request.q.qname, QTYPE.TXT, rdata=TXT(value), ttl=60))
        return reply


class DnsServer:
    """dnslib on 127.0.0.1:<free UDP port>; `txt(handle, *values)` publishes `_atproto.<handle>` TXT values."""

    def __init__(self) -> None:
        self.resolver = _TxtResolver()
        self.server = DNSServer(self.resolver, address="127.0.0.1", port=0,
                                logger=DNSLogger(logf=lambda _line: None))
        self.port = self.server.server.server_address[1]
        self.thread = threading.Thread(target=self.server.server.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    @property
    def nameserver(self) -> str:
        return f"127.0.0.1:{self.port}"

    def txt(self, handle: str, *values: str) -> None:
        self.resolver.records[f"_atproto.{handle}"] = list(values)

    def queries_for(self, handle: str) -> int:
        return self.resolver.queries.count(f"_atproto.{handle}")

    def stop(self) -> None:
        self.server.server.shutdown()
        self.server.server.server_close()


class _Handler(http.server.BaseHTTPRequestHandler):
    """Routes through the owning server's `route(host, path)` -> (status, content type, body) or None (404)."""

    def do_GET(self) -> None:
        owner = self.server.owner  # type: ignore[attr-defined]
        host = (self.headers.get("Host") or "").split(":")[0].lower()
        owner.hits.append((host, self.path))
        if owner.delay:
            time.sleep(owner.delay)
        for prefix, gate in owner.gates.items():
            if self.path.startswith(prefix):
                gate.wait(30)
        answer = owner.route(host, self.path)
        status, content_type, body = answer if answer else (404, "text/plain", b"not found")
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


class _HttpServer:
    """A ThreadingHTTPServer on 127.0.0.1:<free port> in a thread, recording (host, path) of every request; its
    answers can wait `delay` seconds, or until a gate opens."""

    def __init__(self, tls: ssl.SSLContext | None = None, delay: float = 0.0) -> None:
        self.hits: list[tuple[str, str]] = []
        self.delay = delay  # seconds every answer waits (a distant server)
        self.gates: dict[str, threading.Event] = {}  # path prefix -> answers wait until it is set (at most 30 s)
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self.httpd.owner = self  # type: ignore[attr-defined]
        if tls is not None:
            self.httpd.socket = tls.wrap_socket(self.httpd.socket, server_side=True)
        self.port = self.httpd.server_address[1]
        self.thread = threading.Thread(target=self.httpd.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def route(self, host: str, path: str) -> tuple[int, str, bytes] | None:
        raise NotImplementedError

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


class WebServer(_HttpServer):
    """The handles' own web servers, all on one HTTPS port with a test-CA certificate naming every TEST_HOSTS."""

    def __init__(self, tmp: Path) -> None:
        self.ca = trustme.CA()
        self.ca_file = tmp / "test-ca.pem"
        self.ca.cert_pem.write_to_path(str(self.ca_file))
        tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.ca.issue_cert(*TEST_HOSTS).configure_cert(tls)
        self.atproto_did: dict[str, str] = {}
        self.did_json: dict[str, dict[str, Any]] = {}
        super().__init__(tls)

    def route(self, host: str, path: str) -> tuple[int, str, bytes] | None:
        if path == "/.well-known/atproto-did" and host in self.atproto_did:
            return 200, "text/plain", f"{self.atproto_did[host]}\n".encode()
        if path == "/.well-known/did.json" and host in self.did_json:
            return 200, "application/json", orjson.dumps(self.did_json[host])
        return None

    def hosts_asked(self) -> set[str]:
        return {host for host, _ in self.hits}


RESOLVE_HANDLE = "/xrpc/com.atproto.identity.resolveHandle"


def resolve_handle_answer(query: str, did_for: Callable[[str], str | None]) -> tuple[int, str, bytes]:
    """The XRPC resolveHandle answer for the `handle` of a query string: the DID `did_for` gives, else
    HandleNotFound (400), as a PDS answers."""
    did = did_for(urllib.parse.parse_qs(query).get("handle", [""])[0])
    if did:
        return 200, "application/json", orjson.dumps({"did": did})
    return 400, "application/json", orjson.dumps({"error": "HandleNotFound", "message": "no such handle"})


class PlcServer(_HttpServer):
    """A PLC directory (`/<did>`) plus an XRPC resolveHandle endpoint, over plain HTTP."""

    def __init__(self) -> None:
        self.documents: dict[str, dict[str, Any]] = {}
        self.xrpc: dict[str, str] = {}
        super().__init__()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def xrpc_url(self) -> str:
        return f"{self.url}{RESOLVE_HANDLE}"

    def account(self, did: str, *handles: str) -> None:
        """Publish the DID document of `did` claiming `handles` (in order)."""
        self.documents[did] = document(did, *handles)

    def route(self, host: str, path: str) -> tuple[int, str, bytes] | None:
        parts = urllib.parse.urlsplit(path)
        if parts.path == RESOLVE_HANDLE:
            return resolve_handle_answer(parts.query, self.xrpc.get)
        did = urllib.parse.unquote(parts.path.lstrip("/"))
        if did in self.documents:
            return 200, "application/json", orjson.dumps(self.documents[did])
        return None

    def asked_for(self, did: str) -> int:
        return sum(1 for _, path in self.hits if urllib.parse.unquote(path.lstrip("/")) == did)


class SimulatedIdentityServer(_HttpServer):
    """The simulator's PLC directory (`/plc/<did>`) and resolveHandle (`/xrpc/...`) for its accounts, each answer
    `delay` seconds late: the real PLC directory and handle hosts as far away as they are on the network."""

    def __init__(self, delay: float) -> None:
        super().__init__(delay=delay)

    @property
    def plc_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/plc"

    @property
    def xrpc_url(self) -> str:
        return f"http://127.0.0.1:{self.port}{RESOLVE_HANDLE}"

    def route(self, host: str, path: str) -> tuple[int, str, bytes] | None:
        parts = urllib.parse.urlsplit(path)
        if parts.path == RESOLVE_HANDLE:
            return resolve_handle_answer(parts.query, simulated.did_for_handle)
        doc = simulated.plc_document(urllib.parse.unquote(parts.path.removeprefix("/plc/")))
        return (200, "application/json", orjson.dumps(doc)) if doc else None


def document(did: str, *handles: str) -> dict[str, Any]:
    """A minimal DID document for `did` claiming `handles`."""
    return {"@context": ["https://www.w3.org/ns/did/v1"], "id": did,
            "alsoKnownAs": [f"at://{h}" for h in handles],
            "service": [{"id": "#atproto_pds", "type": "AtprotoPersonalDataServer",
                         "serviceEndpoint": "https://pds.invalid"}]}


class BlackHole:
    """A UDP socket and a listening TCP socket on loopback that never answer (connections wait in the backlog)."""

    def __init__(self) -> None:
        self.udp = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.udp.bind(("127.0.0.1", 0))
        self.tcp = socket.socket()
        self.tcp.bind(("127.0.0.1", 0))
        self.tcp.listen(64)
        self.udp_port = self.udp.getsockname()[1]
        self.tcp_port = self.tcp.getsockname()[1]

    def wait_for_dns_query(self, timeout: float = 30.0) -> None:
        """Block until a DNS query has arrived (it stays unread and unanswered)."""
        readable, _, _ = select.select([self.udp], [], [], timeout)
        if not readable:
            raise TimeoutError(f"no DNS query reached the black hole in {timeout}s")

    def close(self) -> None:
        self.udp.close()
        self.tcp.close()
