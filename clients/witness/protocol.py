"""The C2SP tlog-witness ``add-checkpoint`` wire format (https://c2sp.org/tlog-witness).

Request body::

    old <old size, ASCII decimal, no leading zeros>
    <base64 consistency proof hash>        (0 to 63 lines)
    <empty line>
    <the checkpoint: a C2SP signed note, verbatim>

A 409 response body is the witness's latest cosigned size and a newline, of Content-Type
``text/x.tlog.size``; a 200 response body is one or more note signature lines (cosignatures).
Used by the witness (parse the request) and by the log (build it, read the responses).
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from dataclasses import dataclass

from clients.offline.note import (
    NOTE_BYTES_MAX,
    SIGNATURE_LINE_PREFIX,
    TREE_SIZE_MAX,
    MalformedNoteError,
    NoteSignature,
    b64decode_canonical,
    parse_decimal,
    parse_note,
)

__all__ = [
    "ADD_CHECKPOINT_BYTES_MAX",
    "ADD_CHECKPOINT_PATH",
    "PROOF_LINES_MAX",
    "SIZE_CONTENT_TYPE",
    "AddCheckpoint",
    "MalformedRequestError",
    "format_add_checkpoint",
    "parse_add_checkpoint",
    "parse_cosignature_lines",
]

ADD_CHECKPOINT_PATH = "/add-checkpoint"
PROOF_LINES_MAX = 63
"""The spec: a client MUST NOT send more than 63 consistency proof lines."""
_HASH_BYTES = 32
_PROOF_LINE_BYTES = 4 * ((_HASH_BYTES + 2) // 3) + 1
ADD_CHECKPOINT_BYTES_MAX = (
    len(f"old {TREE_SIZE_MAX}\n") + PROOF_LINES_MAX * _PROOF_LINE_BYTES + 1 + NOTE_BYTES_MAX
)
"""Largest request body: the old size, 63 proof lines, the blank line and the largest note."""
SIZE_CONTENT_TYPE = "text/x.tlog.size"
_OLD_PREFIX = "old "


class MalformedRequestError(ValueError):
    """The request body is not a well-formed add-checkpoint request (HTTP 400)."""


@dataclass(frozen=True)
class AddCheckpoint:
    """One add-checkpoint request: the old size, the consistency proof, the checkpoint note."""

    old_size: int
    proof: tuple[bytes, ...]
    checkpoint: bytes


def format_add_checkpoint(old_size: int, proof: Sequence[bytes], checkpoint: bytes) -> bytes:
    """The request body."""
    lines = [f"{_OLD_PREFIX}{old_size}"]
    lines.extend(base64.b64encode(proof_hash).decode("ascii") for proof_hash in proof)
    return "".join(f"{line}\n" for line in lines).encode("ascii") + b"\n" + checkpoint


def parse_add_checkpoint(body: bytes) -> AddCheckpoint:
    """The request in ``body``, strictly; MalformedRequestError naming the malformation."""
    if len(body) > ADD_CHECKPOINT_BYTES_MAX:
        raise MalformedRequestError(f"body is {len(body)} bytes, over {ADD_CHECKPOINT_BYTES_MAX}")
    split = body.find(b"\n\n")
    if split < 0:
        raise MalformedRequestError("no empty line before the checkpoint")
    try:
        head = body[:split].decode("ascii").split("\n")
    except UnicodeDecodeError:
        raise MalformedRequestError("the old size and proof lines are not ASCII") from None
    if not head[0].startswith(_OLD_PREFIX):
        raise MalformedRequestError("the first line is not 'old <size>'")
    try:
        old_size = parse_decimal(head[0][len(_OLD_PREFIX) :], TREE_SIZE_MAX)
    except ValueError as error:
        raise MalformedRequestError(f"old size {error}") from None
    if len(head) - 1 > PROOF_LINES_MAX:
        raise MalformedRequestError(f"{len(head) - 1} proof lines, over {PROOF_LINES_MAX}")
    return AddCheckpoint(old_size, _proof(head[1:]), body[split + 2 :])


def _proof(lines: Sequence[str]) -> tuple[bytes, ...]:
    proof: list[bytes] = []
    for number, line in enumerate(lines, 1):
        try:
            decoded = b64decode_canonical(line)
        except ValueError:
            raise MalformedRequestError(f"proof line {number} is not standard base64") from None
        if len(decoded) != _HASH_BYTES:
            raise MalformedRequestError(f"proof line {number} is {len(decoded)} bytes, want 32")
        proof.append(decoded)
    return tuple(proof)


def parse_cosignature_lines(body: bytes) -> tuple[NoteSignature, ...]:
    """The signature lines of a 200 response (unverified: verify them on the checkpoint)."""
    if not body.startswith(SIGNATURE_LINE_PREFIX.encode("utf-8")) or not body.endswith(b"\n"):
        raise MalformedRequestError("a cosignature response is note signature lines")
    # Parse them as the signature block of a note with a placeholder text.
    try:
        return parse_note(b"x\n\n" + body).signatures
    except MalformedNoteError as error:
        raise MalformedRequestError(f"cosignature response: {error}") from None
