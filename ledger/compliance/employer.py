"""What an employer is responsible for, and what it owes (issue 10, task A).

Reads, in one snapshot of the projections (as :class:`ledger.coverage.reader.CoverageReader`
does), the obligations an establishment is responsible for (:mod:`ledger.compliance.obligations`)
and each obligated person's coverage, and answers with the pure functions:

* :meth:`EmployerReader.check_employer`: every worker and dependent, with covered and uninsured
  runs (:func:`ledger.compliance.uninsured.obligation_intervals`), paged by person;
* :meth:`EmployerReader.compute_arrears`: arrears and fines per person
  (:mod:`ledger.compliance.penalties`), every figure explained.

A page is read set-based, in the same number of queries whatever its size (the obligations
with their identifiers; every coverage record of their people; the premium schedules and
payments of those that state one), then answered in memory (docs/compliance.md
"CheckEmployer"; issue 10 item 6).

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

from sqlalchemy import Connection, Engine, Select, String, bindparam, func, null, select, tuple_

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


_ORDER = (obligations.c.person_token, obligations.c.authority_id, obligations.c.permit_id)


def _obligations_page(after: bool) -> Select[Any]:
    """The obligations of ``:responsible`` overlapping ``:first..:last``, in page order, at most
    ``:limit`` of them; with ``after``, only those after the key ``:after_*``."""
    query = select(obligations).where(
        obligations.c.responsible_key == bindparam("responsible"),
        obligations.c.obligated_from <= bindparam("last"),
        obligations.c.obligated_until >= bindparam("first"),
        obligations.c.obligated_until >= obligations.c.obligated_from,
    )
    if after:
        query = query.where(
            tuple_(*_ORDER)
            > tuple_(
                bindparam("after_token"), bindparam("after_authority"), bindparam("after_permit")
            )
        )
    return query.order_by(*_ORDER).limit(bindparam("limit"))


def _with_identities(after: bool) -> Select[Any]:
    """A page of obligations, each with its person's identifier (NULL once erased); the
    columns in the order :func:`_answers` unpacks them."""
    page = _obligations_page(after).subquery("page")
    return (
        select(
            page.c.person_token,
            page.c.authority_id,
            page.c.permit_id,
            page.c.relationship,
            page.c.obligated_from,
            page.c.obligated_until,
            page.c.leaf_indexes,
            person_identities.c.id_type,
            person_identities.c.value,
            person_identities.c.country,
        )
        .select_from(page)
        .join(person_identities, person_identities.c.token == page.c.person_token, isouter=True)
        .order_by(page.c.person_token, page.c.authority_id, page.c.permit_id)
    )


_NO_TEXT = null().cast(String)


def _spans_of_page(after: bool) -> Select[Any]:
    """Every coverage of the people of a page (:func:`_obligations_page`), in one query: the
    same columns as the household check's query, found through the (person_key, start_date)
    index by the tokens of the page, which the database reads itself (no list of tokens is
    sent, so the statement is compiled once)."""
    page = _obligations_page(after).subquery("page")
    return (
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
            coverages.c.person_key.in_(select(page.c.person_token)),
            coverages.c.end_date >= coverages.c.start_date,
        )
    )


_PAGE = {after: _with_identities(after) for after in (False, True)}
_SPANS = {after: _spans_of_page(after) for after in (False, True)}
_AT = {name: at for at, name in enumerate(_SPANS[False].selected_columns.keys())}
"""Where each column of a :data:`_SPANS` row is (a row is read by position: by name costs more
than the rest of the work on it)."""
_TOKEN, _START, _END, _LEAVES = (
    _AT["person_key"],
    _AT["start_date"],
    _AT["end_date"],
    _AT["leaf_indexes"],
)
_INSURER, _POLICY, _INSTALMENTS, _SUSPENDED, _GAP_FIRST, _GAP_LAST = (
    _AT["insurer_id"],
    _AT["policy_id"],
    _AT["instalments"],
    _AT["suspended_from"],
    _AT["gap_first"],
    _AT["gap_last"],
)


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
        parameters: dict[str, object] = {
            "responsible": responsible,
            "first": first,
            "last": last,
            "limit": page_size + 1,
        }
        if after is not None:
            parameters.update(after_token=after[0], after_authority=after[1], after_permit=after[2])
        paged = after is not None
        with self._snapshot() as connection:
            head = latest_checkpoint(connection)
            rows = list(connection.execute(_PAGE[paged], parameters))
            parameters["limit"] = page_size
            people = _answers(
                connection,
                rows[:page_size],
                spans_query=_SPANS[paged],
                parameters=parameters,
                first=first,
                last=last,
                today=today,
            )
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
            parameters: dict[str, object] = {
                "responsible": responsible,
                "first": first,
                "last": last,
                "limit": limits.employer_people_max + 1,
            }
            rows = list(connection.execute(_PAGE[False], parameters))
            if len(rows) > limits.employer_people_max:
                raise FailedPrecondition(
                    f"the establishment has more than {limits.employer_people_max} "
                    "obligations in the period: ask for a shorter one",
                    reason="TOO_MANY_OBLIGATIONS",
                    field_violations=[FieldViolation("through_date", "a shorter period")],
                )
            people = _answers(
                connection,
                rows,
                spans_query=_SPANS[False],
                parameters=parameters,
                first=first,
                last=last,
                today=today,
            )
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
    *,
    spans_query: Select[Any],
    parameters: dict[str, object],
    first: dt.date,
    last: dt.date,
    today: dt.date,
) -> tuple[PersonObligation, ...]:
    """The answer for each obligation of ``rows`` (rows of :data:`_PAGE`); ``spans_query`` with
    ``parameters`` reads the coverages of the same obligations."""
    if not rows:
        return ()
    coverage_of = _coverage(connection, spans_query, parameters, today)
    answers = []
    for (
        token,
        authority_id,
        permit_id,
        relationship,
        obligated_from,
        obligated_until,
        leaf_text,
        id_type,
        value,
        country,
    ) in rows:
        found = coverage_of.get(token, _NONE)
        window_first = max(first, obligated_from)
        window_last = min(last, obligated_until)
        leaves = {int(leaf) for leaf in leaf_text.split(",")}
        for start, end, record_leaves in found.records:
            if start <= window_last and end >= window_first:
                leaves.update(record_leaves)
        answers.append(
            PersonObligation(
                person_token=token,
                person=None
                if id_type is None
                else PersonRef(id_type=id_type, value=value, country=country),
                relationship=relationship,
                authority_id=authority_id,
                permit_id=permit_id,
                obligated_from=obligated_from,
                obligated_until=obligated_until,
                intervals=uninsured.obligation_intervals(
                    window_first, window_last, found.counting, found.cuts
                ),
                leaf_indexes=tuple(sorted(leaves)),
            )
        )
    return tuple(answers)


@dataclass
class _Coverage:
    """One person's coverage, as :func:`uninsured.obligation_intervals` takes it."""

    counting: list[uninsured.Run]
    cuts: list[uninsured.Cut]
    records: list[tuple[dt.date, dt.date, tuple[int, ...]]]
    """(start, end, leaf indexes) of each coverage record."""


_NONE = _Coverage([], [], [])


def _coverage(
    connection: Connection, query: Select[Any], parameters: dict[str, object], today: dt.date
) -> dict[str, _Coverage]:
    """Each person's counting runs and cuts, as the household check reads them.

    A record without non-payment periods is read straight from its row (it counts from its
    start to its end, or the day before its insurer's suspension); one with them goes through
    the household check's own split (:func:`ledger.coverage.reader._pieces`)."""
    rows = list(connection.execute(query, parameters))
    scheduled = sorted({(row[_INSURER], row[_POLICY]) for row in rows if row[_INSTALMENTS]})
    unpaid = _non_payment(connection, scheduled, today)
    found: dict[str, _Coverage] = {}
    for row in rows:
        token = row[_TOKEN]
        person = found.get(token)
        if person is None:
            person = found[token] = _Coverage([], [], [])
        start: dt.date = row[_START]
        end: dt.date = row[_END]
        person.records.append((start, end, tuple(int(leaf) for leaf in row[_LEAVES].split(","))))
        periods = unpaid.get((row[_INSURER], row[_POLICY])) if unpaid else None
        if periods:
            counting, cuts = _runs_and_cuts(_pieces(_span(row, _PLACEHOLDER), periods))
            person.counting.extend(counting)
            person.cuts.extend(cuts)
            continue
        suspended_from: dt.date | None = row[_SUSPENDED]
        counts_until = end
        if suspended_from is not None:
            counts_until = min(end, suspended_from - _ONE_DAY)
            if suspended_from <= end:
                person.cuts.append(
                    uninsured.Cut(max(suspended_from, start), end, uninsured.INSURER_SUSPENDED)
                )
        if start <= counts_until:
            person.counting.append(uninsured.Run(start, counts_until))
        if row[_GAP_FIRST] is not None:
            person.cuts.append(
                uninsured.Cut(row[_GAP_FIRST], row[_GAP_LAST], uninsured.TRANSFER_GAP)
            )
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
