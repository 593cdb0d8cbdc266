"""Stopping the witness submitter ends its tasks even when a checkpoint arrives as it stops.

On Python 3.11, ``asyncio.wait_for`` returns the awaited result, dropping a cancellation that
arrives as the awaited event fires (CPython gh-86296). The submitter's loop once waited that way:
a commit's notify just before the server's stop cancelled the task, the cancellation was lost,
and the stop waited forever for a task that kept looping (seen as a server stop hanging in the
e2e loop). Here the two happen in the very order that lost it, with no timing involved.
"""

from __future__ import annotations

import asyncio

from ledger.cosignature import CosignatureVerifier, WitnessEndpoint
from ledger.witnessing import WitnessSubmitter


class _NoCheckpoint:
    """A source whose log has no checkpoint yet: each attempt fails and is counted."""

    def latest_checkpoint(self) -> object:
        raise OSError("no checkpoint yet")


async def _notify_then_stop() -> tuple[int, bool]:
    endpoint = WitnessEndpoint(
        "http://127.0.0.1:9/w", CosignatureVerifier("w.example/w", bytes(32))
    )
    submitter = WitnessSubmitter(
        [endpoint],
        source=_NoCheckpoint(),  # type: ignore[arg-type]
        sink=None,  # type: ignore[arg-type]
        clock=None,  # type: ignore[arg-type]
        retry_seconds=3600,
    )
    submitter.start()  # the task's first attempt (start notifies), then it waits to be woken
    await submitter.wait_until(lambda progress: progress[0].failures >= 1)
    await asyncio.sleep(0)  # let the task reach its wait (a yield, not a timed wait)
    submitter.notify()  # a checkpoint committed ...
    # ... and the server stops before the loop runs again. The bound is a hang guard only.
    # asyncio.wait, unlike wait_for, never cancels what it waits for: the bound is a hang guard.
    stopping = asyncio.ensure_future(submitter.stop())
    done, _ = await asyncio.wait({stopping}, timeout=60)
    stopped = stopping in done
    if not stopped:  # the hang: end it so the test can report it
        stopping.cancel()
        await asyncio.wait({stopping})
    return submitter.progress[0].failures, stopped


def test_stop_ends_the_tasks_when_a_checkpoint_arrives_as_it_stops() -> None:
    failures, stopped = asyncio.run(_notify_then_stop())
    assert failures >= 1
    assert stopped, "stop() did not return: a task missed its cancellation and kept looping"
