"""The operator's grants of more people to resolve, per person (migration 0019;
docs/privacy.md, "A person asking for tokens").

A person (role beneficiary) may obtain the tokens of ``limits.beneficiary_people_resolved_max``
people other than themselves; each row of ``beneficiary_resolution_grants`` adds ``additional``
to that one person's bound: who granted it (the caller's SPIFFE ID), when, and why. The table
is append-only (database triggers, as the access records'): a grant is never changed or
deleted, erasure included, so the bound never goes down and every raise of it stays accounted
for. Tokens only, like ``beneficiary_resolutions``; the reason is the operator's text.

This module holds the rows; :class:`ledger.storage.vault_store.VaultStore` reads and writes
them under the person's lock, in the transaction that reads their count.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlalchemy import (
    BigInteger,
    Column,
    Connection,
    Integer,
    PrimaryKeyConstraint,
    String,
    Table,
    bindparam,
    func,
    insert,
    select,
)

from ledger import limits
from ledger.clock import from_micros, to_micros
from ledger.storage.tables import metadata

__all__ = [
    "BeneficiaryResolutions",
    "ResolutionGrant",
    "allowed_for",
    "beneficiary_resolution_grants",
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
    PrimaryKeyConstraint(
        "beneficiary_token", "grant_number", name="pk_beneficiary_resolution_grants"
    ),
)
"""One row per grant; ``grant_number`` counts a person's grants from 0 (their order)."""


@dataclass(frozen=True)
class ResolutionGrant:
    """One grant: ``additional`` more people, why, by whom, when."""

    additional: int
    reason: str
    granted_by: str
    granted_at: dt.datetime


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
        ResolutionGrant(
            additional=row.additional,
            reason=row.reason,
            granted_by=row.granted_by,
            granted_at=from_micros(row.granted_at_us),
        )
        for row in connection.execute(_GRANTS_OF, {"beneficiary": beneficiary})
    )


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
    in the caller's transaction, which holds the person's lock."""
    connection.execute(
        insert(beneficiary_resolution_grants),
        {
            "beneficiary_token": beneficiary,
            "grant_number": grant_number,
            "additional": grant.additional,
            "reason": grant.reason,
            "granted_by": grant.granted_by,
            "granted_at_us": to_micros(grant.granted_at),
        },
    )
