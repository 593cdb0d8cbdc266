"""The verification page's read-only HTTP listener (``serve --verify-page-port``).

Serves one file, the built page with the log's verifier key in it, at ``/verify/`` (``GET`` and
``HEAD``; ``/`` redirects there); anything else is 404, any other method 405. It reads nothing
but the request line and headers (bounded by the standard library: 64 KiB a line, 100 headers;
and by :mod:`ledger.limits`: the path's length, the seconds a request may take, the connections
served at once), touches no database and holds no secret. The page's scripts run under a
Content-Security-Policy that allows only themselves (by hash) and no network access at all.
"""

from __future__ import annotations

import base64
import hashlib
import re
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any, ClassVar

from ledger import limits
from ledger.http_listener import BoundedThreading, Listener
from ledger.verify_page import page_html, page_with_key

__all__ = ["PAGE_PATH", "VerifyPageEndpoint", "content_security_policy"]

PAGE_PATH = "/verify/"
"""Where the page is served."""
_PAGE_PATHS = frozenset({PAGE_PATH, "/verify/index.html"})
_INLINE_SCRIPT = re.compile(rb"<script>(.*?)</script>", re.DOTALL)


def content_security_policy(page: bytes) -> str:
    """The page's policy: its own inline scripts (by SHA-256) and styles; no fetch, no frame."""
    hashes = " ".join(
        "'sha256-" + base64.b64encode(hashlib.sha256(script).digest()).decode("ascii") + "'"
        for script in _INLINE_SCRIPT.findall(page)
    )
    return (
        f"default-src 'none'; script-src {hashes}; style-src 'unsafe-inline'; "
        "img-src blob: data:; media-src blob: mediastream:; connect-src 'none'; "
        "base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    )


class _Handler(BaseHTTPRequestHandler):
    server_version = "policy-ledger-verify-page"
    sys_version = ""
    protocol_version = "HTTP/1.1"
    timeout = limits.verify_page_request_seconds_max
    page: ClassVar[bytes] = b""
    policy: ClassVar[str] = ""

    def do_GET(self) -> None:
        self._answer(body=True)

    def do_HEAD(self) -> None:
        self._answer(body=False)

    def parse_request(self) -> bool:
        """The request line and headers; a method other than GET and HEAD is answered 405."""
        if not super().parse_request():
            return False
        if self.command not in {"GET", "HEAD"}:
            self.close_connection = True
            self._send(
                HTTPStatus.METHOD_NOT_ALLOWED,
                b"405 only GET and HEAD\n",
                extra={"Allow": "GET, HEAD", "Connection": "close"},
            )
            return False
        return True

    def _answer(self, *, body: bool) -> None:
        if len(self.path) > limits.verify_page_path_chars_max:
            self._send(HTTPStatus.REQUEST_URI_TOO_LONG, b"414 request target too long\n")
            return
        path = self.path.split("?", 1)[0]
        if path in _PAGE_PATHS:
            self._send(
                HTTPStatus.OK,
                self.page,
                content_type="text/html; charset=utf-8",
                extra={"Content-Security-Policy": self.policy},
                body=body,
            )
        elif path in {"/", "/verify"}:
            self._send(HTTPStatus.FOUND, b"", extra={"Location": PAGE_PATH}, body=body)
        else:
            self._send(HTTPStatus.NOT_FOUND, b"404 the page is at /verify/\n", body=body)

    def _send(
        self,
        status: HTTPStatus,
        payload: bytes,
        *,
        content_type: str = "text/plain; charset=utf-8",
        extra: dict[str, str] | None = None,
        body: bool = True,
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(payload)))
        self.send_header("X-Content-Type-Options", "nosniff")
        self.send_header("Referrer-Policy", "no-referrer")
        self.send_header("Cache-Control", "no-cache")
        for name, value in (extra or {}).items():
            self.send_header(name, value)
        self.end_headers()
        if body:
            self.wfile.write(payload)

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: the page is public and static; the gRPC server's log says what matters."""


class _Server(BoundedThreading, HTTPServer):
    connections_max = limits.verify_page_connections_max


class VerifyPageEndpoint:
    """The listener, in a thread of its own; :meth:`stop` closes it."""

    def __init__(self, host: str, port: int, log_key: str) -> None:
        """Listen on ``host:port`` (0 picks a port) and serve the page with ``log_key`` in it.
        A port in use is FAILED_PRECONDITION (ADDRESS_IN_USE), as ``serve``'s own."""
        page = page_with_key(page_html(), log_key)
        policy = content_security_policy(page)
        handler = type("Handler", (_Handler,), {"page": page, "policy": policy})
        self._listener = Listener(
            _Server,
            host,
            port,
            handler,
            name="the verification page",
            flag="--verify-page-port",
        )

    @property
    def port(self) -> int:
        """The port it listens on (the chosen one when asked for port 0)."""
        return self._listener.port

    def stop(self) -> None:
        """Stop answering and close the socket."""
        self._listener.stop()
