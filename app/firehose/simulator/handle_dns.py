"""An authoritative DNS server for the simulated handles: `_atproto.<handle>` TXT -> `did=<did>`, over UDP and TCP.

atproto resolves a handle by DNS first: a TXT record `_atproto.<handle>` holding `did=<did>`. `HandleDnsServer`
answers that for every handle `firehose.simulator.identity.handle_for` makes (resolved back with `did_for_handle`,
no state), with NOERROR and no records for other record types of such a name, and NXDOMAIN for every other name. It
runs dnslib's threaded UDP and TCP servers on one port, in background threads next to the websocket server
(`firehose.simulator.server.Simulator` starts and stops it), so a resolver pointed at `127.0.0.1:<port>` never asks
the system's DNS about simulated accounts.
"""

from __future__ import annotations

import logging
import threading

from dnslib import QTYPE, RCODE, RR, TXT, DNSRecord
from dnslib.server import BaseResolver, DNSHandler, DNSLogger, DNSServer

from firehose.simulator.identity import did_for_handle

log = logging.getLogger(__name__)

TTL = 300
"""Seconds a resolver may cache an answer (simulated handles never change)."""
ATPROTO_LABEL = "_atproto."
_BIND_ATTEMPTS = 20
_POLL_SECONDS = 0.1
"""How often the serving threads check for `stop()`."""


class HandleResolver(BaseResolver):
    """dnslib resolver: the `_atproto` TXT record of each simulated handle (thread-safe: no state)."""

    def resolve(self, request: DNSRecord, handler: DNSHandler) -> DNSRecord:
        """The authoritative answer to one query (only its first question is answered)."""
        del handler
        reply = request.reply(ra=0, aa=1)
        name = str(request.q.qname).rstrip(".").lower()
        did = did_for_handle(name.removeprefix(ATPROTO_LABEL)) if name.startswith(ATPROTO_LABEL) else None
        if did is None:
            reply.header.rcode = RCODE.NXDOMAIN
        elif request.q.qtype in (QTYPE.TXT, QTYPE.ANY):
            reply.add_answer(RR(request.q.qname, QTYPE.TXT, ttl=TTL, rdata=TXT(f"did={did}")))
        return reply


class HandleDnsServer:
    """`_atproto` TXT answers on `host:port`, UDP and TCP, each served by a daemon thread.

    Port 0 picks a port free for both protocols. `start()` binds and serves; `stop()` stops serving and closes both
    sockets.
    """

    def __init__(self, host: str, port: int) -> None:
        self.host = host
        self.port = port
        self._servers: list[DNSServer] = []

    def start(self) -> None:
        """Bind UDP and TCP on the same port (retrying other free ports when `port` is 0) and serve in threads."""
        for attempt in range(_BIND_ATTEMPTS):
            udp = self._server(self.port, tcp=False)
            port = udp.server.server_address[1]
            try:
                tcp = self._server(port, tcp=True)
            except OSError:
                udp.server.server_close()
                if self.port != 0 or attempt == _BIND_ATTEMPTS - 1:
                    raise
                continue
            break
        self.port = port
        self._servers = [udp, tcp]
        for server, protocol in zip(self._servers, ("udp", "tcp"), strict=True):
            server.thread = threading.Thread(target=server.server.serve_forever, args=(_POLL_SECONDS,), daemon=True,
                                             name=f"simulator-dns-{protocol}")
            server.thread.start()
        log.info("handle DNS: _atproto TXT records on %s:%d (UDP and TCP)", self.host, self.port)

    def stop(self) -> None:
        """Stop serving (waits for both serving loops to notice, ~0.1 s each) and close the sockets."""
        for server in self._servers:
            server.server.shutdown()
            server.server.server_close()
            server.thread.join()
        self._servers = []

    def _server(self, port: int, *, tcp: bool) -> DNSServer:
        logger = DNSLogger(log="request,reply,error", prefix=False, logf=log.debug)
        return DNSServer(HandleResolver(), address=self.host, port=port, tcp=tcp, logger=logger)
