"""The insurer key registry in the database: register, revoke, look up, list."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

from sqlalchemy import Connection, Engine, Row, select, update

from ledger.clock import from_micros, to_micros
from ledger.errors import (
    AlreadyExists,
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
    NotFound,
)
from ledger.keys import InsurerKey, insurer_key_id, validate_public_key
from ledger.storage.db import WRITE_LOCK_OPTION
from ledger.storage.tables import insurer_keys

__all__ = ["KeyStore", "keys_by_id"]


def _key_from_row(row: Row[Any]) -> InsurerKey:
    return InsurerKey(
        key_id=row.key_id,
        insurer_id=row.insurer_id,
        public_key=bytes(row.public_key),
        valid_from=from_micros(row.valid_from_us),
        valid_until=None if row.valid_until_us is None else from_micros(row.valid_until_us),
        revoked_at=None if row.revoked_at_us is None else from_micros(row.revoked_at_us),
        registered_at=from_micros(row.registered_at_us),
    )


def keys_by_id(connection: Connection, key_ids: Sequence[str]) -> dict[str, InsurerKey]:
    """The registered keys among ``key_ids``, by id, read on ``connection``."""
    if not key_ids:
        return {}
    rows = connection.execute(
        select(insurer_keys).where(insurer_keys.c.key_id.in_(sorted(set(key_ids))))
    )
    return {row.key_id: _key_from_row(row) for row in rows}


class KeyStore:
    """Operator-managed insurer keys. Registration is idempotent; revocation is final."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def register(
        self,
        *,
        insurer_id: str,
        public_key: bytes,
        valid_from: dt.datetime | None,
        valid_until: dt.datetime | None,
        now: dt.datetime,
    ) -> InsurerKey:
        """Register ``public_key`` for ``insurer_id``; the same registration again is a no-op.

        ``valid_from`` None means "from now" for a new key and "as registered" for a repeated
        registration. The same key registered for another insurer or with another window is
        ALREADY_EXISTS.
        """
        validate_public_key(public_key)
        start = now if valid_from is None else valid_from
        if valid_until is not None and valid_until <= start:
            raise InvalidArgument(
                "valid_until must be after valid_from",
                reason="KEY_WINDOW_INVALID",
                field_violations=[FieldViolation("valid_until", "not after valid_from")],
            )
        wanted = InsurerKey(
            key_id=insurer_key_id(public_key),
            insurer_id=insurer_id,
            public_key=public_key,
            valid_from=start,
            valid_until=valid_until,
            revoked_at=None,
            registered_at=now,
        )
        # Read, then write: take the write lock first (SQLite BEGIN IMMEDIATE), or a concurrent
        # commit (a batch, a witness cosignature) makes the write fail with "database is locked".
        with self._engine.execution_options(**{WRITE_LOCK_OPTION: True}).begin() as connection:
            existing = keys_by_id(connection, [wanted.key_id]).get(wanted.key_id)
            if existing is not None:
                compared = ("insurer_id", "valid_until") + (("valid_from",) if valid_from else ())
                return self._same_registration(existing, wanted, compared)
            connection.execute(
                insurer_keys.insert().values(
                    key_id=wanted.key_id,
                    insurer_id=insurer_id,
                    public_key=public_key,
                    valid_from_us=to_micros(start),
                    valid_until_us=None if valid_until is None else to_micros(valid_until),
                    revoked_at_us=None,
                    registered_at_us=to_micros(now),
                )
            )
        return wanted

    @staticmethod
    def _same_registration(
        existing: InsurerKey, wanted: InsurerKey, compared: tuple[str, ...]
    ) -> InsurerKey:
        for field in compared:
            if getattr(existing, field) != getattr(wanted, field):
                raise AlreadyExists(
                    f"key {existing.key_id} is already registered with a different {field}",
                    reason="KEY_ALREADY_REGISTERED",
                    field_violations=[FieldViolation(field, "differs from the registration")],
                    metadata={"key_id": existing.key_id},
                )
        return existing

    def revoke(self, key_id: str, revoked_at: dt.datetime) -> InsurerKey:
        """Revoke ``key_id`` from ``revoked_at`` on. Revoking twice is FAILED_PRECONDITION."""
        with self._engine.execution_options(**{WRITE_LOCK_OPTION: True}).begin() as connection:
            existing = keys_by_id(connection, [key_id]).get(key_id)
            if existing is None:
                raise NotFound(
                    f"no key {key_id!r}", reason="KEY_UNKNOWN", metadata={"key_id": key_id}
                )
            if existing.revoked_at is not None:
                raise FailedPrecondition(
                    f"key {key_id!r} was already revoked at {existing.revoked_at.isoformat()}",
                    reason="KEY_ALREADY_REVOKED",
                    metadata={"key_id": key_id},
                )
            connection.execute(
                update(insurer_keys)
                .where(insurer_keys.c.key_id == key_id)
                .values(revoked_at_us=to_micros(revoked_at))
            )
            return keys_by_id(connection, [key_id])[key_id]

    def get(self, key_id: str) -> InsurerKey | None:
        """The key registered under ``key_id``, if any."""
        with self._engine.connect() as connection:
            return keys_by_id(connection, [key_id]).get(key_id)

    def list(self, insurer_id: str = "") -> list[InsurerKey]:
        """Every key of ``insurer_id`` (or of all insurers), by insurer then registration time."""
        query = select(insurer_keys).order_by(
            insurer_keys.c.insurer_id, insurer_keys.c.registered_at_us, insurer_keys.c.key_id
        )
        if insurer_id:
            query = query.where(insurer_keys.c.insurer_id == insurer_id)
        with self._engine.connect() as connection:
            return [_key_from_row(row) for row in connection.execute(query)]
