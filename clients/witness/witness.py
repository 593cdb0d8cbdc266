"""The witness's one use case: ``add-checkpoint`` (https://c2sp.org/tlog-witness).

:meth:`Witness.add_checkpoint` turns a request body into a response, exactly as the spec says:
(1) parse the request (400); (2) the origin must be a log we follow (404); (3) a signature by one
of its keys must verify, and no line by its keys may fail (403); (4) the text must be a checkpoint
(400) and (5) the old size at most its size (400); (6) the old size must be the size we last
cosigned (409, with that size); (7) the checkpoint must be consistent with what we cosigned: the
empty tree's root at size 0, an empty proof from size 0, equal roots at equal sizes, a valid RFC
6962 consistency proof otherwise (422: refused, and the evidence kept); (8) cosign, record it
atomically with the check of (6), and answer with the cosignature line (200).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from clients.offline import merkle
from clients.offline.note import (
    Checkpoint,
    MalformedCheckpointError,
    MalformedNoteError,
    NoteVerificationError,
    VerifierKey,
    open_note,
    parse_checkpoint,
    parse_note,
)
from clients.witness.keys import WitnessKey
from clients.witness.protocol import (
    SIZE_CONTENT_TYPE,
    AddCheckpoint,
    MalformedRequestError,
    parse_add_checkpoint,
)
from clients.witness.store import Evidence, LatestCheckpoint, WitnessStore

__all__ = ["Response", "Witness"]

_TEXT = "text/plain; charset=utf-8"
EMPTY_TREE_ROOT = hashlib.sha256(b"").digest()


@dataclass(frozen=True)
class Response:
    """An HTTP response: status, body, content type."""

    status: int
    body: bytes
    content_type: str = _TEXT


def _error(status: int, message: str) -> Response:
    return Response(status, f"{message}\n".encode())


class _Refusal(Exception):
    """A consistency check failed (422): the reason, kept with the evidence."""


class Witness:
    """A witness for the logs in ``logs`` (origin -> the log's verifier keys)."""

    def __init__(
        self,
        key: WitnessKey,
        logs: Mapping[str, Sequence[VerifierKey]],
        store: WitnessStore,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.key = key
        self._logs = {origin: tuple(keys) for origin, keys in logs.items()}
        self._store = store
        self._clock = clock
        # One lock around check and update, so no two requests can roll the size back.
        self._lock = threading.Lock()

    def add_checkpoint(self, body: bytes) -> Response:
        """The response to an add-checkpoint request body (steps in the module docstring)."""
        try:
            # (1)
            request = parse_add_checkpoint(body)
            origin = _claimed_origin(request.checkpoint)
        except (MalformedRequestError, MalformedNoteError) as error:
            return _error(400, str(error))
        # (2)
        keys = self._logs.get(origin)
        if keys is None:
            return _error(404, f"unknown log {origin[:64]!r}")
        # (3), (4)
        try:
            checkpoint = parse_checkpoint(open_note(request.checkpoint, keys).text)
        except NoteVerificationError as error:
            return _error(403, str(error))
        except MalformedCheckpointError as error:
            return _error(400, str(error))
        # (5)
        if request.old_size > checkpoint.size:
            return _error(400, f"old size {request.old_size} > checkpoint size {checkpoint.size}")
        with self._lock:
            return self._check_and_cosign(request, checkpoint)

    def _check_and_cosign(self, request: AddCheckpoint, checkpoint: Checkpoint) -> Response:
        latest = self._store.latest(checkpoint.origin)
        known_size = 0 if latest is None else latest.tree_size
        # (6)
        if request.old_size != known_size:
            return Response(409, f"{known_size}\n".encode("ascii"), SIZE_CONTENT_TYPE)
        # (7)
        try:
            _check_consistency(request, checkpoint, latest)
        except _Refusal as refusal:
            self._keep_evidence(request, checkpoint, latest, str(refusal))
            return _error(422, str(refusal))
        # (8)
        text = parse_note(request.checkpoint).text
        cosignature = self.key.cosign(text, max(1, int(self._clock())))
        line = cosignature.line()
        record = LatestCheckpoint(
            checkpoint.origin, checkpoint.size, checkpoint.root_hash, request.checkpoint, line
        )
        if not self._store.advance(request.old_size, record):
            # Another witness process sharing the file moved first.
            latest = self._store.latest(checkpoint.origin)
            size = 0 if latest is None else latest.tree_size
            return Response(409, f"{size}\n".encode("ascii"), SIZE_CONTENT_TYPE)
        return Response(200, line.encode("utf-8"))

    def _keep_evidence(
        self,
        request: AddCheckpoint,
        checkpoint: Checkpoint,
        latest: LatestCheckpoint | None,
        reason: str,
    ) -> None:
        proof = "".join(f"{item.hex()}\n" for item in request.proof).encode("ascii")
        self._store.record_evidence(
            Evidence(
                origin=checkpoint.origin,
                received_at=dt.datetime.now(dt.UTC).isoformat(),
                reason=reason,
                old_size=request.old_size,
                proof=proof,
                submitted_note=request.checkpoint,
                cosigned_note=None if latest is None else latest.note,
            )
        )

    def latest_note(self, origin_hash: str) -> bytes | None:
        """The latest cosigned checkpoint of the log whose origin hashes to ``origin_hash``
        (lowercase hex SHA-256), with our cosignature: the monitoring endpoint."""
        for origin in self._logs:
            if hashlib.sha256(origin.encode("utf-8")).hexdigest() == origin_hash:
                latest = self._store.latest(origin)
                if latest is None:
                    return None
                return latest.note + latest.cosignature.encode("utf-8")
        return None


def _claimed_origin(note: bytes) -> str:
    """The origin line of a not yet verified note: only used to pick the keys to verify it."""
    return parse_note(note).text.split("\n", 1)[0]


def _check_consistency(
    request: AddCheckpoint, checkpoint: Checkpoint, latest: LatestCheckpoint | None
) -> None:
    """Raise _Refusal unless ``checkpoint`` extends what we cosigned (``latest``)."""
    if checkpoint.size == 0 and checkpoint.root_hash != EMPTY_TREE_ROOT:
        raise _Refusal("a checkpoint of size 0 must have the empty tree's root hash")
    if latest is None or latest.tree_size == 0:
        # The empty tree is consistent with every tree: no proof is needed, none is allowed.
        if request.proof:
            raise _Refusal("the consistency proof from size 0 must be empty")
        return
    if request.old_size == checkpoint.size and latest.root_hash != checkpoint.root_hash:
        raise _Refusal(
            f"size {checkpoint.size} was cosigned with another root hash: a split view or a fork"
        )
    try:
        merkle.verify_consistency(
            latest.tree_size, checkpoint.size, request.proof, latest.root_hash, checkpoint.root_hash
        )
    except merkle.VerificationFailure as error:
        raise _Refusal(
            f"consistency proof {latest.tree_size} -> {checkpoint.size}: {error}"
        ) from None
