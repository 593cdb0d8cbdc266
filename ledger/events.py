"""Policy events: decoding a signed payload and checking its structure.

An event travels as the payload of a DSSE envelope, serialized as a ``ledger.v1.Event`` protobuf
message (the signed data format, not the gRPC API: that is why this pure module may import the
generated message classes). This module owns:

* :func:`decode_event`: strict decoding (no unknown fields anywhere, size checked first);
* :func:`validate_event`: every field checked against a named limit in :mod:`ledger.limits`,
  all violations reported at once as ``FieldViolation``s;
* :func:`first_difference`: the first field where two events differ, to name it in a conflict.

Business rules that need the ledger's state (licences, policy ownership, cancellation once)
live elsewhere; this module only needs the event itself and the clock.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from google.protobuf.message import DecodeError, Message
from google.protobuf.unknown_fields import UnknownFieldSet

from ledger import limits
from ledger.cards.validation import CARD_BODY_CHECKS, card_tokens_of
from ledger.errors import FieldViolation, InvalidArgument, ResourceExhausted, refuse_violations
from ledger.identifiers import validate_person_id
from ledger.identity.tokens import is_person_token
from ledger.signers import OPERATOR_ID, SignerRole, role_from_proto
from ledger.v1 import events_pb2, types_pb2

__all__ = [
    "CURRENCY_MINOR_UNITS",
    "EVENT_PAYLOAD_TYPE",
    "EventSummary",
    "check_date",
    "check_identifier",
    "check_person",
    "check_person_token",
    "civil_date",
    "decode_event",
    "first_difference",
    "person_tokens_of",
    "summarize_event",
    "validate_event",
]

EVENT_PAYLOAD_TYPE = "application/vnd.policy-ledger.event.v2+protobuf"
"""The DSSE payloadType of a serialized ``ledger.v1.Event``. v2: people are named by person
tokens only (docs/privacy.md); v1 events, which carried identifiers, are refused."""

CURRENCY_MINOR_UNITS: dict[str, int] = {
    # ISO 4217 minor-unit exponents of the currencies the ledger accepts: the Gulf and
    # North-African states it serves, and the usual settlement currencies.
    "AED": 2,
    "BHD": 3,
    "DZD": 2,
    "EGP": 2,
    "EUR": 2,
    "GBP": 2,
    "IQD": 3,
    "JOD": 3,
    "KWD": 3,
    "LYD": 3,
    "MAD": 2,
    "OMR": 3,
    "QAR": 2,
    "SAR": 2,
    "SDG": 2,
    "TND": 3,
    "USD": 2,
}

_IDENTIFIER = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:/-]*")
_PERSON_VALUE = re.compile(r"[A-Z0-9]+")
_COUNTRY = re.compile(r"[A-Z]{2}")
_KEY_ID = re.compile(r"ed25519:[0-9a-f]{16}")
_EARLIEST_EVENT = dt.datetime(2000, 1, 1, tzinfo=dt.UTC)


@dataclass(frozen=True)
class EventSummary:
    """The parts of an event the sequencer and the store index by."""

    event_id: str
    insurer_id: str
    kind: str
    occurred_at: dt.datetime


def decode_event(payload: bytes) -> events_pb2.Event:
    """Decode a DSSE payload into an Event, refusing oversize input and unknown fields.

    Unknown fields are refused because the ledger would store and attest to data it never
    checked. Raises ResourceExhausted (too large) or InvalidArgument (not an Event).
    """
    if len(payload) > limits.envelope_payload_bytes_max:
        raise ResourceExhausted(
            f"event payload is {len(payload)} bytes, over the limit of "
            f"{limits.envelope_payload_bytes_max}",
            reason="PAYLOAD_TOO_LARGE",
            field_violations=[FieldViolation("envelope.payload", "too large")],
        )
    event = events_pb2.Event()
    try:
        event.ParseFromString(payload)
    except DecodeError as error:
        raise InvalidArgument(
            f"event payload is not a ledger.v1.Event: {error}",
            reason="PAYLOAD_UNPARSABLE",
            field_violations=[FieldViolation("envelope.payload", "not a ledger.v1.Event")],
        ) from error
    if _holds_only_known_fields(event, payload):
        return event
    event = events_pb2.Event.FromString(payload)  # as parsed, unknown fields included
    unknown = list(_unknown_field_paths(event, "event"))
    if unknown:
        raise InvalidArgument(
            f"event payload has unknown fields: {', '.join(unknown)}",
            reason="PAYLOAD_UNKNOWN_FIELDS",
            field_violations=[FieldViolation(path, "unknown field") for path in unknown],
        )
    return event


def _holds_only_known_fields(event: events_pb2.Event, payload: bytes) -> bool:
    """Whether ``event``, parsed from ``payload``, certainly holds no unknown field (the fast
    path; the walk below names the unknown fields when this is False).

    Drops ``event``'s unknown fields, then compares its encoding with ``payload``: equal bytes
    prove there were none (parsing the encoding of a message without unknown fields yields
    none, and ``payload`` is that encoding). What a protobuf encoder writes (every client)
    re-encodes to the same bytes, as events have no maps; an unusual but valid encoding (fields
    out of order, long varints) is not equal and takes the walk, which decides. When this
    returns False, ``event`` may have lost unknown fields: parse ``payload`` again.
    """
    event.DiscardUnknownFields()
    return event.SerializeToString() == payload


def _unknown_field_paths(message: Message, path: str) -> Iterator[str]:
    unknown_fields = UnknownFieldSet(message)
    for position in range(len(unknown_fields)):
        yield f"{path}.#{unknown_fields[position].field_number}"
    for descriptor, value in message.ListFields():
        if descriptor.message_type is None:
            continue
        children = value if _is_repeated(descriptor) else [value]
        for position, child in enumerate(children):
            suffix = f"[{position}]" if _is_repeated(descriptor) else ""
            yield from _unknown_field_paths(child, f"{path}.{descriptor.name}{suffix}")


def _is_repeated(descriptor: object) -> bool:
    return bool(getattr(descriptor, "is_repeated", False))


def validate_event(event: events_pb2.Event, now: dt.datetime) -> EventSummary:
    """Check every field of ``event``; raise InvalidArgument listing all violations at once.

    ``now`` is the server's clock (UTC), used to refuse events dated too far in the future.
    """
    violations: list[FieldViolation] = []
    check_identifier(violations, "event.event_id", event.event_id, limits.event_id_chars_max)
    check_identifier(violations, "event.insurer_id", event.insurer_id, limits.insurer_id_chars_max)
    occurred_at = _check_timestamp(violations, event, now)
    kind = event.WhichOneof("body")
    check_body = _BODY_CHECKS.get(kind or "")
    if check_body is None:
        violations.append(FieldViolation("event.body", "exactly one event body is required"))
    else:
        check_body(violations, f"event.{kind}", getattr(event, kind or ""))
    refuse_violations(violations, "event", "EVENT_INVALID")
    return EventSummary(
        event_id=event.event_id,
        insurer_id=event.insurer_id,
        kind=kind or "",
        occurred_at=occurred_at,
    )


def summarize_event(event: events_pb2.Event) -> EventSummary:
    """The index fields of an already validated event."""
    return EventSummary(
        event_id=event.event_id,
        insurer_id=event.insurer_id,
        kind=event.WhichOneof("body") or "",
        occurred_at=event.occurred_at.ToDatetime(tzinfo=dt.UTC),
    )


def _check_timestamp(
    violations: list[FieldViolation], event: events_pb2.Event, now: dt.datetime
) -> dt.datetime:
    field = "event.occurred_at"
    if not event.HasField("occurred_at"):
        violations.append(FieldViolation(field, "required"))
        return _EARLIEST_EVENT
    if not 0 <= event.occurred_at.nanos < 1_000_000_000:
        violations.append(FieldViolation(field, "nanos must be in 0..999999999"))
        return _EARLIEST_EVENT
    try:
        occurred_at = event.occurred_at.ToDatetime(tzinfo=dt.UTC)
    except (OverflowError, ValueError):
        violations.append(FieldViolation(field, "out of range"))
        return _EARLIEST_EVENT
    latest = now + dt.timedelta(seconds=limits.event_time_skew_seconds_max)
    if occurred_at < _EARLIEST_EVENT:
        violations.append(FieldViolation(field, "before 2000-01-01"))
    elif occurred_at > latest:
        violations.append(
            FieldViolation(field, f"more than {limits.event_time_skew_seconds_max} s in the future")
        )
    return occurred_at


def check_identifier(
    violations: list[FieldViolation],
    field: str,
    value: str,
    chars_max: int = limits.insurer_id_chars_max,
) -> None:
    """Append a violation unless ``value`` is a non-empty identifier of at most ``chars_max``."""
    if not value:
        violations.append(FieldViolation(field, "required"))
    elif len(value) > chars_max:
        violations.append(FieldViolation(field, f"longer than {chars_max} characters"))
    elif not _IDENTIFIER.fullmatch(value):
        violations.append(
            FieldViolation(
                field, "must start with a letter or digit and use only A-Z a-z 0-9 . _ : / -"
            )
        )


def _check_text(
    violations: list[FieldViolation], field: str, value: str, chars_max: int, *, required: bool
) -> None:
    if not value:
        if required:
            violations.append(FieldViolation(field, "required"))
        return
    if len(value) > chars_max:
        violations.append(FieldViolation(field, f"longer than {chars_max} characters"))
    elif not value.isprintable():
        violations.append(FieldViolation(field, "must not contain control characters"))


def _check_person(violations: list[FieldViolation], field: str, person: types_pb2.PersonId) -> None:
    before = len(violations)
    if person.type == types_pb2.PERSON_ID_TYPE_UNSPECIFIED:
        violations.append(FieldViolation(f"{field}.type", "required"))
    elif person.type not in types_pb2.PersonIdType.values():
        violations.append(FieldViolation(f"{field}.type", f"unknown type {person.type}"))
    if not person.value:
        violations.append(FieldViolation(f"{field}.value", "required"))
    elif len(person.value) > limits.person_id_value_chars_max:
        violations.append(
            FieldViolation(
                f"{field}.value", f"longer than {limits.person_id_value_chars_max} characters"
            )
        )
    elif not _PERSON_VALUE.fullmatch(person.value):
        violations.append(FieldViolation(f"{field}.value", "only digits and A-Z"))
    if not _COUNTRY.fullmatch(person.country_code):
        violations.append(
            FieldViolation(f"{field}.country_code", "ISO 3166-1 alpha-2 code, e.g. SA")
        )
    if len(violations) == before:
        # The structure is sound: now the rules of this type of identifier in its country.
        violations.extend(validate_person_id(person, field))


def check_person_token(violations: list[FieldViolation], field: str, token: str) -> None:
    """Append a violation unless ``token`` has a person token's form (the vault, not this pure
    check, says whether it was issued and is not erased)."""
    if not token:
        violations.append(FieldViolation(field, "required"))
    elif not is_person_token(token):
        violations.append(
            FieldViolation(field, 'not a person token ("pt_" and 26 base32 characters)')
        )


def person_tokens_of(event: events_pb2.Event) -> list[tuple[str, str]]:
    """(token, field) of every person an event names, in field order (PersonErased's token is
    not listed: it names a person being erased, not one the event is about)."""
    kind = event.WhichOneof("body")
    found: list[tuple[str, str]] = []
    if kind == "policy_issued":
        body = event.policy_issued
        found.append((body.sponsor_token, "event.policy_issued.sponsor_token"))
        if body.holder.WhichOneof("kind") == "person_token":
            found.append((body.holder.person_token, "event.policy_issued.holder.person_token"))
        found.extend(
            (member.person_token, f"event.policy_issued.members[{position}].person_token")
            for position, member in enumerate(body.members)
        )
    elif kind == "member_added":
        found.append(
            (event.member_added.member.person_token, "event.member_added.member.person_token")
        )
    elif kind == "member_removed":
        found.append((event.member_removed.person_token, "event.member_removed.person_token"))
    elif kind == "premium_paid" and event.premium_paid.payer.party.WhichOneof("kind") == (
        "person_token"
    ):
        found.append(
            (
                event.premium_paid.payer.party.person_token,
                "event.premium_paid.payer.party.person_token",
            )
        )
    elif kind == "cohort_enrolled":
        found.extend(
            (entry.person_token, f"event.cohort_enrolled.beneficiaries[{position}].person_token")
            for position, entry in enumerate(event.cohort_enrolled.beneficiaries)
        )
    elif kind == "fee_collected":
        body_fee = event.fee_collected
        found.append((body_fee.sponsor_token, "event.fee_collected.sponsor_token"))
        found.extend(
            (line.person_token, f"event.fee_collected.lines[{position}].person_token")
            for position, line in enumerate(body_fee.lines)
        )
    elif kind == "penalty_assessed":
        found.extend(
            (line.person_token, f"event.penalty_assessed.lines[{position}].person_token")
            for position, line in enumerate(event.penalty_assessed.lines)
        )
    elif kind == "beneficiaries_declared":
        found.append(
            (
                event.beneficiaries_declared.insured_token,
                "event.beneficiaries_declared.insured_token",
            )
        )
        found.extend(
            (
                person.person_token,
                f"event.beneficiaries_declared.beneficiaries[{position}].person_token",
            )
            for position, person in enumerate(event.beneficiaries_declared.beneficiaries)
        )
    elif kind == "declaration_decided":
        found.append(
            (event.declaration_decided.insured_token, "event.declaration_decided.insured_token")
        )
    found.extend(_permit_tokens(event))
    found.extend(card_tokens_of(event))
    return found


def _check_person_erased(
    violations: list[FieldViolation], field: str, body: events_pb2.PersonErased
) -> None:
    check_person_token(violations, f"{field}.person_token", body.person_token)
    _check_text(
        violations, f"{field}.basis", body.basis, limits.erasure_basis_chars_max, required=True
    )


def _check_party(violations: list[FieldViolation], field: str, party: events_pb2.PartyRef) -> None:
    kind = party.WhichOneof("kind")
    if kind == "person_token":
        check_person_token(violations, f"{field}.person_token", party.person_token)
    elif kind == "organization":
        organization = party.organization
        check_identifier(
            violations,
            f"{field}.organization.registration_number",
            organization.registration_number,
            limits.reference_chars_max,
        )
        if not _COUNTRY.fullmatch(organization.country_code):
            violations.append(
                FieldViolation(f"{field}.organization.country_code", "ISO 3166-1 alpha-2 code")
            )
        _check_text(
            violations,
            f"{field}.organization.name",
            organization.name,
            limits.name_chars_max,
            required=False,
        )
    else:
        violations.append(FieldViolation(field, "a person or an organization is required"))


def _check_date(
    violations: list[FieldViolation], field: str, date: types_pb2.CivilDate, *, present: bool
) -> dt.date | None:
    if not present:
        violations.append(FieldViolation(field, "required"))
        return None
    try:
        return dt.date(date.year, date.month, date.day)
    except ValueError:
        violations.append(
            FieldViolation(field, f"not a calendar date: {date.year}-{date.month}-{date.day}")
        )
        return None


def _check_money(
    violations: list[FieldViolation], field: str, money: types_pb2.Money, *, zero: bool = False
) -> None:
    if money.currency_code not in CURRENCY_MINOR_UNITS:
        violations.append(
            FieldViolation(
                f"{field}.currency_code",
                f"not a supported ISO 4217 code: {money.currency_code!r}",
            )
        )
    if money.amount_minor < 0 or (money.amount_minor == 0 and not zero):
        violations.append(
            FieldViolation(
                f"{field}.amount_minor", "must not be negative" if zero else "must be positive"
            )
        )
    elif money.amount_minor > limits.money_amount_minor_max:
        violations.append(
            FieldViolation(
                f"{field}.amount_minor", f"over the limit of {limits.money_amount_minor_max}"
            )
        )


def _check_period(
    violations: list[FieldViolation],
    start_field: str,
    start: dt.date | None,
    end_field: str,
    end: dt.date | None,
) -> None:
    if start is None or end is None:
        return
    if end < start:
        violations.append(FieldViolation(end_field, f"before {start_field}"))
    elif (end - start).days + 1 > limits.policy_term_days_max:
        violations.append(
            FieldViolation(end_field, f"period longer than {limits.policy_term_days_max} days")
        )


def _check_policy_issued(
    violations: list[FieldViolation], field: str, body: events_pb2.PolicyIssued
) -> None:
    check_identifier(violations, f"{field}.policy_id", body.policy_id, limits.policy_id_chars_max)
    check_person_token(violations, f"{field}.sponsor_token", body.sponsor_token)
    _check_party(violations, f"{field}.holder", body.holder)
    _check_members(violations, f"{field}.members", body.members)
    start = _check_date(
        violations, f"{field}.start_date", body.start_date, present=body.HasField("start_date")
    )
    end = _check_date(
        violations, f"{field}.end_date", body.end_date, present=body.HasField("end_date")
    )
    _check_period(violations, f"{field}.start_date", start, f"{field}.end_date", end)
    _check_text(violations, f"{field}.plan", body.plan, limits.plan_chars_max, required=True)
    if body.HasField("annual_premium"):
        _check_money(violations, f"{field}.annual_premium", body.annual_premium)
    else:
        violations.append(FieldViolation(f"{field}.annual_premium", "required"))
    if body.HasField("replaces"):
        _check_replaces(violations, f"{field}.replaces", body.replaces)
    _check_instalments(violations, f"{field}.instalments", body, start, end)


def _check_replaces(
    violations: list[FieldViolation], field: str, replaces: events_pb2.PolicyRef
) -> None:
    check_identifier(violations, f"{field}.insurer_id", replaces.insurer_id)
    check_identifier(
        violations, f"{field}.policy_id", replaces.policy_id, limits.policy_id_chars_max
    )


def _check_instalments(
    violations: list[FieldViolation],
    field: str,
    body: events_pb2.PolicyIssued,
    start: dt.date | None,
    end: dt.date | None,
) -> None:
    """Due dates ascending within the period; amounts in the annual premium's currency."""
    if len(body.instalments) > limits.policy_instalments_max:
        violations.append(
            FieldViolation(field, f"more than {limits.policy_instalments_max} instalments")
        )
        return
    previous: dt.date | None = None
    for position, instalment in enumerate(body.instalments):
        item = f"{field}[{position}]"
        due = _check_date(
            violations,
            f"{item}.due_date",
            instalment.due_date,
            present=instalment.HasField("due_date"),
        )
        if due is not None and start is not None and end is not None and not start <= due <= end:
            violations.append(FieldViolation(f"{item}.due_date", "outside the policy's period"))
        if due is not None and previous is not None and due <= previous:
            violations.append(FieldViolation(f"{item}.due_date", "not after the previous one"))
        previous = due or previous
        if not instalment.HasField("amount"):
            violations.append(FieldViolation(f"{item}.amount", "required"))
            continue
        _check_money(violations, f"{item}.amount", instalment.amount)
        if instalment.amount.currency_code != body.annual_premium.currency_code:
            violations.append(
                FieldViolation(f"{item}.amount.currency_code", "not the annual premium's currency")
            )


def _check_members(
    violations: list[FieldViolation], field: str, members: Sequence[events_pb2.Member]
) -> None:
    if not members:
        violations.append(FieldViolation(field, "at least one member is required"))
    if len(members) > limits.policy_members_max:
        violations.append(FieldViolation(field, f"more than {limits.policy_members_max} members"))
        return
    seen: set[str] = set()
    for position, member in enumerate(members):
        member_field = f"{field}[{position}]"
        _check_member(violations, member_field, member)
        if member.person_token in seen:
            violations.append(FieldViolation(f"{member_field}.person_token", "listed twice"))
        seen.add(member.person_token)


def _check_member(violations: list[FieldViolation], field: str, member: events_pb2.Member) -> None:
    """Check one member (its birth date is the identity vault's, checked at admission)."""
    check_person_token(violations, f"{field}.person_token", member.person_token)
    if member.relationship == events_pb2.RELATIONSHIP_UNSPECIFIED:
        violations.append(FieldViolation(f"{field}.relationship", "required"))
    elif member.relationship not in events_pb2.Relationship.values():
        violations.append(FieldViolation(f"{field}.relationship", "unknown value"))


def _check_policy_cancelled(
    violations: list[FieldViolation], field: str, body: events_pb2.PolicyCancelled
) -> None:
    check_identifier(violations, f"{field}.policy_id", body.policy_id, limits.policy_id_chars_max)
    effective = _check_date(
        violations,
        f"{field}.effective_date",
        body.effective_date,
        present=body.HasField("effective_date"),
    )
    notice = _check_date(
        violations, f"{field}.notice_date", body.notice_date, present=body.HasField("notice_date")
    )
    if effective is not None and notice is not None and notice > effective:
        violations.append(FieldViolation(f"{field}.notice_date", "after the effective date"))
    _check_reason(violations, f"{field}.reason", body.reason)


def _check_insurer_change_notified(
    violations: list[FieldViolation], field: str, body: events_pb2.InsurerChangeNotified
) -> None:
    check_identifier(violations, f"{field}.policy_id", body.policy_id, limits.policy_id_chars_max)
    if body.new_insurer_id:
        check_identifier(
            violations, f"{field}.new_insurer_id", body.new_insurer_id, limits.insurer_id_chars_max
        )


def _check_reason(
    violations: list[FieldViolation], field: str, reason: events_pb2.CancellationReason.ValueType
) -> None:
    if reason == events_pb2.CANCELLATION_REASON_UNSPECIFIED:
        violations.append(FieldViolation(field, "required"))
    elif reason not in events_pb2.CancellationReason.values():
        violations.append(FieldViolation(field, "unknown value"))


def _check_member_added(
    violations: list[FieldViolation], field: str, body: events_pb2.MemberAdded
) -> None:
    check_identifier(violations, f"{field}.policy_id", body.policy_id, limits.policy_id_chars_max)
    if body.HasField("member"):
        _check_member(violations, f"{field}.member", body.member)
    else:
        violations.append(FieldViolation(f"{field}.member", "required"))
    _check_date(
        violations,
        f"{field}.effective_date",
        body.effective_date,
        present=body.HasField("effective_date"),
    )


def _check_member_removed(
    violations: list[FieldViolation], field: str, body: events_pb2.MemberRemoved
) -> None:
    check_identifier(violations, f"{field}.policy_id", body.policy_id, limits.policy_id_chars_max)
    check_person_token(violations, f"{field}.person_token", body.person_token)
    _check_date(
        violations,
        f"{field}.effective_date",
        body.effective_date,
        present=body.HasField("effective_date"),
    )
    _check_reason(violations, f"{field}.reason", body.reason)
    if body.reason == events_pb2.CANCELLATION_REASON_INSURER_CHANGE:
        violations.append(
            FieldViolation(f"{field}.reason", "a change of insurer cancels the whole policy")
        )


def _check_insurer_licensed(
    violations: list[FieldViolation], field: str, body: events_pb2.InsurerLicensed
) -> None:
    check_identifier(
        violations,
        f"{field}.licensed_insurer_id",
        body.licensed_insurer_id,
        limits.insurer_id_chars_max,
    )
    _check_text(violations, f"{field}.name", body.name, limits.name_chars_max, required=True)
    _check_text(
        violations,
        f"{field}.licence_number",
        body.licence_number,
        limits.reference_chars_max,
        required=True,
    )
    _check_date(
        violations,
        f"{field}.effective_date",
        body.effective_date,
        present=body.HasField("effective_date"),
    )


def _check_insurer_suspended(
    violations: list[FieldViolation], field: str, body: events_pb2.InsurerSuspended
) -> None:
    check_identifier(
        violations,
        f"{field}.suspended_insurer_id",
        body.suspended_insurer_id,
        limits.insurer_id_chars_max,
    )
    _check_date(
        violations,
        f"{field}.effective_date",
        body.effective_date,
        present=body.HasField("effective_date"),
    )
    _check_text(violations, f"{field}.reason", body.reason, limits.name_chars_max, required=False)


def _check_key_registered(
    violations: list[FieldViolation], field: str, body: events_pb2.KeyRegistered
) -> None:
    check_identifier(
        violations, f"{field}.principal_id", body.principal_id, limits.insurer_id_chars_max
    )
    role = role_from_proto(body.role)
    if role is None:
        violations.append(FieldViolation(f"{field}.role", "required: a known SignerRole"))
    elif (role == SignerRole.OPERATOR) != (body.principal_id == OPERATOR_ID):
        violations.append(
            FieldViolation(
                f"{field}.principal_id", f"{OPERATOR_ID!r} is the operator role's only principal"
            )
        )
    if len(body.public_key) != limits.ed25519_public_key_bytes:
        violations.append(
            FieldViolation(
                f"{field}.public_key",
                f"must be a raw {limits.ed25519_public_key_bytes}-byte Ed25519 public key",
            )
        )
    start = _check_instant(violations, f"{field}.valid_from", body, "valid_from", required=True)
    end = _check_instant(violations, f"{field}.valid_until", body, "valid_until", required=False)
    if start is not None and end is not None and end <= start:
        violations.append(FieldViolation(f"{field}.valid_until", "not after valid_from"))
    if body.jurisdiction and not _COUNTRY.fullmatch(body.jurisdiction):
        violations.append(FieldViolation(f"{field}.jurisdiction", "ISO 3166-1 alpha-2 code"))
    elif body.jurisdiction and role != SignerRole.AUTHORITY:
        violations.append(FieldViolation(f"{field}.jurisdiction", "only an authority has one"))


def _check_key_revoked(
    violations: list[FieldViolation], field: str, body: events_pb2.KeyRevoked
) -> None:
    if not _KEY_ID.fullmatch(body.key_id):
        violations.append(FieldViolation(f"{field}.key_id", "must be ed25519: and 16 hex digits"))
    _check_instant(violations, f"{field}.revoked_from", body, "revoked_from", required=False)
    _check_text(violations, f"{field}.reason", body.reason, limits.name_chars_max, required=False)


def _check_instant(
    violations: list[FieldViolation], field: str, body: Message, name: str, *, required: bool
) -> dt.datetime | None:
    """The instant of timestamp field ``name`` of ``body``, or None (after a violation when it
    is malformed, or missing and ``required``)."""
    if not body.HasField(name):
        if required:
            violations.append(FieldViolation(field, "required"))
        return None
    stamp = getattr(body, name)
    try:
        if not 0 <= stamp.nanos < 1_000_000_000:
            raise ValueError(stamp.nanos)
        instant: dt.datetime = stamp.ToDatetime(tzinfo=dt.UTC)
    except (OverflowError, ValueError):
        violations.append(FieldViolation(field, "out of range"))
        return None
    return instant


def _check_premium_paid(
    violations: list[FieldViolation], field: str, body: events_pb2.PremiumPaid
) -> None:
    check_identifier(violations, f"{field}.policy_id", body.policy_id, limits.policy_id_chars_max)
    if body.HasField("amount"):
        _check_money(violations, f"{field}.amount", body.amount)
    else:
        violations.append(FieldViolation(f"{field}.amount", "required"))
    start = _check_date(
        violations,
        f"{field}.period_start",
        body.period_start,
        present=body.HasField("period_start"),
    )
    end = _check_date(
        violations, f"{field}.period_end", body.period_end, present=body.HasField("period_end")
    )
    _check_period(violations, f"{field}.period_start", start, f"{field}.period_end", end)
    if body.payer.type == events_pb2.PAYER_TYPE_UNSPECIFIED:
        violations.append(FieldViolation(f"{field}.payer.type", "required"))
    elif body.payer.type not in events_pb2.PayerType.values():
        violations.append(FieldViolation(f"{field}.payer.type", "unknown value"))
    _check_party(violations, f"{field}.payer.party", body.payer.party)
    _check_text(
        violations,
        f"{field}.payment_reference",
        body.payment_reference,
        limits.reference_chars_max,
        required=False,
    )


def first_difference(old: Message, new: Message, path: str = "event") -> str | None:
    """The dotted path of the first field where two messages of one type differ, else None.

    Used to name the differing field when an event id is reused with different bytes.
    """
    descriptor = old.DESCRIPTOR
    for field in descriptor.fields:
        name = field.name
        old_value, new_value = getattr(old, name), getattr(new, name)
        if field.message_type is not None and not _is_repeated(field):
            if old.HasField(name) != new.HasField(name):
                return f"{path}.{name}"
            if old.HasField(name):
                found = first_difference(old_value, new_value, f"{path}.{name}")
                if found is not None:
                    return found
            continue
        if _is_repeated(field) and field.message_type is not None:
            if len(old_value) != len(new_value):
                return f"{path}.{name}"
            for position, (old_item, new_item) in enumerate(zip(old_value, new_value, strict=True)):
                found = first_difference(old_item, new_item, f"{path}.{name}[{position}]")
                if found is not None:
                    return found
            continue
        if old_value != new_value:
            return f"{path}.{name}"
    return None


def check_person(violations: list[FieldViolation], field: str, person: types_pb2.PersonId) -> None:
    """Append the violations of ``person`` (structure, then its type's rules in its country)."""
    _check_person(violations, field, person)


def check_date(
    violations: list[FieldViolation], field: str, date: types_pb2.CivilDate, *, present: bool
) -> dt.date | None:
    """The date of ``date``, or None after appending why it is not one (or is missing)."""
    return _check_date(violations, field, date, present=present)


def _check_fee_collected(
    violations: list[FieldViolation], field: str, body: events_pb2.FeeCollected
) -> None:
    check_identifier(violations, f"{field}.renewal_id", body.renewal_id, limits.policy_id_chars_max)
    check_person_token(violations, f"{field}.sponsor_token", body.sponsor_token)
    start = _check_date(
        violations,
        f"{field}.period_start",
        body.period_start,
        present=body.HasField("period_start"),
    )
    end = _check_date(
        violations, f"{field}.period_end", body.period_end, present=body.HasField("period_end")
    )
    _check_period(violations, f"{field}.period_start", start, f"{field}.period_end", end)
    if not body.lines:
        violations.append(FieldViolation(f"{field}.lines", "at least one line is required"))
    if len(body.lines) > limits.policy_members_max:
        violations.append(
            FieldViolation(f"{field}.lines", f"more than {limits.policy_members_max} lines")
        )
    seen: set[str] = set()
    total = 0
    for position, line in enumerate(body.lines[: limits.policy_members_max]):
        line_field = f"{field}.lines[{position}]"
        if line.person_token in seen:
            violations.append(FieldViolation(f"{line_field}.person_token", "listed twice"))
        seen.add(line.person_token)
        total += _check_fee_line(violations, line_field, line, body.total.currency_code)
    if body.HasField("total"):
        _check_money(violations, f"{field}.total", body.total)
        if body.lines and total != body.total.amount_minor:
            violations.append(
                FieldViolation(
                    f"{field}.total.amount_minor", f"is not the sum of the lines ({total})"
                )
            )
    else:
        violations.append(FieldViolation(f"{field}.total", "required"))
    check_identifier(
        violations,
        f"{field}.merchant_reference",
        body.merchant_reference,
        limits.reference_chars_max,
    )
    check_identifier(violations, f"{field}.gateway", body.gateway)
    _check_text(
        violations,
        f"{field}.gateway_reference",
        body.gateway_reference,
        limits.reference_chars_max,
        required=False,
    )


def _check_fee_line(
    violations: list[FieldViolation], field: str, line: events_pb2.FeeLine, currency: str
) -> int:
    """Check one fee line; return its amount (to add up)."""
    check_person_token(violations, f"{field}.person_token", line.person_token)
    if line.relationship == events_pb2.RELATIONSHIP_UNSPECIFIED:
        violations.append(FieldViolation(f"{field}.relationship", "required"))
    elif line.relationship not in events_pb2.Relationship.values():
        violations.append(FieldViolation(f"{field}.relationship", "unknown value"))
    check_identifier(violations, f"{field}.schedule_version", line.schedule_version)
    check_identifier(violations, f"{field}.rule_id", line.rule_id)
    _check_money(violations, f"{field}.amount", line.amount, zero=True)
    if line.amount.currency_code != currency:
        violations.append(
            FieldViolation(f"{field}.amount.currency_code", "differs from the total's")
        )
    return line.amount.amount_minor


def _check_fee_refunded(
    violations: list[FieldViolation], field: str, body: events_pb2.FeeRefunded
) -> None:
    check_identifier(violations, f"{field}.renewal_id", body.renewal_id, limits.policy_id_chars_max)
    check_identifier(
        violations, f"{field}.refund_reference", body.refund_reference, limits.reference_chars_max
    )
    if body.HasField("amount"):
        _check_money(violations, f"{field}.amount", body.amount)
    else:
        violations.append(FieldViolation(f"{field}.amount", "required"))
    _check_text(violations, f"{field}.reason", body.reason, limits.name_chars_max, required=False)
    _check_text(
        violations,
        f"{field}.gateway_reference",
        body.gateway_reference,
        limits.reference_chars_max,
        required=False,
    )


# Penalty decisions (task B; docs/compliance.md "Penalty decisions").


def _check_decision_id(violations: list[FieldViolation], field: str, decision_id: str) -> None:
    check_identifier(
        violations, f"{field}.decision_id", decision_id, limits.penalty_decision_id_chars_max
    )


def _check_penalty_assessed(
    violations: list[FieldViolation], field: str, body: events_pb2.PenaltyAssessed
) -> None:
    _check_decision_id(violations, field, body.decision_id)
    check_identifier(
        violations,
        f"{field}.establishment_number",
        body.establishment_number,
        limits.reference_chars_max,
    )
    start = _check_date(
        violations,
        f"{field}.period_start",
        body.period_start,
        present=body.HasField("period_start"),
    )
    end = _check_date(
        violations, f"{field}.period_end", body.period_end, present=body.HasField("period_end")
    )
    _check_period(violations, f"{field}.period_start", start, f"{field}.period_end", end)
    check_identifier(violations, f"{field}.schedule_version", body.schedule_version)
    if not body.HasField("total"):
        violations.append(FieldViolation(f"{field}.total", "required"))
        return
    _check_money(violations, f"{field}.total", body.total)
    _check_penalty_lines(violations, field, body, start, end)


def _check_penalty_lines(
    violations: list[FieldViolation],
    field: str,
    body: events_pb2.PenaltyAssessed,
    start: dt.date | None,
    end: dt.date | None,
) -> None:
    """Each person once, days within the period, money in the total's currency, adding up."""
    if not body.lines:
        violations.append(FieldViolation(f"{field}.lines", "at least one line is required"))
    if len(body.lines) > limits.penalty_lines_max:
        violations.append(
            FieldViolation(f"{field}.lines", f"more than {limits.penalty_lines_max} lines")
        )
        return
    period_days = (end - start).days + 1 if start is not None and end is not None else None
    seen: set[str] = set()
    total = 0
    for position, line in enumerate(body.lines):
        item = f"{field}.lines[{position}]"
        check_person_token(violations, f"{item}.person_token", line.person_token)
        if line.person_token in seen:
            violations.append(FieldViolation(f"{item}.person_token", "listed twice"))
        seen.add(line.person_token)
        if line.uninsured_days == 0:
            violations.append(FieldViolation(f"{item}.uninsured_days", "must be positive"))
        elif period_days is not None and line.uninsured_days > period_days:
            violations.append(
                FieldViolation(f"{item}.uninsured_days", f"more than the period's {period_days}")
            )
        for name in ("arrears", "fine"):
            money = getattr(line, name)
            _check_money(violations, f"{item}.{name}", money, zero=True)
            if money.currency_code != body.total.currency_code:
                violations.append(
                    FieldViolation(f"{item}.{name}.currency_code", "differs from the total's")
                )
            total += money.amount_minor
    if body.lines and total != body.total.amount_minor:
        violations.append(
            FieldViolation(
                f"{field}.total.amount_minor",
                f"is not the sum of the lines' arrears and fines ({total})",
            )
        )


def _check_objection(
    violations: list[FieldViolation],
    field: str,
    body: events_pb2.ObjectionFiled | events_pb2.ObjectionRejected,
) -> None:
    _check_decision_id(violations, field, body.decision_id)
    if body.stage == events_pb2.OBJECTION_STAGE_UNSPECIFIED:
        violations.append(FieldViolation(f"{field}.stage", "required"))
    elif body.stage not in events_pb2.ObjectionStage.values():
        violations.append(FieldViolation(f"{field}.stage", "unknown value"))
    _check_text(
        violations, f"{field}.reference", body.reference, limits.reference_chars_max, required=False
    )


def _check_penalty_paid(
    violations: list[FieldViolation], field: str, body: events_pb2.PenaltyPaid
) -> None:
    _check_decision_id(violations, field, body.decision_id)
    if body.HasField("amount"):
        _check_money(violations, f"{field}.amount", body.amount)
    else:
        violations.append(FieldViolation(f"{field}.amount", "required"))
    _check_text(
        violations,
        f"{field}.payment_reference",
        body.payment_reference,
        limits.reference_chars_max,
        required=False,
    )


def _check_penalty_withdrawn(
    violations: list[FieldViolation], field: str, body: events_pb2.PenaltyWithdrawn
) -> None:
    _check_decision_id(violations, field, body.decision_id)
    _check_text(violations, f"{field}.reason", body.reason, limits.name_chars_max, required=True)


def civil_date(day: dt.date) -> types_pb2.CivilDate:
    """The wire form of a civil date."""
    return types_pb2.CivilDate(year=day.year, month=day.month, day=day.day)


# Task A (issue 10): residence permits.


def _check_permit_member(
    violations: list[FieldViolation], field: str, member: events_pb2.PermitMember
) -> dt.date | None:
    check_person_token(violations, f"{field}.person_token", member.person_token)
    if member.relationship == events_pb2.RELATIONSHIP_UNSPECIFIED:
        violations.append(FieldViolation(f"{field}.relationship", "required"))
    elif member.relationship not in events_pb2.Relationship.values():
        violations.append(FieldViolation(f"{field}.relationship", "unknown value"))
    elif member.relationship == events_pb2.RELATIONSHIP_SELF:
        violations.append(FieldViolation(f"{field}.relationship", "the holder is not a member"))
    return _check_date(
        violations,
        f"{field}.dependent_since",
        member.dependent_since,
        present=member.HasField("dependent_since"),
    )


def _check_permit_members(
    violations: list[FieldViolation],
    field: str,
    members: Sequence[events_pb2.PermitMember],
    last_day: dt.date | None,
    holder_token: str = "",
) -> None:
    """At most ``limits.permit_members_max``, each once, none the holder, each a dependent by
    the permit's last day."""
    if len(members) > limits.permit_members_max:
        violations.append(FieldViolation(field, f"more than {limits.permit_members_max} members"))
        return
    seen = {holder_token} if holder_token else set()
    for position, member in enumerate(members):
        item = f"{field}[{position}]"
        since = _check_permit_member(violations, item, member)
        if member.person_token in seen:
            violations.append(FieldViolation(f"{item}.person_token", "listed twice"))
        seen.add(member.person_token)
        if since is not None and last_day is not None and since > last_day:
            violations.append(FieldViolation(f"{item}.dependent_since", "after the permit's end"))


def _check_permit_issued(
    violations: list[FieldViolation], field: str, body: events_pb2.PermitIssued
) -> None:
    check_identifier(violations, f"{field}.permit_id", body.permit_id, limits.permit_id_chars_max)
    check_person_token(violations, f"{field}.holder_token", body.holder_token)
    _check_party(violations, f"{field}.sponsor", body.sponsor)
    entry = _check_date(
        violations, f"{field}.entry_date", body.entry_date, present=body.HasField("entry_date")
    )
    start = _check_date(
        violations, f"{field}.start_date", body.start_date, present=body.HasField("start_date")
    )
    end = _check_date(
        violations, f"{field}.end_date", body.end_date, present=body.HasField("end_date")
    )
    if start is not None and end is not None:
        if end < start:
            violations.append(FieldViolation(f"{field}.end_date", "before start_date"))
        elif (end - start).days + 1 > limits.permit_term_days_max:
            violations.append(
                FieldViolation(
                    f"{field}.end_date", f"period longer than {limits.permit_term_days_max} days"
                )
            )
    if entry is not None and start is not None and end is not None:
        earliest = start - dt.timedelta(days=limits.permit_entry_before_start_days_max)
        if not earliest <= entry <= end:
            violations.append(
                FieldViolation(f"{field}.entry_date", f"must be within {earliest}..{end}")
            )
    _check_permit_members(violations, f"{field}.members", body.members, end, body.holder_token)


def _check_permit_renewed(
    violations: list[FieldViolation], field: str, body: events_pb2.PermitRenewed
) -> None:
    check_identifier(violations, f"{field}.permit_id", body.permit_id, limits.permit_id_chars_max)
    end = _check_date(
        violations, f"{field}.end_date", body.end_date, present=body.HasField("end_date")
    )
    _check_permit_members(violations, f"{field}.added_members", body.added_members, end)


def _check_permit_ended(
    violations: list[FieldViolation], field: str, body: events_pb2.PermitEnded
) -> None:
    check_identifier(violations, f"{field}.permit_id", body.permit_id, limits.permit_id_chars_max)
    _check_date(
        violations,
        f"{field}.effective_date",
        body.effective_date,
        present=body.HasField("effective_date"),
    )
    if body.reason == events_pb2.PERMIT_END_REASON_UNSPECIFIED:
        violations.append(FieldViolation(f"{field}.reason", "required"))
    elif body.reason not in events_pb2.PermitEndReason.values():
        violations.append(FieldViolation(f"{field}.reason", "unknown value"))


def _permit_tokens(event: events_pb2.Event) -> list[tuple[str, str]]:
    """(token, field) of every person a permit event names."""
    kind = event.WhichOneof("body")
    if kind == "permit_issued":
        body = event.permit_issued
        found = [(body.holder_token, "event.permit_issued.holder_token")]
        if body.sponsor.WhichOneof("kind") == "person_token":
            found.append((body.sponsor.person_token, "event.permit_issued.sponsor.person_token"))
        found.extend(
            (member.person_token, f"event.permit_issued.members[{position}].person_token")
            for position, member in enumerate(body.members)
        )
        return found
    if kind == "permit_renewed":
        return [
            (member.person_token, f"event.permit_renewed.added_members[{position}].person_token")
            for position, member in enumerate(event.permit_renewed.added_members)
        ]
    return []


# Funded cohorts (task D, issue 11): the structure of CohortEnrolled, ContributionPaid and
# CohortEnded. Their rules against the ledger's state are in ledger/funds/rules.py.


def _check_month_period(
    violations: list[FieldViolation],
    field: str,
    body: Message,
    names: tuple[str, str],
) -> None:
    """Both dates present, the first a month's first day, the second a month's last, in order,
    at most ``cohort_months_max`` months."""
    start_name, end_name = names
    start = _check_date(
        violations,
        f"{field}.{start_name}",
        getattr(body, start_name),
        present=body.HasField(start_name),
    )
    end = _check_date(
        violations, f"{field}.{end_name}", getattr(body, end_name), present=body.HasField(end_name)
    )
    if start is not None and start.day != 1:
        violations.append(FieldViolation(f"{field}.{start_name}", "not the first day of a month"))
    if end is not None and (end + dt.timedelta(days=1)).day != 1:
        violations.append(FieldViolation(f"{field}.{end_name}", "not the last day of a month"))
    if start is None or end is None:
        return
    months = (end.year - start.year) * 12 + end.month - start.month + 1
    if end < start:
        violations.append(FieldViolation(f"{field}.{end_name}", f"before {start_name}"))
    elif months > limits.cohort_months_max:
        violations.append(
            FieldViolation(f"{field}.{end_name}", f"more than {limits.cohort_months_max} months")
        )


def _check_cohort_enrolled(
    violations: list[FieldViolation], field: str, body: events_pb2.CohortEnrolled
) -> None:
    from ledger.funds.states import sudan_states  # noqa: PLC0415 (data loaded on first use)

    check_identifier(violations, f"{field}.cohort_id", body.cohort_id, limits.cohort_id_chars_max)
    check_identifier(violations, f"{field}.fund_id", body.fund_id, limits.insurer_id_chars_max)
    _check_month_period(violations, field, body, ("period_start", "period_end"))
    if not body.HasField("monthly_contribution"):
        violations.append(FieldViolation(f"{field}.monthly_contribution", "required"))
    else:
        _check_money(violations, f"{field}.monthly_contribution", body.monthly_contribution)
        if body.monthly_contribution.currency_code != limits.fund_currency:
            violations.append(
                FieldViolation(
                    f"{field}.monthly_contribution.currency_code",
                    f"cohort contributions are in {limits.fund_currency}",
                )
            )
    count = len(body.beneficiaries)
    if count == 0:
        violations.append(FieldViolation(f"{field}.beneficiaries", "at least one is required"))
    elif count > limits.cohort_beneficiaries_per_event_max:
        violations.append(
            FieldViolation(
                f"{field}.beneficiaries",
                f"{count} beneficiaries, over the limit of "
                f"{limits.cohort_beneficiaries_per_event_max} per event",
            )
        )
    states = sudan_states()
    seen: set[str] = set()
    for position, entry in enumerate(
        body.beneficiaries[: limits.cohort_beneficiaries_per_event_max]
    ):
        entry_field = f"{field}.beneficiaries[{position}]"
        check_person_token(violations, f"{entry_field}.person_token", entry.person_token)
        if entry.person_token in seen:
            violations.append(FieldViolation(f"{entry_field}.person_token", "listed twice"))
        seen.add(entry.person_token)
        if entry.state_code not in states:
            violations.append(
                FieldViolation(
                    f"{entry_field}.state_code", "not one of the 18 ISO 3166-2:SD state codes"
                )
            )


def _check_contribution_paid(
    violations: list[FieldViolation], field: str, body: events_pb2.ContributionPaid
) -> None:
    check_identifier(violations, f"{field}.cohort_id", body.cohort_id, limits.cohort_id_chars_max)
    _check_month_period(violations, field, body, ("period_start", "period_end"))
    if body.HasField("amount"):
        _check_money(violations, f"{field}.amount", body.amount)
    else:
        violations.append(FieldViolation(f"{field}.amount", "required"))
    if body.beneficiary_count == 0:
        violations.append(FieldViolation(f"{field}.beneficiary_count", "must be positive"))
    _check_text(
        violations,
        f"{field}.payment_reference",
        body.payment_reference,
        limits.reference_chars_max,
        required=False,
    )


def _check_cohort_ended(
    violations: list[FieldViolation], field: str, body: events_pb2.CohortEnded
) -> None:
    check_identifier(violations, f"{field}.cohort_id", body.cohort_id, limits.cohort_id_chars_max)
    effective = _check_date(
        violations,
        f"{field}.effective_date",
        body.effective_date,
        present=body.HasField("effective_date"),
    )
    if effective is not None and effective.day != 1:
        violations.append(FieldViolation(f"{field}.effective_date", "not the first day of a month"))
    _check_text(violations, f"{field}.reason", body.reason, limits.name_chars_max, required=True)


# Task F (issue 11, item 4): beneficiaries declared by the insured (docs/beneficiaries.md).
_DECLARABLE = (events_pb2.RELATIONSHIP_SPOUSE, events_pb2.RELATIONSHIP_CHILD)


def _check_beneficiaries_declared(
    violations: list[FieldViolation], field: str, body: events_pb2.BeneficiariesDeclared
) -> None:
    check_identifier(
        violations, f"{field}.declaration_id", body.declaration_id, limits.declaration_id_chars_max
    )
    check_person_token(violations, f"{field}.insured_token", body.insured_token)
    check_identifier(violations, f"{field}.policy.insurer_id", body.policy.insurer_id)
    check_identifier(
        violations, f"{field}.policy.policy_id", body.policy.policy_id, limits.policy_id_chars_max
    )
    _check_date(
        violations,
        f"{field}.effective_date",
        body.effective_date,
        present=body.HasField("effective_date"),
    )
    if not body.beneficiaries:
        violations.append(FieldViolation(f"{field}.beneficiaries", "at least one is required"))
    if len(body.beneficiaries) > limits.declared_beneficiaries_max:
        violations.append(
            FieldViolation(
                f"{field}.beneficiaries", f"more than {limits.declared_beneficiaries_max}"
            )
        )
    seen: set[str] = set()
    for position, person in enumerate(body.beneficiaries[: limits.declared_beneficiaries_max]):
        person_field = f"{field}.beneficiaries[{position}]"
        check_person_token(violations, f"{person_field}.person_token", person.person_token)
        if person.person_token in seen:
            violations.append(FieldViolation(f"{person_field}.person_token", "declared twice"))
        seen.add(person.person_token)
        if person.relationship not in _DECLARABLE:
            violations.append(
                FieldViolation(f"{person_field}.relationship", "a spouse or a child only")
            )
        _check_documents(violations, f"{person_field}.documents", person.documents)


def _check_documents(
    violations: list[FieldViolation],
    field: str,
    documents: Sequence[events_pb2.DocumentReference],
) -> None:
    if not documents:
        violations.append(FieldViolation(field, "at least one document reference is required"))
    if len(documents) > limits.declaration_documents_max:
        violations.append(FieldViolation(field, f"more than {limits.declaration_documents_max}"))
    for position, document in enumerate(documents[: limits.declaration_documents_max]):
        if (
            document.kind == events_pb2.DOCUMENT_KIND_UNSPECIFIED
            or document.kind not in events_pb2.DocumentKind.values()
        ):
            violations.append(FieldViolation(f"{field}[{position}].kind", "required, known"))
        check_identifier(
            violations,
            f"{field}[{position}].reference",
            document.reference,
            limits.document_reference_chars_max,
        )


def _check_declaration_decided(
    violations: list[FieldViolation], field: str, body: events_pb2.DeclarationDecided
) -> None:
    check_person_token(violations, f"{field}.insured_token", body.insured_token)
    check_identifier(
        violations, f"{field}.declaration_id", body.declaration_id, limits.declaration_id_chars_max
    )
    if body.decision not in (
        events_pb2.DECLARATION_DECISION_ACCEPTED,
        events_pb2.DECLARATION_DECISION_REJECTED,
    ):
        violations.append(FieldViolation(f"{field}.decision", "ACCEPTED or REJECTED"))
    rejected = body.decision == events_pb2.DECLARATION_DECISION_REJECTED
    _check_text(
        violations,
        f"{field}.reason",
        body.reason,
        limits.decision_reason_chars_max,
        required=rejected,
    )


_BODY_CHECKS: dict[str, Callable[[list[FieldViolation], str, Any], None]] = {
    "policy_issued": _check_policy_issued,
    "policy_cancelled": _check_policy_cancelled,
    "insurer_change_notified": _check_insurer_change_notified,
    "premium_paid": _check_premium_paid,
    "member_added": _check_member_added,
    "member_removed": _check_member_removed,
    "fee_collected": _check_fee_collected,
    "fee_refunded": _check_fee_refunded,
    "insurer_licensed": _check_insurer_licensed,
    "insurer_suspended": _check_insurer_suspended,
    "key_registered": _check_key_registered,
    "key_revoked": _check_key_revoked,
    "person_erased": _check_person_erased,
    # Task A (issue 10).
    "permit_issued": _check_permit_issued,
    "permit_renewed": _check_permit_renewed,
    "permit_ended": _check_permit_ended,
    # Penalty decisions (task B).
    "penalty_assessed": _check_penalty_assessed,
    "objection_filed": _check_objection,
    "objection_rejected": _check_objection,
    "penalty_paid": _check_penalty_paid,
    "penalty_withdrawn": _check_penalty_withdrawn,
    **CARD_BODY_CHECKS,
    # Task D (issue 11): funded cohorts (ledger/funds/, docs/funds.md).
    "cohort_enrolled": _check_cohort_enrolled,
    "contribution_paid": _check_contribution_paid,
    "cohort_ended": _check_cohort_ended,
    "beneficiaries_declared": _check_beneficiaries_declared,
    "declaration_decided": _check_declaration_decided,
}
"""How each event body is checked (the ``Event.body`` oneof field name -> its check)."""
