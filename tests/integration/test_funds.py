"""Funded cohorts (task D, issue 11; ledger/funds/, docs/funds.md) at append, on SQLite and
PostgreSQL: every refusal writes nothing (log, checkpoints and every projection unchanged) and
has an accepted twin; the coverage reader counts a cohort's coverage only while it is paid."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from sqlalchemy import Engine, func, select

from ledger import limits
from ledger.clock import FixedClock
from ledger.coverage.model import BlockReason, Relationship
from ledger.coverage.reader import CoverageReader, _household_spans, _spans_and_token
from ledger.coverage.rebuild import rebuild_and_compare
from ledger.errors import LedgerError, ResourceExhausted
from ledger.funds.projection import memberships_of, memberships_of_tokens
from ledger.funds.reader import FundTotalsReader
from ledger.signers import SignerRole
from ledger.signing import Ed25519Signer
from ledger.storage.append import Appender, Receipt
from ledger.storage.tables import PROJECTION_TABLES, checkpoints, log_entries
from ledger.v1 import events_pb2
from tests.builders import (
    cohort_ended,
    cohort_enrolled,
    contribution_paid,
    person_ref,
    sdg,
    sudanese,
)
from tests.conftest import key_event, onboard_directly, pending

NOW = dt.datetime(2026, 3, 15, 12, 0, tzinfo=dt.UTC)
JAN1, DEC31 = dt.date(2026, 1, 1), dt.date(2026, 12, 31)
JAN31, FEB1, FEB28, MAR1, MAR31 = (
    dt.date(2026, 1, 31),
    dt.date(2026, 2, 1),
    dt.date(2026, 2, 28),
    dt.date(2026, 3, 1),
    dt.date(2026, 3, 31),
)
ZAKAT, OTHER = "zakat-chamber", "other-funder"


class Funds:
    """A log with two funders; helpers to append and to snapshot everything."""

    def __init__(self, engine: Engine, appender: Appender, signers: dict[str, Any]) -> None:
        self.engine = engine
        self.appender = appender
        self.signers = signers
        self.reader = CoverageReader(engine, FixedClock(NOW))

    def append(self, signer: str, event: events_pb2.Event) -> Receipt | LedgerError:
        [outcome] = self.appender.append_batch([pending(self.signers[signer], event)], NOW)
        return outcome

    def accept(self, signer: str, event: events_pb2.Event) -> Receipt:
        outcome = self.append(signer, event)
        assert isinstance(outcome, Receipt), outcome
        return outcome

    def refuse(self, signer: str, event: events_pb2.Event, reason: str) -> LedgerError:
        before = self.snapshot()
        outcome = self.append(signer, event)
        assert isinstance(outcome, LedgerError), outcome
        assert outcome.reason == reason, (outcome.reason, outcome.message)
        assert self.snapshot() == before, f"refused ({reason}) but something was written"
        return outcome

    def snapshot(self) -> dict[str, Any]:
        with self.engine.connect() as connection:
            state: dict[str, Any] = {
                table.name: sorted(map(tuple, connection.execute(select(table))), key=repr)
                for table in PROJECTION_TABLES
            }
            for table in (log_entries, checkpoints):
                state[table.name] = connection.execute(
                    select(func.count()).select_from(table)
                ).scalar_one()
        return state


@pytest.fixture
def funds(engine: Engine, log_signer: Ed25519Signer, operator_signer: Ed25519Signer) -> Funds:
    appender = Appender(engine, log_signer, log_signer.name)
    appender.initialize(NOW)
    zakat = Ed25519Signer.generate(ZAKAT)
    onboard_directly(engine, appender, operator_signer, ZAKAT, zakat, NOW, role=SignerRole.FUNDER)
    other = Ed25519Signer.generate(OTHER)
    world = Funds(engine, appender, {"operator": operator_signer, ZAKAT: zakat, OTHER: other})
    world.accept("operator", key_event(OTHER, other, SignerRole.FUNDER))
    return world


def _covered(funds: Funds, who: Any, day: dt.date) -> Any:
    verdict = funds.reader.check_household(person_ref(who), [], day, day)
    return verdict.members[0]


def test_a_paid_member_is_covered_and_an_unpaid_month_is_not(funds: Funds) -> None:
    people = [sudanese(n) for n in range(1, 4)]
    funds.accept(ZAKAT, cohort_enrolled(ZAKAT, "Z-1", [(p, "SD-KH") for p in people], JAN1, DEC31))
    funds.accept(ZAKAT, contribution_paid(ZAKAT, "Z-1", JAN1, FEB28, sdg(1_000 * 3 * 2), 3))

    paid = _covered(funds, people[0], dt.date(2026, 2, 10))
    assert paid.covered and paid.reason is BlockReason.COVERED
    [record] = paid.coverages
    assert (record.funder_id, record.insurer_id, record.policy_id) == (ZAKAT, "sd-nhif", "Z-1")
    assert paid.relationship is Relationship.SELF

    unpaid = _covered(funds, people[0], dt.date(2026, 3, 10))
    assert not unpaid.covered and unpaid.reason is BlockReason.NON_PAYMENT
    assert "Z-1" in unpaid.detail and ZAKAT in unpaid.detail

    records, _ = funds.reader.coverage_on(person_ref(people[1]), dt.date(2026, 3, 10))
    assert [r.not_counting for r in records] == ["NON_PAYMENT"]
    records, _ = funds.reader.coverage_on(
        person_ref(people[1]), dt.date(2026, 3, 10), counting_suspension=True
    )
    assert records == []
    assert rebuild_and_compare(funds.engine).consistent


def test_a_member_enrolled_after_a_payment_waits_for_the_next_month_paid(funds: Funds) -> None:
    first, late = sudanese(10), sudanese(11)
    funds.accept(ZAKAT, cohort_enrolled(ZAKAT, "Z-2", [(first, "SD-GZ")], JAN1, DEC31))
    funds.accept(ZAKAT, contribution_paid(ZAKAT, "Z-2", JAN1, JAN31, sdg(1_000), 1))
    funds.accept(ZAKAT, cohort_enrolled(ZAKAT, "Z-2", [(late, "SD-GZ")], JAN1, DEC31))
    assert not _covered(funds, late, dt.date(2026, 1, 20)).covered
    assert _covered(funds, first, dt.date(2026, 1, 20)).covered
    funds.accept(ZAKAT, contribution_paid(ZAKAT, "Z-2", FEB1, FEB28, sdg(2_000), 2))
    assert _covered(funds, late, dt.date(2026, 2, 20)).covered
    assert rebuild_and_compare(funds.engine).consistent


def test_an_ended_cohort_covers_nobody_from_its_end(funds: Funds) -> None:
    member = sudanese(20)
    funds.accept(ZAKAT, cohort_enrolled(ZAKAT, "Z-3", [(member, "SD-KA")], JAN1, DEC31))
    funds.accept(ZAKAT, contribution_paid(ZAKAT, "Z-3", JAN1, FEB28, sdg(2_000), 1))
    funds.refuse(ZAKAT, cohort_ended(ZAKAT, "Z-3", FEB1), "END_BEFORE_PAID_MONTHS")
    funds.accept(ZAKAT, cohort_ended(ZAKAT, "Z-3", MAR1))
    verdict = _covered(funds, member, MAR1)
    assert not verdict.covered
    assert _covered(funds, member, FEB1).covered
    assert rebuild_and_compare(funds.engine).consistent


def test_refusals_write_nothing_and_each_has_an_accepted_twin(funds: Funds) -> None:
    members = [sudanese(n) for n in range(30, 33)]
    funds.accept(
        ZAKAT, cohort_enrolled(ZAKAT, "Z-4", [(m, "SD-NR") for m in members[:2]], JAN1, DEC31)
    )
    # Unknown cohort, then another funder's cohort.
    funds.refuse(
        ZAKAT, contribution_paid(ZAKAT, "NO-SUCH", JAN1, JAN31, sdg(2_000), 2), "COHORT_NOT_FOUND"
    )
    funds.refuse(
        OTHER, contribution_paid(OTHER, "Z-4", JAN1, JAN31, sdg(2_000), 2), "COHORT_NOT_OWN"
    )
    funds.refuse(
        OTHER,
        cohort_enrolled(OTHER, "Z-4", [(members[2], "SD-NR")], JAN1, DEC31),
        "COHORT_NOT_OWN",
    )
    funds.refuse(OTHER, cohort_ended(OTHER, "Z-4", MAR1), "COHORT_NOT_OWN")
    # Wrong currency, wrong count, wrong amount, outside the cohort.
    usd = events_pb2.Event()
    usd.CopyFrom(contribution_paid(ZAKAT, "Z-4", JAN1, JAN31, sdg(2_000), 2))
    usd.contribution_paid.amount.currency_code = "USD"
    funds.refuse(ZAKAT, usd, "CURRENCY_MISMATCH")
    funds.refuse(
        ZAKAT,
        contribution_paid(ZAKAT, "Z-4", JAN1, JAN31, sdg(3_000), 3),
        "BENEFICIARY_COUNT_MISMATCH",
    )
    funds.refuse(
        ZAKAT,
        contribution_paid(ZAKAT, "Z-4", JAN1, JAN31, sdg(1_999), 2),
        "CONTRIBUTION_AMOUNT_MISMATCH",
    )
    funds.refuse(
        ZAKAT,
        contribution_paid(ZAKAT, "Z-4", dt.date(2025, 12, 1), JAN31, sdg(4_000), 2),
        "PERIOD_OUTSIDE_COHORT",
    )
    funds.accept(ZAKAT, contribution_paid(ZAKAT, "Z-4", JAN1, FEB28, sdg(4_000), 2))
    # Overlapping months.
    funds.refuse(
        ZAKAT,
        contribution_paid(ZAKAT, "Z-4", FEB1, MAR31, sdg(4_000), 2),
        "CONTRIBUTION_PERIOD_OVERLAPS",
    )
    funds.accept(ZAKAT, contribution_paid(ZAKAT, "Z-4", MAR1, MAR31, sdg(2_000), 2))
    # A beneficiary twice in one cohort (across events); other terms.
    funds.refuse(
        ZAKAT,
        cohort_enrolled(ZAKAT, "Z-4", [(members[0], "SD-NR")], JAN1, DEC31),
        "BENEFICIARY_ALREADY_ENROLLED",
    )
    funds.refuse(
        ZAKAT,
        cohort_enrolled(ZAKAT, "Z-4", [(members[2], "SD-NR")], JAN1, dt.date(2026, 11, 30)),
        "COHORT_TERMS_DIFFER",
    )
    funds.accept(ZAKAT, cohort_enrolled(ZAKAT, "Z-4", [(members[2], "SD-NR")], JAN1, DEC31))
    # The same person in another funder's cohort is fine.
    funds.accept(OTHER, cohort_enrolled(OTHER, "O-1", [(members[0], "SD-NR")], JAN1, DEC31))
    # Ended: no more enrolments, payments or ends.
    funds.accept(ZAKAT, cohort_ended(ZAKAT, "Z-4", dt.date(2026, 6, 1)))
    funds.refuse(
        ZAKAT,
        cohort_enrolled(ZAKAT, "Z-4", [(sudanese(40), "SD-NR")], JAN1, DEC31),
        "COHORT_ENDED",
    )
    funds.refuse(
        ZAKAT,
        contribution_paid(ZAKAT, "Z-4", dt.date(2026, 6, 1), dt.date(2026, 6, 30), sdg(3_000), 3),
        "COHORT_ENDED",
    )
    funds.refuse(ZAKAT, cohort_ended(ZAKAT, "Z-4", dt.date(2026, 7, 1)), "COHORT_ENDED")
    funds.accept(
        ZAKAT,
        contribution_paid(ZAKAT, "Z-4", dt.date(2026, 4, 1), dt.date(2026, 5, 31), sdg(6_000), 3),
    )
    assert rebuild_and_compare(funds.engine).consistent


def test_one_batch_enrols_a_cohort_in_several_events(funds: Funds) -> None:
    events = [
        cohort_enrolled(
            ZAKAT, "Z-5", [(sudanese(100 + 10 * k + n), "SD-DN") for n in range(10)], JAN1, DEC31
        )
        for k in range(5)
    ]
    events.append(contribution_paid(ZAKAT, "Z-5", JAN1, JAN31, sdg(50_000), 50))
    outcomes = funds.appender.append_batch([pending(funds.signers[ZAKAT], e) for e in events], NOW)
    assert all(isinstance(outcome, Receipt) for outcome in outcomes), outcomes
    assert _covered(funds, sudanese(149), dt.date(2026, 1, 5)).covered
    assert rebuild_and_compare(funds.engine).consistent


def test_totals_over_the_row_limit_are_refused(
    funds: Funds, monkeypatch: pytest.MonkeyPatch
) -> None:
    funds.accept(ZAKAT, cohort_enrolled(ZAKAT, "Z-6", [(sudanese(200), "SD-KH")], JAN1, DEC31))
    reader = FundTotalsReader(funds.engine, FixedClock(NOW))
    answer = reader.totals(ZAKAT, JAN1, DEC31)
    assert len(answer.totals) == 12
    assert answer.checkpoint.tree_size > 0
    assert [t.owed_minor for t in answer.totals[:4]] == [1_000, 1_000, 1_000, 0]
    monkeypatch.setattr(limits, "fund_totals_rows_max", 11)
    with pytest.raises(ResourceExhausted) as refused:
        reader.totals(ZAKAT, JAN1, DEC31)
    assert refused.value.reason == "FUND_TOTALS_TOO_MANY_ROWS"
    assert len(reader.totals(ZAKAT, JAN1, dt.date(2026, 11, 1)).totals) == 11


def test_a_household_read_at_once_equals_each_member_read_alone(funds: Funds) -> None:
    """CheckHousehold reads its members' cohort memberships in one go: the same funded spans
    (unpaid months cut out) as the read of each member alone, for members of several cohorts."""
    people = [sudanese(n) for n in range(1, 5)]
    funds.accept(
        ZAKAT, cohort_enrolled(ZAKAT, "Z-1", [(p, "SD-KH") for p in people[:3]], JAN1, DEC31)
    )
    funds.accept(ZAKAT, contribution_paid(ZAKAT, "Z-1", JAN1, FEB28, sdg(1_000 * 3 * 2), 3))
    funds.accept(
        OTHER, cohort_enrolled(OTHER, "O-1", [(p, "SD-KH") for p in people[1:]], JAN1, DEC31)
    )
    refs = [person_ref(p) for p in [*people, sudanese(99)]]
    with funds.engine.connect() as connection, connection.begin():
        alone = [_spans_and_token(connection, p, MAR1) for p in refs]
        assert _household_spans(connection, refs, MAR1) == alone
    funders = [sorted({span.record.funder_id for span in spans}) for spans, _ in alone[:4]]
    assert funders == [[ZAKAT], [OTHER, ZAKAT], [OTHER, ZAKAT], [OTHER]]
    assert alone[-1] == ([], None)  # nobody the vault knows


def test_the_memberships_of_many_tokens_at_once_equal_each_tokens_own(funds: Funds) -> None:
    """The membership statement built once per number of tokens: for every number (1 to 4 of
    the members', in chunks past 100 with unknown tokens among them) the memberships of each
    token are those it has alone; unknown tokens are absent."""
    people = [sudanese(n) for n in range(1, 5)]
    funds.accept(
        ZAKAT, cohort_enrolled(ZAKAT, "Z-1", [(p, "SD-KH") for p in people[:3]], JAN1, DEC31)
    )
    funds.accept(
        OTHER, cohort_enrolled(OTHER, "O-1", [(p, "SD-KH") for p in people[1:]], JAN1, DEC31)
    )
    with funds.engine.connect() as connection, connection.begin():
        tokens = [_spans_and_token(connection, person_ref(p), MAR1)[1] for p in people]
        assert all(token is not None for token in tokens)
        known = [str(token) for token in tokens]
        alone = {token: memberships_of(connection, token) for token in known}
        for count in range(1, 5):
            assert memberships_of_tokens(connection, known[:count]) == {
                token: alone[token] for token in known[:count]
            }
        unknown = [f"unknown-{n:03}" for n in range(150)]
        assert memberships_of_tokens(connection, [*unknown[:120], *known, *unknown[120:]]) == alone
        assert memberships_of_tokens(connection, known + known) == alone
        assert memberships_of_tokens(connection, unknown) == {}
