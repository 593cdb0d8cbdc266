"""Answers a sandbox holds back, so that a client times out on them whatever the machine's load.

A delay (sleep longer than the client's timeout) races the client: on a loaded machine the
client may not have started waiting when the delay ends, or the sandbox may not have applied the
request yet when the client gives up. A hold has no race: the held request gets no answer until
the test releases it, and the test waits for the request to be held (applied, when the sandbox
applies before answering) before it looks at what happened.
"""

from __future__ import annotations

import threading

__all__ = ["HOLD_SECONDS_MAX", "AnswerHold"]

HOLD_SECONDS_MAX = 120.0
"""How long a held answer waits for :meth:`AnswerHold.release` at most: a bound against a test
that never releases it, not an expected outcome."""


class AnswerHold:
    """Open (answers go out) until :meth:`hold`; then each request that reaches
    :meth:`pass_through` is counted and waits there until :meth:`release`."""

    def __init__(self) -> None:
        self._open = threading.Event()
        self._open.set()
        self._arrived = threading.Condition()
        self._held = 0

    def hold(self) -> None:
        """Hold every answer from now on (the count of held requests starts at 0)."""
        with self._arrived:
            self._held = 0
            self._open.clear()

    def release(self) -> None:
        """Let the held answers go (to clients that may have given up) and stop holding."""
        self._open.set()

    def wait_held(self, count: int = 1, timeout_seconds: float = HOLD_SECONDS_MAX) -> bool:
        """Block until ``count`` requests are held since :meth:`hold`; False after
        ``timeout_seconds`` (a bound against a hang)."""
        with self._arrived:
            return self._arrived.wait_for(lambda: self._held >= count, timeout_seconds)

    def pass_through(self) -> None:
        """Called by a request handler where it would answer: return at once when open,
        else count this request as held and wait for :meth:`release`."""
        if self._open.is_set():
            return
        with self._arrived:
            self._held += 1
            self._arrived.notify_all()
        self._open.wait(HOLD_SECONDS_MAX)
