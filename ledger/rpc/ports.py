"""One server per port: refuse an address another process listens on, for every address a
listen host names.

gRPC's default ``SO_REUSEPORT`` is turned off where the server binds (ledger/rpc/server.py), so
a second server on ``127.0.0.1:P`` fails to bind. A host that resolves to several addresses is
another matter: ``localhost:P`` is ``127.0.0.1:P`` and ``[::1]:P``, and gRPC starts when it binds
any one of them; a second server would then listen on ``[::1]:P`` beside the first on
``127.0.0.1:P``, and callers would reach one or the other by chance. So before binding, each
address the host resolves to is tried with a plain socket (``SO_REUSEADDR`` on, as gRPC sets
it, so a port that only has connections in TIME_WAIT is not refused): one in use refuses the
start, naming it. Port 0 (pick a free one) is not checked.
"""

from __future__ import annotations

import errno
import socket

from ledger.errors import FailedPrecondition

__all__ = ["refuse_address_in_use"]


def refuse_address_in_use(listen: str, flag: str = "--listen") -> None:
    """Raise FAILED_PRECONDITION (reason ADDRESS_IN_USE) if another process listens on any
    address ``listen`` (``host:port``) resolves to; an unresolvable host is left to gRPC."""
    host, _, port_text = listen.rpartition(":")
    if not port_text.isdigit() or int(port_text) == 0:
        return
    name = host.removeprefix("[").removesuffix("]") or None
    try:
        addresses = socket.getaddrinfo(
            name, int(port_text), type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
    except socket.gaierror:
        return
    for family, kind, protocol, _, address in addresses:
        with socket.socket(family, kind, protocol) as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                probe.bind(address)
            except OSError as error:
                if error.errno != errno.EADDRINUSE:
                    continue  # e.g. no IPv6 here: gRPC skips that address too
                raise FailedPrecondition(
                    f"cannot listen on {listen}: {address[0]!s} port {address[1]!s} is in use by "
                    f"another process; stop it or choose another {flag}",
                    reason="ADDRESS_IN_USE",
                ) from None
