"""The witness's key: an Ed25519 key that signs C2SP ``cosignature/v1`` cosignatures.

Key file: ``PRIVATE+KEY+<name>+<hex key id>+<base64(0x04 || 32-byte seed)>``, as the log's signer
key files but with the cosignature type (0x04) of https://c2sp.org/tlog-cosignature, whose key id
is ``SHA-256(name || 0x0A || 0x04 || public key)[:4]``. A key file of type 0x01 is also read: the
seed is the same, only the key id changes.
"""

from __future__ import annotations

import base64
import os
import struct
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from clients.offline.note import (
    COSIGNATURE_V1_TYPE,
    ED25519_TYPE,
    TIMESTAMP_MAX,
    MalformedVerifierKeyError,
    NoteSignature,
    VerifierKey,
    b64decode_canonical,
    cosignature_message,
    key_name_problem,
)

__all__ = ["WitnessKey"]

_PRIVATE_PREFIX = "PRIVATE+KEY+"
_SEED_BYTES = 32


class WitnessKey:
    """The witness's signing key: its name is the cosigner name on every cosignature line."""

    def __init__(self, name: str, seed: bytes) -> None:
        problem = key_name_problem(name)
        if problem:
            raise MalformedVerifierKeyError(f"malformed witness key: name {name[:64]!r} {problem}")
        if len(seed) != _SEED_BYTES:
            raise MalformedVerifierKeyError("malformed witness key: the seed must be 32 bytes")
        self.name = name
        self._seed = bytes(seed)
        self._private_key = Ed25519PrivateKey.from_private_bytes(self._seed)
        public_key = self._private_key.public_key().public_bytes_raw()
        self.verifier_key = VerifierKey.from_public_key(name, public_key, COSIGNATURE_V1_TYPE)

    @classmethod
    def generate(cls, name: str) -> WitnessKey:
        """A new random key."""
        return cls(name, os.urandom(_SEED_BYTES))

    @classmethod
    def parse(cls, text: str) -> WitnessKey:
        """The key of a ``PRIVATE+KEY+...`` string (type 0x04, or 0x01 for a log-style file)."""
        if not text.startswith(_PRIVATE_PREFIX):
            raise MalformedVerifierKeyError("malformed witness key: want PRIVATE+KEY+...")
        parts = text.strip()[len(_PRIVATE_PREFIX) :].split("+", 2)
        if len(parts) != 3:
            raise MalformedVerifierKeyError("malformed witness key: want PRIVATE+KEY+<name>+...")
        name, _, encoded = parts
        try:
            material = b64decode_canonical(encoded)
        except ValueError:
            raise MalformedVerifierKeyError("malformed witness key: not base64") from None
        if len(material) != 1 + _SEED_BYTES or material[0] not in (
            ED25519_TYPE,
            COSIGNATURE_V1_TYPE,
        ):
            raise MalformedVerifierKeyError("malformed witness key: want 0x04 || 32-byte seed")
        return cls(name, material[1:])

    @classmethod
    def load(cls, path: str | Path) -> WitnessKey:
        """The key in a key file."""
        return cls.parse(Path(path).read_text(encoding="utf-8"))

    def private_text(self) -> str:
        """The key file's content (a secret: store it 0600)."""
        encoded = base64.b64encode(bytes([COSIGNATURE_V1_TYPE]) + self._seed).decode("ascii")
        return f"{_PRIVATE_PREFIX}{self.verifier_key.label}+{encoded}\n"

    def cosign(self, note_text: str, timestamp: int) -> NoteSignature:
        """The cosignature/v1 of a checkpoint body at ``timestamp`` (POSIX seconds, not zero)."""
        if not 0 < timestamp <= TIMESTAMP_MAX:
            raise ValueError(f"cosignature timestamp {timestamp} out of range 1..2**63-1")
        signature = self._private_key.sign(cosignature_message(note_text, timestamp))
        return NoteSignature(
            self.name, self.verifier_key.key_id, struct.pack(">Q", timestamp) + signature
        )
