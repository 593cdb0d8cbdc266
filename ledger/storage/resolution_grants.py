"""The operator's grants of more people to resolve, per person (migrations 0019, 0020, 0021;
docs/privacy.md, "A person asking for tokens").

A person (role beneficiary) may obtain the tokens of ``limits.beneficiary_people_resolved_max``
people other than themselves; each row of ``beneficiary_resolution_grants`` adds ``additional``
to that one person's bound: who granted it (the caller's SPIFFE ID), when, why, and the
request id of the call that made it (its idempotency key, unique; null for a grant made before
migration 0020), by which a retried call finds its grant instead of making another. The table
is append-only (database triggers, as the access records'): a grant is never deleted, and never
changed but for one thing: the person's erasure clears its reason (:func:`erase_grant_reasons`,
to :data:`ERASED_REASON`; the only UPDATE the triggers let through, migration 0021). The
amount, who granted it, when and the request id stay, so the bound never goes down and every
raise of it stays accounted for. Tokens only, like ``beneficiary_resolutions``; the reason is
the operator's text about the person, personal data, which is why erasure clears it.

This module holds the rows; :class:`ledger.storage.vault_store.VaultStore` reads and writes
them under the person's lock, in the transaction that reads their count.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    Connection,
    Index,
    Integer,
    PrimaryKeyConstraint,
    Row,
    String,
    Table,
    bindparam,
    func,
    insert,
    select,
    update,
)

from ledger import limits
from ledger.clock import from_micros, to_micros
from ledger.storage.tables import metadata

__all__ = [
    "ERASED_REASON",
    "BeneficiaryResolutions",
    "RequestedGrant",
    "ResolutionGrant",
    "allowed_for",
    "beneficiary_resolution_grants",
    "erase_grant_reasons",
    "grant_of_request",
    "granted_to",
    "grants_of",
    "record_grant",
]

beneficiary_resolution_grants = Table(
    "beneficiary_resolution_grants",
    metadata,
    Column("beneficiary_token", String(40), nullable=False),
    Column("grant_number", Integer, nullable=False, autoincrement=False),
    Column("additional", Integer, nullable=False),
    Column("reason", String(256), nullable=False),
    Column("granted_by", String(300), nullable=False),
    Column("granted_at_us", BigInteger, nullable=False),
    Column("request_id", String(128), nullable=True),
    PrimaryKeyConstraint(
        "beneficiary_token", "grant_number", name="pk_beneficiary_resolution_grants"
    ),
    Index("beneficiary_resolution_grants_by_request_id", "request_id", unique=True),
)
"""One row per grant; ``grant_number`` counts a person's grants from 0 (their order);
``request_id`` is unique where present (null: a grant made before migration 0020)."""

ERASED_REASON = ""
"""A grant's reason once its person was erased (:func:`erase_grant_reasons`). Empty: no grant is
made with it (a reason is required and a blank one refused,
:func:`ledger.identity.resolution_grants.check_grant_request`), so an erased reason is never
mistaken for one an operator wrote. Migration 0021's triggers name it (as ``''``)."""


@dataclass(frozen=True)
class ResolutionGrant:
    """One grant: ``additional`` more people, why, by whom, when, and the request id of the
    call that made it (None: made before request ids were stored, migration 0020)."""

    additional: int
    reason: str
    """Why, as the operator wrote it; :data:`ERASED_REASON` once the person was erased."""
    granted_by: str
    granted_at: dt.datetime
    request_id: str | None


@dataclass(frozen=True)
class RequestedGrant:
    """The grant a request id made, and to whom (the person's token)."""

    person_token: str
    grant: ResolutionGrant


@dataclass(frozen=True)
class BeneficiaryResolutions:
    """How many people a person resolved, and how many they may: the base bound (as it was
    when read) plus every grant, oldest first."""

    person_token: str
    resolved: int
    base_allowed: int
    grants: tuple[ResolutionGrant, ...]
    erased: bool

    @property
    def granted(self) -> int:
        """The sum of the grants."""
        return sum(grant.additional for grant in self.grants)

    @property
    def allowed(self) -> int:
        """The bound ``GetPersonTokens`` applies to this person."""
        return self.base_allowed + self.granted


_GRANTS_OF = (
    select(beneficiary_resolution_grants)
    .where(beneficiary_resolution_grants.c.beneficiary_token == bindparam("beneficiary"))
    .order_by(beneficiary_resolution_grants.c.grant_number)
)
"""A person's grants, oldest first (at most ``limits.beneficiary_resolutions_granted_max``
rows: every grant adds at least one)."""


def grants_of(connection: Connection, beneficiary: str) -> tuple[ResolutionGrant, ...]:
    """The grants made to ``beneficiary``, oldest first."""
    return tuple(
        _grant(row) for row in connection.execute(_GRANTS_OF, {"beneficiary": beneficiary})
    )


def _grant(row: Row[Any]) -> ResolutionGrant:
    return ResolutionGrant(
        additional=row.additional,
        reason=row.reason,
        granted_by=row.granted_by,
        granted_at=from_micros(row.granted_at_us),
        request_id=row.request_id,
    )


_GRANT_OF_REQUEST = select(beneficiary_resolution_grants).where(
    beneficiary_resolution_grants.c.request_id == bindparam("request_id")
)
"""The grant a request id made (the unique index: one row at most)."""


def grant_of_request(connection: Connection, request_id: str) -> RequestedGrant | None:
    """The grant the call with ``request_id`` made, to whom; None: no call with it made one."""
    row = connection.execute(_GRANT_OF_REQUEST, {"request_id": request_id}).first()
    if row is None:
        return None
    return RequestedGrant(person_token=row.beneficiary_token, grant=_grant(row))


_GRANTED_TO = select(func.coalesce(func.sum(beneficiary_resolution_grants.c.additional), 0)).where(
    beneficiary_resolution_grants.c.beneficiary_token == bindparam("beneficiary")
)


def granted_to(connection: Connection, beneficiary: str) -> int:
    """How many people the grants add to ``beneficiary``'s bound (0: none)."""
    return int(connection.execute(_GRANTED_TO, {"beneficiary": beneficiary}).scalar_one())


def allowed_for(connection: Connection, beneficiary: str) -> int:
    """``beneficiary``'s bound: the base one and every grant."""
    return limits.beneficiary_people_resolved_max + granted_to(connection, beneficiary)


def record_grant(
    connection: Connection,
    beneficiary: str,
    grant: ResolutionGrant,
    grant_number: int,
) -> None:
    """Store ``grant`` as ``beneficiary``'s grant number ``grant_number`` (how many they had),
    in the caller's transaction, which holds the person's lock. A request id another grant
    holds (a call with it committed since the caller looked) raises IntegrityError."""
    connection.execute(
        insert(beneficiary_resolution_grants),
        {
            "beneficiary_token": beneficiary,
            "grant_number": grant_number,
            "additional": grant.additional,
            "reason": grant.reason,
            "granted_by": grant.granted_by,
            "granted_at_us": to_micros(grant.granted_at),
            "request_id": grant.request_id,
        },
    )


_ERASE_REASONS = (
    update(beneficiary_resolution_grants)
    .where(
        beneficiary_resolution_grants.c.beneficiary_token == bindparam("beneficiary"),
        beneficiary_resolution_grants.c.reason != ERASED_REASON,
    )
    .values(reason=ERASED_REASON)
)
"""Clear a person's reasons not cleared yet (the triggers refuse clearing one twice)."""


def erase_grant_reasons(connection: Connection, beneficiary: str) -> int:
    """Replace the reason of every grant made to ``beneficiary`` by :data:`ERASED_REASON`, in
    the caller's transaction (the erasure's, :func:`ledger.storage.vault_store.erase_token`);
    every other column stays. How many reasons were cleared."""
    result = connection.execute(_ERASE_REASONS, {"beneficiary": beneficiary})
    return int(result.rowcount)
