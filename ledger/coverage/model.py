"""What the coverage projections answer: plain values, independent of storage and of gRPC.

The gRPC servicer converts these to ``ledger.v1`` messages, the FHIR exporter to FHIR R4 JSON.
Dates are civil dates (coverage is by calendar day); ``end`` is inclusive.
"""

from __future__ import annotations

import datetime as dt
import enum
from dataclasses import dataclass

from ledger.i18n.messages import Message

__all__ = [
    "BlockReason",
    "CoverageRecord",
    "HouseholdVerdict",
    "MemberVerdict",
    "PersonRef",
    "Relationship",
]


class Relationship(enum.Enum):
    """How a member relates to the sponsor (ledger.v1.Relationship without the prefix)."""

    SELF = "self"
    SPOUSE = "spouse"
    CHILD = "child"
    PARENT = "parent"
    DOMESTIC_WORKER = "domestic_worker"
    OTHER = "other"


@dataclass(frozen=True, order=True)
class PersonRef:
    """A person's identifier: (type, value) is unique within the issuing country."""

    id_type: str
    """The ledger.v1.PersonIdType name without its prefix: RESIDENCE_ID, NATIONAL_ID, CIVIL_ID,
    PASSPORT or BORDER_NUMBER."""
    value: str
    country: str
    """ISO 3166-1 alpha-2 code of the issuing country."""

    @property
    def key(self) -> str:
        """The string the projections index a person by, e.g. ``SA:RESIDENCE_ID:2123456789``."""
        return f"{self.country}:{self.id_type}:{self.value}"


@dataclass(frozen=True)
class CoverageRecord:
    """One person's coverage under one policy: a continuous run of days."""

    person: PersonRef
    sponsor: PersonRef
    relationship: Relationship
    insurer_id: str
    policy_id: str
    plan: str
    start: dt.date
    end: dt.date
    """Last covered day (inclusive), after any cancellation or removal."""
    cancelled: bool
    """The policy was cancelled, or the member removed, before its stated end."""
    end_reason: str
    """Why coverage ends on ``end``: ``PERIOD_END`` or a ledger.v1.CancellationReason name
    without its prefix (``FINAL_EXIT``, ``DEATH``...), or ``MEMBER_REMOVED``."""
    leaf_indexes: tuple[int, ...]
    """The log entries this record was derived from (issuance, member changes, cancellation)."""
    person_token: str = ""
    """The person's token in the identity vault: what the entries name (docs/privacy.md)."""
    not_counting: str = ""
    """Why the record does not count as coverage on the day asked about (``NON_PAYMENT``,
    ``INSURER_SUSPENDED``); empty when it counts or when no day was asked about."""
    funder_id: str = ""
    """A funded cohort's coverage (docs/funds.md): the funder that pays its contributions;
    ``insurer_id`` is then the fund, ``policy_id`` the cohort. Empty for a policy."""


class BlockReason(enum.Enum):
    """Why a member is not covered through the requested date."""

    COVERED = "covered"
    NO_POLICY = "no_policy"
    """No policy covers the member on the first day asked about."""
    ENDS_BEFORE = "ends_before"
    """Coverage runs out before the requested date (the policy's period ends)."""
    CANCELLED = "cancelled"
    """Coverage was cancelled (or the member removed) before the requested date."""
    GAP = "gap"
    """Coverage resumes later, but some day in between is not covered."""
    INSURER_SUSPENDED = "insurer_suspended"
    """The only covering policies are with an insurer whose licence is suspended."""
    TRANSFER_GAP = "transfer_gap"
    """Not covered between a policy and its replacement (``PolicyIssued.replaces``), which
    started later than the day after the old one's last covered day (docs/compliance.md)."""
    NON_PAYMENT = "non_payment"
    """A covering policy has an instalment unpaid past the grace period: it does not count from
    the instalment's due date until paid (docs/compliance.md "Premiums")."""


@dataclass(frozen=True)
class MemberVerdict:
    """One household member: covered through the date or not, and why."""

    person: PersonRef
    relationship: Relationship
    covered: bool
    reason: BlockReason
    detail: str
    """A sentence for the portal's operator, e.g. "cancelled on 2026-03-01 (FINAL_EXIT)"."""
    covered_until: dt.date | None
    """The last day of continuous coverage from ``as_of``, or None when not covered on it."""
    coverages: tuple[CoverageRecord, ...]
    """The coverage records the verdict relied on."""
    message: Message | None = None
    """``detail`` as a message id and its arguments, to render in the reader's language."""


@dataclass(frozen=True)
class HouseholdVerdict:
    """The answer to "is every member of this household insured through this date?"."""

    sponsor: PersonRef
    as_of: dt.date
    through: dt.date
    renewable: bool
    """True only when every member is covered on every day from ``as_of`` to ``through``."""
    members: tuple[MemberVerdict, ...]
    tree_size: int
    """The log size the answer was computed at."""
    checkpoint: bytes
    """The signed checkpoint (C2SP note) of that size."""
    leaf_indexes: tuple[int, ...]
    """Every log entry the answer relied on, ascending."""
    person_tokens: tuple[tuple[PersonRef, str | None], ...] = ()
    """Each person checked, with their token in the identity vault in the answer's snapshot
    (None: the vault does not know them). Not part of the wire answer: the access record names
    the people by these tokens without asking the vault again (ledger/rpc/access.py)."""
