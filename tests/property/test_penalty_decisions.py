"""The pure penalty-decision rules (ledger/compliance/decisions.py), against a plain day-count
restatement of each window over generated decisions, filings, payments and ledger dates."""

from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ledger import limits
from ledger.compliance import decisions
from ledger.compliance.decisions import DecisionState, Filing, Stage
from ledger.errors import FailedPrecondition

BASE = dt.date(2026, 1, 1)
days = st.integers(min_value=0, max_value=400).map(lambda n: BASE + dt.timedelta(days=n))
offsets = st.integers(min_value=0, max_value=200)


@st.composite
def states(draw: st.DrawFn) -> DecisionState:
    """A decision with an optional objection (maybe rejected), payments and withdrawal."""
    assessed_on = draw(days)
    total = draw(st.integers(1, 10**9))
    filings: list[Filing] = []
    if draw(st.booleans()):
        filed = assessed_on + dt.timedelta(days=draw(st.integers(0, 30)))
        rejected = filed + dt.timedelta(days=draw(offsets)) if draw(st.booleans()) else None
        filings.append(Filing(Stage.OBJECTION, 20, filed, rejected, None if not rejected else 30))
    return DecisionState(
        decision_id="D1",
        assessed_leaf_index=10,
        assessed_on=assessed_on,
        currency="SAR",
        total_minor=total,
        paid_minor=draw(st.integers(0, total)),
        filings=tuple(filings),
        withdrawn_leaf_index=draw(st.none() | st.just(40)),
    )


def _reason(check: object, *args: object) -> str | None:
    try:
        check(*args)  # type: ignore[operator]
    except FailedPrecondition as error:
        return error.reason
    return None


@given(states(), offsets, st.integers(1, 10**9))
def test_a_payment_is_taken_within_sixty_days_and_never_beyond_what_is_due(
    state: DecisionState, after: int, amount: int
) -> None:
    ledger_date = state.assessed_on + dt.timedelta(days=after)
    if state.withdrawn_leaf_index is not None:
        expected: str | None = "DECISION_WITHDRAWN"
    elif (ledger_date - state.assessed_on).days > limits.penalty_payment_days:
        expected = "PAYMENT_WINDOW_PASSED"
    elif amount > state.total_minor - state.paid_minor:
        expected = "OVERPAYMENT"
    else:
        expected = None
    assert _reason(decisions.check_payment, state, amount, "SAR", ledger_date) == expected


@given(states(), offsets)
def test_an_objection_is_taken_once_within_thirty_days(state: DecisionState, after: int) -> None:
    ledger_date = state.assessed_on + dt.timedelta(days=after)
    if state.withdrawn_leaf_index is not None:
        expected: str | None = "DECISION_WITHDRAWN"
    elif state.filings:
        expected = "OBJECTION_ALREADY_FILED"
    elif after > limits.penalty_objection_days:
        expected = "OBJECTION_WINDOW_PASSED"
    else:
        expected = None
    assert _reason(decisions.check_objection, state, Stage.OBJECTION, ledger_date) == expected


@given(states(), offsets)
def test_a_grievance_counts_from_the_rejection_else_the_assessment(
    state: DecisionState, after: int
) -> None:
    rejected = [f.rejected_on for f in state.filings if f.rejected_on is not None]
    counted_from = rejected[-1] if rejected else state.assessed_on
    ledger_date = counted_from + dt.timedelta(days=after)
    pending = any(f.rejected_on is None for f in state.filings)
    if state.withdrawn_leaf_index is not None:
        expected: str | None = "DECISION_WITHDRAWN"
    elif pending:
        expected = "OBJECTION_PENDING"
    elif after > limits.penalty_grievance_days:
        expected = "GRIEVANCE_WINDOW_PASSED"
    else:
        expected = None
    assert _reason(decisions.check_objection, state, Stage.GRIEVANCE, ledger_date) == expected
    assert decisions.grievance_window(state).counted_from == counted_from


@given(states())
def test_the_status_and_what_is_due(state: DecisionState) -> None:
    status = decisions.status(state)
    due = decisions.amount_due(state)
    if state.withdrawn_leaf_index is not None:
        assert (status, due) == (decisions.Status.WITHDRAWN, 0)
    elif state.paid_minor == state.total_minor:
        assert (status, due) == (decisions.Status.PAID, 0)
    else:
        assert due == state.total_minor - state.paid_minor > 0
        pending = any(f.rejected_on is None for f in state.filings)
        assert status is (decisions.Status.OBJECTED if pending else decisions.Status.ASSESSED)


@given(days, st.integers(0, 400))
def test_a_window_holds_through_its_last_day_inclusive(counted_from: dt.date, n: int) -> None:
    window = decisions.Window(decisions.WindowKind.PAYMENT, counted_from, 1, n)
    assert window.last_day == counted_from + dt.timedelta(days=n)
    assert window.holds(window.last_day)
    assert not window.holds(window.last_day + dt.timedelta(days=1))
    assert window.holds(counted_from)


@pytest.mark.parametrize(
    ("after", "passed"),
    [(limits.penalty_objection_days, False), (limits.penalty_objection_days + 1, True)],
)
def test_the_refusal_names_the_deadline(after: int, passed: bool) -> None:
    state = DecisionState("D1", 10, BASE, "SAR", 100)
    ledger_date = BASE + dt.timedelta(days=after)
    if not passed:
        decisions.check_objection(state, Stage.OBJECTION, ledger_date)
        return
    with pytest.raises(FailedPrecondition) as refused:
        decisions.check_objection(state, Stage.OBJECTION, ledger_date)
    metadata = refused.value.details.metadata
    assert metadata["deadline"] == "2026-01-31"
    assert metadata["counted_from_leaf_index"] == "10"
    assert "2026-01-31" in refused.value.message
