"""C2SP ``tlog-proof`` bundles: parse, serialize and verify offline (https://c2sp.org/tlog-proof).

Format (C2SP/C2SP ``tlog-proof.md``; Go reference: transparency-dev/formats ``proof.TLogProof``)::

    c2sp.org/tlog-proof@v1
    extra <base64 opaque extra data>        (optional; omitted when there is none)
    index <leaf index, decimal, no leading zeros unless 0>
    <base64 SHA-256 proof hash>             (zero or more: leaf's sibling first, up to the
    ...                                      root's child, RFC 6962 section 2.1.1)
    <empty line>
    <the log's checkpoint, verbatim: a C2SP signed note, https://c2sp.org/tlog-checkpoint>

Lines end in U+000A; base64 is standard, padded (RFC 4648 section 4). The extra data is not
authenticated: :func:`verify_tlog_proof` returns it but never trusts it.

:func:`verify_tlog_proof` checks, in order: (1) the bundle's framing; (2) the checkpoint note
carries a valid Ed25519 signature by the log's verifier key (C2SP signed-note,
https://c2sp.org/signed-note; other signature lines, such as witness cosignatures, are ignored, but
a line that claims the log key and does not verify rejects the note); (3) the signed text is a
checkpoint of the expected origin (origin, tree size, base64 root hash, extension lines); (4) the
RFC 9162 section 2.1.3.2 inclusion proof of ``SHA-256(0x00 || entry)`` at the bundle's index
leads to that root hash.

This module is the offline verifier an auditor runs without the server's code: it imports nothing
from the ``ledger`` package, only the standard library and ``cryptography``. Malformed bundles
raise :class:`MalformedTlogProofError`, malformed keys :class:`MalformedVerifierKeyError` and
failed checks :class:`TlogProofVerificationError`; each failure has its own message.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Sequence
from dataclasses import dataclass

from clients.offline import merkle, note
from clients.offline.note import (
    Checkpoint,
    MalformedVerifierKeyError,
    NoteError,
    VerifierKey,
    b64decode_canonical,
)

__all__ = [
    "BUNDLE_BYTES_MAX",
    "CHECKPOINT_BYTES_MAX",
    "EXTRA_BYTES_MAX",
    "HASH_BYTES",
    "INDEX_MAX",
    "PROOF_HASHES_MAX",
    "TLOG_PROOF_HEADER",
    "Checkpoint",
    "MalformedTlogProofError",
    "MalformedVerifierKeyError",
    "TlogProof",
    "TlogProofError",
    "TlogProofVerificationError",
    "VerifiedProof",
    "VerifierKey",
    "leaf_hash",
    "parse_tlog_proof",
    "parse_verifier_key",
    "serialize_tlog_proof",
    "verify_checkpoint_note",
    "verify_inclusion",
    "verify_tlog_proof",
]

TLOG_PROOF_HEADER = "c2sp.org/tlog-proof@v1"
"""The first line of every version-1 bundle."""
HASH_BYTES = 32
"""SHA-256 digest size: every proof hash and root hash."""
INDEX_MAX = 2**64 - 1
"""Largest leaf index and tree size (uint64, as in the Go reference implementations)."""
PROOF_HASHES_MAX = 64
"""An inclusion proof in a tree of at most 2**64 - 1 leaves has at most 64 hashes."""
EXTRA_BYTES_MAX = 16 * 1024
"""Largest extra data (decoded) we accept."""
CHECKPOINT_BYTES_MAX = note.NOTE_BYTES_MAX
"""Largest checkpoint note we accept: the one note limit."""
BUNDLE_BYTES_MAX = 64 * 1024
"""Largest bundle we accept: above every field's limit put together."""
_VERSION_PREFIX = "c2sp.org/tlog-proof@"
_EXTRA_PREFIX = "extra "
_INDEX_PREFIX = "index "
_CANONICAL_DECIMAL = re.compile(r"0|[1-9][0-9]*", re.ASCII)
_DECIMAL = re.compile(r"[0-9]+", re.ASCII)
_DECIMAL_DIGITS_MAX = len(str(INDEX_MAX))


class TlogProofError(NoteError):
    """Base class: the bundle, the key or the proof is not acceptable (``str()`` says why)."""


class MalformedTlogProofError(TlogProofError, ValueError):
    """The bundle is not a well-formed c2sp.org/tlog-proof@v1 proof."""


class TlogProofVerificationError(TlogProofError):
    """The bundle is well formed but does not prove the entry is in the log."""


@dataclass(frozen=True)
class TlogProof:
    """One bundle: ``index``, inclusion proof ``hashes``, the ``checkpoint`` note, ``extra``.

    ``checkpoint`` is the signed note's bytes verbatim; ``extra`` is the unauthenticated extra
    data (``b""``: none, and the ``extra`` line is omitted). Construction checks every field, so
    :func:`serialize_tlog_proof` always parses back to an equal value.
    """

    index: int
    hashes: tuple[bytes, ...]
    checkpoint: bytes
    extra: bytes = b""

    def __post_init__(self) -> None:
        if not 0 <= self.index <= INDEX_MAX:
            raise _malformed(f"index {self.index} out of range 0..2**64-1")
        if len(self.hashes) > PROOF_HASHES_MAX:
            raise _malformed(f"{len(self.hashes)} proof hashes, over {PROOF_HASHES_MAX}")
        for number, proof_hash in enumerate(self.hashes, 1):
            if len(proof_hash) != HASH_BYTES:
                raise _malformed(
                    f"proof hash {number} is {len(proof_hash)} bytes, want {HASH_BYTES}"
                )
        if len(self.extra) > EXTRA_BYTES_MAX:
            raise _malformed(f"extra data is {len(self.extra)} bytes, over {EXTRA_BYTES_MAX}")
        problem = _checkpoint_framing_problem(self.checkpoint)
        if problem:
            raise _malformed(problem)


@dataclass(frozen=True)
class VerifiedProof:
    """What :func:`verify_tlog_proof` established.

    The entry whose leaf hash is ``leaf_hash`` is at ``leaf_index`` in the tree of ``tree_size``
    leaves and root ``root_hash`` that the log ``origin`` signed with ``log_key`` (a label
    ``<name>+<hex key id>``). ``extra`` is the bundle's extra data, NOT authenticated;
    ``other_signatures`` counts the note's signature lines by other keys (witnesses), unchecked.
    """

    origin: str
    tree_size: int
    root_hash: bytes
    leaf_index: int
    leaf_hash: bytes
    log_key: str
    checkpoint_extensions: tuple[str, ...]
    extra: bytes
    other_signatures: int


# --- Bundle format -------------------------------------------------------------------------


def serialize_tlog_proof(proof: TlogProof) -> bytes:
    """The bundle's bytes: header, optional extra line, index, proof hashes, blank, checkpoint."""
    lines = [TLOG_PROOF_HEADER]
    if proof.extra:
        lines.append(_EXTRA_PREFIX + base64.b64encode(proof.extra).decode("ascii"))
    lines.append(f"{_INDEX_PREFIX}{proof.index}")
    lines.extend(base64.b64encode(proof_hash).decode("ascii") for proof_hash in proof.hashes)
    head = "".join(line + "\n" for line in lines) + "\n"
    return head.encode("ascii") + proof.checkpoint


def parse_tlog_proof(data: bytes) -> TlogProof:
    """The bundle in ``data``, strictly; MalformedTlogProofError naming the malformation.

    Verifies nothing: the checkpoint is returned verbatim and must still be verified.
    """
    if not data:
        raise _malformed("empty bundle")
    if len(data) > BUNDLE_BYTES_MAX:
        raise _malformed(f"bundle is {len(data)} bytes, over {BUNDLE_BYTES_MAX}")
    reader = _LineReader(data)

    header = reader.next_line("header")
    if header != TLOG_PROOF_HEADER:
        if header.startswith(_VERSION_PREFIX):
            raise _malformed(f"unsupported version {header[:64]!r}, want {TLOG_PROOF_HEADER!r}")
        raise _malformed(f"first line is not the header {TLOG_PROOF_HEADER!r}")

    line = reader.next_line("index")
    extra = b""
    if line == "extra" or line.startswith(_EXTRA_PREFIX):
        extra = _parse_extra(line)
        line = reader.next_line("index")
    index = _parse_index(line)

    hashes: list[bytes] = []
    while True:
        line = reader.next_line("blank line before the checkpoint")
        if not line:
            break
        if len(hashes) == PROOF_HASHES_MAX:
            raise _malformed(f"more than {PROOF_HASHES_MAX} proof hashes")
        hashes.append(_parse_proof_hash(len(hashes) + 1, line))

    checkpoint = reader.rest()
    problem = _checkpoint_framing_problem(checkpoint)
    if problem:
        raise _malformed(problem)
    return TlogProof(index=index, hashes=tuple(hashes), checkpoint=checkpoint, extra=extra)


class _LineReader:
    """ASCII lines of the bundle's proof section, then its remaining bytes (the checkpoint)."""

    def __init__(self, data: bytes) -> None:
        self._data = data
        self._position = 0
        self._number = 0

    def next_line(self, expected: str) -> str:
        end = self._data.find(b"\n", self._position)
        if end < 0:
            if self._position == len(self._data):
                raise _malformed(f"truncated: missing {expected} after line {self._number}")
            raise _malformed(f"line {self._number + 1} does not end in a newline")
        raw = self._data[self._position : end]
        self._position = end + 1
        self._number += 1
        try:
            line = raw.decode("ascii")
        except UnicodeDecodeError:
            raise _malformed(f"line {self._number} is not ASCII") from None
        if not line.isprintable():
            raise _malformed(f"line {self._number} contains a control character")
        return line

    def rest(self) -> bytes:
        return self._data[self._position :]


def _parse_extra(line: str) -> bytes:
    encoded = line[len(_EXTRA_PREFIX) :]
    if not encoded:
        raise _malformed("extra line has no data (omit the line when there is no extra data)")
    if len(encoded) > _base64_length(EXTRA_BYTES_MAX):
        raise _malformed(f"extra data is over {EXTRA_BYTES_MAX} bytes")
    try:
        return b64decode_canonical(encoded)
    except ValueError:
        raise _malformed("extra data is not standard padded base64") from None


def _parse_index(line: str) -> int:
    if not line.startswith(_INDEX_PREFIX):
        raise _malformed(f"missing index line: want {_INDEX_PREFIX!r}<decimal>, got {line[:32]!r}")
    text = line[len(_INDEX_PREFIX) :]
    if not text:
        raise _malformed("index line has no number")
    if not _DECIMAL.fullmatch(text):
        raise _malformed(f"index {text[:32]!r} is not an ASCII decimal number")
    if not _CANONICAL_DECIMAL.fullmatch(text):
        raise _malformed(f"index {text[:32]!r} has leading zeros")
    # Count digits first, so a huge number is never converted.
    if len(text) > _DECIMAL_DIGITS_MAX or int(text) > INDEX_MAX:
        raise _malformed(f"index {text[:32]} out of range 0..2**64-1")
    return int(text)


def _parse_proof_hash(number: int, line: str) -> bytes:
    try:
        decoded = b64decode_canonical(line)
    except ValueError:
        raise _malformed(f"proof hash {number} is not standard padded base64") from None
    if len(decoded) != HASH_BYTES:
        raise _malformed(f"proof hash {number} is {len(decoded)} bytes, want {HASH_BYTES}")
    return decoded


def _checkpoint_framing_problem(checkpoint: bytes) -> str:
    """Why ``checkpoint`` cannot be the bundle's checkpoint section, or "" (not verified here)."""
    if not checkpoint:
        return "no checkpoint after the blank line"
    if len(checkpoint) > CHECKPOINT_BYTES_MAX:
        return f"checkpoint is {len(checkpoint)} bytes, over {CHECKPOINT_BYTES_MAX}"
    if checkpoint.startswith(b"\n"):
        return "more than one blank line before the checkpoint"
    if not checkpoint.endswith(b"\n"):
        return "checkpoint does not end in a newline"
    return ""


# --- Verifier keys and signed notes (one parser: clients.offline.note) ----------------------


def parse_verifier_key(text: str) -> VerifierKey:
    """``<name>+<hex key id>+<base64(0x01 || 32-byte Ed25519 key)>``, key id checked.

    The key id must be ``SHA-256(name || 0x0A || 0x01 || key)[:4]`` (C2SP signed-note).
    """
    key = VerifierKey.parse(text)
    if key.signature_type != note.ED25519_TYPE:
        raise MalformedVerifierKeyError(
            "malformed verifier key: a log key is of signature type 0x01 (Ed25519)"
        )
    return key


def verify_checkpoint_note(
    checkpoint_note: bytes, key: VerifierKey, origin: str | None = None
) -> tuple[Checkpoint, int]:
    """The checkpoint in ``checkpoint_note`` once ``key``'s signature on it verifies, and the
    count of signature lines by other keys (ignored, as C2SP requires).

    The checkpoint's origin must be ``origin`` (default: the key's name).
    """
    try:
        verified = note.open_note(checkpoint_note, [key])
    except note.MalformedNoteError as error:
        problem = str(error).removeprefix("malformed note: ")
        raise _malformed(f"checkpoint note: {problem}") from None
    except note.UntrustedNoteError:
        signed_by = ", ".join(
            signature.label for signature in note.parse_note(checkpoint_note).signatures
        )
        raise _failed(
            f"checkpoint is not signed by the log key {key.label} (signed by {signed_by})"
        ) from None
    except note.NoteVerificationError as error:
        raise _failed(f"checkpoint {error}") from None
    try:
        checkpoint = note.parse_checkpoint(verified.text)
    except note.MalformedCheckpointError as error:
        # Reached only for a text the log key signed: a verification failure.
        problem = str(error).removeprefix("malformed checkpoint: ")
        raise TlogProofVerificationError(f"signed checkpoint is malformed: {problem}") from None
    expected = key.name if origin is None else origin
    if checkpoint.origin != expected:
        raise _failed(f"checkpoint origin is {checkpoint.origin!r}, expected {expected!r}")
    return checkpoint, len(verified.unverified)


# --- RFC 6962 / RFC 9162 inclusion ------------------------------------------------------------


def leaf_hash(entry: bytes) -> bytes:
    """RFC 6962 leaf hash: ``SHA-256(0x00 || entry)``."""
    return merkle.leaf_hash(entry)


def verify_inclusion(
    index: int, tree_size: int, leaf: bytes, proof: Sequence[bytes], root_hash: bytes
) -> None:
    """Return if ``proof`` proves ``leaf`` (a leaf hash) at ``index`` in the tree of
    ``tree_size`` leaves and root ``root_hash``; else TlogProofVerificationError
    (RFC 9162 section 2.1.3.2, :func:`clients.offline.merkle.verify_inclusion`)."""
    try:
        merkle.verify_inclusion(index, tree_size, leaf, proof, root_hash)
    except merkle.VerificationFailure as error:
        raise _failed(str(error)) from None


# --- The verifier --------------------------------------------------------------------------


def verify_tlog_proof(
    bundle: bytes, entry: bytes, verifier_key: str, *, origin: str | None = None
) -> VerifiedProof:
    """Verify that ``entry`` is in the log, by the bundle alone and the log's verifier key.

    ``origin`` is the log's checkpoint origin (default: the verifier key's name). Raises
    MalformedTlogProofError, MalformedVerifierKeyError or TlogProofVerificationError.
    """
    key = parse_verifier_key(verifier_key)
    proof = parse_tlog_proof(bundle)
    checkpoint, others = verify_checkpoint_note(proof.checkpoint, key, origin)
    leaf = leaf_hash(entry)
    verify_inclusion(proof.index, checkpoint.size, leaf, proof.hashes, checkpoint.root_hash)
    return VerifiedProof(
        origin=checkpoint.origin,
        tree_size=checkpoint.size,
        root_hash=checkpoint.root_hash,
        leaf_index=proof.index,
        leaf_hash=leaf,
        log_key=key.label,
        checkpoint_extensions=checkpoint.extensions,
        extra=proof.extra,
        other_signatures=others,
    )


# --- Helpers -----------------------------------------------------------------------------


def _base64_length(size: int) -> int:
    return 4 * ((size + 2) // 3)


def _malformed(problem: str) -> MalformedTlogProofError:
    return MalformedTlogProofError(f"malformed tlog-proof: {problem}")


def _failed(problem: str) -> TlogProofVerificationError:
    return TlogProofVerificationError(f"verification failed: {problem}")
