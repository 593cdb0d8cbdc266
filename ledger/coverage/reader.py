"""Answers from the coverage projections, each at one consistent state of the log.

Every read runs in one read transaction (SQLite: a WAL snapshot; PostgreSQL: REPEATABLE READ),
which sees the latest checkpoint and exactly the projections committed with it, so an answer
and the tree size it names always agree.

The household check (ARCHITECTURE.md section 5): a member is covered through ``through`` when
every day from ``as_of`` to ``through`` is covered by some policy (policies of different insurers
may overlap; a change of insurer is continuous when the new policy starts the day after the old
one ends). Coverage by an insurer stops counting from its suspension date, and a policy with
an instalment unpaid past the grace period stops counting from its due date until paid
(:func:`ledger.coverage.rules.non_payment_periods`, judged as the ledger knows it today: the
clock's UTC date). A household is
renewable only when every member is covered, the sponsor included (asked or not: a sponsor
with no record at all is an empty household, never renewable); each member who is not covered
gets the reason.

The projections name people by person token (docs/privacy.md); every query here is by
identifier, joined to the identity vault's ``person_identities`` in the same snapshot. A person
erased from the vault is found nowhere; an erased sponsor of a person still on record shows as
:data:`ERASED_PERSON`.
"""

from __future__ import annotations

import datetime as dt
import functools
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Any, cast

from sqlalchemy import BindParameter, Connection, Engine, Row, Select, bindparam, select

from ledger import i18n
from ledger.clock import Clock, SystemClock
from ledger.coverage import rules
from ledger.coverage.model import (
    BlockReason,
    CoverageRecord,
    HouseholdVerdict,
    MemberVerdict,
    PersonRef,
    Relationship,
)
from ledger.coverage.projector import PERIOD_END
from ledger.errors import check
from ledger.funds.projection import CohortMembership, memberships_of, memberships_of_tokens
from ledger.funds.rules import COHORT_ENDED, FUNDED_COHORT_PLAN, unpaid_periods
from ledger.i18n.messages import (
    VERDICT_CANCELLED,
    VERDICT_COHORT_NOT_PAID,
    VERDICT_COVERED_THROUGH,
    VERDICT_ENDS_ON,
    VERDICT_GAP,
    VERDICT_INSURER_SUSPENDED,
    VERDICT_LAST_ENDED,
    VERDICT_NO_POLICY,
    VERDICT_NON_PAYMENT,
    VERDICT_STARTS_LATER,
    VERDICT_TRANSFER_GAP,
    Message,
)
from ledger.storage.log_store import StoredCheckpoint, latest_checkpoint
from ledger.storage.row_match import CHUNK, any_row
from ledger.storage.tables import (
    coverages,
    insurers,
    log_entries,
    policies,
    premium_instalments,
    premiums,
    subject_entries,
    transfer_gaps,
)
from ledger.storage.vault_store import person_identities, tokens_of_in

__all__ = ["ERASED_PERSON", "CoverageReader", "HistoryPage", "person_from_key"]

ERASED_PERSON = PersonRef(id_type="UNSPECIFIED", value="", country="")
"""Who a record names when that person was erased from the identity vault."""

_ONE_DAY = dt.timedelta(days=1)


def person_from_key(key: str) -> PersonRef:
    """The PersonRef of a projection key ``<country>:<TYPE>:<value>``."""
    country, id_type, value = key.split(":", 2)
    return PersonRef(id_type=id_type, value=value, country=country)


@dataclass(frozen=True)
class HistoryPage:
    """Entries about one subject, oldest first."""

    entries: tuple[tuple[int, bytes], ...]
    """(leaf index, LedgerEntry bytes) pairs."""
    more: bool
    checkpoint: StoredCheckpoint


@dataclass(frozen=True)
class _Unpaid:
    """A non-payment period of a policy: its first day (an instalment's due date) and its last
    (None while still unpaid)."""

    first: dt.date
    last: dt.date | None

    def holds(self, day: dt.date) -> bool:
        return self.first <= day and (self.last is None or day <= self.last)


@dataclass(frozen=True)
class _Transfer:
    """The record's policy replaced ``replaced`` (of ``insurer``) and started late: the days
    ``first..last`` between are a transfer gap."""

    insurer: str
    replaced: str
    first: dt.date
    last: dt.date


@dataclass(frozen=True)
class _Span:
    """A run of days in which a coverage record counts: from its start, or the day a late
    payment restored it, to its end, or earlier when its insurer is suspended or an instalment
    goes unpaid (``unpaid``: the non-payment period that cuts it)."""

    record: CoverageRecord
    counts_until: dt.date
    suspended_from: dt.date | None
    suspension_leaf: int | None
    counts_from: dt.date = dt.date.min
    unpaid: tuple[_Unpaid, ...] = ()
    """The record's non-payment periods (every piece of the record carries them all)."""
    transfer: _Transfer | None = None
    """When the record's policy is a late replacement: the gap before it."""

    @property
    def cut_by_suspension(self) -> bool:
        return (
            self.suspended_from is not None
            and self.counts_until < self.record.end
            and self.counts_until == self.suspended_from - _ONE_DAY
        )

    def unpaid_on(self, day: dt.date) -> _Unpaid | None:
        """The non-payment period holding ``day`` while the record would otherwise count."""
        if not self.record.start <= day <= self.record.end:
            return None
        if self.suspended_from is not None and day >= self.suspended_from:
            return None
        return next((period for period in self.unpaid if period.holds(day)), None)


class CoverageReader:
    """Read-only queries over the projections; safe from many threads."""

    def __init__(self, engine: Engine, clock: Clock | None = None) -> None:
        """``clock``: what "today" is for the non-payment rule (an instalment's grace passes
        with time, not with an entry)."""
        self._engine = engine
        self._clock: Clock = clock or SystemClock()

    def _today(self) -> dt.date:
        return rules.ledger_date(self._clock.now())

    @property
    def engine(self) -> Engine:
        """The engine it reads (the card reader shares it: ledger/cards/reader.py)."""
        return self._engine

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

    def coverage_on(
        self, person: PersonRef, day: dt.date, *, counting_suspension: bool = False
    ) -> tuple[list[CoverageRecord], StoredCheckpoint]:
        """The coverages of ``person`` on ``day``, and the state. With ``counting_suspension``,
        only those still counting (their insurer not suspended by then, no instalment unpaid past
        its grace), as for certificates; without, every record whose period holds the day, each
        with ``not_counting`` set when it does not count then."""
        with self._snapshot() as connection:
            head = latest_checkpoint(connection)
            spans = _spans(connection, person, self._today())
        counting = {
            id(span.record) for span in spans if span.counts_from <= day <= span.counts_until
        }
        records: dict[int, CoverageRecord] = {}
        for span in spans:
            record = span.record
            if id(record) in records or not record.start <= day <= record.end:
                continue
            if id(record) in counting:
                records[id(record)] = record
            elif not counting_suspension:
                reason = "NON_PAYMENT" if span.unpaid_on(day) else "INSURER_SUSPENDED"
                records[id(record)] = replace(record, not_counting=reason)
        return list(records.values()), head

    def check_household(
        self,
        sponsor: PersonRef,
        members: Sequence[tuple[PersonRef, Relationship | None]],
        as_of: dt.date,
        through: dt.date,
    ) -> HouseholdVerdict:
        """Whether every member is covered on every day of ``as_of..through``, and why not.

        ``members`` empty: the people the ledger has on record under ``sponsor`` whose coverage
        has not ended before ``as_of``. The sponsor is always checked too: a household whose
        sponsor is not covered, or of which the ledger has no record at all, is not renewable.
        """
        today = self._today()
        with self._snapshot() as connection:
            head = latest_checkpoint(connection)
            asked = list(members) or _members_on_record(connection, sponsor, as_of)
            if all(person.key != sponsor.key for person, _ in asked):
                asked = [*asked, (sponsor, Relationship.SELF)]
            found = _household_spans(connection, [person for person, _ in asked], today)
            verdicts = [
                _member_verdict(person, relationship, spans, as_of, through)
                for (person, relationship), (spans, _) in zip(asked, found, strict=True)
            ]
            person_tokens = [
                (person, token) for (person, _), (_, token) in zip(asked, found, strict=True)
            ]
        leaves = sorted(
            {leaf for verdict, _ in verdicts for c in verdict.coverages for leaf in c.leaf_indexes}
            | {
                leaf
                for _, suspension in verdicts
                if suspension is not None
                for leaf in [suspension]
            }
        )
        return HouseholdVerdict(
            sponsor=sponsor,
            as_of=as_of,
            through=through,
            renewable=all(verdict.covered for verdict, _ in verdicts),
            members=tuple(verdict for verdict, _ in verdicts),
            tree_size=head.tree_size,
            checkpoint=head.note_bytes,
            leaf_indexes=tuple(leaves),
            person_tokens=tuple(person_tokens),
        )

    def history(self, subject: str | PersonRef, after: int | None, page_size: int) -> HistoryPage:
        """Entries indexed under ``subject`` (see ``subject_entries``), after ``after``; a
        person is looked up by token (none: an empty page)."""
        with self._snapshot() as connection:
            head = latest_checkpoint(connection)
            if isinstance(subject, PersonRef):
                token = _token_of(connection, subject)
                if token is None:
                    return HistoryPage(entries=(), more=False, checkpoint=head)
                subject = f"person:{token}"
            query = (
                select(log_entries.c.leaf_index, log_entries.c.entry_bytes)
                .join(subject_entries, subject_entries.c.leaf_index == log_entries.c.leaf_index)
                .where(subject_entries.c.subject == subject)
                .order_by(log_entries.c.leaf_index)
                .limit(page_size + 1)
            )
            if after is not None:
                query = query.where(log_entries.c.leaf_index > after)
            rows = list(connection.execute(query))
        entries = tuple((int(row.leaf_index), bytes(row.entry_bytes)) for row in rows[:page_size])
        return HistoryPage(entries=entries, more=len(rows) > page_size, checkpoint=head)


_PERSON = person_identities.alias("person_identity")
_SPONSOR = person_identities.alias("sponsor_identity")
_BY_IDENTIFIER = (
    (_PERSON.c.country == bindparam("country"))
    & (_PERSON.c.id_type == bindparam("id_type"))
    & (_PERSON.c.value == bindparam("value"))
)
_SELECT_TOKEN = select(_PERSON.c.token).where(_BY_IDENTIFIER)

_SPANS_FROM = (
    select(
        coverages,
        policies.c.plan,
        policies.c.instalments,
        insurers.c.suspended_from,
        insurers.c.leaf_index.label("insurer_leaf_index"),
        _SPONSOR.c.id_type.label("sponsor_id_type"),
        _SPONSOR.c.value.label("sponsor_value"),
        _SPONSOR.c.country.label("sponsor_country"),
        transfer_gaps.c.replaced_insurer_id,
        transfer_gaps.c.replaced_policy_id,
        transfer_gaps.c.first_day.label("gap_first"),
        transfer_gaps.c.last_day.label("gap_last"),
    )
    .select_from(_PERSON)
    .join(coverages, coverages.c.person_key == _PERSON.c.token)
    .join(
        policies,
        (policies.c.insurer_id == coverages.c.insurer_id)
        & (policies.c.policy_id == coverages.c.policy_id),
    )
    # Outer: a renewal authority's coverage has no licence row (its role, not a licence, lets
    # it collect fees), and it is never suspended.
    .join(insurers, insurers.c.insurer_id == coverages.c.insurer_id, isouter=True)
    .join(_SPONSOR, _SPONSOR.c.token == coverages.c.sponsor_key, isouter=True)
    .join(
        transfer_gaps,
        (transfer_gaps.c.insurer_id == coverages.c.insurer_id)
        & (transfer_gaps.c.policy_id == coverages.c.policy_id),
        isouter=True,
    )
)
_SELECT_SPANS = _SPANS_FROM.where(
    _BY_IDENTIFIER, coverages.c.end_date >= coverages.c.start_date
).order_by(coverages.c.start_date, coverages.c.insurer_id, coverages.c.policy_id)
"""Built once (SQLAlchemy then reuses its compiled form): a person's non-empty coverages, by the
vault's unique identifier index, then the (person_key, start_date) index; docs/coverage.md
shows the query plan."""


@functools.lru_cache(maxsize=CHUNK)
def _select_spans_of(count: int) -> Select[Any]:
    """:data:`_SELECT_SPANS` of ``count`` people at once (parameters ``country_<n>``,
    ``id_type_<n>``, ``value_<n>``), each row naming its person; built once per count (at most
    :data:`CHUNK`): a ``MULTI-INDEX OR`` of identifier searches (ledger/storage/row_match.py)."""
    key = (_PERSON.c.country, _PERSON.c.id_type, _PERSON.c.value)
    names: list[tuple[BindParameter[Any], ...]] = [
        tuple(bindparam(f"{column}_{n}") for column in ("country", "id_type", "value"))
        for n in range(count)
    ]
    [any_person] = any_row(key, names)
    return (
        _SPANS_FROM.add_columns(
            _PERSON.c.country.label("person_country"),
            _PERSON.c.id_type.label("person_id_type"),
            _PERSON.c.value.label("person_value"),
        )
        .where(any_person, coverages.c.end_date >= coverages.c.start_date)
        .order_by(
            coverages.c.person_key,
            coverages.c.start_date,
            coverages.c.insurer_id,
            coverages.c.policy_id,
        )
    )


def _identifier(person: PersonRef) -> dict[str, str]:
    return {"country": person.country, "id_type": person.id_type, "value": person.value}


def _token_of(connection: Connection, person: PersonRef) -> str | None:
    token: str | None = connection.execute(_SELECT_TOKEN, _identifier(person)).scalar()
    return token


_SELECT_INSTALMENTS = select(
    premium_instalments.c.insurer_id,
    premium_instalments.c.policy_id,
    premium_instalments.c.due_date,
    premium_instalments.c.amount_minor,
).order_by(premium_instalments.c.position)
_SELECT_PAYMENTS = select(
    premiums.c.insurer_id,
    premiums.c.policy_id,
    premiums.c.paid_on,
    premiums.c.amount_minor,
).order_by(premiums.c.leaf_index)
"""Both: of the policies any_row names (a row-value IN list would scan the table on SQLite)."""


def _spans(connection: Connection, person: PersonRef, today: dt.date) -> list[_Span]:
    """Every non-empty coverage of a person, by start date, with its insurer's suspension,
    split where instalments unpaid past their grace (as of ``today``) stop it counting."""
    return _spans_and_token(connection, person, today)[0]


def _spans_and_token(
    connection: Connection, person: PersonRef, today: dt.date
) -> tuple[list[_Span], str | None]:
    """:func:`_spans`, and the person's token in the vault (None: the vault does not know
    them)."""
    rows = list(connection.execute(_SELECT_SPANS, _identifier(person)))
    scheduled = sorted({(row.insurer_id, row.policy_id) for row in rows if row.instalments})
    unpaid = _non_payment(connection, scheduled, today)
    # The token is on every coverage row; only a person with none needs the vault asked.
    token = str(rows[0].person_key) if rows else _token_of(connection, person)
    memberships = memberships_of(connection, token) if token is not None else []
    return _assembled(person, rows, unpaid, token, memberships), token


def _household_spans(
    connection: Connection, people: Sequence[PersonRef], today: dt.date
) -> list[tuple[list[_Span], str | None]]:
    """:func:`_spans_and_token` of each of ``people``, in as many statements whatever their
    number (up to :data:`CHUNK`): every coverage of them, the vault's tokens of those with
    none (if any), the non-payment periods of their policies and their cohort memberships."""
    wanted = sorted(set(people))
    rows_of: dict[PersonRef, list[Row[Any]]] = {person: [] for person in wanted}
    for start in range(0, len(wanted), CHUNK):
        chunk = wanted[start : start + CHUNK]
        parameters = {
            f"{column}_{n}": value
            for n, person in enumerate(chunk)
            for column, value in _identifier(person).items()
        }
        for row in connection.execute(_select_spans_of(len(chunk)), parameters):
            rows_of[
                PersonRef(
                    id_type=row.person_id_type, value=row.person_value, country=row.person_country
                )
            ].append(row)
    # The token is on every coverage row; only the people with none need the vault asked.
    tokens = {person: str(rows[0].person_key) for person, rows in rows_of.items() if rows}
    tokens.update(tokens_of_in(connection, [person for person in wanted if person not in tokens]))
    rows = [row for person in wanted for row in rows_of[person]]
    scheduled = sorted({(row.insurer_id, row.policy_id) for row in rows if row.instalments})
    unpaid = _non_payment(connection, scheduled, today)
    memberships = memberships_of_tokens(connection, list(tokens.values()))
    found: dict[PersonRef, tuple[list[_Span], str | None]] = {}
    for person in wanted:
        token = tokens.get(person)
        held = memberships.get(token, []) if token is not None else []
        found[person] = (_assembled(person, rows_of[person], unpaid, token, held), token)
    return [found[person] for person in people]


def _assembled(
    person: PersonRef,
    rows: Sequence[Row[Any]],
    unpaid: dict[tuple[str, str], tuple[_Unpaid, ...]],
    token: str | None,
    memberships: Sequence[CohortMembership],
) -> list[_Span]:
    """The person's spans from their coverage rows (by start date), each split where the
    ``unpaid`` periods of its policy stop it counting, with their funded-cohort spans."""
    split: list[_Span] = []
    for row in rows:
        span = _span(row, person)
        periods = unpaid.get((span.record.insurer_id, span.record.policy_id), ())
        split.extend(_pieces(span, periods) if periods else [span])
    funded = _cohort_spans(person, token, memberships) if token is not None else []
    if funded:
        split = sorted([*split, *funded], key=lambda span: span.record.start)
    return split


def _cohort_spans(
    person: PersonRef, token: str, memberships: Sequence[CohortMembership]
) -> list[_Span]:
    """Task D (issue 11): the person's funded-cohort coverage, as spans that count only on the
    days a contribution pays for them (ledger/funds/rules.py, docs/funds.md)."""
    found: list[_Span] = []
    for membership in memberships:
        cohort = membership.cohort
        record = CoverageRecord(
            person=person,
            sponsor=person,
            relationship=Relationship.SELF,
            insurer_id=cohort.fund_id,
            policy_id=cohort.cohort_id,
            plan=FUNDED_COHORT_PLAN,
            start=cohort.period_start,
            end=cohort.last_covered_day,
            cancelled=cohort.ended_from is not None and cohort.ended_from <= cohort.period_end,
            end_reason=PERIOD_END if cohort.ended_from is None else COHORT_ENDED,
            leaf_indexes=tuple(
                sorted(
                    {
                        *membership.leaf_indexes,
                        *(c.leaf_index for c in membership.contributions),
                    }
                )
            ),
            person_token=token,
            funder_id=cohort.funder_id,
        )
        span = _Span(
            record=record,
            counts_from=record.start,
            counts_until=record.end,
            suspended_from=None,
            suspension_leaf=None,
        )
        periods = tuple(
            _Unpaid(first, last)
            for first, last in unpaid_periods(cohort, membership.position, membership.contributions)
        )
        found.extend(_pieces(span, periods) if periods else [span])
    return found


def _non_payment(
    connection: Connection, keys: list[tuple[str, str]], today: dt.date
) -> dict[tuple[str, str], tuple[_Unpaid, ...]]:
    """The non-payment periods of the policies ``keys`` that state a premium schedule."""
    if not keys:
        return {}
    schedules: dict[tuple[str, str], list[rules.Instalment]] = {}
    instalment_key = (premium_instalments.c.insurer_id, premium_instalments.c.policy_id)
    rows = [
        row
        for condition in any_row(instalment_key, keys)
        for row in connection.execute(_SELECT_INSTALMENTS.where(condition))
    ]
    for row in rows:
        schedules.setdefault((row.insurer_id, row.policy_id), []).append(
            rules.Instalment(row.due_date, int(row.amount_minor))
        )
    if not schedules:
        return {}
    payments: dict[tuple[str, str], list[rules.Payment]] = {}
    paid = [
        row
        for condition in any_row((premiums.c.insurer_id, premiums.c.policy_id), sorted(schedules))
        for row in connection.execute(_SELECT_PAYMENTS.where(condition))
    ]
    for row in paid:
        # NULL: recorded before migration 0012 (until rebuild): counted as paid in time.
        paid_on = row.paid_on if row.paid_on is not None else dt.date.min
        payments.setdefault((row.insurer_id, row.policy_id), []).append(
            rules.Payment(paid_on, int(row.amount_minor))
        )
    found: dict[tuple[str, str], tuple[_Unpaid, ...]] = {}
    for key, schedule in schedules.items():
        periods = rules.non_payment_periods(tuple(schedule), tuple(payments.get(key, ())), today)
        if periods:
            found[key] = tuple(_Unpaid(first, last) for first, last in periods)
    return found


def _pieces(span: _Span, periods: tuple[_Unpaid, ...]) -> list[_Span]:
    """``span`` without the days of ``periods`` (each piece carries them, for the verdict)."""
    pieces: list[_Span] = []
    cursor: dt.date | None = span.record.start
    for period in periods:
        if cursor is None or period.first > span.counts_until:
            break
        if period.last is not None and period.last < cursor:
            continue
        if period.first > cursor:
            pieces.append(
                replace(
                    span, counts_from=cursor, counts_until=period.first - _ONE_DAY, unpaid=periods
                )
            )
        cursor = None if period.last is None else period.last + _ONE_DAY
    if cursor is not None and cursor <= span.counts_until:
        pieces.append(replace(span, counts_from=cursor, unpaid=periods))
    if not pieces:
        # Not counting on any day: an empty piece keeps the record for the verdict's reasons.
        pieces.append(
            replace(
                span,
                counts_from=span.record.start,
                counts_until=span.record.start - _ONE_DAY,
                unpaid=periods,
            )
        )
    return pieces


def _sponsor(row: Row[Any]) -> PersonRef:
    if row.sponsor_id_type is None:
        return ERASED_PERSON
    return PersonRef(
        id_type=row.sponsor_id_type, value=row.sponsor_value, country=row.sponsor_country
    )


def _span(row: Row[Any], person: PersonRef) -> _Span:
    record = CoverageRecord(
        person=person,
        sponsor=_sponsor(row),
        relationship=Relationship(row.relationship),
        insurer_id=row.insurer_id,
        policy_id=row.policy_id,
        plan=row.plan,
        start=row.start_date,
        end=row.end_date,
        cancelled=row.end_reason != PERIOD_END,
        end_reason=row.end_reason,
        leaf_indexes=tuple(int(leaf) for leaf in row.leaf_indexes.split(",")),
        person_token=row.person_key,
    )
    suspended_from: dt.date | None = row.suspended_from
    counts_until = record.end
    if suspended_from is not None:
        counts_until = min(counts_until, suspended_from - _ONE_DAY)
    transfer = None
    if row.gap_first is not None:
        transfer = _Transfer(
            insurer=row.replaced_insurer_id,
            replaced=row.replaced_policy_id,
            first=row.gap_first,
            last=row.gap_last,
        )
    return _Span(
        record=record,
        transfer=transfer,
        counts_from=record.start,
        counts_until=counts_until,
        suspended_from=suspended_from,
        suspension_leaf=int(row.insurer_leaf_index) if suspended_from is not None else None,
    )


def _members_on_record(
    connection: Connection, sponsor: PersonRef, as_of: dt.date
) -> list[tuple[PersonRef, Relationship | None]]:
    """The people on record under ``sponsor`` (erased ones are gone: their identifier is)."""
    token = _token_of(connection, sponsor)
    if token is None:
        return []
    member = person_identities.alias("member_identity")
    rows = connection.execute(
        select(
            coverages.c.person_key,
            coverages.c.relationship,
            member.c.id_type,
            member.c.value,
            member.c.country,
        )
        .join(member, member.c.token == coverages.c.person_key)
        .where(coverages.c.sponsor_key == token, coverages.c.end_date >= as_of)
        .order_by(coverages.c.person_key, coverages.c.start_date.desc())
    )
    found: dict[PersonRef, Relationship] = {}
    for row in rows:
        person = PersonRef(id_type=row.id_type, value=row.value, country=row.country)
        found.setdefault(person, Relationship(row.relationship))
    return list(found.items())


def _transfer_gap(day: dt.date, later: _Span) -> Message | None:
    """The message for an uncovered ``day`` inside the transfer gap before ``later``, if any."""
    transfer = later.transfer
    if transfer is None or not transfer.first <= day <= transfer.last:
        return None
    return Message(
        VERDICT_TRANSFER_GAP,
        {
            "start": day,
            "end": later.record.start - _ONE_DAY,
            "policy": later.record.policy_id,
            "replaced": transfer.replaced,
            "insurer": transfer.insurer,
        },
    )


def _suspended(span: _Span) -> Message:
    check(span.suspended_from is not None, "a suspended span without its suspension date")
    suspended_from = cast(dt.date, span.suspended_from)
    return Message(
        VERDICT_INSURER_SUSPENDED, {"insurer": span.record.insurer_id, "date": suspended_from}
    )


def _member_verdict(  # noqa: PLR0911, PLR0912 (one branch and return per documented reason)
    person: PersonRef,
    relationship: Relationship | None,
    spans: list[_Span],
    as_of: dt.date,
    through: dt.date,
) -> tuple[MemberVerdict, int | None]:
    """The member's verdict, and the leaf of the insurer suspension it relied on, if any."""
    day = as_of
    used: list[_Span] = []
    while day <= through:
        covering = [s for s in spans if s.counts_from <= day <= s.counts_until]
        if not covering:
            break
        best = max(covering, key=lambda span: span.counts_until)
        used.append(best)
        day = best.counts_until + _ONE_DAY
    known = relationship or (used[0].record.relationship if used else None)
    if not known and spans:
        known = spans[-1].record.relationship

    def verdict(
        reason: BlockReason, message: Message, relied_on: Sequence[_Span]
    ) -> tuple[MemberVerdict, int | None]:
        suspension = (
            relied_on[-1].suspension_leaf if reason is BlockReason.INSURER_SUSPENDED else None
        )
        return MemberVerdict(
            person=person,
            relationship=known or Relationship.OTHER,
            covered=reason is BlockReason.COVERED,
            reason=reason,
            detail=i18n.render(message, i18n.DEFAULT),
            message=message,
            covered_until=day - _ONE_DAY if used else None,
            coverages=tuple(dict.fromkeys(span.record for span in relied_on)),
        ), suspension

    if day > through:
        return verdict(
            BlockReason.COVERED, Message(VERDICT_COVERED_THROUGH, {"date": day - _ONE_DAY}), used
        )
    unpaid = [(s, period) for s in spans if (period := s.unpaid_on(day)) is not None]
    if unpaid and unpaid[0][0].record.funder_id:
        span, period = unpaid[0]
        return verdict(
            BlockReason.NON_PAYMENT,
            Message(
                VERDICT_COHORT_NOT_PAID,
                {
                    "date": max(period.first, day),
                    "cohort": span.record.policy_id,
                    "funder": span.record.funder_id,
                },
            ),
            [*used, span],
        )
    if unpaid:
        span, period = unpaid[0]
        return verdict(
            BlockReason.NON_PAYMENT,
            Message(
                VERDICT_NON_PAYMENT,
                {"date": period.first, "policy": span.record.policy_id},
            ),
            [*used, span],
        )
    later = [s for s in spans if day < s.record.start <= through]
    if not used:
        suspended = [
            s
            for s in spans
            if s.record.start <= day <= s.record.end and s.suspended_from is not None
        ]
        if suspended:
            span = suspended[0]
            return verdict(
                BlockReason.INSURER_SUSPENDED,
                _suspended(span),
                suspended,
            )
        if later and (gap := _transfer_gap(day, later[0])) is not None:
            return verdict(BlockReason.TRANSFER_GAP, gap, later[:1])
        if later:
            return verdict(
                BlockReason.NO_POLICY,
                Message(VERDICT_STARTS_LATER, {"date": as_of, "start": later[0].record.start}),
                later[:1],
            )
        ended = [s for s in spans if s.record.end < as_of]
        if ended:
            last = max(ended, key=lambda span: span.record.end)
            return verdict(
                BlockReason.NO_POLICY,
                Message(
                    VERDICT_LAST_ENDED,
                    {
                        "date": as_of,
                        "end": last.record.end,
                        "reason": last.record.end_reason,
                        "policy": last.record.policy_id,
                    },
                ),
                [last],
            )
        return verdict(BlockReason.NO_POLICY, Message(VERDICT_NO_POLICY, {"date": as_of}), [])
    last = used[-1]
    if last.cut_by_suspension:
        return verdict(BlockReason.INSURER_SUSPENDED, _suspended(last), used)
    if later and (gap := _transfer_gap(day, later[0])) is not None:
        return verdict(BlockReason.TRANSFER_GAP, gap, [*used, later[0]])
    if later:
        return verdict(
            BlockReason.GAP,
            Message(VERDICT_GAP, {"start": day, "end": later[0].record.start - _ONE_DAY}),
            [*used, later[0]],
        )
    if last.record.end_reason == PERIOD_END:
        return verdict(
            BlockReason.ENDS_BEFORE,
            Message(VERDICT_ENDS_ON, {"date": last.record.end, "policy": last.record.policy_id}),
            used,
        )
    return verdict(
        BlockReason.CANCELLED,
        Message(
            VERDICT_CANCELLED,
            {"date": day, "reason": last.record.end_reason, "policy": last.record.policy_id},
        ),
        used,
    )
