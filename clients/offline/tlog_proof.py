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
import binascii
import hashlib
import re
from collections.abc import Sequence
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from clients.offline import merkle

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
CHECKPOINT_BYTES_MAX = 16 * 1024
"""Largest checkpoint note we accept (the ledger signs notes of at most 16 KiB)."""
BUNDLE_BYTES_MAX = 64 * 1024
"""Largest bundle we accept: above every field's limit put together."""
NOTE_SIGNATURES_MAX = 32
"""Most signature lines a checkpoint note may carry (the log's and witnesses' cosignatures)."""

_ED25519_ALGORITHM = 0x01
_KEY_ID_BYTES = 4
_ED25519_KEY_BYTES = 32
_ED25519_SIGNATURE_BYTES = 64
_ORIGIN_CHARS_MAX = 1024
_SIGNATURE_LINE_PREFIX = "\u2014 "  # em dash, space
_VERSION_PREFIX = "c2sp.org/tlog-proof@"
_EXTRA_PREFIX = "extra "
_INDEX_PREFIX = "index "
_CANONICAL_DECIMAL = re.compile(r"0|[1-9][0-9]*", re.ASCII)
_DECIMAL = re.compile(r"[0-9]+", re.ASCII)
_DECIMAL_DIGITS_MAX = len(str(INDEX_MAX))
_KEY_ID_HEX = re.compile(r"[0-9a-fA-F]{8}", re.ASCII)
# C2SP signed-note: no control characters other than newline anywhere in a note.
_NOTE_CONTROL_CHARACTER = re.compile(r"[\x00-\x09\x0b-\x1f\x7f]")


class TlogProofError(Exception):
    """Base class: the bundle, the key or the proof is not acceptable (``str()`` says why)."""


class MalformedTlogProofError(TlogProofError, ValueError):
    """The bundle is not a well-formed c2sp.org/tlog-proof@v1 proof."""


class MalformedVerifierKeyError(TlogProofError, ValueError):
    """The verifier key string is not a C2SP Ed25519 verifier key."""


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
class VerifierKey:
    """A C2SP signed-note Ed25519 verifier key: name, 4-byte key id, 32-byte public key."""

    name: str
    key_id: bytes
    public_key: bytes

    @property
    def label(self) -> str:
        """``<name>+<hex key id>``, as in error messages and reports."""
        return f"{self.name}+{self.key_id.hex()}"


@dataclass(frozen=True)
class Checkpoint:
    """A checkpoint body (https://c2sp.org/tlog-checkpoint): the signed tree head."""

    origin: str
    size: int
    root_hash: bytes
    extensions: tuple[str, ...] = ()


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
        return _b64decode_canonical(encoded)
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
        decoded = _b64decode_canonical(line)
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


# --- Verifier keys and signed notes ----------------------------------------------------------


def parse_verifier_key(text: str) -> VerifierKey:
    """``<name>+<hex key id>+<base64(0x01 || 32-byte Ed25519 key)>``, key id checked.

    The key id must be ``SHA-256(name || 0x0A || 0x01 || key)[:4]`` (C2SP signed-note).
    """
    # The base64 part may itself contain '+': split at most twice.
    parts = text.split("+", 2)
    if len(parts) != 3:
        raise _bad_key("want <name>+<hex key id>+<base64 key>")
    name, key_id_hex, encoded = parts
    problem = _key_name_problem(name)
    if problem:
        raise _bad_key(f"key name {name[:64]!r} {problem}")
    if not _KEY_ID_HEX.fullmatch(key_id_hex):
        raise _bad_key(f"key id must be 8 hex digits, got {key_id_hex[:16]!r}")
    try:
        key = _b64decode_canonical(encoded)
    except ValueError:
        raise _bad_key("key is not standard padded base64") from None
    if not key:
        raise _bad_key("key is empty")
    if key[0] != _ED25519_ALGORITHM:
        raise _bad_key(f"unsupported signature algorithm 0x{key[0]:02x} (want 0x01, Ed25519)")
    public_key = key[1:]
    if len(public_key) != _ED25519_KEY_BYTES:
        raise _bad_key(f"Ed25519 public key must be 32 bytes, got {len(public_key)}")
    claimed, computed = bytes.fromhex(key_id_hex), _key_id(name, public_key)
    if claimed != computed:
        raise _bad_key(f"key id {claimed.hex()} does not match the key (computed {computed.hex()})")
    return VerifierKey(name=name, key_id=computed, public_key=public_key)


def verify_checkpoint_note(
    note: bytes, key: VerifierKey, origin: str | None = None
) -> tuple[Checkpoint, int]:
    """The checkpoint in ``note`` once ``key``'s signature on it verifies, and the count of
    signature lines by other keys (ignored, as C2SP requires).

    The checkpoint's origin must be ``origin`` (default: the key's name).
    """
    text, signatures = _split_note(note)
    text_bytes = text.encode("utf-8")
    public_key = _ed25519_public_key(key)
    verified = 0
    others = 0
    for number, (name, key_id, signature) in enumerate(signatures, 1):
        if name != key.name or key_id != key.key_id:
            others += 1
            continue
        if len(signature) != _ED25519_SIGNATURE_BYTES:
            raise _failed(
                f"checkpoint signature line {number} by {key.label} is {len(signature)} bytes, "
                f"Ed25519 signatures are {_ED25519_SIGNATURE_BYTES}"
            )
        try:
            public_key.verify(signature, text_bytes)
        except InvalidSignature:
            raise _failed(f"checkpoint signature by {key.label} does not verify") from None
        verified += 1
    if not verified:
        signed_by = ", ".join(f"{name}+{key_id.hex()}" for name, key_id, _ in signatures)
        raise _failed(
            f"checkpoint is not signed by the log key {key.label} (signed by {signed_by})"
        )
    checkpoint = _parse_checkpoint_text(text)
    expected = key.name if origin is None else origin
    if checkpoint.origin != expected:
        raise _failed(f"checkpoint origin is {checkpoint.origin!r}, expected {expected!r}")
    return checkpoint, others


def _split_note(note: bytes) -> tuple[str, list[tuple[str, bytes, bytes]]]:
    """(text, [(key name, key id, signature)]) of a signed note, strictly; nothing verified."""
    if len(note) > CHECKPOINT_BYTES_MAX:
        raise _malformed_note(f"{len(note)} bytes, over {CHECKPOINT_BYTES_MAX}")
    try:
        decoded = note.decode("utf-8")
    except UnicodeDecodeError as error:
        raise _malformed_note(f"not valid UTF-8 (at byte {error.start})") from None
    found = _NOTE_CONTROL_CHARACTER.search(decoded)
    if found:
        raise _malformed_note(f"control character U+{ord(found.group()):04X} at {found.start()}")
    # The signatures follow the last blank line (a note's text may contain empty lines).
    split = decoded.rfind("\n\n")
    if split < 0:
        raise _malformed_note("no blank line between the text and the signatures")
    text, block = decoded[: split + 1], decoded[split + 2 :]
    if not block:
        raise _malformed_note("no signature lines after the blank line")
    if not block.endswith("\n"):
        raise _malformed_note("signature block does not end in a newline")
    lines = block[:-1].split("\n")
    if len(lines) > NOTE_SIGNATURES_MAX:
        raise _malformed_note(f"{len(lines)} signature lines, over {NOTE_SIGNATURES_MAX}")
    return text, [_parse_signature_line(number, line) for number, line in enumerate(lines, 1)]


def _parse_signature_line(number: int, line: str) -> tuple[str, bytes, bytes]:
    if not line.startswith(_SIGNATURE_LINE_PREFIX):
        raise _malformed_note(f"signature line {number} does not start with an em dash and a space")
    name, space, encoded = line[len(_SIGNATURE_LINE_PREFIX) :].partition(" ")
    if not space or not encoded:
        raise _malformed_note(f"signature line {number} has no signature after the key name")
    problem = _key_name_problem(name)
    if problem:
        raise _malformed_note(f"signature line {number} key name {problem}")
    try:
        decoded = _b64decode_canonical(encoded)
    except ValueError:
        raise _malformed_note(f"signature line {number} is not standard padded base64") from None
    if len(decoded) <= _KEY_ID_BYTES:
        raise _malformed_note(
            f"signature line {number} is {len(decoded)} bytes: no room for a key id and signature"
        )
    return name, decoded[:_KEY_ID_BYTES], decoded[_KEY_ID_BYTES:]


def _parse_checkpoint_text(text: str) -> Checkpoint:
    """The checkpoint body: origin, tree size, base64 root hash, extension lines."""
    lines = text[:-1].split("\n")  # the text ends in a newline (see _split_note)
    if len(lines) < 3:
        raise _malformed_checkpoint(
            f"want origin, tree size and root hash lines, got {len(lines)} line(s)"
        )
    origin, size_line, root_line, *extensions = lines
    if not origin:
        raise _malformed_checkpoint("empty origin line")
    if len(origin) > _ORIGIN_CHARS_MAX:
        raise _malformed_checkpoint(f"origin over {_ORIGIN_CHARS_MAX} characters")
    if not _DECIMAL.fullmatch(size_line):
        raise _malformed_checkpoint(f"tree size {size_line[:32]!r} is not an ASCII decimal")
    if not _CANONICAL_DECIMAL.fullmatch(size_line):
        raise _malformed_checkpoint(f"tree size {size_line[:32]!r} has leading zeros")
    if len(size_line) > _DECIMAL_DIGITS_MAX or int(size_line) > INDEX_MAX:
        raise _malformed_checkpoint(f"tree size {size_line[:32]} out of range 0..2**64-1")
    try:
        root_hash = _b64decode_canonical(root_line)
    except ValueError:
        raise _malformed_checkpoint("root hash is not standard padded base64") from None
    if len(root_hash) != HASH_BYTES:
        raise _malformed_checkpoint(f"root hash is {len(root_hash)} bytes, want {HASH_BYTES}")
    for number, line in enumerate(extensions, 4):
        if not line:
            raise _malformed_checkpoint(f"extension line {number} is empty")
    return Checkpoint(origin, int(size_line), root_hash, tuple(extensions))


def _ed25519_public_key(key: VerifierKey) -> Ed25519PublicKey:
    try:
        return Ed25519PublicKey.from_public_bytes(key.public_key)
    except ValueError as error:
        raise _bad_key(f"not an Ed25519 public key: {error}") from None


def _key_id(name: str, public_key: bytes) -> bytes:
    """C2SP key id: ``SHA-256(name || 0x0A || 0x01 || public key)[:4]``."""
    encoded = name.encode("utf-8") + b"\n" + bytes([_ED25519_ALGORITHM]) + public_key
    return hashlib.sha256(encoded).digest()[:_KEY_ID_BYTES]


def _key_name_problem(name: str) -> str:
    """Why ``name`` is not a C2SP key name (non-empty, no '+', no whitespace), or ""."""
    if not name:
        return "is empty"
    if "+" in name:
        return "contains '+'"
    if any(character.isspace() for character in name):
        return "contains whitespace"
    return ""


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


def _b64decode_canonical(text: str) -> bytes:
    """Standard padded base64 (RFC 4648 section 4), canonical only; ValueError otherwise."""
    try:
        decoded = base64.b64decode(text, validate=True)
    except binascii.Error:
        raise ValueError("not base64") from None
    if base64.b64encode(decoded).decode("ascii") != text:
        raise ValueError("non-canonical base64")
    return decoded


def _base64_length(size: int) -> int:
    return 4 * ((size + 2) // 3)


def _malformed(problem: str) -> MalformedTlogProofError:
    return MalformedTlogProofError(f"malformed tlog-proof: {problem}")


def _malformed_note(problem: str) -> MalformedTlogProofError:
    return MalformedTlogProofError(f"malformed tlog-proof: checkpoint note: {problem}")


def _malformed_checkpoint(problem: str) -> TlogProofVerificationError:
    # Reached only for a text the log key signed: a verification failure, not a framing error.
    return TlogProofVerificationError(f"signed checkpoint is malformed: {problem}")


def _bad_key(problem: str) -> MalformedVerifierKeyError:
    return MalformedVerifierKeyError(f"malformed verifier key: {problem}")


def _failed(problem: str) -> TlogProofVerificationError:
    return TlogProofVerificationError(f"verification failed: {problem}")
