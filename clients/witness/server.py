"""The witness's HTTP server (stdlib ``http.server``, threaded, HTTP/1.1 keep-alive).

Routes: ``POST /add-checkpoint`` (the submission prefix is the root) and
``GET /<lowercase hex SHA-256 of the origin>/checkpoint`` (the monitoring prefix is the root).
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from clients.witness.protocol import ADD_CHECKPOINT_BYTES_MAX, ADD_CHECKPOINT_PATH
from clients.witness.witness import Response, Witness

__all__ = ["WitnessServer"]

_CHECKPOINT_PATH = re.compile(r"/([0-9a-f]{64})/checkpoint")


class WitnessServer:
    """``witness`` served on ``host:port`` (port 0: any free port; see :attr:`port`)."""

    def __init__(self, witness: Witness, host: str = "127.0.0.1", port: int = 0) -> None:
        handler = type("_Handler", (_Handler,), {"witness": witness})
        self._server = ThreadingHTTPServer((host, port), handler)
        self._server.daemon_threads = True
        self._host = host
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        """The port it listens on."""
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        """``http://host:port``: the submission and monitoring prefix."""
        return f"http://{self._host}:{self.port}"

    def serve_forever(self) -> None:
        """Serve until :meth:`shutdown`."""
        self._server.serve_forever()

    def serve_until(self, stopping: Callable[[], bool], poll_seconds: float = 0.2) -> None:
        """Serve on this thread until ``stopping()`` is true, asked before each request and at
        least every ``poll_seconds``: a signal handler need only set a flag (it takes no lock
        and raises nothing, so it is safe wherever the signal lands)."""
        self._server.timeout = poll_seconds
        while not stopping():
            self._server.handle_request()

    def start(self) -> None:
        """Serve on a background thread."""
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)
        self._thread.start()

    def shutdown_socket(self) -> None:
        """Close the socket (after :meth:`serve_forever` returned)."""
        self._server.server_close()

    def shutdown(self) -> None:
        """Stop serving and close the socket."""
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join()


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    witness: Witness

    def do_POST(self) -> None:
        if self.path != ADD_CHECKPOINT_PATH:
            self._send(Response(404, b"not found\n"))
            return
        length_text = self.headers.get("Content-Length", "")
        if not length_text.isascii() or not length_text.isdigit():
            self._send(Response(411, b"a Content-Length is required\n"))
            return
        length = int(length_text)
        if length > ADD_CHECKPOINT_BYTES_MAX:
            # Refuse before reading: the limit is checked at the boundary.
            self.close_connection = True
            self._send(Response(413, f"body over {ADD_CHECKPOINT_BYTES_MAX} bytes\n".encode()))
            return
        self._send(self.witness.add_checkpoint(self.rfile.read(length)))

    def do_GET(self) -> None:
        match = _CHECKPOINT_PATH.fullmatch(self.path)
        note = None if match is None else self.witness.latest_note(match.group(1))
        if note is None:
            self._send(Response(404, b"not found\n"))
            return
        self._send(Response(200, note))

    def _send(self, response: Response) -> None:
        self.send_response(response.status)
        self.send_header("Content-Type", response.content_type)
        self.send_header("Content-Length", str(len(response.body)))
        self.end_headers()
        self.wfile.write(response.body)

    def log_message(self, format: str, *args: object) -> None:
        """Quiet: the witness reports through its responses, not stderr noise per request."""
