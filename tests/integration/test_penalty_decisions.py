"""Penalty decisions at append time, on both engines: deadlines count from the ledger time of
the entries (the batch's integration time, never occurred_at); every refusal names its rule
(and a deadline its date) and writes nothing; each has an accepted twin; a rebuild agrees."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from sqlalchemy import Engine, func, select

from ledger.compliance import decisions
from ledger.compliance.decision_store import read_decision
from ledger.coverage.rebuild import rebuild_and_compare
from ledger.errors import LedgerError
from ledger.signers import SignerRole
from ledger.signing import Ed25519Signer
from ledger.storage.append import Appender, Receipt
from ledger.storage.tables import PROJECTION_TABLES, checkpoints, log_entries, subject_entries
from ledger.v1 import events_pb2, types_pb2
from tests.builders import (
    issued,
    objection_filed,
    objection_rejected,
    penalty_assessed,
    penalty_paid,
    penalty_withdrawn,
    person,
    sar,
)
from tests.conftest import key_event, onboard_directly, pending

NOW = dt.datetime(2026, 11, 22, 12, 0, tzinfo=dt.UTC)
"""The assessment's ledger time (its events say they occurred months earlier: that never
counts)."""
DAY = dt.timedelta(days=1)
CCHI, OTHER, GULF = "cchi", "other-regulator", "gulf-health"
ESTABLISHMENT = "7001234567"
GRIEVANCE = events_pb2.OBJECTION_STAGE_GRIEVANCE
TOTAL = 150_000 + 50_000 + 90_000 + 30_000


class Log:
    """An appender with a regulator, a second regulator and an insurer."""

    def __init__(self, engine: Engine, appender: Appender, signers: dict[str, Any]) -> None:
        self.engine = engine
        self.appender = appender
        self.signers = signers

    def append(
        self, *events: events_pb2.Event, at: dt.datetime = NOW
    ) -> list[Receipt | LedgerError]:
        items = [pending(self.signers[event.insurer_id], event) for event in events]
        return self.appender.append_batch(items, at)

    def accept(self, *events: events_pb2.Event, at: dt.datetime = NOW) -> list[Receipt]:
        outcomes = self.append(*events, at=at)
        for outcome in outcomes:
            assert isinstance(outcome, Receipt), outcome
        return outcomes  # type: ignore[return-value]

    def snapshot(self) -> dict[str, Any]:
        with self.engine.connect() as connection:
            state: dict[str, Any] = {
                table.name: sorted(
                    (tuple(row) for row in connection.execute(select(table))), key=repr
                )
                for table in PROJECTION_TABLES
            }
            for table in (log_entries, checkpoints):
                state[table.name] = connection.execute(
                    select(func.count()).select_from(table)
                ).scalar_one()
        return state

    def refuse(
        self, event: events_pb2.Event, code: str, reason: str, *, at: dt.datetime = NOW
    ) -> LedgerError:
        before = self.snapshot()
        [outcome] = self.append(event, at=at)
        assert isinstance(outcome, LedgerError), f"accepted, expected {code} {reason}"
        assert (outcome.code, outcome.reason) == (code, reason), outcome.message
        assert outcome.message and outcome.details.field_violations
        assert self.snapshot() == before, "a refused event wrote something"
        return outcome

    def state(self, decision_id: str) -> decisions.DecisionState:
        with self.engine.connect() as connection:
            record = read_decision(connection, decision_id)
        assert record is not None
        return record.state


@pytest.fixture
def log(engine: Engine, log_signer: Ed25519Signer, operator_signer: Ed25519Signer) -> Log:
    appender = Appender(engine, log_signer, log_signer.name)
    appender.initialize(NOW)
    signers: dict[str, Any] = {"operator": operator_signer}
    signers[GULF] = Ed25519Signer.generate(GULF)
    onboard_directly(engine, appender, operator_signer, GULF, signers[GULF], NOW)
    log = Log(engine, appender, signers)
    for regulator in (CCHI, OTHER):
        signers[regulator] = Ed25519Signer.generate(regulator)
        log.accept(key_event(regulator, signers[regulator], SignerRole.REGULATOR))
    return log


def _decision(decision_id: str = "D1", signer: str = CCHI, **kwargs: Any) -> events_pb2.Event:
    return penalty_assessed(
        signer,
        decision_id,
        ESTABLISHMENT,
        [(person(200), 90, 150_000, 50_000), (person(201), 40, 90_000, 30_000)],
        **kwargs,
    )


def _deadline(error: LedgerError) -> str:
    return error.details.metadata["deadline"]


def test_a_decision_is_recorded_with_its_ledger_date_and_indexed(log: Log) -> None:
    [receipt] = log.accept(_decision(), at=NOW)
    state = log.state("D1")
    assert state.assessed_on == NOW.date()  # the batch's date, not occurred_at (2026-06-01)
    assert (state.total_minor, state.currency, state.paid_minor) == (TOTAL, "SAR", 0)
    assert decisions.status(state) is decisions.Status.ASSESSED
    payment, objection, grievance = decisions.deadlines(state)
    assert payment.last_day == NOW.date() + 60 * DAY
    assert objection.last_day == NOW.date() + 30 * DAY
    assert grievance.last_day == NOW.date() + 60 * DAY
    with log.engine.connect() as connection:
        subjects = set(
            connection.execute(
                select(subject_entries.c.subject).where(
                    subject_entries.c.leaf_index == receipt.leaf_index
                )
            ).scalars()
        )
    assert {"penalty:D1", f"establishment:{ESTABLISHMENT}"} <= subjects
    assert sum(subject.startswith("person:") for subject in subjects) == 2


def test_an_objection_after_thirty_days_is_refused_naming_the_deadline(log: Log) -> None:
    log.accept(_decision(), at=NOW)
    error = log.refuse(
        objection_filed(CCHI, "D1"),
        "FAILED_PRECONDITION",
        "OBJECTION_WINDOW_PASSED",
        at=NOW + 31 * DAY,
    )
    assert _deadline(error) == (NOW.date() + 30 * DAY).isoformat()
    assert error.details.metadata["window_days"] == "30"
    assert str(NOW.date() + 30 * DAY) in error.message
    log.accept(objection_filed(CCHI, "D1"), at=NOW + 30 * DAY)
    assert decisions.status(log.state("D1")) is decisions.Status.OBJECTED
    log.refuse(
        objection_filed(CCHI, "D1"),
        "FAILED_PRECONDITION",
        "OBJECTION_ALREADY_FILED",
        at=NOW + 30 * DAY,
    )


def test_a_payment_after_sixty_days_is_refused_and_partial_payments_add_up(log: Log) -> None:
    log.accept(_decision(), at=NOW)
    error = log.refuse(
        penalty_paid(CCHI, "D1", sar(1_000)),
        "FAILED_PRECONDITION",
        "PAYMENT_WINDOW_PASSED",
        at=NOW + 61 * DAY,
    )
    assert _deadline(error) == (NOW.date() + 60 * DAY).isoformat()
    log.accept(penalty_paid(CCHI, "D1", sar(100_000)), at=NOW + 10 * DAY)
    error = log.refuse(
        penalty_paid(CCHI, "D1", sar(TOTAL - 100_000 + 1)),
        "FAILED_PRECONDITION",
        "OVERPAYMENT",
        at=NOW + 60 * DAY,
    )
    assert error.details.metadata["due_minor"] == str(TOTAL - 100_000)
    log.refuse(
        penalty_paid(CCHI, "D1", types_pb2.Money(currency_code="KWD", amount_minor=1)),
        "FAILED_PRECONDITION",
        "PAYMENT_CURRENCY",
        at=NOW + 60 * DAY,
    )
    log.accept(penalty_paid(CCHI, "D1", sar(TOTAL - 100_000)), at=NOW + 60 * DAY)
    state = log.state("D1")
    assert decisions.status(state) is decisions.Status.PAID
    assert decisions.amount_due(state) == 0
    log.refuse(
        penalty_paid(CCHI, "D1", sar(1)), "FAILED_PRECONDITION", "OVERPAYMENT", at=NOW + 60 * DAY
    )


def test_nothing_is_filed_or_paid_after_a_withdrawal(log: Log) -> None:
    log.accept(_decision(), at=NOW)
    log.accept(penalty_withdrawn(CCHI, "D1"), at=NOW + DAY)
    state = log.state("D1")
    assert decisions.status(state) is decisions.Status.WITHDRAWN
    assert decisions.amount_due(state) == 0
    for event in (
        penalty_paid(CCHI, "D1", sar(1_000)),
        objection_filed(CCHI, "D1"),
        penalty_withdrawn(CCHI, "D1"),
    ):
        log.refuse(event, "FAILED_PRECONDITION", "DECISION_WITHDRAWN", at=NOW + 2 * DAY)


def test_an_unknown_decision_is_not_found(log: Log) -> None:
    log.accept(_decision(), at=NOW)
    for event in (
        penalty_paid(CCHI, "D404", sar(1_000)),
        objection_filed(CCHI, "D404"),
        objection_rejected(CCHI, "D404"),
        penalty_withdrawn(CCHI, "D404"),
    ):
        error = log.refuse(event, "NOT_FOUND", "DECISION_NOT_FOUND", at=NOW + DAY)
        assert error.details.metadata["decision_id"] == "D404"
    log.accept(penalty_paid(CCHI, "D1", sar(1_000)), at=NOW + DAY)


def test_who_may_sign_decisions(log: Log) -> None:
    error = log.refuse(
        _decision(signer=GULF), "PERMISSION_DENIED", "SIGNER_ROLE_NOT_ALLOWED", at=NOW
    )
    assert "PenaltyAssessed" in error.message
    log.accept(_decision(), at=NOW)
    log.refuse(
        penalty_paid(GULF, "D1", sar(1_000)),
        "PERMISSION_DENIED",
        "SIGNER_ROLE_NOT_ALLOWED",
        at=NOW,
    )
    error = log.refuse(
        penalty_paid(OTHER, "D1", sar(1_000)), "PERMISSION_DENIED", "DECISION_NOT_OWN", at=NOW
    )
    assert error.details.metadata["regulator_id"] == CCHI
    log.accept(penalty_paid("operator", "D1", sar(1_000)), at=NOW)
    log.accept(_decision("D2", signer="operator"), at=NOW)


def test_a_decision_is_assessed_once_from_a_known_schedule(log: Log) -> None:
    log.refuse(
        _decision(schedule_version="sa-1999"), "FAILED_PRECONDITION", "SCHEDULE_UNKNOWN", at=NOW
    )
    log.refuse(
        penalty_assessed(CCHI, "D1", ESTABLISHMENT, [(person(200), 9, 100, 10)], currency="KWD"),
        "FAILED_PRECONDITION",
        "SCHEDULE_CURRENCY",
    )
    log.refuse(
        _decision(computed_at_tree_size=10_000),
        "FAILED_PRECONDITION",
        "COMPUTATION_FROM_THE_FUTURE",
    )
    log.accept(_decision(computed_at_tree_size=3), at=NOW)
    log.refuse(_decision(), "ALREADY_EXISTS", "DECISION_EXISTS", at=NOW)


def test_a_decision_names_only_tokens_the_vault_issued(log: Log) -> None:
    unknown = "pt_" + "A" * 26
    log.refuse(
        penalty_assessed(CCHI, "D1", ESTABLISHMENT, [(unknown, 9, 100, 10)]),
        "NOT_FOUND",
        "PERSON_TOKEN_UNKNOWN",
    )


def test_the_grievance_counts_from_the_rejection_of_the_objection(log: Log) -> None:
    log.accept(_decision(), at=NOW)
    log.accept(objection_filed(CCHI, "D1"), at=NOW + 5 * DAY)
    log.refuse(
        objection_filed(CCHI, "D1", GRIEVANCE),
        "FAILED_PRECONDITION",
        "OBJECTION_PENDING",
        at=NOW + 6 * DAY,
    )
    log.refuse(
        objection_rejected(CCHI, "D1", GRIEVANCE),
        "FAILED_PRECONDITION",
        "NOTHING_PENDING",
        at=NOW + 6 * DAY,
    )
    rejected_at = NOW + 50 * DAY
    [rejection] = log.accept(objection_rejected(CCHI, "D1"), at=rejected_at)
    state = log.state("D1")
    assert decisions.status(state) is decisions.Status.ASSESSED
    grievance = decisions.grievance_window(state)
    assert grievance.counted_from_leaf_index == rejection.leaf_index
    error = log.refuse(
        objection_filed(CCHI, "D1", GRIEVANCE),
        "FAILED_PRECONDITION",
        "GRIEVANCE_WINDOW_PASSED",
        at=rejected_at + 61 * DAY,
    )
    assert _deadline(error) == (rejected_at.date() + 60 * DAY).isoformat()
    assert error.details.metadata["counted_from_leaf_index"] == str(rejection.leaf_index)
    # Later than 60 days after the assessment, but within 60 days of the rejection.
    log.accept(objection_filed(CCHI, "D1", GRIEVANCE), at=rejected_at + 60 * DAY)
    log.refuse(
        objection_filed(CCHI, "D1"),
        "FAILED_PRECONDITION",
        "OBJECTION_ALREADY_FILED",
        at=rejected_at + 60 * DAY,
    )


def test_without_an_objection_the_grievance_counts_from_the_assessment(log: Log) -> None:
    log.accept(_decision(), at=NOW)
    log.refuse(
        objection_filed(CCHI, "D1", GRIEVANCE),
        "FAILED_PRECONDITION",
        "GRIEVANCE_WINDOW_PASSED",
        at=NOW + 61 * DAY,
    )
    log.accept(objection_filed(CCHI, "D1", GRIEVANCE), at=NOW + 60 * DAY)
    log.refuse(
        objection_filed(CCHI, "D1"),
        "FAILED_PRECONDITION",
        "GRIEVANCE_ALREADY_FILED",
        at=NOW + 60 * DAY,
    )


def test_a_rebuild_agrees_and_one_batch_sees_its_own_decision(log: Log) -> None:
    sponsor = person(300)
    log.accept(
        issued(GULF, "P1", sponsor, [(sponsor, 1)], dt.date(2026, 1, 1), dt.date(2026, 12, 31))
    )
    log.accept(
        _decision(),
        penalty_paid(CCHI, "D1", sar(1_000)),
        objection_filed(CCHI, "D1"),
        objection_rejected(CCHI, "D1"),
        at=NOW,
    )
    log.accept(objection_filed(CCHI, "D1", GRIEVANCE), at=NOW + 20 * DAY)
    log.accept(_decision("D2"), penalty_withdrawn(CCHI, "D2"), at=NOW + 21 * DAY)
    assert rebuild_and_compare(log.engine).consistent
