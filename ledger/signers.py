"""Who may sign what: every signer role, and the one table of which role signs which event type.

Every registered key belongs to a principal with one role (``KeyRegistered.role``). A role alone
decides which event types the principal's keys may sign; what else must hold (the insurer is
licensed and touches only its own policies, the authority collects in its own jurisdiction) is
written beside each row as its condition and enforced by the rules
(:mod:`ledger.coverage.projector`), which own the state such conditions need.

The table is data: admission (:mod:`ledger.service`) and the appender (through the projector,
at commit time, so a key revoked meanwhile is still refused) both read it, docs/coverage.md
renders it (a test checks the rendering matches), and a test runs every event type against
every role. An event type missing from the table is signable by nobody (default deny).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from ledger.errors import FieldViolation, PermissionDenied
from ledger.v1 import events_pb2

__all__ = [
    "GENESIS_LEAF_INDEX",
    "OPERATOR_ID",
    "SIGNING_RULES",
    "SignerRole",
    "SigningRule",
    "check_signer_role",
    "role_from_proto",
    "role_to_proto",
    "rule_for",
    "signing_table_markdown",
]

OPERATOR_ID = "operator"
"""The reserved principal of the operator role (and the only principal of that role)."""
GENESIS_LEAF_INDEX = 0
"""The genesis entry: a KeyRegistered naming the operator's first key, signed by the log key."""


class SignerRole(enum.StrEnum):
    """The role of a principal whose keys sign events."""

    OPERATOR = "operator"
    INSURER = "insurer"
    AUTHORITY = "authority"
    REGULATOR = "regulator"
    FUNDER = "funder"
    BENEFICIARY = "beneficiary"


def role_from_proto(value: events_pb2.SignerRole.ValueType) -> SignerRole | None:
    """The role a wire ``SignerRole`` names, or None for UNSPECIFIED and unknown values."""
    if value not in events_pb2.SignerRole.values() or value == events_pb2.SIGNER_ROLE_UNSPECIFIED:
        return None
    return SignerRole(events_pb2.SignerRole.Name(value).removeprefix("SIGNER_ROLE_").lower())


def role_to_proto(role: SignerRole) -> events_pb2.SignerRole.ValueType:
    """The wire value of ``role``."""
    return events_pb2.SignerRole.Value(f"SIGNER_ROLE_{role.value.upper()}")


@dataclass(frozen=True)
class SigningRule:
    """One row: which roles may sign one event type, and the condition the rules add."""

    body: str
    """The ``Event.body`` oneof field, e.g. ``policy_issued``."""
    event_type: str
    """The message name, e.g. ``PolicyIssued``."""
    roles: frozenset[SignerRole]
    condition: str


_POLICY = "a licensed, unsuspended insurer, about its own policies only"
_OPERATOR_EVENT = "the operator (principal `operator`)"
_AUTHORITY = (
    "a renewal authority; one registered with a jurisdiction only for sponsors whose "
    "identifier that country issued"
)

_DECIDERS = frozenset({SignerRole.REGULATOR, SignerRole.OPERATOR})
"""Who signs penalty decisions: the regulator, or the operator (issue 10: "the regulator
(operator or a `regulator` signer)")."""
_DECISION_FOLLOW_UP = (
    "the principal that assessed the decision, or the operator; within the decision's deadline"
)

SIGNING_RULES: tuple[SigningRule, ...] = (
    SigningRule("policy_issued", "PolicyIssued", frozenset({SignerRole.INSURER}), _POLICY),
    SigningRule("policy_cancelled", "PolicyCancelled", frozenset({SignerRole.INSURER}), _POLICY),
    SigningRule("premium_paid", "PremiumPaid", frozenset({SignerRole.INSURER}), _POLICY),
    SigningRule(
        "insurer_change_notified",
        "InsurerChangeNotified",
        frozenset({SignerRole.INSURER}),
        "the licensed, unsuspended insurer owning the policy (the one the holder leaves)",
    ),
    SigningRule("member_added", "MemberAdded", frozenset({SignerRole.INSURER}), _POLICY),
    SigningRule("member_removed", "MemberRemoved", frozenset({SignerRole.INSURER}), _POLICY),
    SigningRule("fee_collected", "FeeCollected", frozenset({SignerRole.AUTHORITY}), _AUTHORITY),
    SigningRule(
        "fee_refunded",
        "FeeRefunded",
        frozenset({SignerRole.AUTHORITY}),
        "the renewal authority that collected the fee",
    ),
    SigningRule(
        "insurer_licensed", "InsurerLicensed", frozenset({SignerRole.OPERATOR}), _OPERATOR_EVENT
    ),
    SigningRule(
        "insurer_suspended", "InsurerSuspended", frozenset({SignerRole.OPERATOR}), _OPERATOR_EVENT
    ),
    SigningRule(
        "key_registered",
        "KeyRegistered",
        frozenset({SignerRole.OPERATOR}),
        _OPERATOR_EVENT + "; leaf 0 (genesis) is signed by the log's key instead",
    ),
    SigningRule(
        "key_revoked",
        "KeyRevoked",
        frozenset({SignerRole.OPERATOR}),
        _OPERATOR_EVENT + "; not with the key it revokes",
    ),
    SigningRule(
        "person_erased",
        "PersonErased",
        frozenset({SignerRole.OPERATOR}),
        _OPERATOR_EVENT + "; a token the vault issued, of a person not erased yet",
    ),
    # Task A (issue 10): residence permits, by the residence authority.
    SigningRule(
        "permit_issued",
        "PermitIssued",
        frozenset({SignerRole.AUTHORITY}),
        "a residence authority; permit ids are per authority",
    ),
    SigningRule(
        "permit_renewed",
        "PermitRenewed",
        frozenset({SignerRole.AUTHORITY}),
        "the residence authority that issued the permit, not ended",
    ),
    SigningRule(
        "permit_ended",
        "PermitEnded",
        frozenset({SignerRole.AUTHORITY}),
        "the residence authority that issued the permit, not ended",
    ),
    # Penalty decisions (task B; docs/compliance.md "Penalty decisions").
    SigningRule(
        "penalty_assessed",
        "PenaltyAssessed",
        _DECIDERS,
        "a regulator (or the operator acting for it); a decision id once; a packaged penalty "
        "schedule, in its currency",
    ),
    SigningRule("objection_filed", "ObjectionFiled", _DECIDERS, _DECISION_FOLLOW_UP),
    SigningRule("objection_rejected", "ObjectionRejected", _DECIDERS, _DECISION_FOLLOW_UP),
    SigningRule("penalty_paid", "PenaltyPaid", _DECIDERS, _DECISION_FOLLOW_UP),
    SigningRule("penalty_withdrawn", "PenaltyWithdrawn", _DECIDERS, _DECISION_FOLLOW_UP),
    # Task E (cards): insurance cards (docs/cards.md).
    SigningRule(
        "card_issued",
        "CardIssued",
        frozenset({SignerRole.INSURER}),
        "a licensed, unsuspended insurer (fund) covering the person on the entry's ledger date "
        "or later; one current card per person and insurer",
    ),
    SigningRule(
        "card_replaced",
        "CardReplaced",
        frozenset({SignerRole.INSURER}),
        "the licensed, unsuspended insurer that issued the card, still covering the person; "
        "the card is current",
    ),
    SigningRule(
        "card_revoked",
        "CardRevoked",
        frozenset({SignerRole.INSURER}),
        "the insurer that issued the card; the card is current",
    ),
    # Task D (issue 11): funded cohorts (docs/funds.md).
    SigningRule(
        "cohort_enrolled",
        "CohortEnrolled",
        frozenset({SignerRole.FUNDER}),
        "a funder; a cohort id already enrolled only by the same funder, with the same terms",
    ),
    SigningRule(
        "contribution_paid",
        "ContributionPaid",
        frozenset({SignerRole.FUNDER}),
        "the funder of the cohort",
    ),
    SigningRule(
        "cohort_ended", "CohortEnded", frozenset({SignerRole.FUNDER}), "the funder of the cohort"
    ),
    # Task F (issue 11, item 4): the insured acts for themselves (docs/beneficiaries.md).
    SigningRule(
        "beneficiaries_declared",
        "BeneficiariesDeclared",
        frozenset({SignerRole.BENEFICIARY}),
        "the insured themselves (principal = their person token = `insured_token`), covered as "
        "SELF by the policy the declaration names",
    ),
    SigningRule(
        "declaration_decided",
        "DeclarationDecided",
        frozenset({SignerRole.INSURER}),
        "the licensed, unsuspended insurer owning the declaration's policy (the fund), once per "
        "declaration",
    ),
)

_RULES_BY_BODY = {rule.body: rule for rule in SIGNING_RULES}


def rule_for(body: str) -> SigningRule | None:
    """The row of the event body ``body`` (an ``Event.body`` field name), if it has one."""
    return _RULES_BY_BODY.get(body)


def check_signer_role(body: str, role: SignerRole, signer_id: str, key_id: str) -> None:
    """Raise PERMISSION_DENIED unless the table lets ``role`` sign events of ``body``.

    The message names the event type and the signer, as an operator reading a refusal needs.
    """
    rule = rule_for(body)
    if rule is not None and role in rule.roles:
        return
    event_type = rule.event_type if rule is not None else body
    allowed = ", ".join(sorted(rule.roles)) if rule is not None else "nobody"
    raise PermissionDenied(
        f"{event_type} may not be signed by {signer_id!r} (role {role}, key {key_id}): "
        f"only by {allowed}",
        reason="SIGNER_ROLE_NOT_ALLOWED",
        field_violations=[
            FieldViolation("event.insurer_id", f"role {role} may not sign {event_type}")
        ],
        metadata={
            "event_type": event_type,
            "signer": signer_id,
            "role": str(role),
            "key_id": key_id,
        },
    )


def signing_table_markdown() -> str:
    """The table as Markdown, for docs/coverage.md (a test checks the docs carry this text)."""
    lines = ["| event type | signed by | condition |", "|---|---|---|"]
    for rule in SIGNING_RULES:
        roles = ", ".join(sorted(rule.roles))
        lines.append(f"| `{rule.event_type}` | {roles} | {rule.condition} |")
    unused = sorted(role for role in SignerRole if not any(role in r.roles for r in SIGNING_RULES))
    lines.append("")
    lines.append(f"Roles that sign no event type yet: {', '.join(unused)}.")
    return "\n".join(lines) + "\n"
