"""Premiums matter (issue 10 item 5), wired: a policy stating a premium schedule stops counting
as coverage from the due date of an instalment unpaid past ``limits.premium_grace_days`` until
it is paid, in every answer the reader gives (household verdicts, coverage on a day, what
certificates may certify); a policy stating no schedule has no instalment obligation. On both
engines, with the reader's "today" and each payment's ledger time set explicitly."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import Engine, select, update

from ledger import limits
from ledger.clock import FixedClock
from ledger.coverage.model import BlockReason
from ledger.coverage.projector import person_ref
from ledger.coverage.reader import CoverageReader, _household_spans, _spans_and_token
from ledger.coverage.rebuild import rebuild_and_compare
from ledger.signing import Ed25519Signer
from ledger.storage.append import Appender
from ledger.storage.tables import premium_instalments, premiums
from tests.builders import R, issued, paid, person, sar
from tests.conftest import onboard_directly
from tests.integration.test_policy_rules import GULF, NOW, Log

SEP1, FEB28, MAR1, AUG31 = (
    dt.date(2026, 9, 1),
    dt.date(2027, 2, 28),
    dt.date(2027, 3, 1),
    dt.date(2027, 8, 31),
)
OWNER, CHILD, OTHER = person(300), person(301), person(302)
SCHEDULE = [(SEP1, sar(1_000)), (MAR1, sar(1_000))]


@pytest.fixture
def log(engine: Engine, log_signer: Ed25519Signer, operator_signer: Ed25519Signer) -> Log:
    """A log with one licensed insurer whose ledger time starts at ``NOW``."""
    appender = Appender(engine, log_signer, log_signer.name)
    appender.initialize(NOW)
    signers = {"operator": operator_signer, GULF: Ed25519Signer.generate(GULF)}
    onboard_directly(engine, appender, operator_signer, GULF, signers[GULF], NOW)
    return Log(engine, appender, signers)


def _at(day: dt.date) -> dt.datetime:
    return dt.datetime.combine(day, dt.time(9), tzinfo=dt.UTC)


def _reader(log: Log, today: dt.date) -> CoverageReader:
    return CoverageReader(log.engine, FixedClock(_at(today)))


def _verdict(
    log: Log, today: dt.date, as_of: dt.date, through: dt.date = AUG31
) -> tuple[BlockReason, dt.date | None, str]:
    answer = _reader(log, today).check_household(person_ref(OWNER), [], as_of, through)
    [member] = [m for m in answer.members if m.person == person_ref(OWNER)]
    assert answer.renewable is (member.reason is BlockReason.COVERED)
    return member.reason, member.covered_until, member.detail


def _counting(log: Log, today: dt.date, day: dt.date) -> list[str]:
    records, _ = _reader(log, today).coverage_on(person_ref(OWNER), day, counting_suspension=True)
    return [record.policy_id for record in records]


def _issue(log: Log) -> None:
    log.accept(
        issued(GULF, "SCHED", OWNER,
               [(OWNER, R.RELATIONSHIP_SELF), (CHILD, R.RELATIONSHIP_CHILD)],
               SEP1, AUG31, premium=sar(2_000), instalments=SCHEDULE)
    )  # fmt: skip


def test_the_schedule_is_stored_and_each_payment_keeps_its_ledger_date(log: Log) -> None:
    _issue(log)
    [payment] = log.accept(
        paid(GULF, "SCHED", sar(1_000), SEP1, AUG31), at=_at(dt.date(2026, 12, 2))
    )
    with log.engine.connect() as connection:
        schedule = connection.execute(
            select(premium_instalments.c.position, premium_instalments.c.due_date,
                   premium_instalments.c.amount_minor)
            .where(premium_instalments.c.policy_id == "SCHED")
            .order_by(premium_instalments.c.position)
        ).all()  # fmt: skip
        paid_on = connection.execute(
            select(premiums.c.paid_on).where(premiums.c.leaf_index == payment.leaf_index)
        ).scalar_one()
    assert [tuple(row) for row in schedule] == [(0, SEP1, 1_000), (1, MAR1, 1_000)]
    assert paid_on == dt.date(2026, 12, 2)


def test_an_instalment_unpaid_past_its_grace_stops_coverage_from_its_due_date(log: Log) -> None:
    _issue(log)
    within_grace = SEP1 + dt.timedelta(days=limits.premium_grace_days)
    # Within the grace the policy counts; the day after the grace, it does not, from the due date.
    assert _verdict(log, within_grace, SEP1)[0] is BlockReason.COVERED
    assert _counting(log, within_grace, SEP1) == ["SCHED"]
    today = NOW.date()
    reason, until, detail = _verdict(log, today, SEP1)
    assert (reason, until) == (BlockReason.NON_PAYMENT, None)
    assert "SCHED" in detail and "2026-09-01" in detail
    assert _counting(log, today, dt.date(2026, 10, 15)) == []
    # Without counting, the record is there, saying why it does not count.
    [record], _ = _reader(log, today).coverage_on(person_ref(OWNER), dt.date(2026, 10, 15))
    assert record.not_counting == "NON_PAYMENT"
    # The child, on the same policy, too.
    child = _reader(log, today).check_household(
        person_ref(OWNER), [(person_ref(CHILD), None)], SEP1, AUG31
    )
    assert [m.reason for m in child.members] == [BlockReason.NON_PAYMENT] * 2


def test_a_payment_restores_coverage_from_its_ledger_date(log: Log) -> None:
    _issue(log)
    log.accept(paid(GULF, "SCHED", sar(1_000), SEP1, AUG31))  # ledger date NOW: 2026-11-22
    today = dt.date(2026, 12, 1)
    assert _verdict(log, today, NOW.date(), FEB28)[0] is BlockReason.COVERED
    assert _counting(log, today, NOW.date()) == ["SCHED"]
    # The days before the payment stay uninsured.
    reason, until, _ = _verdict(log, today, dt.date(2026, 11, 1), FEB28)
    assert (reason, until) == (BlockReason.NON_PAYMENT, None)
    assert _counting(log, today, dt.date(2026, 11, 21)) == []
    # The second instalment: within its grace still counting, past it not, from its due date.
    assert _verdict(log, dt.date(2027, 3, 31), NOW.date())[0] is BlockReason.COVERED
    reason, until, _ = _verdict(log, dt.date(2027, 4, 15), NOW.date())
    assert (reason, until) == (BlockReason.NON_PAYMENT, FEB28)
    log.accept(paid(GULF, "SCHED", sar(1_000), SEP1, AUG31), at=_at(dt.date(2027, 5, 1)))
    reason, until, _ = _verdict(log, dt.date(2027, 5, 2), dt.date(2027, 5, 1))
    assert (reason, until) == (BlockReason.COVERED, AUG31)
    assert _verdict(log, dt.date(2027, 5, 2), dt.date(2027, 4, 30))[0] is BlockReason.NON_PAYMENT


def test_a_policy_stating_no_schedule_has_no_instalment_obligation(log: Log) -> None:
    log.accept(issued(GULF, "NONE", OTHER, [(OTHER, R.RELATIONSHIP_SELF)], SEP1, AUG31))
    answer = _reader(log, dt.date(2027, 8, 1)).check_household(person_ref(OTHER), [], SEP1, AUG31)
    assert answer.renewable
    assert [m.reason for m in answer.members] == [BlockReason.COVERED]


def test_rebuild_recomputes_schedules_and_payment_dates(log: Log) -> None:
    _issue(log)
    log.accept(paid(GULF, "SCHED", sar(1_000), SEP1, AUG31))
    assert rebuild_and_compare(log.engine).consistent
    with log.engine.begin() as connection:
        connection.execute(update(premiums).values(paid_on=None))
        connection.execute(
            update(premium_instalments).values(amount_minor=premium_instalments.c.amount_minor + 1)
        )
    report = rebuild_and_compare(log.engine)
    assert {d.table for d in report.divergences} == {"premiums", "premium_instalments"}
    changed = {d.table: d for d in report.divergences}
    assert changed["premiums"].rebuilt is not None
    assert changed["premiums"].rebuilt["paid_on"] == NOW.date()


@pytest.mark.parametrize("amount", [999, 0])
def test_a_part_payment_does_not_settle_the_instalment(log: Log, amount: int) -> None:
    _issue(log)
    if amount:
        log.accept(paid(GULF, "SCHED", sar(amount), SEP1, AUG31))
    assert _verdict(log, dt.date(2026, 12, 1), NOW.date())[0] is BlockReason.NON_PAYMENT


def test_a_household_read_at_once_equals_each_member_read_alone(log: Log) -> None:
    """CheckHousehold reads its members' coverages, schedules and tokens in one go: the same
    spans, in the same order, as the read of each member alone (non-payment pieces included),
    and the same token, or none for a person the vault does not know."""
    _issue(log)
    log.accept(paid(GULF, "SCHED", sar(1_000), SEP1, AUG31))
    log.accept(issued(GULF, "NONE", OTHER, [(OTHER, R.RELATIONSHIP_SELF)], SEP1, FEB28))
    log.accept(issued(GULF, "LATER", OTHER, [(OTHER, R.RELATIONSHIP_SELF)], MAR1, AUG31))
    people = [person_ref(p) for p in (CHILD, OWNER, OTHER, person(399))]
    with log.engine.connect() as connection, connection.begin():
        for today in (NOW.date(), dt.date(2027, 4, 15)):
            alone = [_spans_and_token(connection, p, today) for p in people]
            assert _household_spans(connection, people, today) == alone
            assert [token is None for _, token in alone] == [False, False, False, True]
            assert any(span.unpaid for spans, _ in alone for span in spans)
            assert [span.record.policy_id for span in alone[2][0]] == ["NONE", "LATER"]
