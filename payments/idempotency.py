"""Idempotency keys: every StartPayment / RefundPayment carries one, stored with the SHA-256 of
the canonical request (kept at least ``IDEMPOTENCY_DAYS``); the same key with another request
is refused naming the differing fields. Both functions run on the caller's transaction."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
from collections.abc import Mapping
from typing import Any

from sqlalchemy import Connection, bindparam, insert, select

from ledger.clock import to_micros
from ledger.errors import AlreadyExists, FieldViolation, InvalidArgument
from payments.limits import IDEMPOTENCY_KEY_CHARS
from payments.tables import idempotency_keys

__all__ = ["claim_key", "store_key"]


_KEY = select(idempotency_keys).where(idempotency_keys.c.idempotency_key == bindparam("key"))
"""Built once (its cache key generated once), as :data:`_STORE_KEY`."""
_STORE_KEY = insert(idempotency_keys)


def _fingerprint(request: Mapping[str, Any]) -> tuple[bytes, str]:
    canonical = json.dumps(request, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).digest(), canonical


def claim_key(
    connection: Connection, key: str, operation: str, request: Mapping[str, Any]
) -> str | None:
    """The result id stored under ``key``, or None when the key is new (the caller stores it
    with :func:`store_key` in the same transaction)."""
    if len(key) not in IDEMPOTENCY_KEY_CHARS or not key.isprintable():
        raise InvalidArgument(
            "idempotency_key must be 8 to 128 printable characters",
            reason="IDEMPOTENCY_KEY_INVALID",
            field_violations=[FieldViolation("idempotency_key", "8 to 128 characters")],
        )
    digest, canonical = _fingerprint({"operation": operation, **request})
    row = connection.execute(_KEY, {"key": key}).first()
    if row is None:
        return None
    if bytes(row.fingerprint) != digest:
        first = json.loads(row.request_json)
        again = json.loads(canonical)
        differing = sorted(k for k in first.keys() | again.keys() if first.get(k) != again.get(k))
        raise AlreadyExists(
            f"idempotency key already used for another request ({', '.join(differing)} differ)",
            reason="IDEMPOTENCY_KEY_REUSED",
            field_violations=[
                FieldViolation(name, "differs from the first request") for name in differing
            ],
        )
    return str(row.result_id)


def store_key(  # noqa: PLR0917 (one row's columns)
    connection: Connection,
    key: str,
    operation: str,
    request: Mapping[str, Any],
    result_id: str,
    now: dt.datetime,
) -> None:
    """Keep ``key`` with the request's fingerprint and the id of what it made."""
    digest, canonical = _fingerprint({"operation": operation, **request})
    connection.execute(
        _STORE_KEY,
        {
            "idempotency_key": key,
            "operation": operation,
            "fingerprint": digest,
            "request_json": canonical,
            "result_id": result_id,
            "created_at_us": to_micros(now),
        },
    )
