"""Witness cosignatures on our checkpoints (https://c2sp.org/tlog-cosignature, ``cosignature/v1``).

A witness's verifier key has signature type 0x04; its key id is
``SHA-256(name || 0x0A || 0x04 || Ed25519 public key)[:4]``. A cosignature line's signature is
``u64 big-endian timestamp || Ed25519 signature`` over::

    cosignature/v1
    time <timestamp>
    <the checkpoint body>

:class:`CosignatureVerifier` verifies those lines; :func:`parse_witness_option` reads the
server's ``--witness URL=VERIFIERKEY`` options.
"""

from __future__ import annotations

import base64
import hashlib
import struct
from dataclasses import dataclass, field

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from ledger.errors import InvalidArgument
from ledger.signing import SignatureError, b64decode_canonical, key_name_problem

__all__ = [
    "COSIGNATURE_V1_TYPE",
    "CosignatureVerifier",
    "WitnessEndpoint",
    "cosignature_message",
    "parse_witness_option",
]

COSIGNATURE_V1_TYPE = 0x04
TIMESTAMP_MAX = 2**63 - 1
_TIMESTAMP_BYTES = 8
_SIGNATURE_BYTES = 64
_KEY_BYTES = 32


def cosignature_message(text: bytes, timestamp: int) -> bytes:
    """What a cosignature/v1 signs: the header line, the time line, the checkpoint body."""
    return f"cosignature/v1\ntime {timestamp}\n".encode("ascii") + text


@dataclass(frozen=True)
class CosignatureVerifier:
    """A witness's cosignature/v1 key: verifies note signature lines as ``ledger.note`` does."""

    name: str
    public_key: bytes
    key_id: bytes = field(init=False)

    def __post_init__(self) -> None:
        encoded = self.name.encode("utf-8") + b"\n" + bytes([COSIGNATURE_V1_TYPE]) + self.public_key
        object.__setattr__(self, "key_id", hashlib.sha256(encoded).digest()[:4])

    @property
    def label(self) -> str:
        """``<name>+<hex key id>``."""
        return f"{self.name}+{self.key_id.hex()}"

    def verify(self, message: bytes, signature: bytes) -> None:
        """Raise SignatureError unless ``signature`` is this witness's cosignature of the
        checkpoint body ``message``."""
        if len(signature) != _TIMESTAMP_BYTES + _SIGNATURE_BYTES:
            raise SignatureError(f"cosignature by {self.label} is not 72 bytes")
        (timestamp,) = struct.unpack(">Q", signature[:_TIMESTAMP_BYTES])
        if timestamp > TIMESTAMP_MAX:
            raise SignatureError(f"cosignature by {self.label} has a timestamp over 2**63-1")
        try:
            Ed25519PublicKey.from_public_bytes(self.public_key).verify(
                signature[_TIMESTAMP_BYTES:], cosignature_message(message, timestamp)
            )
        except InvalidSignature:
            raise SignatureError(f"cosignature by {self.label} does not verify") from None

    def encode(self) -> str:
        """The verifier key string."""
        material = base64.b64encode(bytes([COSIGNATURE_V1_TYPE]) + self.public_key).decode()
        return f"{self.label}+{material}"

    @classmethod
    def parse(cls, text: str) -> CosignatureVerifier:
        """A ``<name>+<hex key id>+<base64(0x04 || key)>`` string; InvalidArgument otherwise."""
        name, _, rest = text.strip().partition("+")
        key_id_hex, _, encoded = rest.partition("+")
        problem = key_name_problem(name)
        try:
            material = b64decode_canonical(encoded)
        except ValueError:
            material = b""
        if problem or len(material) != 1 + _KEY_BYTES or material[0] != COSIGNATURE_V1_TYPE:
            raise _invalid(f"{text[:80]!r} is not a cosignature/v1 verifier key (type 0x04)")
        verifier = cls(name, material[1:])
        if verifier.key_id.hex() != key_id_hex:
            raise _invalid(f"witness key id {key_id_hex[:16]!r} does not match its key")
        return verifier


@dataclass(frozen=True)
class WitnessEndpoint:
    """A witness the log submits its checkpoints to: its URL prefix and its key."""

    url: str
    verifier: CosignatureVerifier


def parse_witness_option(text: str) -> WitnessEndpoint:
    """``URL=VERIFIERKEY`` (the ``serve --witness`` option)."""
    url, equals, key = text.partition("=")
    if not equals or not url.startswith(("http://", "https://")):
        raise _invalid(f"--witness {text[:80]!r}: want URL=VERIFIERKEY with an http(s) URL")
    return WitnessEndpoint(url.rstrip("/"), CosignatureVerifier.parse(key))


def _invalid(message: str) -> InvalidArgument:
    return InvalidArgument(message, reason="WITNESS_INVALID")
