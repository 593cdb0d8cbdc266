"""What an employer is responsible for, and what it owes (issue 10, task A).

Reads, in one snapshot of the projections (as :class:`ledger.coverage.reader.CoverageReader`
does), the obligations an establishment is responsible for (:mod:`ledger.compliance.obligations`)
and each obligated person's coverage, and answers with the pure functions:

* :meth:`EmployerReader.check_employer`: every worker and dependent, with covered and uninsured
  runs (:func:`ledger.compliance.uninsured.obligation_intervals`), paged by person;
* :meth:`EmployerReader.compute_arrears`: arrears and fines per person
  (:mod:`ledger.compliance.penalties`), every figure explained.

The non-payment rule is judged as the ledger knows it today (the clock's UTC date), as the
household check does. People are returned by token and, for the callers the authorization
table lets in, by the identifier the identity vault holds (none once erased).
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
from collections import defaultdict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Engine, String, bindparam, func, null, select, tuple_

from ledger import limits
from ledger.clock import Clock, SystemClock
from ledger.compliance import penalties, uninsured
from ledger.compliance.obligations import SELF
from ledger.coverage import rules
from ledger.coverage.model import PersonRef
from ledger.coverage.reader import _non_payment, _pieces, _Span, _span
from ledger.errors import FailedPrecondition, FieldViolation, InvalidArgument
from ledger.storage.log_store import StoredCheckpoint, latest_checkpoint
from ledger.storage.tables import (
    coverages,
    insurers,
    obligations,
    policies,
    transfer_gaps,
)
from ledger.storage.vault_store import person_identities

__all__ = [
    "ArrearsAnswer",
    "EmployerPage",
    "EmployerReader",
    "PersonObligation",
    "decode_page_token",
    "employer_key",
    "encode_page_token",
]

_ONE_DAY = dt.timedelta(days=1)
_PLACEHOLDER = PersonRef(id_type="UNSPECIFIED", value="", country="")
"""The coverage records here are looked up by token; who they name is resolved separately."""


def employer_key(jurisdiction: str, establishment_number: str) -> str:
    """The responsible party key of an establishment (``obligations.responsible_key``)."""
    return f"org:{jurisdiction}:{establishment_number}"


PageKey = tuple[str, str, str]
"""(person token, authority id, permit id) of the last obligation of a page."""


def encode_page_token(key: PageKey) -> str:
    """An opaque page token for the obligations after ``key``."""
    return base64.urlsafe_b64encode("\n".join(key).encode()).decode().rstrip("=")


def decode_page_token(token: str) -> PageKey:
    """The key a page token names; INVALID_ARGUMENT when it is not one of ours."""
    try:
        text = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        text = ""
    parts = text.split("\n")
    if len(parts) != 3 or not all(parts):
        raise InvalidArgument(
            "page_token is not a token a previous CheckEmployer page returned",
            reason="PAGE_TOKEN_INVALID",
            field_violations=[FieldViolation("page_token", "not a next_page_token")],
        )
    return parts[0], parts[1], parts[2]


@dataclass(frozen=True)
class PersonObligation:
    """One person under one permit, within the range asked."""

    person_token: str
    person: PersonRef | None
    """None once the person was erased from the vault."""
    relationship: str
    authority_id: str
    permit_id: str
    obligated_from: dt.date
    obligated_until: dt.date
    intervals: tuple[uninsured.Interval, ...]
    leaf_indexes: tuple[int, ...]

    @property
    def uninsured_days(self) -> int:
        """Uninsured days within the range asked."""
        return uninsured.uninsured_days(self.intervals)


@dataclass(frozen=True)
class EmployerPage:
    """A page of CheckEmployer."""

    people: tuple[PersonObligation, ...]
    next_page: PageKey | None
    checkpoint: StoredCheckpoint


@dataclass(frozen=True)
class ArrearsAnswer:
    """ComputeArrears: the figures, with what they were computed from."""

    people: tuple[tuple[PersonObligation, penalties.PersonAssessment], ...]
    schedule: penalties.PenaltySchedule
    average: penalties.Average
    band: penalties.SizeBand
    workers: int
    explanation: tuple[str, ...]
    checkpoint: StoredCheckpoint

    @property
    def total_arrears_minor(self) -> int:
        """Sum of the arrears."""
        return sum(assessment.arrears_minor for _, assessment in self.people)

    @property
    def total_fines_minor(self) -> int:
        """Sum of the fines."""
        return sum(assessment.fine_minor for _, assessment in self.people)


_OBLIGATIONS = (
    select(obligations)
    .where(
        obligations.c.responsible_key == bindparam("responsible"),
        obligations.c.obligated_from <= bindparam("last"),
        obligations.c.obligated_until >= bindparam("first"),
        obligations.c.obligated_until >= obligations.c.obligated_from,
    )
    .order_by(obligations.c.person_token, obligations.c.authority_id, obligations.c.permit_id)
)
_NO_TEXT = null().cast(String)
_SELECT_SPANS = (
    select(
        coverages,
        policies.c.plan,
        policies.c.instalments,
        insurers.c.suspended_from,
        insurers.c.leaf_index.label("insurer_leaf_index"),
        # Who sponsors each policy is not part of this answer: no join to the vault for it.
        _NO_TEXT.label("sponsor_id_type"),
        _NO_TEXT.label("sponsor_value"),
        _NO_TEXT.label("sponsor_country"),
        transfer_gaps.c.replaced_insurer_id,
        transfer_gaps.c.replaced_policy_id,
        transfer_gaps.c.first_day.label("gap_first"),
        transfer_gaps.c.last_day.label("gap_last"),
    )
    .select_from(coverages)
    .join(
        policies,
        (policies.c.insurer_id == coverages.c.insurer_id)
        & (policies.c.policy_id == coverages.c.policy_id),
    )
    .join(insurers, insurers.c.insurer_id == coverages.c.insurer_id, isouter=True)
    .join(
        transfer_gaps,
        (transfer_gaps.c.insurer_id == coverages.c.insurer_id)
        & (transfer_gaps.c.policy_id == coverages.c.policy_id),
        isouter=True,
    )
    .where(
        coverages.c.person_key.in_(bindparam("tokens", expanding=True)),
        coverages.c.end_date >= coverages.c.start_date,
    )
)
"""The same columns as the household check's query, by token (the (person_key, start_date)
index) instead of by identifier."""
_IDENTITIES = select(
    person_identities.c.token,
    person_identities.c.id_type,
    person_identities.c.value,
    person_identities.c.country,
).where(person_identities.c.token.in_(bindparam("tokens", expanding=True)))


class EmployerReader:
    """Read-only employer queries over the projections; safe from many threads."""

    def __init__(self, engine: Engine, clock: Clock | None = None) -> None:
        self._engine = engine
        self._clock: Clock = clock or SystemClock()

    @contextmanager
    def _snapshot(self) -> Iterator[Connection]:
        connection = self._engine.connect()
        if connection.dialect.name != "sqlite":
            connection = connection.execution_options(isolation_level="REPEATABLE READ")
        try:
            with connection.begin():
                yield connection
        finally:
            connection.close()

    def check_employer(
        self,
        responsible: str,
        first: dt.date,
        last: dt.date,
        page_size: int,
        after: PageKey | None,
    ) -> EmployerPage:
        """The obligations of ``responsible`` overlapping ``first..last``, after ``after``."""
        today = rules.ledger_date(self._clock.now())
        query = _OBLIGATIONS.limit(page_size + 1)
        if after is not None:
            query = query.where(
                tuple_(
                    obligations.c.person_token,
                    obligations.c.authority_id,
                    obligations.c.permit_id,
                )
                > tuple_(*after)
            )
        with self._snapshot() as connection:
            head = latest_checkpoint(connection)
            rows = list(
                connection.execute(
                    query, {"responsible": responsible, "first": first, "last": last}
                )
            )
            people = _answers(connection, rows[:page_size], first, last, today)
        next_page = None
        if len(rows) > page_size:
            kept = rows[page_size - 1]
            next_page = (kept.person_token, kept.authority_id, kept.permit_id)
        return EmployerPage(people=people, next_page=next_page, checkpoint=head)

    def compute_arrears(
        self,
        establishment: penalties.Establishment,
        jurisdiction: str,
        first: dt.date,
        last: dt.date,
        category: str,
    ) -> ArrearsAnswer:
        """Arrears and fines of the establishment for ``first..last`` (see the module doc)."""
        today = rules.ledger_date(self._clock.now())
        schedule = _schedule(jurisdiction, last)
        responsible = employer_key(jurisdiction, establishment.establishment_number)
        with self._snapshot() as connection:
            head = latest_checkpoint(connection)
            rows = list(
                connection.execute(
                    _OBLIGATIONS.limit(limits.employer_people_max + 1),
                    {"responsible": responsible, "first": first, "last": last},
                )
            )
            if len(rows) > limits.employer_people_max:
                raise FailedPrecondition(
                    f"the establishment has more than {limits.employer_people_max} "
                    "obligations in the period: ask for a shorter one",
                    reason="TOO_MANY_OBLIGATIONS",
                    field_violations=[FieldViolation("through_date", "a shorter period")],
                )
            people = _answers(connection, rows, first, last, today)
            employer_premiums = _premiums(connection, responsible, first, last, schedule.currency)
            market = (
                None
                if employer_premiums
                else _market_average(connection, category, first, last, schedule.currency)
            )
        average = penalties.average_annual_premium(employer_premiums, market, schedule.currency)
        workers = len({person.person_token for person in people if person.relationship == SELF})
        weighed = penalties.Establishment(
            establishment.establishment_number,
            max(workers, 1),
            establishment.activity,
            establishment.region,
        )
        band = penalties.size_band(schedule, weighed.workers)
        days = _uninsured_days_by_person(people)
        assessed = penalties.assess(
            schedule,
            weighed,
            average,
            [penalties.UninsuredPerson(token, count) for token, count in sorted(days.items())],
        )
        first_of = {person.person_token: person for person in reversed(people)}
        explanation = (
            f"penalty schedule {schedule.version} ({schedule.jurisdiction}), in force on {last}",
            f"workers: {workers} permit holders the establishment is responsible for in "
            f"{first}..{last}; size band {band.band_id}",
            average.explanation,
            "uninsured days per person: the days of the period within the person's obligation "
            "on which no coverage counted (several permits of one person are counted once)",
        )
        return ArrearsAnswer(
            people=tuple((first_of[item.person], item) for item in assessed),
            schedule=schedule,
            average=average,
            band=band,
            workers=workers,
            explanation=explanation,
            checkpoint=head,
        )


def _schedule(jurisdiction: str, day: dt.date) -> penalties.PenaltySchedule:
    mine = [s for s in penalties.load_penalty_schedules() if s.jurisdiction == jurisdiction]
    if not mine:
        raise FailedPrecondition(
            f"no penalty schedule of jurisdiction {jurisdiction}",
            reason="NO_PENALTY_SCHEDULE",
            field_violations=[FieldViolation("jurisdiction", "no penalty schedule")],
        )
    return penalties.schedule_for(mine, day)


def _answers(
    connection: Connection,
    rows: Sequence[Any],
    first: dt.date,
    last: dt.date,
    today: dt.date,
) -> tuple[PersonObligation, ...]:
    tokens = sorted({row.person_token for row in rows})
    if not tokens:
        return ()
    spans_by_token = _spans(connection, tokens, today)
    identities = {
        row.token: PersonRef(id_type=row.id_type, value=row.value, country=row.country)
        for row in connection.execute(_IDENTITIES, {"tokens": tokens})
    }
    answers = []
    for row in rows:
        spans = spans_by_token.get(row.person_token, [])
        counting, cuts = _runs_and_cuts(spans)
        window_first = max(first, row.obligated_from)
        window_last = min(last, row.obligated_until)
        leaves = {int(leaf) for leaf in row.leaf_indexes.split(",")}
        leaves.update(
            leaf
            for span in spans
            if span.record.start <= window_last and span.record.end >= window_first
            for leaf in span.record.leaf_indexes
        )
        answers.append(
            PersonObligation(
                person_token=row.person_token,
                person=identities.get(row.person_token),
                relationship=row.relationship,
                authority_id=row.authority_id,
                permit_id=row.permit_id,
                obligated_from=row.obligated_from,
                obligated_until=row.obligated_until,
                intervals=uninsured.obligation_intervals(window_first, window_last, counting, cuts),
                leaf_indexes=tuple(sorted(leaves)),
            )
        )
    return tuple(answers)


def _spans(connection: Connection, tokens: list[str], today: dt.date) -> dict[str, list[_Span]]:
    """Each token's coverages, split by non-payment as the household check splits them."""
    rows = list(connection.execute(_SELECT_SPANS, {"tokens": tokens}))
    spans = [_span(row, _PLACEHOLDER) for row in rows]
    scheduled = sorted({(row.insurer_id, row.policy_id) for row in rows if row.instalments})
    unpaid = _non_payment(connection, scheduled, today)
    found: dict[str, list[_Span]] = defaultdict(list)
    for span in spans:
        periods = unpaid.get((span.record.insurer_id, span.record.policy_id), ())
        found[span.record.person_token].extend(_pieces(span, periods) if periods else [span])
    return found


def _runs_and_cuts(spans: Sequence[_Span]) -> tuple[list[uninsured.Run], list[uninsured.Cut]]:
    """The days each span counts, and why the rest of its days (and its transfer gap) do not."""
    counting = [
        uninsured.Run(span.counts_from, span.counts_until)
        for span in spans
        if span.counts_from <= span.counts_until
    ]
    cuts: list[uninsured.Cut] = []
    for span in spans:
        record = span.record
        if span.suspended_from is not None and span.suspended_from <= record.end:
            cuts.append(
                uninsured.Cut(
                    max(span.suspended_from, record.start), record.end, uninsured.INSURER_SUSPENDED
                )
            )
        for period in span.unpaid:
            cuts.append(
                uninsured.Cut(
                    max(period.first, record.start),
                    record.end if period.last is None else min(period.last, record.end),
                    uninsured.NON_PAYMENT,
                )
            )
        if span.transfer is not None:
            cuts.append(
                uninsured.Cut(span.transfer.first, span.transfer.last, uninsured.TRANSFER_GAP)
            )
    return counting, cuts


def _uninsured_days_by_person(people: Sequence[PersonObligation]) -> dict[str, int]:
    """Uninsured days per token, a day counted once however many permits hold it."""
    days: dict[str, set[dt.date]] = defaultdict(set)
    for person in people:
        for interval in person.intervals:
            if interval.covered:
                continue
            days[person.person_token].update(
                interval.first + dt.timedelta(days=offset) for offset in range(interval.days)
            )
    return {token: len(found) for token, found in days.items()}


def _in_force(first: dt.date, last: dt.date, currency: str) -> Any:
    return (
        (policies.c.start_date <= last)
        & (policies.c.end_date >= first)
        & (policies.c.cancelled_from.is_(None) | (policies.c.cancelled_from > first))
        & (policies.c.currency_code == currency)
    )


def _premiums(
    connection: Connection, holder: str, first: dt.date, last: dt.date, currency: str
) -> list[int]:
    """The annual premiums of the policies ``holder`` holds in force in ``first..last``."""
    query = select(policies.c.annual_premium_minor).where(
        policies.c.holder_key == holder, _in_force(first, last, currency)
    )
    return [int(amount) for amount in connection.execute(query).scalars()]


def _market_average(
    connection: Connection, category: str, first: dt.date, last: dt.date, currency: str
) -> int | None:
    """The average annual premium of every policy in force (of plan ``category`` when given)."""
    condition = _in_force(first, last, currency)
    if category:
        condition = condition & (policies.c.plan == category)
    total, count = connection.execute(
        select(func.sum(policies.c.annual_premium_minor), func.count()).where(condition)
    ).one()
    if not count:
        return None
    return int(total) // int(count)
