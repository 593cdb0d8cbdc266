"""Beneficiaries declared by the insured, and the fund's decisions (issue 11, item 4).

The projector (:mod:`ledger.coverage.projector`) dispatches ``BeneficiariesDeclared`` and
``DeclarationDecided`` entries here; each function checks the rules against the state the
projections hold, raising a LedgerError that names the rule before anything is written, then
writes the declaration rows (and, on acceptance, the members' coverage, as ``MemberAdded``
would). docs/beneficiaries.md states each rule with its source.

Rules of a declaration (signed by the insured, role beneficiary, principal = person token):
  (1) the declared ``insured_token`` is the signer: nobody declares for someone else;
  (2) the policy exists at the insurer named, is not cancelled, and covers the insured as SELF
      today (their current coverage on it);
  (3) the effective date lies within the policy's period;
  (4) the declaration id is new for this insured;
  (5) nobody declared is the insured, or already a current member of the policy; a child
      whose birth date the vault holds is within law 65-00 article 5's age limits
      (:func:`check_child_age`).
Rules of a decision (signed by an insurer):
  (1) the declaration exists;
  (2) the signer owns the declaration's policy (another insurer cannot decide it);
  (3) the insurer is licensed and not suspended;
  (4) the declaration is still pending (decided once);
  (5) on acceptance, the policy is still active and no declared person is already a member of
      it or covered by this insurer meanwhile: each becomes a member from the effective date.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import TYPE_CHECKING, Any

from sqlalchemy import insert, select, update

from ledger import limits
from ledger.coverage import projector as _projector
from ledger.errors import (
    AlreadyExists,
    FailedPrecondition,
    FieldViolation,
    NotFound,
    PermissionDenied,
)
from ledger.storage.tables import beneficiary_declarations, declared_beneficiaries
from ledger.storage.vault_store import birth_dates_of
from ledger.v1 import events_pb2

if TYPE_CHECKING:
    from ledger.coverage.projector import Projector

__all__ = [
    "ACCEPTED",
    "PENDING",
    "REJECTED",
    "apply_beneficiaries_declared",
    "apply_declaration_decided",
    "check_child_age",
    "documents_json",
]

PENDING = "PENDING"
ACCEPTED = "ACCEPTED"
REJECTED = "REJECTED"
_SELF = "self"
"""``coverages.relationship`` of the insured themselves."""


def documents_json(person: events_pb2.DeclaredBeneficiary) -> str:
    """The stored form of a declared person's document references: ``[[kind, reference]]``."""
    return json.dumps(
        [
            [events_pb2.DocumentKind.Name(doc.kind).removeprefix("DOCUMENT_KIND_"), doc.reference]
            for doc in person.documents
        ],
        separators=(",", ":"),
    )


def _declaration(projector: Projector, insured: str, declaration_id: str) -> Any:
    return projector.connection.execute(
        select(beneficiary_declarations).where(
            beneficiary_declarations.c.declared_by == insured,
            beneficiary_declarations.c.declaration_id == declaration_id,
        )
    ).first()


def apply_beneficiaries_declared(
    projector: Projector, event: events_pb2.Event, leaf_index: int
) -> None:
    """Check and record a ``BeneficiariesDeclared`` entry (rules (1)-(5) of the module doc)."""
    body = event.beneficiaries_declared
    field = "event.beneficiaries_declared"
    insured = body.insured_token
    if insured != event.insurer_id:  # (1)
        raise PermissionDenied(
            f"{event.insurer_id!r} may declare beneficiaries for themselves only, not for "
            f"{insured!r}",
            reason="DECLARATION_FOR_ANOTHER",
            field_violations=[FieldViolation(f"{field}.insured_token", "must be the signer")],
            metadata={"signer": event.insurer_id, "insured_token": insured},
        )
    insurer_id, policy_id = body.policy.insurer_id, body.policy.policy_id
    policy = projector._active_policy(insurer_id, policy_id, f"{field}.policy")  # (2)
    own = projector._current_coverage(insurer_id, policy_id, insured)
    if own is None or own.relationship != _SELF:
        raise FailedPrecondition(
            f"{insured} is not insured as SELF on policy {insurer_id}/{policy_id}",
            reason="NOT_INSURED_ON_POLICY",
            field_violations=[FieldViolation(f"{field}.policy", "not the insured's policy")],
            metadata={"insurer_id": insurer_id, "policy_id": policy_id},
        )
    effective = _projector.to_date(body.effective_date)
    _projector._check_within(  # (3)
        effective,
        policy.start_date,
        policy.end_date,
        f"{field}.effective_date",
        "a declared beneficiary's first day",
        policy_id,
    )
    if _declaration(projector, insured, body.declaration_id) is not None:  # (4)
        raise AlreadyExists(
            f"declaration {body.declaration_id!r} of {insured} was already recorded",
            reason="DECLARATION_EXISTS",
            field_violations=[FieldViolation(f"{field}.declaration_id", "already used")],
            metadata={"declaration_id": body.declaration_id},
        )
    _check_declarable(projector, body, insured, field)  # (5)
    projector.connection.execute(
        insert(beneficiary_declarations).values(
            declared_by=insured,
            declaration_id=body.declaration_id,
            insurer_id=insurer_id,
            policy_id=policy_id,
            effective_date=effective,
            status=PENDING,
            reason="",
            declared_leaf_index=leaf_index,
            decided_leaf_index=None,
        )
    )
    projector.connection.execute(
        insert(declared_beneficiaries),
        [
            {
                "declared_by": insured,
                "declaration_id": body.declaration_id,
                "position": position,
                "person_token": person.person_token,
                "relationship": _projector._relationship(person.relationship),
                "documents": documents_json(person),
            }
            for position, person in enumerate(body.beneficiaries)
        ],
    )
    projector._index_policy(
        leaf_index,
        insurer_id,
        policy_id,
        [f"person:{insured}", *(f"person:{p.person_token}" for p in body.beneficiaries)],
    )


def _check_declarable(
    projector: Projector, body: events_pb2.BeneficiariesDeclared, insured: str, field: str
) -> None:
    insurer_id, policy_id = body.policy.insurer_id, body.policy.policy_id
    for position, person in enumerate(body.beneficiaries):
        person_field = f"{field}.beneficiaries[{position}].person_token"
        if person.person_token == insured:
            raise FailedPrecondition(
                "the insured cannot declare themselves as their own beneficiary",
                reason="SELF_DECLARED",
                field_violations=[FieldViolation(person_field, "is the insured")],
            )
        if projector._current_coverage(insurer_id, policy_id, person.person_token) is not None:
            raise AlreadyExists(
                f"{person.person_token} is already a member of policy {policy_id!r}",
                reason="MEMBER_EXISTS",
                field_violations=[FieldViolation(person_field, "already a member")],
                metadata={"person": person.person_token, "policy_id": policy_id},
            )
    if projector._replay:  # the vault may hold a birth date given since; the entry is a fact
        return
    births = birth_dates_of(projector.connection, [p.person_token for p in body.beneficiaries])
    effective = _projector.to_date(body.effective_date)
    for position, person in enumerate(body.beneficiaries):
        birth = births.get(person.person_token)
        if person.relationship == events_pb2.RELATIONSHIP_CHILD and birth is not None:
            check_child_age(
                birth,
                effective,
                {document.kind for document in person.documents},
                f"{field}.beneficiaries[{position}]",
            )


def check_child_age(
    birth: dt.date, effective: dt.date, document_kinds: set[int], field: str
) -> None:
    """Law 65-00, article 5: a child in the insured's charge is at most 21 years old, at most 26
    when a school certificate shows them in higher education, of any age when disabled (a
    disability card). Age in completed years on the effective date. Raise FAILED_PRECONDITION
    ``CHILD_OVER_AGE`` otherwise."""
    if events_pb2.DOCUMENT_KIND_DISABILITY_CARD in document_kinds:
        return
    age_max = (
        limits.declared_child_in_education_age_max_years
        if events_pb2.DOCUMENT_KIND_SCHOOL_CERTIFICATE in document_kinds
        else limits.declared_child_age_max_years
    )
    birthday_passed = (effective.month, effective.day) >= (birth.month, birth.day)
    age = effective.year - birth.year - (0 if birthday_passed else 1)
    if age > age_max:
        raise FailedPrecondition(
            f"a child of {age} on {effective} is over the {age_max} years law 65-00 article 5 "
            "allows (a school certificate extends it to "
            f"{limits.declared_child_in_education_age_max_years}; a disability card lifts it)",
            reason="CHILD_OVER_AGE",
            field_violations=[FieldViolation(f"{field}.person_token", f"over {age_max} years")],
            metadata={"age": str(age), "age_max": str(age_max)},
        )


def apply_declaration_decided(
    projector: Projector, event: events_pb2.Event, leaf_index: int
) -> None:
    """Check and record a ``DeclarationDecided`` entry (rules (1)-(5) of the module doc)."""
    body = event.declaration_decided
    field = "event.declaration_decided"
    declaration = _declaration(projector, body.insured_token, body.declaration_id)
    if declaration is None:  # (1)
        raise NotFound(
            f"{body.insured_token} made no declaration {body.declaration_id!r}",
            reason="DECLARATION_NOT_FOUND",
            field_violations=[FieldViolation(f"{field}.declaration_id", "no such declaration")],
            metadata={"declaration_id": body.declaration_id},
        )
    if declaration.insurer_id != event.insurer_id:  # (2)
        raise PermissionDenied(
            f"declaration {body.declaration_id!r} names a policy of {declaration.insurer_id!r}; "
            f"{event.insurer_id!r} cannot decide it",
            reason="DECLARATION_OF_ANOTHER_INSURER",
            field_violations=[FieldViolation("event.insurer_id", "not the policy's insurer")],
            metadata={"declaration_id": body.declaration_id},
        )
    projector._require_licensed(event.insurer_id)  # (3)
    if declaration.status != PENDING:  # (4)
        raise FailedPrecondition(
            f"declaration {body.declaration_id!r} was already {declaration.status.lower()} "
            f"(leaf {declaration.decided_leaf_index})",
            reason="DECLARATION_DECIDED",
            field_violations=[FieldViolation(f"{field}.declaration_id", "already decided")],
            metadata={
                "declaration_id": body.declaration_id,
                "status": declaration.status,
                "decided_leaf_index": str(declaration.decided_leaf_index),
            },
        )
    accepted = body.decision == events_pb2.DECLARATION_DECISION_ACCEPTED
    if accepted:
        _add_members(projector, declaration, leaf_index, field)  # (5)
    projector.connection.execute(
        update(beneficiary_declarations)
        .where(
            beneficiary_declarations.c.declared_by == declaration.declared_by,
            beneficiary_declarations.c.declaration_id == declaration.declaration_id,
        )
        .values(
            status=ACCEPTED if accepted else REJECTED,
            reason=body.reason,
            decided_leaf_index=leaf_index,
        )
    )
    people = projector.connection.execute(
        select(declared_beneficiaries.c.person_token).where(
            declared_beneficiaries.c.declared_by == declaration.declared_by,
            declared_beneficiaries.c.declaration_id == declaration.declaration_id,
        )
    ).scalars()
    projector._index_policy(
        leaf_index,
        declaration.insurer_id,
        declaration.policy_id,
        [f"person:{declaration.declared_by}", *(f"person:{token}" for token in people)],
    )


def _add_members(projector: Projector, declaration: Any, leaf_index: int, field: str) -> None:
    insurer_id, policy_id = declaration.insurer_id, declaration.policy_id
    policy = projector._active_policy(insurer_id, policy_id, f"{field}.declaration_id")
    people = projector.connection.execute(
        select(declared_beneficiaries)
        .where(
            declared_beneficiaries.c.declared_by == declaration.declared_by,
            declared_beneficiaries.c.declaration_id == declaration.declaration_id,
        )
        .order_by(declared_beneficiaries.c.position)
    ).all()
    effective = declaration.effective_date
    for person in people:
        if projector._current_coverage(insurer_id, policy_id, person.person_token) is not None:
            raise AlreadyExists(
                f"{person.person_token} became a member of policy {policy_id!r} meanwhile",
                reason="MEMBER_EXISTS",
                field_violations=[FieldViolation(f"{field}.declaration_id", "already a member")],
                metadata={"person": person.person_token, "policy_id": policy_id},
            )
    projector._refuse_double_coverage(
        insurer_id,
        [(person.person_token, f"{field}.declaration_id") for person in people],
        effective,
        policy.end_date,
    )
    for person in people:
        projector._new_coverage(
            insurer_id=insurer_id,
            policy_id=policy_id,
            person_key=person.person_token,
            start_date=effective,
            end_date=policy.end_date,
            sponsor_key=policy.sponsor_key,
            relationship=person.relationship,
            end_reason=_projector.PERIOD_END,
            leaf_indexes=str(leaf_index),
        )
