"""What the local gateway sandboxes share: serving HTTP on 127.0.0.1 in a thread, and posting a
form to the merchant (KNET's notification, CMI's callback).

Test infrastructure only, like the sandboxes.
"""

from __future__ import annotations

import threading
import urllib.error
import urllib.request
from http.client import HTTPException
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Self

__all__ = ["DELIVERY_TIMEOUT_SECONDS", "HttpSandbox", "TextHandler", "post_form"]

DELIVERY_TIMEOUT_SECONDS = 60.0
"""How long a sandbox waits for the merchant's answer to a notification or callback, and the
``timeout_seconds`` of the gateway settings it hands out, by default: a bound against a hang,
never an outcome (a short one can be reached on a loaded machine, and KNET then reverses the
payment). A test that needs the answer to come too late holds it until the sandbox has given up
(see :mod:`payments.sandbox.holding`) and sets a short timeout itself."""


class HttpSandbox:
    """Serves ``_handler_class()`` on 127.0.0.1, on a free port, in a background thread.

    The handler reaches the sandbox as ``self.server.sandbox``.
    """

    _thread_name = "sandbox"

    def __init__(self) -> None:
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        raise NotImplementedError

    def _release_held(self) -> None:
        """Let held answers go before :meth:`stop` (a hold would keep a handler thread)."""

    def start(self) -> Self:
        """Serve on 127.0.0.1 on a free port, in a background thread."""
        if self._server is not None:
            raise RuntimeError("the sandbox is already running")
        server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        server.daemon_threads = True
        server.sandbox = self  # type: ignore[attr-defined]
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.05},  # stop() waits at most this long
            name=self._thread_name,
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and release the port (held answers are released first)."""
        self._release_held()
        server, thread = self._server, self._thread
        self._server, self._thread = None, None
        if server is not None:
            server.shutdown()
            server.server_close()
        if thread is not None:
            thread.join(timeout=5)

    @property
    def running(self) -> bool:
        return self._server is not None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:<port>`` while running."""
        if self._server is None:
            raise RuntimeError("the sandbox is not running")
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"


class TextHandler(BaseHTTPRequestHandler):
    """A quiet handler that answers text (KNET's and CMI's sandboxes)."""

    def log_message(self, format: str, *args: object) -> None:
        """Quiet: tests read the sandbox's records, not its access log."""

    def _body(self) -> str:
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length).decode("utf-8", "replace")

    def _send(self, status: int, content_type: str, text: str) -> None:
        data = text.encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", f"{content_type}; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


def post_form(url: str, body: bytes, timeout_seconds: float) -> tuple[bool, str]:
    """POST a URL-encoded form to the merchant; ``(True, its body)``, or ``(False, what went
    wrong)`` (connection refused, HTTP 500, no answer within ``timeout_seconds``...)."""
    request = urllib.request.Request(  # noqa: S310 - the merchant's URL, checked by the sandbox
        url,
        data=body,
        headers={"Content-Type": "application/x-www-form-urlencoded"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout_seconds) as answer:  # noqa: S310
            return True, answer.read().decode("utf-8", "replace")
    except (urllib.error.URLError, HTTPException, OSError) as exc:
        return False, f"{type(exc).__name__}: {exc}"
