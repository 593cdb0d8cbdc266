"""The signing-key registry's rules: key ids, validity windows, whether a key may sign now.

Principals (insurers, authorities, the operator) sign events with Ed25519 keys the operator
registered for them by KeyRegistered events in the log; which role may sign which event type
is :mod:`ledger.signers`. A key is usable at an
instant when ``valid_from <= instant < valid_until`` and it was not revoked at or before that
instant. The key id is derived from the public key, so an id can never name two keys.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from dataclasses import dataclass

from ledger import limits
from ledger.errors import FieldViolation, InvalidArgument, PermissionDenied, Unauthenticated
from ledger.signers import SignerRole

__all__ = ["InsurerKey", "check_key_usable", "insurer_key_id", "validate_public_key"]

KEY_ID_PREFIX = "ed25519:"


def insurer_key_id(public_key: bytes) -> str:
    """``ed25519:`` + hex of the first 8 bytes of SHA-256(public key)."""
    return KEY_ID_PREFIX + hashlib.sha256(public_key).digest()[:8].hex()


def validate_public_key(public_key: bytes) -> None:
    """Raise InvalidArgument unless ``public_key`` is a raw 32-byte Ed25519 public key."""
    if len(public_key) != limits.ed25519_public_key_bytes:
        raise InvalidArgument(
            f"public key must be {limits.ed25519_public_key_bytes} bytes, got {len(public_key)}",
            reason="PUBLIC_KEY_INVALID",
            field_violations=[FieldViolation("public_key", "not a raw Ed25519 public key")],
        )


@dataclass(frozen=True)
class InsurerKey:
    """A registered signing key (of an insurer, an authority or the operator)."""

    key_id: str
    insurer_id: str
    """The principal the key signs for."""
    public_key: bytes
    valid_from: dt.datetime
    valid_until: dt.datetime | None
    revoked_at: dt.datetime | None
    registered_at: dt.datetime
    role: SignerRole = SignerRole.INSURER
    jurisdiction: str = ""
    registered_leaf_index: int = 0


def check_key_usable(
    key: InsurerKey | None, key_id: str, insurer_id: str, at: dt.datetime
) -> InsurerKey:
    """Return ``key`` if it may sign for ``insurer_id`` at ``at``; otherwise raise why not.

    Unknown key: UNAUTHENTICATED. Another insurer's key, a key not yet valid, expired or revoked:
    PERMISSION_DENIED. Each carries the key id in its metadata.
    """
    metadata = {"key_id": key_id, "insurer_id": insurer_id}
    if key is None:
        raise Unauthenticated(
            f"unknown signing key {key_id!r}", reason="KEY_UNKNOWN", metadata=metadata
        )
    if key.insurer_id != insurer_id:
        raise PermissionDenied(
            f"key {key_id!r} belongs to insurer {key.insurer_id!r}, not {insurer_id!r}",
            reason="KEY_WRONG_INSURER",
            metadata=metadata,
        )
    if at < key.valid_from:
        raise PermissionDenied(
            f"key {key_id!r} is not valid before {key.valid_from.isoformat()}",
            reason="KEY_NOT_YET_VALID",
            metadata=metadata,
        )
    if key.valid_until is not None and at >= key.valid_until:
        raise PermissionDenied(
            f"key {key_id!r} expired at {key.valid_until.isoformat()}",
            reason="KEY_EXPIRED",
            metadata=metadata,
        )
    if key.revoked_at is not None and at >= key.revoked_at:
        raise PermissionDenied(
            f"key {key_id!r} was revoked at {key.revoked_at.isoformat()}",
            reason="KEY_REVOKED",
            metadata=metadata,
        )
    return key


def check_key_at_event_time(
    key: InsurerKey | None, key_id: str, insurer_id: str, occurred_at: dt.datetime
) -> InsurerKey:
    """As :func:`check_key_usable`, at the event's own time: a key signs only what happened
    while it was valid (an event dated before the key's window, or after its revocation, is
    refused even while the key is still valid now)."""
    try:
        return check_key_usable(key, key_id, insurer_id, occurred_at)
    except PermissionDenied as error:
        raise PermissionDenied(
            f"at the event's time ({occurred_at.isoformat()}): {error.message}",
            reason=error.details.reason,
            field_violations=[FieldViolation("event.occurred_at", "outside the key's validity")],
            metadata=dict(error.details.metadata),
        ) from None
