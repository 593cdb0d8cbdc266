"""The server's small plain-HTTP listeners (the verification page, ``GET /metrics``), bounded.

The standard library's threading HTTP servers start a thread for every connection and wait on
it as long as the client likes. A listener here serves at most ``connections_max`` connections
at once (one more is closed unanswered, before a thread is started for it) and closes a
connection whose request has not come within its handler's ``timeout`` seconds; the standard
library bounds the rest (64 KiB a request line or header, 100 headers). A port in use is
FAILED_PRECONDITION ``ADDRESS_IN_USE``, as ``serve``'s own.
"""

from __future__ import annotations

import errno
import socket
import threading
from socketserver import BaseServer, TCPServer, ThreadingMixIn
from typing import Any

from ledger.errors import FailedPrecondition

__all__ = ["BoundedThreading", "Listener"]


class BoundedThreading(ThreadingMixIn):
    """A thread per connection, at most ``connections_max`` at once (mix in before the server
    class). Threads are daemons and never joined: :meth:`Listener.stop` closes the socket."""

    daemon_threads = True
    block_on_close = False
    connections_max = 8

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._slots = threading.BoundedSemaphore(self.connections_max)
        super().__init__(*args, **kwargs)

    def process_request(self, request: Any, client_address: Any) -> None:
        # Called on the accepting thread in the order connections arrive: a connection that
        # finds every slot taken is closed at once.
        if not self._slots.acquire(blocking=False):
            self.shutdown_request(request)  # type: ignore[attr-defined]
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self._slots.release()
            raise

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self._slots.release()


class Listener:
    """``server_class`` listening on ``host:port`` (0 picks a port), served on a thread of its
    own; :meth:`stop` closes it. ``name`` (what it serves) and ``flag`` (the option that chose
    the port) make the message when the port is in use."""

    def __init__(
        self,
        server_class: type[TCPServer],
        host: str,
        port: int,
        handler: Any,
        *,
        name: str,
        flag: str,
    ) -> None:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET  # an IPv6 --listen host
        bound = type(server_class.__name__, (server_class,), {"address_family": family})
        try:
            self.server: BaseServer = bound((host, port), handler)
        except OSError as error:
            if error.errno != errno.EADDRINUSE:
                raise
            raise FailedPrecondition(
                f"cannot serve {name} on port {port}: it is in use by another process; stop it "
                f"or choose another {flag}",
                reason="ADDRESS_IN_USE",
            ) from None
        self._thread = threading.Thread(
            target=self.server.serve_forever, name=flag.lstrip("-"), daemon=True
        )
        self._thread.start()

    @property
    def port(self) -> int:
        """The port it listens on (the chosen one when asked for port 0)."""
        return int(self.server.server_address[1])  # type: ignore[index]

    def stop(self) -> None:
        """Stop answering and close the socket."""
        self.server.shutdown()
        self.server.server_close()
        self._thread.join(timeout=5)
