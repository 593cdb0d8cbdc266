"""Realistic sample events (Saudi households, SAR premiums) for the demo, tests and benchmarks.

Events name people by person tokens: every function that builds one about people takes
``tokens``, a :data:`TokenSource` (an insurer's :class:`clients.person_tokens.PersonTokens`
``.tokens``, which asks the ledger's IdentityService and caches the answers).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator, Sequence

from ledger.events import civil_date
from ledger.identifiers import example_iqama
from ledger.v1 import events_pb2, types_pb2

__all__ = [
    "TokenSource",
    "civil_date",
    "iqama",
    "policy_cancelled",
    "policy_issued",
    "premium_paid",
    "sample_events",
]


TokenSource = Callable[[Sequence[types_pb2.PersonId]], list[str]]
"""The person token of each identifier, in order (``PersonTokens.tokens``)."""


def iqama(number: int) -> types_pb2.PersonId:
    """A valid Saudi residence id (iqama): 2, ``number`` on 8 digits, Luhn check digit."""
    return types_pb2.PersonId(
        type=types_pb2.PERSON_ID_TYPE_RESIDENCE_ID,
        value=example_iqama(number % 10**8),
        country_code="SA",
    )


def _event(event_id: str, insurer_id: str, occurred_at: dt.datetime) -> events_pb2.Event:
    event = events_pb2.Event(event_id=event_id, insurer_id=insurer_id)
    event.occurred_at.FromDatetime(occurred_at)
    return event


def household(number: int, members: int = 3) -> list[types_pb2.PersonId]:
    """The members of sample household ``number``, the sponsor first."""
    return [iqama(number * 16 + position) for position in range(max(members, 1))]


def policy_issued(
    number: int,
    insurer_id: str,
    occurred_at: dt.datetime,
    *,
    tokens: TokenSource,
    members: int = 3,
) -> events_pb2.Event:
    """A one-year household policy: the sponsor, a spouse, children, SAR premium."""
    event = _event(f"{insurer_id}-issue-{number}", insurer_id, occurred_at)
    people = tokens(household(number, members))
    body = event.policy_issued
    body.policy_id = f"POL-{number:08d}"
    body.sponsor_token = people[0]
    body.holder.person_token = people[0]
    relationships = [events_pb2.RELATIONSHIP_SELF, events_pb2.RELATIONSHIP_SPOUSE]
    for position in range(members):
        relationship = relationships[position] if position < 2 else events_pb2.RELATIONSHIP_CHILD
        body.members.add(person_token=people[position], relationship=relationship)
    start = occurred_at.date()
    body.start_date.CopyFrom(civil_date(start))
    body.end_date.CopyFrom(civil_date(start + dt.timedelta(days=364)))
    body.plan = "CCHI-BASIC"
    body.annual_premium.CopyFrom(
        types_pb2.Money(currency_code="SAR", amount_minor=450_000 + number)
    )
    return event


def premium_paid(
    number: int, insurer_id: str, occurred_at: dt.datetime, *, tokens: TokenSource
) -> events_pb2.Event:
    """The sponsor pays a year's premium of policy ``number``."""
    event = _event(f"{insurer_id}-premium-{number}", insurer_id, occurred_at)
    body = event.premium_paid
    body.policy_id = f"POL-{number:08d}"
    body.amount.CopyFrom(types_pb2.Money(currency_code="SAR", amount_minor=450_000 + number))
    start = occurred_at.date()
    body.period_start.CopyFrom(civil_date(start))
    body.period_end.CopyFrom(civil_date(start + dt.timedelta(days=364)))
    body.payer.type = events_pb2.PAYER_TYPE_SPONSOR
    body.payer.party.person_token = tokens([iqama(number * 16)])[0]
    body.payment_reference = f"PAY-{number:08d}"
    return event


def policy_cancelled(number: int, insurer_id: str, occurred_at: dt.datetime) -> events_pb2.Event:
    """Policy ``number`` ends because the sponsor left on final exit."""
    event = _event(f"{insurer_id}-cancel-{number}", insurer_id, occurred_at)
    body = event.policy_cancelled
    body.policy_id = f"POL-{number:08d}"
    body.effective_date.CopyFrom(civil_date(occurred_at.date() + dt.timedelta(days=30)))
    body.notice_date.CopyFrom(civil_date(occurred_at.date()))
    body.reason = events_pb2.CANCELLATION_REASON_FINAL_EXIT
    return event


def sample_events(
    count: int,
    insurer_id: str,
    occurred_at: dt.datetime,
    *,
    tokens: TokenSource,
    first_number: int = 0,
) -> Iterator[events_pb2.Event]:
    """``count`` events: each household's policy, then its premium; every tenth is cancelled."""
    number = first_number
    produced = 0
    while produced < count:
        batch = [
            policy_issued(number, insurer_id, occurred_at, tokens=tokens),
            premium_paid(number, insurer_id, occurred_at, tokens=tokens),
        ]
        if number % 10 == 9:
            batch.append(policy_cancelled(number, insurer_id, occurred_at))
        for event in batch[: count - produced]:
            yield event
            produced += 1
        number += 1
