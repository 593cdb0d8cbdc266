"""Free TCP ports on 127.0.0.1 for tests that must name a port before a server binds it.

A port chosen here is free when chosen, not reserved: a parallel test worker binding port 0 may
take it before the server does, a risk no test can remove without the server binding port 0
itself (prefer that where the code allows it). Several ports are chosen while all are held, so no
two of them are the same; choosing them one after another, each closed before the next is
chosen, can give the same port twice.
"""

from __future__ import annotations

import contextlib
import socket

__all__ = ["free_port", "free_ports"]


def free_ports(count: int) -> list[int]:
    """``count`` different ports that were free when chosen."""
    with contextlib.ExitStack() as stack:
        probes = [stack.enter_context(socket.socket()) for _ in range(count)]
        for probe in probes:
            probe.bind(("127.0.0.1", 0))
        return [int(probe.getsockname()[1]) for probe in probes]


def free_port() -> int:
    """One port that was free when chosen."""
    [port] = free_ports(1)
    return port
