"""Ed25519 key material and signers: key ids, key strings, signing and verifying.

This module owns every Ed25519 key the ledger handles: the log's checkpoint key, witnesses' keys
and insurers' bare public keys. Signing and key material are separate (as in securesystemslib):
callers sign through the :class:`Signer` protocol, so an HSM or KMS signer can replace
:class:`Ed25519Signer` without changing them.

Key ids and key strings follow C2SP signed-note (https://c2sp.org/signed-note, "Ed25519
signatures") and golang.org/x/mod/sumdb/note (https://pkg.go.dev/golang.org/x/mod/sumdb/note):

- key id: ``SHA-256(name || 0x0A || 0x01 || public key)[:4]``
- signer key: ``PRIVATE+KEY+<name>+<hex8 key id>+<base64(0x01 || seed)>``
- verifier key: ``<name>+<hex8 key id>+<base64(0x01 || public key)>``

Malformed keys raise :class:`~ledger.errors.InvalidArgument`, each malformation with its own
message; signatures that do not verify raise :class:`SignatureError`.
"""

from __future__ import annotations

import base64
import hashlib
import re
from dataclasses import dataclass, field
from typing import Protocol

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from ledger import limits
from ledger.errors import FieldViolation, InvalidArgument, VerificationError, check

__all__ = [
    "ED25519_ALGORITHM",
    "Ed25519Signer",
    "Ed25519Verifier",
    "RawKeyVerifier",
    "SignatureError",
    "Signer",
    "b64decode_canonical",
    "check_key_name",
    "format_signer_key",
    "format_verifier_key",
    "generate_keypair",
    "key_name_problem",
    "note_key_id",
    "parse_signer_key",
    "parse_verifier_key",
    "raw_public_key_verifier",
]

ED25519_ALGORITHM = 0x01
"""The C2SP signed-note signature type byte of Ed25519."""

_SIGNER_KEY_PREFIX = "PRIVATE+KEY+"
_SEED_BYTES = 32
_KEY_ID_BYTES = 4
_KEY_ID_HEX = re.compile(r"[0-9a-fA-F]{8}")


class SignatureError(VerificationError):
    """A signature does not verify with the key it claims (or no signature by that key exists)."""


class Signer(Protocol):
    """Anything that signs with a named Ed25519 key (in memory here; an HSM or KMS later)."""

    @property
    def name(self) -> str:
        """The key name (a C2SP signed-note key name)."""
        ...

    @property
    def key_id(self) -> bytes:
        """The 4-byte C2SP key id, see :func:`note_key_id`."""
        ...

    @property
    def public_key(self) -> bytes:
        """The raw 32-byte Ed25519 public key."""
        ...

    def sign(self, message: bytes) -> bytes:
        """The 64-byte Ed25519 signature of ``message``."""
        ...


def b64decode_canonical(text: str) -> bytes:
    """Decode standard base64 (RFC 4648 section 4) with padding; raise ValueError otherwise.

    Only the canonical encoding is accepted (every encoder emits it), so one value has one text
    form: no missing padding, no characters outside the alphabet, no stray trailing bits.
    """
    decoded = base64.b64decode(text, validate=True)  # binascii.Error is a ValueError
    if base64.b64encode(decoded).decode("ascii") != text:
        raise ValueError("non-canonical base64")
    return decoded


def key_name_problem(name: str) -> str:
    """Why ``name`` is not a C2SP key name, or "" if it is one.

    This is the spec's rule only (non-empty, no Unicode spaces, no '+'), used when parsing notes
    signed by others: C2SP verifiers must not reject names the spec allows.
    """
    if not name:
        return "must not be empty"
    if "+" in name:
        return "must not contain '+'"
    if any(character.isspace() for character in name):
        return "must not contain whitespace"
    return ""


def check_key_name(name: str, what: str = "key name") -> None:
    """Raise InvalidArgument unless ``name`` is a C2SP key name we accept for our own keys.

    Beyond :func:`key_name_problem`, our keys' names fit ``limits.key_name_chars_max`` and are
    printable, so they are safe in notes, logs and key files.
    """
    problem = key_name_problem(name) or _key_name_policy_problem(name)
    if problem:
        raise InvalidArgument(
            f"invalid {what} {name[:64]!r}: {problem}",
            reason="KEY_NAME_INVALID",
            field_violations=[FieldViolation("name", problem)],
        )


def _key_name_policy_problem(name: str) -> str:
    if len(name) > limits.key_name_chars_max:
        return f"over {limits.key_name_chars_max} characters ({len(name)})"
    if not name.isprintable():
        return "must not contain control characters"
    return ""


def note_key_id(name: str, public_key: bytes) -> bytes:
    """The C2SP key id: ``SHA-256(name || 0x0A || 0x01 || public key)[:4]``."""
    encoded = name.encode("utf-8") + b"\n" + bytes([ED25519_ALGORITHM]) + public_key
    return hashlib.sha256(encoded).digest()[:_KEY_ID_BYTES]


def _check_public_key(public_key: bytes) -> Ed25519PublicKey:
    if len(public_key) != limits.ed25519_public_key_bytes:
        raise InvalidArgument(
            f"Ed25519 public key must be {limits.ed25519_public_key_bytes} bytes, "
            f"got {len(public_key)}",
            reason="PUBLIC_KEY_INVALID",
        )
    try:
        return Ed25519PublicKey.from_public_bytes(public_key)
    except ValueError as error:
        raise InvalidArgument(
            f"not an Ed25519 public key: {error}", reason="PUBLIC_KEY_INVALID"
        ) from None


def _verify(key: Ed25519PublicKey, message: bytes, signature: bytes, who: str) -> None:
    """Raise SignatureError unless ``signature`` is ``key``'s signature of ``message``."""
    if len(signature) != limits.ed25519_signature_bytes:
        raise SignatureError(
            f"signature by {who} is {len(signature)} bytes, "
            f"Ed25519 signatures are {limits.ed25519_signature_bytes}",
            reason="SIGNATURE_INVALID",
        )
    try:
        key.verify(signature, message)
    except InvalidSignature:
        raise SignatureError(
            f"signature by {who} does not verify", reason="SIGNATURE_INVALID"
        ) from None


class Ed25519Signer:
    """An in-memory Ed25519 signing key with a C2SP key name."""

    def __init__(self, name: str, seed: bytes) -> None:
        """A signer named ``name`` from a 32-byte Ed25519 seed (RFC 8032 private key)."""
        check_key_name(name)
        if len(seed) != _SEED_BYTES:
            raise InvalidArgument(
                f"Ed25519 seed must be {_SEED_BYTES} bytes, got {len(seed)}",
                reason="PRIVATE_KEY_INVALID",
            )
        self._name = name
        self._seed = bytes(seed)
        self._private_key = Ed25519PrivateKey.from_private_bytes(self._seed)
        self._public_key = self._private_key.public_key().public_bytes_raw()
        self._key_id = note_key_id(name, self._public_key)

    @classmethod
    def generate(cls, name: str) -> Ed25519Signer:
        """A signer with a fresh random key (from the operating system's CSPRNG)."""
        return cls(name, Ed25519PrivateKey.generate().private_bytes_raw())

    @property
    def name(self) -> str:
        """The key name."""
        return self._name

    @property
    def key_id(self) -> bytes:
        """The 4-byte C2SP key id."""
        return self._key_id

    @property
    def public_key(self) -> bytes:
        """The raw 32-byte public key."""
        return self._public_key

    def sign(self, message: bytes) -> bytes:
        """The 64-byte Ed25519 signature of ``message``."""
        return self._private_key.sign(message)

    def verifier(self) -> Ed25519Verifier:
        """The verifier of this signer's signatures."""
        return Ed25519Verifier(self._name, self._public_key)

    def __repr__(self) -> str:
        # Never show the seed: reprs end up in logs and tracebacks.
        return f"Ed25519Signer(name={self._name!r}, key_id={self._key_id.hex()!r})"


@dataclass(frozen=True)
class Ed25519Verifier:
    """A named Ed25519 public key that verifies C2SP note signatures."""

    name: str
    public_key: bytes
    key_id: bytes = field(init=False)
    _key: Ed25519PublicKey = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        check_key_name(self.name)
        object.__setattr__(self, "_key", _check_public_key(self.public_key))
        object.__setattr__(self, "key_id", note_key_id(self.name, self.public_key))

    def verify(self, message: bytes, signature: bytes) -> None:
        """Return if ``signature`` is this key's signature of ``message``; else SignatureError."""
        _verify(self._key, message, signature, f"{self.name}+{self.key_id.hex()}")


@dataclass(frozen=True)
class RawKeyVerifier:
    """A bare 32-byte Ed25519 public key (insurer keys are registered this way)."""

    public_key: bytes
    _key: Ed25519PublicKey = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_key", _check_public_key(self.public_key))

    def verify(self, message: bytes, signature: bytes) -> None:
        """Return if ``signature`` verifies; SignatureError if not.

        A signature of the wrong length is malformed input, not a forgery: InvalidArgument.
        """
        if len(signature) != limits.ed25519_signature_bytes:
            raise InvalidArgument(
                f"Ed25519 signature must be {limits.ed25519_signature_bytes} bytes, "
                f"got {len(signature)}",
                reason="SIGNATURE_MALFORMED",
            )
        _verify(self._key, message, signature, f"public key {self.public_key.hex()[:16]}...")


def raw_public_key_verifier(public_key: bytes) -> RawKeyVerifier:
    """A verifier for a bare Ed25519 public key; InvalidArgument unless it is 32 bytes."""
    return RawKeyVerifier(public_key)


def format_signer_key(signer: Ed25519Signer) -> str:
    """``PRIVATE+KEY+<name>+<hex8 key id>+<base64(0x01 || seed)>`` (a secret: store it 0600)."""
    encoded = base64.b64encode(bytes([ED25519_ALGORITHM]) + signer._seed).decode("ascii")
    return f"{_SIGNER_KEY_PREFIX}{signer.name}+{signer.key_id.hex()}+{encoded}"


def format_verifier_key(key: Ed25519Verifier | Signer) -> str:
    """``<name>+<hex8 key id>+<base64(0x01 || public key)>``."""
    encoded = base64.b64encode(bytes([ED25519_ALGORITHM]) + key.public_key).decode("ascii")
    return f"{key.name}+{key.key_id.hex()}+{encoded}"


def parse_signer_key(text: str) -> Ed25519Signer:
    """The signer of a ``PRIVATE+KEY+...`` string; InvalidArgument naming what is wrong."""
    if not text.startswith(_SIGNER_KEY_PREFIX):
        raise _key_error("signer", f"must start with {_SIGNER_KEY_PREFIX!r}")
    name, key_id, seed = _split_key("signer", text[len(_SIGNER_KEY_PREFIX) :], "seed")
    signer = Ed25519Signer(name, seed)
    _check_key_id("signer", key_id, signer.key_id)
    return signer


def parse_verifier_key(text: str) -> Ed25519Verifier:
    """The verifier of a ``<name>+<hex8>+<base64>`` string; InvalidArgument naming what is wrong."""
    name, key_id, public_key = _split_key("verifier", text, "public key")
    verifier = Ed25519Verifier(name, public_key)
    _check_key_id("verifier", key_id, verifier.key_id)
    return verifier


def generate_keypair(name: str) -> tuple[str, str]:
    """A fresh (signer key string, verifier key string) pair named ``name``."""
    signer = Ed25519Signer.generate(name)
    return format_signer_key(signer), format_verifier_key(signer)


def _split_key(kind: str, text: str, material: str) -> tuple[str, bytes, bytes]:
    """(name, key id, 32 key bytes) of ``<name>+<hex8>+<base64(0x01 || key)>``."""
    # The base64 part may itself contain '+', so split at most twice.
    parts = text.split("+", 2)
    if len(parts) != 3:
        raise _key_error(kind, "want <name>+<hex8 key id>+<base64 key>")
    name, key_id_hex, key_base64 = parts
    check_key_name(name, f"{kind} key name")
    if not _KEY_ID_HEX.fullmatch(key_id_hex):
        raise _key_error(kind, f"key id must be 8 hex digits, got {key_id_hex[:16]!r}")
    try:
        key = b64decode_canonical(key_base64)
    except ValueError:
        raise _key_error(kind, "key is not standard base64") from None
    if not key:
        raise _key_error(kind, "key is empty")
    if key[0] != ED25519_ALGORITHM:
        raise _key_error(kind, f"unsupported algorithm 0x{key[0]:02x} (want 0x01, Ed25519)")
    if len(key) - 1 != _SEED_BYTES:
        raise _key_error(kind, f"Ed25519 {material} must be 32 bytes, got {len(key) - 1}")
    return name, bytes.fromhex(key_id_hex), key[1:]


def _check_key_id(kind: str, claimed: bytes, computed: bytes) -> None:
    check(len(computed) == _KEY_ID_BYTES, "key ids are 4 bytes")
    if claimed != computed:
        raise _key_error(
            kind, f"key id {claimed.hex()} does not match the key (computed {computed.hex()})"
        )


def _key_error(kind: str, problem: str) -> InvalidArgument:
    return InvalidArgument(f"malformed {kind} key: {problem}", reason="KEY_MALFORMED")
