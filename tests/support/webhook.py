"""A webhook receiver on this machine's end of the test network: what Alertmanager's webhook receiver posts to."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any


class WebhookReceiver:
    """Collects every JSON document POSTed to http://address:port/ (a context manager; serves in a thread)."""

    def __init__(self, address: str, port: int) -> None:
        self.posts: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                try:
                    doc = json.loads(body)
                except json.JSONDecodeError:
                    doc = {"unparsed": body.decode(errors="replace")}
                with receiver._lock:
                    receiver.posts.append(doc)
                self.send_response(200)
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                return

        try:
            self.server = ThreadingHTTPServer((address, port), Handler)
        except OSError as exc:
            raise RuntimeError(f"cannot listen on {address}:{port} for the alert webhook ({exc}): is another test "
                               "using the port? Set TESTHOST_WEBHOOK_PORT (and provision with it)") from exc
        self.thread = threading.Thread(target=self.server.serve_forever, name="webhook", daemon=True)

    def __enter__(self) -> WebhookReceiver:
        self.thread.start()
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.server.shutdown()
        self.server.server_close()

    def alerts(self, name: str, status: str = "firing") -> list[dict[str, Any]]:
        """Alerts named `name` with `status` in every post so far."""
        with self._lock:
            posts = list(self.posts)
        return [a for p in posts for a in p.get("alerts", [])
                if a.get("labels", {}).get("alertname") == name and a.get("status") == status]
