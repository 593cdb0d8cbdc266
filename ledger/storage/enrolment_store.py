"""Enrolment codes in the database: issued codes, wrong tries, and redemptions (append-only).

Three tables, none ever updated (database triggers refuse UPDATE and DELETE, migration 0008):

- ``enrolment_codes``: one row per issued code: the party (role, name), the SHA-256 of the
  code (never the code), when it was issued and when it expires;
- ``enrolment_wrong_codes``: one row per wrong code tried against a party's current code;
- ``enrolment_redemptions``: one row per used code, keyed by the code, so that a code is used
  at most once even when two calls race (the second insert violates the primary key).

A party's current code is the one issued last; issuing a new one supersedes the old (and gives
a locked-out party fresh tries).
"""

from __future__ import annotations

import datetime as dt
import secrets
from dataclasses import dataclass

from sqlalchemy import Column, Connection, Engine, Index, String, Table, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.types import BigInteger

from ledger import limits
from ledger.clock import from_micros, to_micros
from ledger.enrolment import code_hash, code_matches
from ledger.errors import PermissionDenied, ResourceExhausted, Unauthenticated
from ledger.storage.db import WRITE_LOCK_OPTION
from ledger.storage.tables import metadata

__all__ = [
    "EnrolmentCode",
    "EnrolmentStore",
    "enrolment_codes",
    "enrolment_redemptions",
    "enrolment_wrong_codes",
]

enrolment_codes = Table(
    "enrolment_codes",
    metadata,
    Column("code_id", String(32), primary_key=True),
    Column("role", String(20), nullable=False),
    Column("name", String(64), nullable=False),
    Column("code_sha256", String(64), nullable=False),
    Column("issued_at_us", BigInteger, nullable=False),
    Column("expires_at_us", BigInteger, nullable=False),
    Index("enrolment_codes_by_party", "role", "name", "issued_at_us"),
)
enrolment_wrong_codes = Table(
    "enrolment_wrong_codes",
    metadata,
    Column("attempt_id", String(32), primary_key=True),
    Column("code_id", String(32), nullable=False),
    Column("attempted_at_us", BigInteger, nullable=False),
    Index("enrolment_wrong_codes_by_code", "code_id"),
)
enrolment_redemptions = Table(
    "enrolment_redemptions",
    metadata,
    Column("code_id", String(32), primary_key=True),
    Column("redeemed_at_us", BigInteger, nullable=False),
    Column("certificate_serial", String(64), nullable=False),
)


@dataclass(frozen=True)
class EnrolmentCode:
    """An issued code, as stored (the code itself is not)."""

    code_id: str
    role: str
    name: str
    issued_at: dt.datetime
    expires_at: dt.datetime


class EnrolmentStore:
    """Issue, check and redeem enrolment codes."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def issue(self, role: str, name: str, code: str, now: dt.datetime, ttl: dt.timedelta) -> str:
        """Store the hash of ``code`` as ``role``/``name``'s current code; return its id."""
        code_id = secrets.token_hex(16)
        with self._engine.begin() as connection:
            connection.execute(
                enrolment_codes.insert().values(
                    code_id=code_id,
                    role=role,
                    name=name,
                    code_sha256=code_hash(code),
                    issued_at_us=to_micros(now),
                    expires_at_us=to_micros(now + ttl),
                )
            )
        return code_id

    def check(self, role: str, name: str, code: str, now: dt.datetime) -> EnrolmentCode:
        """The party's current code if ``code`` is it, unused and unexpired; else raise.

        (1) the party has a code, (2) it is not locked by wrong tries, (3) it is not used,
        (4) ``code`` matches (a wrong one is counted), (5) it has not expired. The lock is
        checked before the comparison, so that a locked party learns nothing from a try.
        """
        # One check of a party at a time (the code's row locked on PostgreSQL, the write lock
        # on SQLite), so that concurrent wrong tries cannot each see 4 and make it 6.
        with self._engine.execution_options(**{WRITE_LOCK_OPTION: True}).begin() as connection:
            row = connection.execute(
                select(enrolment_codes)
                .where(enrolment_codes.c.role == role, enrolment_codes.c.name == name)
                .order_by(enrolment_codes.c.issued_at_us.desc())
                .limit(1)
                .with_for_update()
            ).first()
            if row is None:  # (1)
                raise Unauthenticated(
                    f"no enrolment code was issued for {role}/{name}", reason="CODE_WRONG"
                )
            _check_not_locked(connection, row.code_id, role, name)  # (2)
            if _redeemed(connection, row.code_id):  # (3)
                raise PermissionDenied(
                    f"the enrolment code of {role}/{name} was already used: ask the operator "
                    "for a new one",
                    reason="CODE_USED",
                )
            wrong = not code_matches(code, row.code_sha256)  # (4)
            if wrong:  # counted in this transaction, which must commit before the refusal
                connection.execute(
                    enrolment_wrong_codes.insert().values(
                        attempt_id=secrets.token_hex(16),
                        code_id=row.code_id,
                        attempted_at_us=to_micros(now),
                    )
                )
        if wrong:
            raise Unauthenticated(f"wrong enrolment code for {role}/{name}", reason="CODE_WRONG")
        if to_micros(now) >= row.expires_at_us:  # (5)
            raise Unauthenticated(
                f"the enrolment code of {role}/{name} expired at "
                f"{from_micros(row.expires_at_us).isoformat()}: ask the operator for a new one",
                reason="CODE_EXPIRED",
            )
        return EnrolmentCode(
            code_id=row.code_id,
            role=row.role,
            name=row.name,
            issued_at=from_micros(row.issued_at_us),
            expires_at=from_micros(row.expires_at_us),
        )

    def redeem(self, code_id: str, certificate_serial: str, now: dt.datetime) -> None:
        """Mark the code used; PermissionDenied ``CODE_USED`` if another call used it first."""
        try:
            with self._engine.begin() as connection:
                connection.execute(
                    enrolment_redemptions.insert().values(
                        code_id=code_id,
                        redeemed_at_us=to_micros(now),
                        certificate_serial=certificate_serial,
                    )
                )
        except IntegrityError as error:
            raise PermissionDenied(
                "the enrolment code was already used: ask the operator for a new one",
                reason="CODE_USED",
            ) from error

    def wrong_tries(self, code_id: str) -> int:
        """Wrong codes tried against ``code_id``."""
        with self._engine.connect() as connection:
            return _wrong_tries(connection, code_id)

    def is_redeemed(self, code_id: str) -> bool:
        """Whether ``code_id`` was used."""
        with self._engine.connect() as connection:
            return _redeemed(connection, code_id)


def _wrong_tries(connection: Connection, code_id: str) -> int:
    count = connection.execute(
        select(func.count())
        .select_from(enrolment_wrong_codes)
        .where(enrolment_wrong_codes.c.code_id == code_id)
    ).scalar_one()
    return int(count)


def _check_not_locked(connection: Connection, code_id: str, role: str, name: str) -> None:
    tries = _wrong_tries(connection, code_id)
    if tries >= limits.enrolment_wrong_codes_max:
        raise ResourceExhausted(
            f"{role}/{name} tried {tries} wrong enrolment codes (at most "
            f"{limits.enrolment_wrong_codes_max}): ask the operator for a new code",
            reason="ENROLMENT_TRIES_EXHAUSTED",
            metadata={"wrong_tries": str(tries)},
        )


def _redeemed(connection: Connection, code_id: str) -> bool:
    found = connection.execute(
        select(enrolment_redemptions.c.code_id).where(enrolment_redemptions.c.code_id == code_id)
    ).first()
    return found is not None
