"""C2SP signed notes and tlog checkpoints, verified with a log's verifier key; self-contained.

https://c2sp.org/signed-note and https://c2sp.org/tlog-checkpoint. Part of the offline verifier:
imports nothing from the server's ``ledger`` package (stdlib + ``cryptography``).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from clients.offline.merkle import VerificationFailure

__all__ = ["Checkpoint", "VerifierKey", "parse_checkpoint", "verify_checkpoint", "verify_note"]

_ED25519 = 0x01
_NOTE_BYTES_MAX = 1 << 16


@dataclass(frozen=True)
class VerifierKey:
    """A C2SP verifier key: ``<name>+<hex key id>+<base64(0x01 || 32-byte Ed25519 key)>``."""

    name: str
    key_id: bytes
    public_key: bytes

    @classmethod
    def parse(cls, text: str) -> VerifierKey:
        """Parse and check the key id against the name and key."""
        parts = text.strip().split("+", 2)  # the name has no "+"; base64 may
        if len(parts) != 3 or not parts[0]:
            raise VerificationFailure("a verifier key is <name>+<hex key id>+<base64 key>")
        name, hex_id, encoded = parts
        try:
            key_id = bytes.fromhex(hex_id)
            raw = base64.b64decode(encoded, validate=True)
        except (ValueError, binascii.Error) as error:
            raise VerificationFailure(f"verifier key is not hex/base64: {error}") from None
        if len(key_id) != 4 or len(raw) != 33 or raw[0] != _ED25519:
            raise VerificationFailure("verifier key must be a 4-byte id and an Ed25519 key")
        expected = hashlib.sha256(name.encode() + b"\n" + raw).digest()[:4]
        if key_id != expected:
            raise VerificationFailure("verifier key id does not match its name and key")
        return cls(name, key_id, raw[1:])


def verify_note(note: bytes, key: VerifierKey) -> str:
    """The note's text, once a signature line by ``key`` verifies (others are ignored)."""
    if len(note) > _NOTE_BYTES_MAX:
        raise VerificationFailure("note is too large")
    try:
        decoded = note.decode("utf-8")
    except UnicodeDecodeError:
        raise VerificationFailure("note is not UTF-8") from None
    text, separator, signatures = decoded.partition("\n\n")
    if not separator or not text:
        raise VerificationFailure("note has no blank line between text and signatures")
    if not signatures.endswith("\n"):
        raise VerificationFailure("note does not end with a newline")
    lines = signatures[:-1].split("\n")
    if any(not line for line in lines):
        raise VerificationFailure("note has an empty line among its signatures")
    text += "\n"
    public = Ed25519PublicKey.from_public_bytes(key.public_key)
    verified = False
    for line in lines:
        if not line.startswith("\u2014 "):
            raise VerificationFailure(f"malformed signature line {line[:40]!r}")
        name, _, encoded = line[2:].partition(" ")
        if name != key.name:
            continue
        try:
            raw = base64.b64decode(encoded, validate=True)
        except binascii.Error:
            raise VerificationFailure("signature is not base64") from None
        if len(raw) != 68 or raw[:4] != key.key_id:
            continue
        try:
            public.verify(raw[4:], text.encode())
        except InvalidSignature:
            # Any line that claims the log key and does not verify rejects the note.
            raise VerificationFailure(f"signature by {key.name} does not verify") from None
        verified = True
    if verified:
        return text
    raise VerificationFailure(f"the note carries no signature by {key.name}")


@dataclass(frozen=True)
class Checkpoint:
    """A tlog checkpoint: origin, tree size, root hash."""

    origin: str
    size: int
    root_hash: bytes


def parse_checkpoint(text: str) -> Checkpoint:
    """Parse a checkpoint body (origin, size, base64 root; extension lines allowed)."""
    lines = text.split("\n")
    if len(lines) < 4 or lines[-1] != "":
        raise VerificationFailure("checkpoint needs an origin, a size and a root line")
    origin, size_text, root_text = lines[0], lines[1], lines[2]
    if not size_text.isdigit() or (size_text.startswith("0") and size_text != "0"):
        raise VerificationFailure(f"checkpoint size {size_text!r} is not a decimal number")
    try:
        root = base64.b64decode(root_text, validate=True)
    except binascii.Error:
        raise VerificationFailure("checkpoint root is not base64") from None
    if len(root) != 32:
        raise VerificationFailure("checkpoint root is not 32 bytes")
    return Checkpoint(origin, int(size_text), root)


def verify_checkpoint(note: bytes, key: VerifierKey, origin: str | None = None) -> Checkpoint:
    """A checkpoint note verified with the log key (and of ``origin``, when given)."""
    checkpoint = parse_checkpoint(verify_note(note, key))
    if origin is not None and checkpoint.origin != origin:
        raise VerificationFailure(f"checkpoint origin {checkpoint.origin!r} is not {origin!r}")
    return checkpoint
