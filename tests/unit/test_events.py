"""Event decoding and structural validation: every rule refused with its field, and the
accepted twins."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

import pytest

from clients.samples import policy_cancelled, policy_issued, premium_paid
from ledger import limits
from ledger.errors import InvalidArgument, ResourceExhausted
from ledger.events import decode_event, first_difference, validate_event
from ledger.v1 import events_pb2, types_pb2
from tests.builders import tokens

NOW = dt.datetime(2026, 11, 22, 12, 0, tzinfo=dt.UTC)
INSURER = "gulf-health"


def _issued() -> events_pb2.Event:
    return policy_issued(1, INSURER, NOW, tokens=tokens)


@pytest.mark.parametrize(
    "make",
    [
        lambda: policy_issued(1, INSURER, NOW, tokens=tokens),
        lambda: premium_paid(1, INSURER, NOW, tokens=tokens),
        lambda: policy_cancelled(1, INSURER, NOW),
    ],
    ids=["issued", "premium", "cancelled"],
)
def test_sample_events_are_valid(make: Callable[[], events_pb2.Event]) -> None:
    event = make()
    summary = validate_event(decode_event(event.SerializeToString()), NOW)
    assert (summary.event_id, summary.insurer_id) == (event.event_id, INSURER)


def _set_issued(
    change: Callable[[events_pb2.PolicyIssued], None],
) -> Callable[[events_pb2.Event], None]:
    return lambda event: change(event.policy_issued)


def _duplicate_member(body: events_pb2.PolicyIssued) -> None:
    body.members.add().CopyFrom(body.members[0])


def _too_many_members(body: events_pb2.PolicyIssued) -> None:
    for number in range(limits.policy_members_max):
        body.members.add(
            person_token=tokens(
                [types_pb2.PersonId(type=1, value=f"3{number:09d}", country_code="SA")]
            )[0],
            relationship=events_pb2.RELATIONSHIP_CHILD,
        )


def _end_before_start(body: events_pb2.PolicyIssued) -> None:
    body.end_date.CopyFrom(types_pb2.CivilDate(year=2020, month=1, day=1))


def _too_long_term(body: events_pb2.PolicyIssued) -> None:
    body.end_date.year += 3


REFUSED: dict[str, tuple[Callable[[events_pb2.Event], None], str]] = {
    "no event id": (lambda e: setattr(e, "event_id", ""), "event.event_id"),
    "event id too long": (lambda e: setattr(e, "event_id", "x" * 129), "event.event_id"),
    "event id charset": (lambda e: setattr(e, "event_id", "a b"), "event.event_id"),
    "no insurer": (lambda e: setattr(e, "insurer_id", ""), "event.insurer_id"),
    "no time": (lambda e: e.ClearField("occurred_at"), "event.occurred_at"),
    "time before 2000": (
        lambda e: e.occurred_at.FromDatetime(dt.datetime(1999, 1, 1, tzinfo=dt.UTC)),
        "event.occurred_at",
    ),
    "time in the future": (
        lambda e: e.occurred_at.FromDatetime(NOW + dt.timedelta(days=2)),
        "event.occurred_at",
    ),
    "no body": (lambda e: e.ClearField("policy_issued"), "event.body"),
    "no policy id": (
        _set_issued(lambda b: setattr(b, "policy_id", "")),
        "event.policy_issued.policy_id",
    ),
    "no sponsor": (
        _set_issued(lambda b: b.ClearField("sponsor_token")),
        "event.policy_issued.sponsor_token",
    ),
    "sponsor named by identifier, not token": (
        _set_issued(lambda b: setattr(b, "sponsor_token", "2123456789")),
        "event.policy_issued.sponsor_token",
    ),
    "sponsor token upper case": (
        _set_issued(lambda b: setattr(b, "sponsor_token", b.sponsor_token.upper())),
        "event.policy_issued.sponsor_token",
    ),
    "sponsor token truncated": (
        _set_issued(lambda b: setattr(b, "sponsor_token", b.sponsor_token[:-1])),
        "event.policy_issued.sponsor_token",
    ),
    "holder token malformed": (
        _set_issued(lambda b: setattr(b.holder, "person_token", "pt_")),
        "event.policy_issued.holder.person_token",
    ),
    "no holder": (_set_issued(lambda b: b.ClearField("holder")), "event.policy_issued.holder"),
    "no members": (_set_issued(lambda b: b.ClearField("members")), "event.policy_issued.members"),
    "member twice": (_set_issued(_duplicate_member), "event.policy_issued.members[3].person_token"),
    "too many members": (_set_issued(_too_many_members), "event.policy_issued.members"),
    "member relationship": (
        _set_issued(lambda b: setattr(b.members[1], "relationship", 0)),
        "event.policy_issued.members[1].relationship",
    ),
    "impossible date": (
        _set_issued(
            lambda b: setattr(b.start_date, "day", 31) or setattr(b.start_date, "month", 2)
        ),
        "event.policy_issued.start_date",
    ),
    "end before start": (_set_issued(_end_before_start), "event.policy_issued.end_date"),
    "term too long": (_set_issued(_too_long_term), "event.policy_issued.end_date"),
    "no plan": (_set_issued(lambda b: setattr(b, "plan", "")), "event.policy_issued.plan"),
    "plan control char": (
        _set_issued(lambda b: setattr(b, "plan", "A\nB")),
        "event.policy_issued.plan",
    ),
    "unknown currency": (
        _set_issued(lambda b: setattr(b.annual_premium, "currency_code", "XXX")),
        "event.policy_issued.annual_premium.currency_code",
    ),
    "zero premium": (
        _set_issued(lambda b: setattr(b.annual_premium, "amount_minor", 0)),
        "event.policy_issued.annual_premium.amount_minor",
    ),
    "huge premium": (
        _set_issued(
            lambda b: setattr(b.annual_premium, "amount_minor", limits.money_amount_minor_max + 1)
        ),
        "event.policy_issued.annual_premium.amount_minor",
    ),
    "no premium": (
        _set_issued(lambda b: b.ClearField("annual_premium")),
        "event.policy_issued.annual_premium",
    ),
}


@pytest.mark.parametrize("case", REFUSED, ids=list(REFUSED))
def test_each_structural_rule_is_refused_naming_the_field(case: str) -> None:
    change, field = REFUSED[case]
    event = _issued()
    change(event)
    with pytest.raises(InvalidArgument) as raised:
        validate_event(event, NOW)
    assert field in [violation.field for violation in raised.value.details.field_violations]
    assert raised.value.reason == "EVENT_INVALID"


def test_every_violation_is_reported_at_once() -> None:
    event = _issued()
    event.event_id = ""
    event.policy_issued.plan = ""
    with pytest.raises(InvalidArgument) as raised:
        validate_event(event, NOW)
    assert len(raised.value.details.field_violations) == 2
    assert "and 1 more" in raised.value.message


def test_premium_and_cancellation_rules() -> None:
    paid = premium_paid(1, INSURER, NOW, tokens=tokens)
    paid.premium_paid.payer.type = 0
    paid.premium_paid.amount.amount_minor = -1
    with pytest.raises(InvalidArgument) as raised:
        validate_event(paid, NOW)
    fields = {violation.field for violation in raised.value.details.field_violations}
    assert fields == {"event.premium_paid.payer.type", "event.premium_paid.amount.amount_minor"}
    cancelled = policy_cancelled(1, INSURER, NOW)
    cancelled.policy_cancelled.reason = 0
    cancelled.policy_cancelled.ClearField("notice_date")
    with pytest.raises(InvalidArgument) as raised:
        validate_event(cancelled, NOW)
    fields = {violation.field for violation in raised.value.details.field_violations}
    assert fields == {"event.policy_cancelled.reason", "event.policy_cancelled.notice_date"}


def test_decode_refuses_oversize_garbage_and_unknown_fields() -> None:
    with pytest.raises(ResourceExhausted):
        decode_event(b"\x00" * (limits.envelope_payload_bytes_max + 1))
    with pytest.raises(InvalidArgument, match=r"not a ledger\.v1\.Event"):
        decode_event(b"\xff\xff")
    nested_unknown = _issued()
    payload = nested_unknown.SerializeToString() + b"\x98\x06\x01"
    with pytest.raises(InvalidArgument) as raised:
        decode_event(payload)
    assert raised.value.details.field_violations[0].field == "event.#99"


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        low, value = value & 0x7F, value >> 7
        out.append(low | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _field_bytes(number: int, data: bytes) -> bytes:
    """A length-delimited field ``number`` holding ``data``."""
    return _varint(number << 3 | 2) + _varint(len(data)) + data


def _fields_reversed(event: events_pb2.Event) -> bytes:
    """A valid encoding of ``event`` that no encoder writes: its fields in reverse order."""
    parts = []
    for descriptor, _ in event.ListFields():
        single = events_pb2.Event()
        single.MergeFrom(event)
        for other, _ in event.ListFields():
            if other.name != descriptor.name:
                single.ClearField(other.name)
        parts.append(single.SerializeToString())
    return b"".join(reversed(parts))


def test_decode_names_unknown_fields_deep_inside_and_accepts_any_valid_encoding() -> None:
    event = _issued()
    body_number = events_pb2.Event.DESCRIPTOR.fields_by_name["policy_issued"].number
    body = event.policy_issued.SerializeToString() + b"\x98\x06\x01"  # field 99 of the body
    rest = events_pb2.Event()
    rest.CopyFrom(event)
    rest.ClearField("policy_issued")
    nested = rest.SerializeToString() + _field_bytes(body_number, body)
    with pytest.raises(InvalidArgument) as raised:
        decode_event(nested)
    assert raised.value.details.reason == "PAYLOAD_UNKNOWN_FIELDS"
    assert [v.field for v in raised.value.details.field_violations] == ["event.policy_issued.#99"]
    # The same event with its fields in another order: no unknown field, the same event.
    reordered = _fields_reversed(event)
    assert reordered != event.SerializeToString()
    assert decode_event(reordered) == event
    # Reordered and carrying an unknown field: still refused, and named.
    with pytest.raises(InvalidArgument) as raised:
        decode_event(reordered + b"\x98\x06\x01")
    assert [v.field for v in raised.value.details.field_violations] == ["event.#99"]


def test_first_difference_names_the_deepest_changed_field() -> None:
    old, new = _issued(), _issued()
    assert first_difference(old, new) is None
    new.policy_issued.members[2].person_token = "pt_" + "a" * 26
    assert first_difference(old, new) == "event.policy_issued.members[2].person_token"
    new = _issued()
    new.policy_issued.members.add()
    assert first_difference(old, new) == "event.policy_issued.members"
    new = _issued()
    new.ClearField("policy_issued")
    new.premium_paid.policy_id = "x"
    assert first_difference(old, new) == "event.policy_issued"


def _new_bodies() -> dict[str, tuple[events_pb2.Event, str]]:
    """Each new event body with one structural fault, and the field that must be named."""
    from tests.builders import R, added, cancelled, person, removed, suspended

    day = dt.date(2026, 5, 1)
    no_member = added(INSURER, "P1", person(1), R.RELATIONSHIP_CHILD, day)
    no_member.member_added.ClearField("member")
    change = removed(INSURER, "P1", person(1), day, R.CANCELLATION_REASON_INSURER_CHANGE)
    unset_reason = removed(INSURER, "P1", person(1), day, R.CANCELLATION_REASON_UNSPECIFIED)
    late_notice = cancelled(
        INSURER, "P1", day, R.CANCELLATION_REASON_FINAL_EXIT, notice=day + dt.timedelta(days=1)
    )
    no_insurer = suspended("", day)
    identifier = added(INSURER, "P1", person(1), R.RELATIONSHIP_CHILD, day)
    identifier.member_added.member.person_token = person(1).value  # v1 habit: the iqama itself
    erased_bad = events_pb2.Event(event_id="e1", insurer_id="operator")
    erased_bad.occurred_at.FromDatetime(NOW)
    erased_bad.person_erased.person_token = "pt_" + "b" * 26
    licensed = events_pb2.Event(event_id="l1", insurer_id="operator")
    licensed.occurred_at.FromDatetime(NOW)
    licensed.insurer_licensed.licensed_insurer_id = INSURER
    licensed.insurer_licensed.effective_date.CopyFrom(
        types_pb2.CivilDate(year=2026, month=1, day=1)
    )
    return {
        "member missing": (no_member, "event.member_added.member"),
        "removal for an insurer change": (change, "event.member_removed.reason"),
        "removal reason unset": (unset_reason, "event.member_removed.reason"),
        "notice after the effective date": (late_notice, "event.policy_cancelled.notice_date"),
        "suspension of nobody": (no_insurer, "event.insurer_suspended.suspended_insurer_id"),
        "identifier instead of a token": (
            identifier,
            "event.member_added.member.person_token",
        ),
        "erasure without a basis": (erased_bad, "event.person_erased.basis"),
        "licence without a name": (licensed, "event.insurer_licensed.name"),
    }


@pytest.mark.parametrize("case", list(_new_bodies()))
def test_member_and_licensing_events_are_checked_structurally(case: str) -> None:
    event, field = _new_bodies()[case]
    with pytest.raises(InvalidArgument) as raised:
        validate_event(decode_event(event.SerializeToString()), NOW)
    assert field in [v.field for v in raised.value.details.field_violations]


def test_member_and_licensing_events_accepted_twins() -> None:
    from clients.operator import insurer_licensed
    from tests.builders import R, added, cancelled, person, removed, suspended

    day = dt.date(2026, 5, 1)
    for event in (
        added(INSURER, "P1", person(1), R.RELATIONSHIP_CHILD, day, birth=day),
        removed(INSURER, "P1", person(1), day, R.CANCELLATION_REASON_DEPENDENT_LOST_STATUS),
        cancelled(INSURER, "P1", day, R.CANCELLATION_REASON_INSURER_CHANGE, notice=day),
        suspended(INSURER, day),
        insurer_licensed(
            INSURER, name="Gulf", licence_number="L-1", effective=day, occurred_at=NOW
        ),
    ):
        validate_event(decode_event(event.SerializeToString()), NOW)


def _with_schedule(*dues: tuple[int, int, int, str, int]) -> events_pb2.Event:
    """The sample policy (from 2026-11-22, in SAR) with instalments (y, m, d, currency, amount)."""
    event = _issued()
    for year, month, day, currency, amount in dues:
        instalment = event.policy_issued.instalments.add()
        instalment.due_date.CopyFrom(types_pb2.CivilDate(year=year, month=month, day=day))
        instalment.amount.CopyFrom(types_pb2.Money(currency_code=currency, amount_minor=amount))
    return event


def _replacing(insurer_id: str, policy_id: str) -> events_pb2.Event:
    event = _issued()
    event.policy_issued.replaces.insurer_id = insurer_id
    event.policy_issued.replaces.policy_id = policy_id
    return event


@pytest.mark.parametrize(
    ("event", "field"),
    [
        (
            _with_schedule((2026, 11, 1, "SAR", 100)),
            "event.policy_issued.instalments[0].due_date",
        ),
        (
            _with_schedule((2026, 12, 1, "SAR", 100), (2026, 12, 1, "SAR", 100)),
            "event.policy_issued.instalments[1].due_date",
        ),
        (
            _with_schedule((2026, 12, 1, "KWD", 100)),
            "event.policy_issued.instalments[0].amount.currency_code",
        ),
        (_with_schedule((2026, 12, 1, "SAR", 0)), "event.policy_issued.instalments[0].amount"),
        (
            _with_schedule(*[(2027, 1, day, "SAR", 1) for day in range(1, 27)]),
            "event.policy_issued.instalments",
        ),
        (_replacing("", "P-OLD"), "event.policy_issued.replaces.insurer_id"),
        (_replacing("najm-care", ""), "event.policy_issued.replaces.policy_id"),
    ],
    ids=[
        "due before start",
        "not ascending",
        "currency",
        "zero",
        "too many",
        "no insurer",
        "no id",
    ],
)
def test_a_premium_schedule_and_a_replaced_policy_are_checked(
    event: events_pb2.Event, field: str
) -> None:
    with pytest.raises(InvalidArgument) as raised:
        validate_event(decode_event(event.SerializeToString()), NOW)
    assert any(v.field.startswith(field) for v in raised.value.details.field_violations)


def test_a_premium_schedule_and_a_replaced_policy_accepted_twins() -> None:
    schedule = _with_schedule((2026, 12, 1, "SAR", 100), (2027, 6, 1, "SAR", 100))
    validate_event(decode_event(schedule.SerializeToString()), NOW)
    validate_event(decode_event(_replacing("najm-care", "P-OLD").SerializeToString()), NOW)
