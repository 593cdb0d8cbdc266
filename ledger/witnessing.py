"""The log's side of witnessing: submit every new checkpoint to the configured witnesses
(https://c2sp.org/tlog-witness) and keep the cosignatures they return.

One task per witness, apart from the sequencer: appends never wait for a witness, and a slow or
down witness never delays the others. After each commit the sequencer calls :meth:`notify`; each
witness task then (1) reads the latest checkpoint, (2) builds the consistency proof from the size
that witness last cosigned (0 at first: a 409 answer tells us its size, and we retry once from
there), (3) POSTs ``add-checkpoint`` in a worker thread with a timeout, (4) verifies the returned
cosignature line with the witness's key and (5) stores it verbatim. A failure is recorded in the
witness's :class:`WitnessProgress` (its lag is visible there) and retried at the next checkpoint
or after ``retry_seconds``.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from ledger import limits
from ledger.clock import Clock
from ledger.cosignature import WitnessEndpoint
from ledger.errors import LedgerError
from ledger.note import parse_note
from ledger.signing import SignatureError

__all__ = ["WitnessProgress", "WitnessSubmitter"]

log = logging.getLogger(__name__)

_CONFLICT = 409


class _Checkpoint(Protocol):
    @property
    def tree_size(self) -> int: ...

    @property
    def note_bytes(self) -> bytes: ...


class CheckpointSource(Protocol):
    """What the submitter reads from the log (``ledger.storage.log_store.LogStore``)."""

    def latest_checkpoint(self) -> _Checkpoint: ...

    def consistency_proof(self, from_size: int, to_size: int) -> tuple[int, list[bytes]]: ...


class CosignatureSink(Protocol):
    """Where verified cosignatures go (``ledger.storage.cosignature_store.CosignatureStore``)."""

    def add(
        self, tree_size: int, witness_name: str, key_id: bytes, line: bytes, now_us: int
    ) -> bool: ...


@dataclass
class WitnessProgress:
    """One witness as the log sees it: what it cosigned, how far behind it is, why it failed."""

    url: str
    name: str
    cosigned_size: int = 0
    cosigned_once: bool = False
    log_size: int = 0
    failures: int = 0
    last_error: str = ""

    @property
    def lag(self) -> int:
        """Entries the witness has not cosigned yet."""
        return max(0, self.log_size - self.cosigned_size)


class _Refused(Exception):
    """The witness did not cosign (status and body in the message)."""


class WitnessSubmitter:
    """Submits checkpoints to ``witnesses`` in the background (see the module docstring)."""

    def __init__(
        self,
        witnesses: Sequence[WitnessEndpoint],
        source: CheckpointSource,
        sink: CosignatureSink,
        clock: Clock,
        *,
        timeout_seconds: float = limits.witness_timeout_seconds,
        retry_seconds: float = limits.witness_retry_seconds,
    ) -> None:
        self._witnesses = tuple(witnesses)
        self._source = source
        self._sink = sink
        self._clock = clock
        self._timeout_seconds = timeout_seconds
        self._retry_seconds = retry_seconds
        self.progress = [WitnessProgress(w.url, w.verifier.name) for w in self._witnesses]
        self._wake = [asyncio.Event() for _ in self._witnesses]
        self._changed = asyncio.Condition()
        self._tasks: list[asyncio.Task[None]] = []
        self._stopping = False

    def start(self) -> None:
        """Start one task per witness (on the running loop) and submit the latest checkpoint."""
        for number in range(len(self._witnesses)):
            self._tasks.append(asyncio.create_task(self._run(number), name=f"witness-{number}"))
        self.notify()

    async def stop(self) -> None:
        """Cancel the tasks (a request under way is abandoned: the witness state is its own).

        The flag, not only the cancellation, ends each task's loop: on Python 3.11
        ``asyncio.wait_for`` drops a cancellation that arrives as the awaited event fires
        (CPython gh-86296), and a loop that missed it would never end (a server stop hung)."""
        self._stopping = True
        for wake in self._wake:
            wake.set()
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def notify(self) -> None:
        """A new checkpoint was committed (call on the loop's thread)."""
        for event in self._wake:
            event.set()

    async def wait_cosigned(self, tree_size: int, count: int) -> None:
        """Return once ``count`` witnesses have cosigned ``tree_size`` or later (for tests and
        the demo: they wait on the event itself, never on time)."""
        await self.wait_until(
            lambda progress: sum(p.cosigned_size >= tree_size for p in progress) >= count
        )

    async def wait_until(self, predicate: Callable[[Sequence[WitnessProgress]], bool]) -> None:
        """Return once ``predicate(progress)`` holds; it is re-checked after every attempt."""
        async with self._changed:
            await self._changed.wait_for(lambda: predicate(self.progress))

    async def _run(self, number: int) -> None:
        wake = self._wake[number]
        while not self._stopping:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._retry_seconds):
                    await wake.wait()
            wake.clear()
            if self._stopping:
                return
            await self._submit_latest(number)

    async def _submit_latest(self, number: int) -> None:
        progress = self.progress[number]
        try:
            # (1)
            checkpoint = await asyncio.to_thread(self._source.latest_checkpoint)
            progress.log_size = checkpoint.tree_size
            if progress.cosigned_once and progress.cosigned_size >= checkpoint.tree_size:
                return
            await self._submit(number, checkpoint)
        except (_Refused, LedgerError, OSError, ValueError) as error:
            progress.failures += 1
            progress.last_error = str(error)[:500]
            log.warning("witness %s: %s (lag %d)", progress.url, error, progress.lag)
        async with self._changed:
            self._changed.notify_all()

    async def _submit(self, number: int, checkpoint: _Checkpoint) -> None:
        witness, progress = self._witnesses[number], self.progress[number]
        old_size = progress.cosigned_size
        for _ in range(2):
            # (2)
            body = await asyncio.to_thread(self._request, old_size, checkpoint)
            # (3)
            status, answer = await asyncio.to_thread(self._post, witness.url, body)
            if status == _CONFLICT:
                old_size = _size_of(answer)
                continue
            if status != 200:
                raise _Refused(f"HTTP {status}: {answer[:200]!r}")
            # (4), (5)
            line = self._verified_line(witness, checkpoint.note_bytes, answer)
            now_us = int(self._clock.now().timestamp() * 1_000_000)
            name, key_id = witness.verifier.name, witness.verifier.key_id
            await asyncio.to_thread(
                self._sink.add, checkpoint.tree_size, name, key_id, line, now_us
            )
            progress.cosigned_size = checkpoint.tree_size
            progress.cosigned_once = True
            progress.last_error = ""
            return
        raise _Refused(f"the witness's size kept changing (last {old_size})")

    def _request(self, old_size: int, checkpoint: _Checkpoint) -> bytes:
        if old_size > checkpoint.tree_size:
            raise _Refused(f"the witness cosigned size {old_size}, beyond ours")
        proof: list[bytes] = []
        if 0 < old_size < checkpoint.tree_size:
            _, proof = self._source.consistency_proof(old_size, checkpoint.tree_size)
        lines = [f"old {old_size}", *(base64.b64encode(item).decode() for item in proof)]
        return "".join(f"{line}\n" for line in lines).encode() + b"\n" + checkpoint.note_bytes

    def _post(self, url: str, body: bytes) -> tuple[int, bytes]:
        # The URL is the operator's --witness option, checked to be http(s) when parsed.
        request = urllib.request.Request(f"{url}/add-checkpoint", data=body, method="POST")  # noqa: S310
        try:
            with urllib.request.urlopen(request, timeout=self._timeout_seconds) as reply:  # noqa: S310
                return int(reply.status), reply.read(limits.witness_response_bytes_max)
        except urllib.error.HTTPError as error:
            return int(error.code), error.read(limits.witness_response_bytes_max)

    @staticmethod
    def _verified_line(witness: WitnessEndpoint, note: bytes, answer: bytes) -> bytes:
        """The witness's own line of its answer, verified on the checkpoint; others ignored."""
        parsed = parse_note(note + answer)
        own = len(parse_note(note).signatures)
        raw_lines = answer.split(b"\n")[:-1]
        verifier = witness.verifier
        for raw, signature in zip(raw_lines, parsed.signatures[own:], strict=True):
            if (signature.name, signature.key_id) == (verifier.name, verifier.key_id):
                try:
                    verifier.verify(parsed.text.encode("utf-8"), signature.signature)
                except SignatureError as error:
                    raise _Refused(str(error)) from None
                return raw + b"\n"
        raise _Refused(f"the answer has no cosignature by {verifier.label}")


def _size_of(answer: bytes) -> int:
    text = answer.decode("ascii", "replace").strip()
    if not text.isascii() or not text.isdigit() or len(text) > 19:
        raise _Refused(f"HTTP 409 without a size: {answer[:64]!r}")
    return int(text)
