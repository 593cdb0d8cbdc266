"""C2SP tlog checkpoints: the log's signed tree head, as the text of a signed note.

This module owns the checkpoint body (https://c2sp.org/tlog-checkpoint)::

    <origin>
    <tree size, decimal, no leading zeros>
    <root hash, standard base64>
    [<extension line>...]

and signing and opening it as a C2SP signed note (:mod:`ledger.note`). The origin is only
required to be non-empty: C2SP says clients must not assume it follows the recommended
schema-less URL form. We add our limit (``limits.origin_chars_max``) and, as the note format
requires, no control characters.

:func:`parse_checkpoint` raises InvalidArgument, one message per malformation;
:func:`open_checkpoint` is a verifier and raises only VerificationError subclasses.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Sequence
from dataclasses import dataclass

from ledger import limits
from ledger.errors import InvalidArgument, VerificationError
from ledger.note import open_note, sign_note
from ledger.signing import Ed25519Verifier, Signer, b64decode_canonical

__all__ = [
    "Checkpoint",
    "MalformedCheckpointError",
    "OriginMismatchError",
    "open_checkpoint",
    "parse_checkpoint",
    "sign_checkpoint",
]

ROOT_HASH_BYTES = 32
"""RFC 6962 / RFC 9162 root hashes are SHA-256 digests."""
TREE_SIZE_MAX = 2**63 - 1
"""Largest tree size: sizes travel as int64 in storage and uint64 on the wire."""

# Canonical decimal: "0" or no leading zero; ASCII digits only (int() would accept far more).
_CANONICAL_SIZE = re.compile(r"0|[1-9][0-9]*", re.ASCII)
_TREE_SIZE_DIGITS_MAX = len(str(TREE_SIZE_MAX))
_CONTROL_CHARACTER = re.compile(r"[\x00-\x1f]")


class MalformedCheckpointError(VerificationError):
    """A verified note's text is not a well-formed checkpoint."""


class OriginMismatchError(VerificationError):
    """A checkpoint verified, but it is from another log than the one expected."""


@dataclass(frozen=True)
class Checkpoint:
    """A tree head: the log's ``origin``, the tree ``size`` and its RFC 6962 ``root_hash``.

    Construction checks every field, so :meth:`to_text` always parses back to an equal value.
    """

    origin: str
    size: int
    root_hash: bytes
    extensions: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        problem = _fields_problem(self)
        if problem:
            raise InvalidArgument(f"invalid checkpoint: {problem}", reason="CHECKPOINT_INVALID")

    def to_text(self) -> str:
        """The checkpoint body: the text of the signed note."""
        root = base64.b64encode(self.root_hash).decode("ascii")
        lines = [self.origin, str(self.size), root, *self.extensions]
        return "".join(line + "\n" for line in lines)


def parse_checkpoint(text: str) -> Checkpoint:
    """The checkpoint whose body is ``text``; InvalidArgument naming the malformation."""
    if not text.endswith("\n"):
        raise _malformed("does not end in a newline")
    lines = text[:-1].split("\n")
    if len(lines) < 3:
        raise _malformed(f"missing lines: want origin, size and root hash, got {len(lines)}")
    origin, size_line, root_line, *extensions = lines
    problem = _origin_problem(origin)
    if problem:
        raise _malformed(problem)
    return Checkpoint(
        origin=origin,
        size=_parse_size(size_line),
        root_hash=_parse_root_hash(root_line),
        extensions=_parse_extensions(extensions),
    )


def sign_checkpoint(checkpoint: Checkpoint, signer: Signer) -> bytes:
    """The signed note of ``checkpoint``, signed by ``signer`` (the log key)."""
    return sign_note(checkpoint.to_text(), [signer])


def open_checkpoint(
    note_bytes: bytes, origin: str, verifiers: Sequence[Ed25519Verifier]
) -> Checkpoint:
    """The checkpoint in ``note_bytes`` once verified as a checkpoint of the log ``origin``.

    (1) the note is signed by one of ``verifiers`` (other signatures, such as witness
    cosignatures, are ignored); (2) its text is a well-formed checkpoint; (3) the checkpoint's
    origin is ``origin``. Raises a VerificationError subclass naming the failed step.
    """
    # (1): only a verified text may be looked at.
    verified = open_note(note_bytes, verifiers)
    # (2)
    try:
        checkpoint = parse_checkpoint(verified.text)
    except InvalidArgument as error:
        raise MalformedCheckpointError(error.message, reason="CHECKPOINT_MALFORMED") from error
    # (3)
    if checkpoint.origin != origin:
        raise OriginMismatchError(
            f"checkpoint origin is {checkpoint.origin!r}, expected {origin!r}",
            reason="CHECKPOINT_ORIGIN_MISMATCH",
            metadata={"origin": checkpoint.origin, "expected_origin": origin},
        )
    return checkpoint


def _parse_size(line: str) -> int:
    if not _CANONICAL_SIZE.fullmatch(line):
        raise _malformed(
            f"invalid size {line[:32]!r}: want decimal digits without sign, spaces or leading zeros"
        )
    # Check the digit count first so a huge number is never converted.
    if len(line) > _TREE_SIZE_DIGITS_MAX or int(line) > TREE_SIZE_MAX:
        raise _malformed(f"size {line[:32]} out of range 0..2**63-1")
    return int(line)


def _parse_root_hash(line: str) -> bytes:
    try:
        root_hash = b64decode_canonical(line)
    except ValueError:
        raise _malformed("root hash is not standard base64") from None
    if len(root_hash) != ROOT_HASH_BYTES:
        raise _malformed(f"root hash must be {ROOT_HASH_BYTES} bytes, got {len(root_hash)}")
    return root_hash


def _parse_extensions(lines: list[str]) -> tuple[str, ...]:
    problem = _extensions_problem(lines)
    if problem:
        raise _malformed(problem)
    return tuple(lines)


def _fields_problem(checkpoint: Checkpoint) -> str:
    """Why ``checkpoint``'s fields cannot form a checkpoint, or ""."""
    problem = _origin_problem(checkpoint.origin)
    if problem:
        return problem
    if not 0 <= checkpoint.size <= TREE_SIZE_MAX:
        return f"size {checkpoint.size} out of range 0..2**63-1"
    if len(checkpoint.root_hash) != ROOT_HASH_BYTES:
        return f"root hash must be {ROOT_HASH_BYTES} bytes, got {len(checkpoint.root_hash)}"
    return _extensions_problem(checkpoint.extensions)


def _extensions_problem(lines: Sequence[str]) -> str:
    # Extension lines are the fourth line on.
    for number, line in enumerate(lines, 4):
        if not line:
            return f"extension line {number} is empty"
        if _CONTROL_CHARACTER.search(line):
            return f"extension line {number} contains a newline or control character"
    return ""


def _origin_problem(origin: str) -> str:
    if not origin:
        return "empty origin"
    if len(origin) > limits.origin_chars_max:
        return f"origin over {limits.origin_chars_max} characters ({len(origin)})"
    if _CONTROL_CHARACTER.search(origin):
        return "origin contains a newline or control character"
    return ""


def _malformed(problem: str) -> InvalidArgument:
    return InvalidArgument(f"malformed checkpoint: {problem}", reason="CHECKPOINT_MALFORMED")
