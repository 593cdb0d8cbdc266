"""Builders of policy events with explicit dates, for the rule and scenario tests.

Tests name people by identifier (:func:`person`); events name them by person token. The builders
ask :func:`tokens`, which asks the identity vault of the ledger under test: the conftest points
it at each server it starts (:func:`use_vault`) and at the ``engine`` fixture's database. With
no ledger (pure validation tests) it hands out random tokens no vault knows.
"""

from __future__ import annotations

import datetime as dt
import itertools
from collections.abc import Callable, Sequence

from sqlalchemy import Engine

from ledger.cards.number import with_check_digit
from ledger.clock import SystemClock
from ledger.coverage.projector import person_ref
from ledger.events import civil_date as civil
from ledger.identifiers import example_iqama, example_kuwait_civil_id
from ledger.identity.tokens import new_person_token
from ledger.storage.vault_store import VaultStore
from ledger.v1 import events_pb2, types_pb2

TokenSource = Callable[[Sequence[types_pb2.PersonId], Sequence[dt.date | None]], list[str]]
"""Tokens for people, with their birth dates (none, or one per person) for the vault."""


def _unvaulted() -> TokenSource:
    issued: dict[tuple[int, str, str], str] = {}

    def source(
        people: Sequence[types_pb2.PersonId], birth_dates: Sequence[dt.date | None] = ()
    ) -> list[str]:
        keys = [(int(p.type), p.country_code, p.value) for p in people]
        return [issued.setdefault(key, new_person_token()) for key in keys]

    return source


_SOURCE: list[TokenSource] = [_unvaulted()]


def vault_tokens(engine: Engine) -> TokenSource:
    """Tokens from the vault of ``engine``'s ledger (issued there as GetPersonTokens would)."""
    store = VaultStore(engine)
    clock = SystemClock()

    def source(
        people: Sequence[types_pb2.PersonId], birth_dates: Sequence[dt.date | None] = ()
    ) -> list[str]:
        return store.tokens_for([person_ref(p) for p in people], clock.now(), birth_dates)

    return source


def use_vault(engine: Engine) -> None:
    """From now on, :func:`tokens` asks the vault of ``engine``'s ledger."""
    _SOURCE[0] = vault_tokens(engine)


def use_unvaulted_tokens() -> None:
    """From now on, :func:`tokens` hands out random tokens no vault knows (the default)."""
    _SOURCE[0] = _unvaulted()


def tokens(
    people: Sequence[types_pb2.PersonId], birth_dates: Sequence[dt.date | None] = ()
) -> list[str]:
    """The token of each person from the current source (see the module doc); ``birth_dates``
    (none, or one per person) go to the vault with them."""
    return _SOURCE[0](people, birth_dates)


def token(person: types_pb2.PersonId | str, birth: dt.date | None = None) -> str:
    """The token of one person from the current source (a token is its own); ``birth``: the
    person's birth date, kept by the vault (never in the event)."""
    if isinstance(person, str):
        return person
    return tokens([person], [birth])[0]


def copy_vault(source: Engine, target: Engine) -> None:
    """Give ``target``'s vault the tokens of ``source``'s: the same events then replay on both."""
    from sqlalchemy import select

    from ledger.storage.vault_store import person_identities, person_tokens

    with source.connect() as reading, target.begin() as writing:
        for table in (person_tokens, person_identities):
            rows = [dict(row._mapping) for row in reading.execute(select(table))]
            if rows:
                writing.execute(table.insert(), rows)


OCCURRED = dt.datetime(2026, 6, 1, 9, 0, tzinfo=dt.UTC)
"""When test events happened: inside every test key's validity, never in the future."""

R = events_pb2
_numbers = itertools.count(1)


def person(serial: int) -> types_pb2.PersonId:
    """A valid Saudi iqama."""
    return types_pb2.PersonId(
        type=types_pb2.PERSON_ID_TYPE_RESIDENCE_ID, value=example_iqama(serial), country_code="SA"
    )


def sar(amount_minor: int) -> types_pb2.Money:
    """Saudi riyals in halalas."""
    return types_pb2.Money(currency_code="SAR", amount_minor=amount_minor)


def _event(insurer_id: str, event_id: str | None) -> events_pb2.Event:
    event = events_pb2.Event(event_id=event_id or f"evt-{next(_numbers)}", insurer_id=insurer_id)
    event.occurred_at.FromDatetime(OCCURRED)
    return event


def issued(
    insurer_id: str,
    policy_id: str,
    sponsor: types_pb2.PersonId | str,
    members: list[tuple[types_pb2.PersonId | str, int]],
    start: dt.date,
    end: dt.date,
    *,
    premium: types_pb2.Money | None = None,
    event_id: str | None = None,
    replaces: tuple[str, str] | None = None,
    instalments: list[tuple[dt.date, types_pb2.Money]] | None = None,
) -> events_pb2.Event:
    """PolicyIssued: ``members`` are (person, Relationship) pairs; the sponsor holds it;
    ``replaces`` is the (insurer, policy) it replaces; ``instalments`` its premium schedule
    (due date, amount)."""
    event = _event(insurer_id, event_id)
    body = event.policy_issued
    body.policy_id = policy_id
    body.sponsor_token = token(sponsor)
    body.holder.person_token = body.sponsor_token
    for member, relationship in members:
        body.members.add(person_token=token(member), relationship=relationship)  # type: ignore[arg-type]
    body.start_date.CopyFrom(civil(start))
    body.end_date.CopyFrom(civil(end))
    body.plan = "CCHI-BASIC"
    body.annual_premium.CopyFrom(premium or sar(450_000))
    if replaces is not None:
        body.replaces.insurer_id, body.replaces.policy_id = replaces
    for due, amount in instalments or []:
        body.instalments.add(due_date=civil(due), amount=amount)
    return event


def cancelled(
    insurer_id: str,
    policy_id: str,
    effective: dt.date,
    reason: int,
    *,
    notice: dt.date | None = None,
    event_id: str | None = None,
) -> events_pb2.Event:
    """PolicyCancelled from ``effective`` (the first uncovered day)."""
    event = _event(insurer_id, event_id)
    body = event.policy_cancelled
    body.policy_id = policy_id
    body.effective_date.CopyFrom(civil(effective))
    body.notice_date.CopyFrom(civil(notice or effective))
    body.reason = reason  # type: ignore[assignment]
    return event


def change_notified(
    insurer_id: str, policy_id: str, *, new_insurer: str = "", event_id: str | None = None
) -> events_pb2.Event:
    """InsurerChangeNotified for ``policy_id`` (its ledger time starts the 30 days' notice)."""
    event = _event(insurer_id, event_id)
    event.insurer_change_notified.policy_id = policy_id
    event.insurer_change_notified.new_insurer_id = new_insurer
    return event


def added(
    insurer_id: str,
    policy_id: str,
    member: types_pb2.PersonId | str,
    relationship: int,
    effective: dt.date,
    *,
    birth: dt.date | None = None,
    event_id: str | None = None,
) -> events_pb2.Event:
    """MemberAdded from ``effective``; ``birth`` goes to the vault with the member's token."""
    event = _event(insurer_id, event_id)
    body = event.member_added
    body.policy_id = policy_id
    body.member.person_token = token(member, birth)
    body.member.relationship = relationship  # type: ignore[assignment]
    body.effective_date.CopyFrom(civil(effective))
    return event


def removed(
    insurer_id: str,
    policy_id: str,
    member: types_pb2.PersonId | str,
    effective: dt.date,
    reason: int,
    *,
    event_id: str | None = None,
) -> events_pb2.Event:
    """MemberRemoved from ``effective`` (the first uncovered day)."""
    event = _event(insurer_id, event_id)
    body = event.member_removed
    body.policy_id = policy_id
    body.person_token = token(member)
    body.effective_date.CopyFrom(civil(effective))
    body.reason = reason  # type: ignore[assignment]
    return event


def paid(
    insurer_id: str,
    policy_id: str,
    amount: types_pb2.Money,
    start: dt.date,
    end: dt.date,
    *,
    payer_type: int = R.PAYER_TYPE_SPONSOR,
    payer: events_pb2.PartyRef | None = None,
    event_id: str | None = None,
) -> events_pb2.Event:
    """PremiumPaid for ``start..end``."""
    event = _event(insurer_id, event_id)
    body = event.premium_paid
    body.policy_id = policy_id
    body.amount.CopyFrom(amount)
    body.period_start.CopyFrom(civil(start))
    body.period_end.CopyFrom(civil(end))
    body.payer.type = payer_type  # type: ignore[assignment]
    body.payer.party.CopyFrom(payer or events_pb2.PartyRef(person_token=token(person(999))))
    body.payment_reference = f"PAY-{event.event_id}"
    return event


def erased(person: types_pb2.PersonId | str, basis: str = "PDPL art. 18") -> events_pb2.Event:
    """The operator erases ``person`` from the identity vault."""
    event = _event("operator", None)
    event.person_erased.person_token = token(person)
    event.person_erased.basis = basis
    return event


def suspended(insurer_id: str, effective: dt.date) -> events_pb2.Event:
    """The operator suspends ``insurer_id`` from ``effective``."""
    event = _event("operator", None)
    body = event.insurer_suspended
    body.suspended_insurer_id = insurer_id
    body.effective_date.CopyFrom(civil(effective))
    body.reason = "licence conditions breached"
    return event


_kuwaiti_serials = itertools.count(100)


def fee_collected(signer_id: str, renewal_id: str) -> events_pb2.Event:
    """A Kuwaiti renewal's fee of KWD 100 for its sponsor alone, collected by ``signer_id``."""
    event = events_pb2.Event(event_id=f"fee-{renewal_id}", insurer_id=signer_id)
    event.occurred_at.FromDatetime(OCCURRED)
    body = event.fee_collected
    body.renewal_id = renewal_id
    sponsor = types_pb2.PersonId(
        type=types_pb2.PERSON_ID_TYPE_CIVIL_ID,
        value=example_kuwait_civil_id(
            dt.date(1960, 1, 1) + dt.timedelta(days=next(_kuwaiti_serials)), 0
        ),
        country_code="KW",
    )
    body.sponsor_token = token(sponsor)
    body.period_start.CopyFrom(civil(dt.date(2026, 1, 1)))
    body.period_end.CopyFrom(civil(dt.date(2026, 12, 31)))
    kwd = types_pb2.Money(currency_code="KWD", amount_minor=100_000)
    body.lines.add(
        person_token=body.sponsor_token,
        relationship=R.RELATIONSHIP_SELF,
        schedule_version="kw-2025-12-23",
        rule_id="KW25-WORKER",
        amount=kwd,
    )
    body.total.CopyFrom(kwd)
    body.merchant_reference = f"M-{renewal_id}"
    body.gateway = "simulated"
    return event


# Task A (issue 10): residence permits.


def permit_issued(
    authority_id: str,
    permit_id: str,
    holder: types_pb2.PersonId | str,
    sponsor: str | types_pb2.PersonId,
    members: list[tuple[types_pb2.PersonId | str, int, dt.date]],
    entry: dt.date,
    start: dt.date,
    end: dt.date,
    *,
    event_id: str | None = None,
) -> events_pb2.Event:
    """PermitIssued: ``sponsor`` an establishment number (SA) or a person; ``members`` are
    (person, Relationship, dependent since)."""
    event = _event(authority_id, event_id)
    body = event.permit_issued
    body.permit_id = permit_id
    body.holder_token = token(holder)
    if isinstance(sponsor, str):
        body.sponsor.organization.registration_number = sponsor
        body.sponsor.organization.country_code = "SA"
    else:
        body.sponsor.person_token = token(sponsor)
    for member, relationship, since in members:
        body.members.add(
            person_token=token(member),
            relationship=relationship,  # type: ignore[arg-type]
            dependent_since=civil(since),
        )
    body.entry_date.CopyFrom(civil(entry))
    body.start_date.CopyFrom(civil(start))
    body.end_date.CopyFrom(civil(end))
    return event


def permit_renewed(
    authority_id: str,
    permit_id: str,
    end: dt.date,
    added_members: list[tuple[types_pb2.PersonId | str, int, dt.date]] = (),  # type: ignore[assignment]
) -> events_pb2.Event:
    """PermitRenewed to ``end``, with members joining."""
    event = _event(authority_id, None)
    body = event.permit_renewed
    body.permit_id = permit_id
    body.end_date.CopyFrom(civil(end))
    for member, relationship, since in added_members:
        body.added_members.add(
            person_token=token(member),
            relationship=relationship,  # type: ignore[arg-type]
            dependent_since=civil(since),
        )
    return event


def permit_ended(
    authority_id: str, permit_id: str, effective: dt.date, reason: int
) -> events_pb2.Event:
    """PermitEnded from ``effective``."""
    event = _event(authority_id, None)
    body = event.permit_ended
    body.permit_id = permit_id
    body.effective_date.CopyFrom(civil(effective))
    body.reason = reason  # type: ignore[assignment]
    return event


# Penalty decisions (task B).

SCHEDULE = "sa-2025-illustrative"
"""The packaged penalty schedule (SAR) decisions name in tests."""


def penalty_assessed(
    regulator_id: str,
    decision_id: str,
    establishment_number: str,
    lines: Sequence[tuple[types_pb2.PersonId | str, int, int, int]],
    *,
    period: tuple[dt.date, dt.date] = (dt.date(2026, 1, 1), dt.date(2026, 6, 30)),
    schedule_version: str = SCHEDULE,
    currency: str = "SAR",
    computed_at_tree_size: int = 0,
    event_id: str | None = None,
) -> events_pb2.Event:
    """PenaltyAssessed: ``lines`` are (person, uninsured days, arrears, fine) in minor units;
    the total is their sum."""
    event = _event(regulator_id, event_id)
    body = event.penalty_assessed
    body.decision_id = decision_id
    body.establishment_number = establishment_number
    body.period_start.CopyFrom(civil(period[0]))
    body.period_end.CopyFrom(civil(period[1]))
    body.schedule_version = schedule_version
    body.computed_at_tree_size = computed_at_tree_size
    for who, days, arrears, fine in lines:
        body.lines.add(
            person_token=token(who),
            uninsured_days=days,
            arrears=types_pb2.Money(currency_code=currency, amount_minor=arrears),
            fine=types_pb2.Money(currency_code=currency, amount_minor=fine),
        )
    body.total.CopyFrom(
        types_pb2.Money(currency_code=currency, amount_minor=sum(a + f for _, _, a, f in lines))
    )
    return event


def objection_filed(
    signer_id: str,
    decision_id: str,
    stage: int = events_pb2.OBJECTION_STAGE_OBJECTION,
    *,
    reference: str = "",
    event_id: str | None = None,
) -> events_pb2.Event:
    """ObjectionFiled (an objection, or with ``stage`` GRIEVANCE a grievance)."""
    event = _event(signer_id, event_id)
    event.objection_filed.decision_id = decision_id
    event.objection_filed.stage = stage  # type: ignore[assignment]
    event.objection_filed.reference = reference
    return event


def objection_rejected(
    signer_id: str,
    decision_id: str,
    stage: int = events_pb2.OBJECTION_STAGE_OBJECTION,
    *,
    event_id: str | None = None,
) -> events_pb2.Event:
    """ObjectionRejected: the pending ``stage`` of ``decision_id`` was rejected."""
    event = _event(signer_id, event_id)
    event.objection_rejected.decision_id = decision_id
    event.objection_rejected.stage = stage  # type: ignore[assignment]
    return event


def penalty_paid(
    signer_id: str,
    decision_id: str,
    amount: types_pb2.Money,
    *,
    reference: str = "",
    event_id: str | None = None,
) -> events_pb2.Event:
    """PenaltyPaid of ``amount`` toward ``decision_id``."""
    event = _event(signer_id, event_id)
    event.penalty_paid.decision_id = decision_id
    event.penalty_paid.amount.CopyFrom(amount)
    event.penalty_paid.payment_reference = reference
    return event


def penalty_withdrawn(
    signer_id: str,
    decision_id: str,
    reason: str = "objection upheld",
    *,
    event_id: str | None = None,
) -> events_pb2.Event:
    """PenaltyWithdrawn of ``decision_id``."""
    event = _event(signer_id, event_id)
    event.penalty_withdrawn.decision_id = decision_id
    event.penalty_withdrawn.reason = reason
    return event


# Task E (cards): insurance card events (docs/cards.md).
_card_serials = itertools.count(100_000)


def card_number(serial: int | None = None) -> str:
    """A fresh 16-digit card number with its Luhn check digit."""
    return with_check_digit(f"{serial if serial is not None else next(_card_serials):015d}")


def card_issued(
    insurer_id: str,
    number: str,
    holder: types_pb2.PersonId | str,
    valid_until: dt.date,
    *,
    event_id: str | None = None,
) -> events_pb2.Event:
    """CardIssued: ``number`` to ``holder`` until ``valid_until``."""
    event = _event(insurer_id, event_id)
    body = event.card_issued
    body.card_number = number
    body.person_token = token(holder)
    body.valid_until.CopyFrom(civil(valid_until))
    return event


def card_replaced(
    insurer_id: str,
    old: str,
    new: str,
    valid_until: dt.date,
    reason: int = R.CARD_REASON_LOST,
    *,
    event_id: str | None = None,
) -> events_pb2.Event:
    """CardReplaced: ``old`` by ``new``."""
    event = _event(insurer_id, event_id)
    body = event.card_replaced
    body.old_card_number = old
    body.new_card_number = new
    body.valid_until.CopyFrom(civil(valid_until))
    body.reason = reason  # type: ignore[assignment]
    return event


def card_revoked(
    insurer_id: str, number: str, reason: int = R.CARD_REASON_FRAUD, *, event_id: str | None = None
) -> events_pb2.Event:
    """CardRevoked: ``number``."""
    event = _event(insurer_id, event_id)
    body = event.card_revoked
    body.card_number = number
    body.reason = reason  # type: ignore[assignment]
    return event


# Task D (issue 11): funded cohorts (ledger/funds/, docs/funds.md).


def sudanese(serial: int) -> types_pb2.PersonId:
    """A Sudanese national number (11 digits; the generic national-ID rule applies)."""
    return types_pb2.PersonId(
        type=types_pb2.PERSON_ID_TYPE_NATIONAL_ID, value=f"1{serial:010d}", country_code="SD"
    )


def sdg(amount_minor: int) -> types_pb2.Money:
    """Sudanese pounds in piastres (2 decimals)."""
    return types_pb2.Money(currency_code="SDG", amount_minor=amount_minor)


def cohort_enrolled(
    funder_id: str,
    cohort_id: str,
    beneficiaries: Sequence[tuple[types_pb2.PersonId | str, str]],
    start: dt.date,
    end: dt.date,
    *,
    monthly: types_pb2.Money | None = None,
    fund_id: str = "sd-nhif",
    event_id: str | None = None,
) -> events_pb2.Event:
    """CohortEnrolled of (person, state code) pairs, at SDG 10.00 a month by default."""
    event = _event(funder_id, event_id)
    body = event.cohort_enrolled
    body.cohort_id = cohort_id
    body.fund_id = fund_id
    body.period_start.CopyFrom(civil(start))
    body.period_end.CopyFrom(civil(end))
    body.monthly_contribution.CopyFrom(monthly or sdg(1_000))
    people = [who for who, _ in beneficiaries]
    plain = [who for who in people if not isinstance(who, str)]
    issued_tokens = iter(tokens(plain)) if plain else iter(())
    for who, state in beneficiaries:
        entry = body.beneficiaries.add()
        entry.person_token = who if isinstance(who, str) else next(issued_tokens)
        entry.state_code = state
    return event


def contribution_paid(
    funder_id: str,
    cohort_id: str,
    start: dt.date,
    end: dt.date,
    amount: types_pb2.Money,
    beneficiary_count: int,
    *,
    event_id: str | None = None,
) -> events_pb2.Event:
    """ContributionPaid for the months ``start..end``."""
    event = _event(funder_id, event_id)
    body = event.contribution_paid
    body.cohort_id = cohort_id
    body.period_start.CopyFrom(civil(start))
    body.period_end.CopyFrom(civil(end))
    body.amount.CopyFrom(amount)
    body.beneficiary_count = beneficiary_count
    body.payment_reference = f"PAY-{event.event_id}"
    return event


def cohort_ended(
    funder_id: str,
    cohort_id: str,
    effective: dt.date,
    reason: str = "re-targeted",
    *,
    event_id: str | None = None,
) -> events_pb2.Event:
    """CohortEnded from ``effective`` (the first day of a month)."""
    event = _event(funder_id, event_id)
    body = event.cohort_ended
    body.cohort_id = cohort_id
    body.effective_date.CopyFrom(civil(effective))
    body.reason = reason
    return event
