"""C2SP signed notes, verifier keys, checkpoints and cosignatures: the offline side's one parser.

Specs: https://c2sp.org/signed-note (the note format and verifier keys, as implemented by
golang.org/x/mod/sumdb/note ``Open``), https://c2sp.org/tlog-checkpoint (the checkpoint body) and
https://c2sp.org/tlog-cosignature (the ``cosignature/v1`` Ed25519 signature type, 0x04).

Every verifier of the offline side (receipts, tlog-proof bundles, certificates, the audit, the
witness and witness policies) reads notes through this module only, so they agree with each
other and with the server's ``ledger/note.py`` (one shared table of cases,
``tests/vectors/signed-note-malformed.json``, runs through both). Self-contained: imports
nothing from the server's ``ledger`` package (stdlib + ``cryptography``).

A note is ``<text ending in a newline><blank line><signature lines>``; the text is separated from
the signatures by the LAST blank line (the text may contain empty lines). Opening a note:
(1) parse strictly: UTF-8, no ASCII control character but newline, at most
:data:`NOTE_BYTES_MAX` bytes and :data:`NOTE_SIGNATURES_MAX` signature lines, each line
``— <name> <canonical base64(key id || signature)>``; (2) ignore lines whose (name, key id) is
not a trusted key's, even when one of the two matches; (3) verify every line of a trusted key:
one that fails, malformed signature included, rejects the whole note; (4) require one.

Errors: one root, :class:`NoteError` (a :class:`~clients.offline.merkle.VerificationFailure`,
so every offline verifier's callers catch one type); :class:`MalformedNoteError`,
:class:`MalformedVerifierKeyError` and :class:`MalformedCheckpointError` for input that is not
the format; :class:`NoteVerificationError` and its subclasses for well-formed input that fails.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
import struct
from collections.abc import Sequence
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from clients.offline.merkle import VerificationFailure

__all__ = [
    "COSIGNATURE_V1_HEADER",
    "COSIGNATURE_V1_TYPE",
    "ED25519_TYPE",
    "KEY_ID_BYTES",
    "NOTE_BYTES_MAX",
    "NOTE_SIGNATURES_MAX",
    "ORIGIN_CHARS_MAX",
    "SIGNATURE_LINE_PREFIX",
    "TIMESTAMP_MAX",
    "TREE_SIZE_MAX",
    "Checkpoint",
    "InvalidNoteSignatureError",
    "MalformedCheckpointError",
    "MalformedNoteError",
    "MalformedVerifierKeyError",
    "Note",
    "NoteError",
    "NoteSignature",
    "NoteVerificationError",
    "OriginMismatchError",
    "UntrustedNoteError",
    "VerifiedNote",
    "VerifierKey",
    "b64decode_canonical",
    "compute_key_id",
    "cosignature_message",
    "key_name_problem",
    "open_note",
    "parse_checkpoint",
    "parse_decimal",
    "parse_note",
    "verify_checkpoint",
]

NOTE_BYTES_MAX = 16 * 1024
"""Largest note accepted (the server's ``limits.note_bytes_max``)."""
NOTE_SIGNATURES_MAX = 32
"""Most signature lines in a note (C2SP: at least 16; the server's ``note_signatures_max``)."""
ORIGIN_CHARS_MAX = 256
"""Longest checkpoint origin (the server's ``limits.origin_chars_max``)."""
TREE_SIZE_MAX = 2**63 - 1
"""Largest tree size (the server stores sizes as int64)."""
TIMESTAMP_MAX = 2**63 - 1
"""Largest cosignature timestamp (tlog-cosignature: MUST NOT exceed 2^63 - 1)."""
KEY_ID_BYTES = 4
ED25519_TYPE = 0x01
"""Signature type of plain Ed25519 note signatures (signed-note)."""
COSIGNATURE_V1_TYPE = 0x04
"""Signature type of timestamped Ed25519 checkpoint cosignatures (tlog-cosignature)."""
COSIGNATURE_V1_HEADER = "cosignature/v1"
SIGNATURE_LINE_PREFIX = "\u2014 "
"""Every signature line starts with an em dash (U+2014) and a space."""

_ED25519_PUBLIC_KEY_BYTES = 32
_ED25519_SIGNATURE_BYTES = 64
_TIMESTAMP_BYTES = 8
_SIGNATURE_TYPES = {ED25519_TYPE: "Ed25519", COSIGNATURE_V1_TYPE: "cosignature/v1 (Ed25519)"}
# C2SP signed-note: no ASCII control characters (below U+0020) other than newline. DEL (U+007F)
# is not one of them, and Go's note.Open accepts it: so do we.
_CONTROL_CHARACTER = re.compile(r"[\x00-\x09\x0b-\x1f]")
# "0" or no leading zero, ASCII digits only: str.isdigit() and int() accept other scripts' digits.
_CANONICAL_DECIMAL = re.compile(r"0|[1-9][0-9]*", re.ASCII)
_DECIMAL = re.compile(r"[0-9]+", re.ASCII)
_KEY_ID_HEX = re.compile(r"[0-9a-f]{8}", re.ASCII)


class NoteError(VerificationFailure):
    """Root of every error of this module: a note, key or checkpoint is not acceptable."""


class MalformedNoteError(NoteError):
    """The bytes are not a well-formed C2SP signed note."""


class MalformedVerifierKeyError(NoteError):
    """The text is not a C2SP verifier key of a supported type, or its key id is wrong."""


class MalformedCheckpointError(NoteError):
    """A note's text is not a well-formed C2SP checkpoint."""


class NoteVerificationError(NoteError):
    """A well-formed note failed verification."""


class InvalidNoteSignatureError(NoteVerificationError):
    """A line with a trusted key's name and key id does not verify: the note is rejected."""


class UntrustedNoteError(NoteVerificationError):
    """No trusted key signed the note."""


class OriginMismatchError(NoteVerificationError):
    """The checkpoint verified but is of another log than the one expected."""


def b64decode_canonical(text: str) -> bytes:
    """Standard padded base64 (RFC 4648 section 4), canonical form only; ValueError otherwise.

    One value has one text form (the server's ``ledger.signing.b64decode_canonical``).
    """
    try:
        decoded = base64.b64decode(text, validate=True)
    except binascii.Error:
        raise ValueError("not standard padded base64") from None
    if base64.b64encode(decoded).decode("ascii") != text:
        raise ValueError("non-canonical base64")
    return decoded


def parse_decimal(text: str, maximum: int) -> int:
    """An ASCII decimal without leading zeros in 0..``maximum``; ValueError otherwise."""
    if not _DECIMAL.fullmatch(text):
        raise ValueError(f"{text[:32]!r} is not an ASCII decimal")
    if not _CANONICAL_DECIMAL.fullmatch(text):
        raise ValueError(f"{text[:32]!r} has leading zeros")
    # Count digits first, so a huge number is never converted.
    if len(text) > len(str(maximum)) or int(text) > maximum:
        raise ValueError(f"{text[:32]} out of range 0..{maximum}")
    return int(text)


def compute_key_id(name: str, signature_type: int, public_key: bytes) -> bytes:
    """``SHA-256(name || 0x0A || signature type || public key)[:4]`` (signed-note)."""
    encoded = name.encode("utf-8") + b"\n" + bytes([signature_type]) + public_key
    return hashlib.sha256(encoded).digest()[:KEY_ID_BYTES]


def key_name_problem(name: str) -> str:
    """Why ``name`` is not a C2SP key name (non-empty, no Unicode space, no '+'), or ""."""
    if not name:
        return "is empty"
    if "+" in name:
        return "contains '+'"
    if any(character.isspace() for character in name):
        return "contains whitespace"
    return ""


def cosignature_message(note_text: str, timestamp: int) -> bytes:
    """What a cosignature/v1 signs: header line, ``time <timestamp>`` line, checkpoint body."""
    header = f"{COSIGNATURE_V1_HEADER}\ntime {timestamp}\n"
    return header.encode("ascii") + note_text.encode("utf-8")


@dataclass(frozen=True)
class VerifierKey:
    """A C2SP verifier key: ``<name>+<hex key id>+<base64(signature type || public key)>``.

    Supported types: Ed25519 (0x01, logs) and cosignature/v1 (0x04, witnesses).
    """

    name: str
    key_id: bytes
    public_key: bytes
    signature_type: int = ED25519_TYPE

    @classmethod
    def parse(cls, text: str) -> VerifierKey:
        """The key of a verifier key string (surrounding whitespace ignored); id checked."""
        parts = text.strip().split("+", 2)  # the name has no '+'; the base64 may
        if len(parts) != 3:
            raise _bad_key("want <name>+<hex key id>+<base64 key>")
        name, key_id_hex, encoded = parts
        problem = key_name_problem(name)
        if problem:
            raise _bad_key(f"key name {name[:64]!r} {problem}")
        if not _KEY_ID_HEX.fullmatch(key_id_hex):
            raise _bad_key(f"key id must be 8 hex digits (lowercase), got {key_id_hex[:16]!r}")
        try:
            material = b64decode_canonical(encoded)
        except ValueError:
            raise _bad_key("key is not standard padded base64") from None
        if not material:
            raise _bad_key("key is empty")
        if material[0] not in _SIGNATURE_TYPES:
            raise _bad_key(
                f"unsupported signature algorithm 0x{material[0]:02x} (want 0x01 or 0x04)"
            )
        if len(material) != 1 + _ED25519_PUBLIC_KEY_BYTES:
            raise _bad_key(f"Ed25519 public key must be 32 bytes, got {len(material) - 1}")
        key = cls.from_public_key(name, material[1:], material[0])
        if key.key_id.hex() != key_id_hex:
            raise _bad_key(
                f"key id {key_id_hex} does not match the key (computed {key.key_id.hex()})"
            )
        return key

    @classmethod
    def from_public_key(
        cls, name: str, public_key: bytes, signature_type: int = ED25519_TYPE
    ) -> VerifierKey:
        """The key of ``name`` and a raw 32-byte Ed25519 public key, its id computed."""
        key_id = compute_key_id(name, signature_type, public_key)
        return cls(name, key_id, public_key, signature_type)

    @property
    def label(self) -> str:
        """``<name>+<hex key id>``, as messages name keys."""
        return f"{self.name}+{self.key_id.hex()}"

    def encode(self) -> str:
        """The verifier key string."""
        material = base64.b64encode(bytes([self.signature_type]) + self.public_key).decode()
        return f"{self.label}+{material}"

    def verify(self, text: bytes, signature: bytes) -> None:
        """Return if ``signature`` (the bytes after the key id) is this key's over ``text``."""
        message = text
        if self.signature_type == COSIGNATURE_V1_TYPE:
            if len(signature) != _TIMESTAMP_BYTES + _ED25519_SIGNATURE_BYTES:
                raise self._invalid(f"is {len(signature)} bytes, a cosignature/v1 is 72")
            (timestamp,) = struct.unpack(">Q", signature[:_TIMESTAMP_BYTES])
            if timestamp > TIMESTAMP_MAX:
                raise self._invalid(f"has timestamp {timestamp}, over 2**63-1")
            message = cosignature_message(text.decode("utf-8"), timestamp)
            signature = signature[_TIMESTAMP_BYTES:]
        if len(signature) != _ED25519_SIGNATURE_BYTES:
            raise self._invalid(f"is {len(signature)} bytes, an Ed25519 signature is 64")
        try:
            Ed25519PublicKey.from_public_bytes(self.public_key).verify(signature, message)
        except InvalidSignature:
            raise self._invalid("does not verify") from None

    def _invalid(self, problem: str) -> InvalidNoteSignatureError:
        return InvalidNoteSignatureError(f"signature by {self.label} (a trusted key) {problem}")


@dataclass(frozen=True)
class NoteSignature:
    """One signature line: key name, 4-byte key id, and the signature proper."""

    name: str
    key_id: bytes
    signature: bytes

    @property
    def label(self) -> str:
        """``<name>+<hex key id>``."""
        return f"{self.name}+{self.key_id.hex()}"

    def line(self) -> str:
        """The signature line, newline included."""
        encoded = base64.b64encode(self.key_id + self.signature).decode("ascii")
        return f"{SIGNATURE_LINE_PREFIX}{self.name} {encoded}\n"

    def timestamp(self) -> int:
        """A cosignature/v1's timestamp (its first 8 bytes; meaningful once verified)."""
        return int(struct.unpack(">Q", self.signature[:_TIMESTAMP_BYTES])[0])


@dataclass(frozen=True)
class Note:
    """A parsed, NOT verified, note: its text must be ignored until :func:`open_note`."""

    text: str
    signatures: tuple[NoteSignature, ...]


@dataclass(frozen=True)
class VerifiedNote:
    """A note signed by at least one trusted key: ``verified`` has one signature per trusted key
    that signed, ``unverified`` the lines of keys the caller did not name (kept, not checked)."""

    text: str
    verified: tuple[NoteSignature, ...]
    unverified: tuple[NoteSignature, ...]


def parse_note(data: bytes) -> Note:
    """Split a signed note into its text and signature lines, strictly; verify nothing.

    Raises MalformedNoteError with one message per malformation.
    """
    if len(data) > NOTE_BYTES_MAX:
        raise _malformed(f"{len(data)} bytes, over {NOTE_BYTES_MAX}")
    try:
        note = data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise _malformed(f"not valid UTF-8 (at byte {error.start})") from None
    found = _CONTROL_CHARACTER.search(note)
    if found:
        raise _malformed(f"control character U+{ord(found.group()):04X} at {found.start()}")
    # The signatures follow the LAST blank line: the text itself may contain empty lines.
    split = note.rfind("\n\n")
    if split < 0:
        raise _malformed("no blank line between the text and the signatures")
    text, block = note[: split + 1], note[split + 2 :]
    if not block:
        raise _malformed("no signature lines after the blank line")
    if not block.endswith("\n"):
        raise _malformed("signature block does not end in a newline")
    lines = block[:-1].split("\n")
    if len(lines) > NOTE_SIGNATURES_MAX:
        raise _malformed(f"{len(lines)} signature lines, over {NOTE_SIGNATURES_MAX}")
    signatures = tuple(_parse_line(number, line) for number, line in enumerate(lines, 1))
    return Note(text=text, signatures=signatures)


def _parse_line(number: int, line: str) -> NoteSignature:
    """One signature line (without its newline): ``— <name> <base64(key id || signature)>``."""
    if not line.startswith(SIGNATURE_LINE_PREFIX):
        raise _malformed(f"signature line {number} does not start with an em dash and a space")
    name, space, encoded = line[len(SIGNATURE_LINE_PREFIX) :].partition(" ")
    if not space or not encoded:
        raise _malformed(f"signature line {number} has no signature after the key name")
    problem = key_name_problem(name)
    if problem:
        raise _malformed(f"signature line {number} key name {problem}")
    try:
        decoded = b64decode_canonical(encoded)
    except ValueError:
        raise _malformed(f"signature line {number} is not standard padded base64") from None
    if len(decoded) <= KEY_ID_BYTES:
        raise _malformed(
            f"signature line {number} is {len(decoded)} bytes: no room for a key id and signature"
        )
    return NoteSignature(name, decoded[:KEY_ID_BYTES], decoded[KEY_ID_BYTES:])


def open_note(data: bytes, keys: Sequence[VerifierKey]) -> VerifiedNote:
    """The note in ``data`` once a trusted key's signature on it verifies (steps (1)-(4) in the
    module docstring). Raises MalformedNoteError or a NoteVerificationError."""
    trusted = {(key.name, key.key_id): key for key in keys}
    # (1)
    note = parse_note(data)
    text_bytes = note.text.encode("utf-8")
    verified: dict[tuple[str, bytes], NoteSignature] = {}
    unverified: list[NoteSignature] = []
    for signature in note.signatures:
        key = trusted.get((signature.name, signature.key_id))
        # (2)
        if key is None:
            unverified.append(signature)
            continue
        # (3)
        key.verify(text_bytes, signature.signature)
        verified.setdefault((signature.name, signature.key_id), signature)
    # (4)
    if not verified:
        expected = ", ".join(key.label for key in keys) or "(no trusted keys given)"
        signed = ", ".join(signature.label for signature in unverified)
        raise UntrustedNoteError(
            f"no signature by a trusted key on the note: expected {expected}; signed by {signed}"
        )
    return VerifiedNote(note.text, tuple(verified.values()), tuple(unverified))


@dataclass(frozen=True)
class Checkpoint:
    """A checkpoint body (https://c2sp.org/tlog-checkpoint): the signed tree head."""

    origin: str
    size: int
    root_hash: bytes
    extensions: tuple[str, ...] = ()

    def to_text(self) -> str:
        """The checkpoint body, as signed."""
        root = base64.b64encode(self.root_hash).decode("ascii")
        return "".join(f"{line}\n" for line in (self.origin, self.size, root, *self.extensions))


def parse_checkpoint(text: str) -> Checkpoint:
    """A checkpoint body: origin, tree size, base64 root hash, extension lines; strictly."""
    if not text.endswith("\n"):
        raise _malformed_checkpoint("does not end in a newline")
    lines = text[:-1].split("\n")
    if len(lines) < 3:
        raise _malformed_checkpoint(
            f"want origin, tree size and root hash lines, got {len(lines)} line(s)"
        )
    origin, size_line, root_line, *extensions = lines
    if not origin:
        raise _malformed_checkpoint("empty origin line")
    if len(origin) > ORIGIN_CHARS_MAX:
        raise _malformed_checkpoint(f"origin over {ORIGIN_CHARS_MAX} characters")
    try:
        size = parse_decimal(size_line, TREE_SIZE_MAX)
    except ValueError as error:
        raise _malformed_checkpoint(f"tree size {error}") from None
    try:
        root_hash = b64decode_canonical(root_line)
    except ValueError:
        raise _malformed_checkpoint("root hash is not standard padded base64") from None
    if len(root_hash) != 32:
        raise _malformed_checkpoint(f"root hash is {len(root_hash)} bytes, want 32")
    for number, line in enumerate(extensions, 4):
        if not line:
            raise _malformed_checkpoint(f"extension line {number} is empty")
    return Checkpoint(origin, size, root_hash, tuple(extensions))


def verify_checkpoint(note: bytes, key: VerifierKey, origin: str | None = None) -> Checkpoint:
    """The checkpoint in ``note`` once ``key``'s signature verifies (others are ignored); its
    origin must be ``origin`` (default: the key's name)."""
    checkpoint = parse_checkpoint(open_note(note, [key]).text)
    expected = key.name if origin is None else origin
    if checkpoint.origin != expected:
        raise OriginMismatchError(
            f"checkpoint origin is {checkpoint.origin[:64]!r}, expected {expected!r}"
        )
    return checkpoint


def _malformed(problem: str) -> MalformedNoteError:
    return MalformedNoteError(f"malformed note: {problem}")


def _malformed_checkpoint(problem: str) -> MalformedCheckpointError:
    return MalformedCheckpointError(f"malformed checkpoint: {problem}")


def _bad_key(problem: str) -> MalformedVerifierKeyError:
    return MalformedVerifierKeyError(f"malformed verifier key: {problem}")
