"""Penalty decisions and their deadlines: pure functions over one decision's state.

A regulator's ``PenaltyAssessed`` decision starts three windows, each counted in days from a
**ledger date** (the UTC date of the batch that sequenced an entry, never a date the submitter
states; :func:`ledger.coverage.rules.ledger_date`):

* **payment**: ``PenaltyPaid`` entries within ``penalty_payment_days`` (60) of the assessment;
  partial payments add up, never beyond the total;
* **objection**: one ``ObjectionFiled`` (stage OBJECTION) within ``penalty_objection_days`` (30)
  of the assessment;
* **grievance**: one ``ObjectionFiled`` (stage GRIEVANCE, the Board of Grievances) within
  ``penalty_grievance_days`` (60) of the ledger date of the rejection of the objection
  (``ObjectionRejected``), or of the assessment when there was no objection; not while an
  objection is pending.

A window of N days counted from day D ends on D + N (inclusive): an entry sequenced that day
is within it, one sequenced the day after is refused, naming the deadline. ``PenaltyWithdrawn``
ends the decision: nothing more is filed or paid against it.

Sources: the Council of Health Insurance employer-compliance policy (2025) sets the three
periods; what they count from and the order of the steps are this project's reading, written
down with their reasons in docs/compliance.md "Penalty decisions". The projector
(:mod:`ledger.compliance.decision_store`) reads the state and records the entries; this module
decides.
"""

from __future__ import annotations

import datetime as dt
import enum
from dataclasses import dataclass

from ledger import limits
from ledger.errors import FailedPrecondition, FieldViolation

__all__ = [
    "DecisionState",
    "Filing",
    "Stage",
    "Status",
    "Window",
    "WindowKind",
    "amount_due",
    "check_objection",
    "check_payment",
    "check_rejection",
    "check_withdrawal",
    "deadlines",
    "grievance_window",
    "objection_window",
    "payment_window",
    "pending_stage",
    "status",
]


class Stage(enum.StrEnum):
    """Which step of contesting a decision."""

    OBJECTION = "OBJECTION"
    GRIEVANCE = "GRIEVANCE"


class Status(enum.StrEnum):
    """Where a decision stands."""

    ASSESSED = "ASSESSED"
    OBJECTED = "OBJECTED"
    PAID = "PAID"
    WITHDRAWN = "WITHDRAWN"


class WindowKind(enum.StrEnum):
    """Which window a deadline closes."""

    PAYMENT = "PAYMENT"
    OBJECTION = "OBJECTION"
    GRIEVANCE = "GRIEVANCE"


@dataclass(frozen=True)
class Filing:
    """An objection or grievance the regulator recorded, and its rejection if any."""

    stage: Stage
    leaf_index: int
    filed_on: dt.date
    rejected_on: dt.date | None = None
    rejected_leaf_index: int | None = None


@dataclass(frozen=True)
class DecisionState:
    """What the rules need to know about one decision."""

    decision_id: str
    assessed_leaf_index: int
    assessed_on: dt.date
    """The assessment entry's ledger date."""
    currency: str
    total_minor: int
    paid_minor: int = 0
    filings: tuple[Filing, ...] = ()
    """In log order."""
    withdrawn_leaf_index: int | None = None


@dataclass(frozen=True)
class Window:
    """A window: ``days`` days counted from ``counted_from`` (an entry's ledger date)."""

    kind: WindowKind
    counted_from: dt.date
    counted_from_leaf_index: int
    days: int

    @property
    def last_day(self) -> dt.date:
        """The last ledger date within the window (inclusive)."""
        return self.counted_from + dt.timedelta(days=self.days)

    def holds(self, ledger_date: dt.date) -> bool:
        """True when an entry of ``ledger_date`` is within the window."""
        return ledger_date <= self.last_day


def payment_window(state: DecisionState) -> Window:
    """60 days to pay, from the assessment."""
    return Window(
        WindowKind.PAYMENT,
        state.assessed_on,
        state.assessed_leaf_index,
        limits.penalty_payment_days,
    )


def objection_window(state: DecisionState) -> Window:
    """30 days to object, from the assessment."""
    return Window(
        WindowKind.OBJECTION,
        state.assessed_on,
        state.assessed_leaf_index,
        limits.penalty_objection_days,
    )


def grievance_window(state: DecisionState) -> Window:
    """60 days to go to the Board of Grievances, from the rejection of the objection (the last
    decision the employer can contest), else from the assessment."""
    for filing in reversed(state.filings):
        if (
            filing.stage is Stage.OBJECTION
            and filing.rejected_on is not None
            and filing.rejected_leaf_index is not None
        ):
            return Window(
                WindowKind.GRIEVANCE,
                filing.rejected_on,
                filing.rejected_leaf_index,
                limits.penalty_grievance_days,
            )
    return Window(
        WindowKind.GRIEVANCE,
        state.assessed_on,
        state.assessed_leaf_index,
        limits.penalty_grievance_days,
    )


def deadlines(state: DecisionState) -> tuple[Window, Window, Window]:
    """The payment, objection and grievance windows, in that order."""
    return payment_window(state), objection_window(state), grievance_window(state)


def pending_stage(state: DecisionState) -> Stage | None:
    """The stage filed and not rejected, if any."""
    for filing in state.filings:
        if filing.rejected_on is None:
            return filing.stage
    return None


def amount_due(state: DecisionState) -> int:
    """What is still due: nothing once withdrawn."""
    if state.withdrawn_leaf_index is not None:
        return 0
    return max(state.total_minor - state.paid_minor, 0)


def status(state: DecisionState) -> Status:
    """Withdrawn, else paid in full, else objected (a filing pending), else assessed."""
    if state.withdrawn_leaf_index is not None:
        return Status.WITHDRAWN
    if state.paid_minor >= state.total_minor:
        return Status.PAID
    if pending_stage(state) is not None:
        return Status.OBJECTED
    return Status.ASSESSED


def _field(body: str) -> str:
    return f"event.{body}.decision_id"


def _refuse_withdrawn(state: DecisionState, body: str) -> None:
    if state.withdrawn_leaf_index is not None:
        raise FailedPrecondition(
            f"penalty decision {state.decision_id!r} was withdrawn (entry "
            f"{state.withdrawn_leaf_index}): nothing more is filed or paid against it",
            reason="DECISION_WITHDRAWN",
            field_violations=[FieldViolation(_field(body), "the decision was withdrawn")],
            metadata={
                "decision_id": state.decision_id,
                "withdrawn_leaf_index": str(state.withdrawn_leaf_index),
            },
        )


def _refuse_late(state: DecisionState, window: Window, ledger_date: dt.date, body: str) -> None:
    if window.holds(ledger_date):
        return
    what = {
        WindowKind.PAYMENT: "a payment",
        WindowKind.OBJECTION: "an objection",
        WindowKind.GRIEVANCE: "a grievance",
    }[window.kind]
    raise FailedPrecondition(
        f"{what} of penalty decision {state.decision_id!r} was due by {window.last_day} "
        f"({window.days} days from the ledger date {window.counted_from} of entry "
        f"{window.counted_from_leaf_index}); this entry's ledger date is {ledger_date}",
        reason=f"{window.kind}_WINDOW_PASSED",
        field_violations=[
            FieldViolation(_field(body), f"the {window.kind.lower()} deadline passed")
        ],
        metadata={
            "decision_id": state.decision_id,
            "deadline": window.last_day.isoformat(),
            "window_days": str(window.days),
            "counted_from": window.counted_from.isoformat(),
            "counted_from_leaf_index": str(window.counted_from_leaf_index),
            "ledger_date": ledger_date.isoformat(),
        },
    )


def _refuse_order(state: DecisionState, message: str, reason: str, body: str) -> None:
    raise FailedPrecondition(
        f"penalty decision {state.decision_id!r}: {message}",
        reason=reason,
        field_violations=[FieldViolation(f"event.{body}.stage", message)],
        metadata={"decision_id": state.decision_id},
    )


def check_objection(state: DecisionState, stage: Stage, ledger_date: dt.date) -> None:
    """Raise unless an ``ObjectionFiled`` of ``stage`` sequenced on ``ledger_date`` is taken.

    One objection, then (optionally) one grievance; a grievance not while the objection is
    pending; each within its window; none against a withdrawn decision.
    """
    body = "objection_filed"
    _refuse_withdrawn(state, body)
    stages = [filing.stage for filing in state.filings]
    if stage in stages:
        _refuse_order(state, f"a {stage.lower()} was already filed", f"{stage}_ALREADY_FILED", body)
    if stage is Stage.OBJECTION:
        if Stage.GRIEVANCE in stages:
            _refuse_order(
                state, "an objection comes before the grievance", "GRIEVANCE_ALREADY_FILED", body
            )
        _refuse_late(state, objection_window(state), ledger_date, body)
        return
    if pending_stage(state) is Stage.OBJECTION:
        _refuse_order(
            state,
            "the objection is pending: the regulator rejects it (ObjectionRejected) before a "
            "grievance",
            "OBJECTION_PENDING",
            body,
        )
    _refuse_late(state, grievance_window(state), ledger_date, body)


def check_rejection(state: DecisionState, stage: Stage) -> None:
    """Raise unless the pending filing is of ``stage`` (an ``ObjectionRejected`` rejects it)."""
    body = "objection_rejected"
    _refuse_withdrawn(state, body)
    pending = pending_stage(state)
    if pending is not stage:
        _refuse_order(
            state,
            f"no {stage.lower()} is pending"
            + (f" (the pending stage is {pending.lower()})" if pending is not None else ""),
            "NOTHING_PENDING",
            body,
        )


def check_payment(
    state: DecisionState, amount_minor: int, currency: str, ledger_date: dt.date
) -> None:
    """Raise unless a ``PenaltyPaid`` of ``amount_minor`` sequenced on ``ledger_date`` is taken:
    in the decision's currency, within the payment window, never beyond what is due."""
    body = "penalty_paid"
    _refuse_withdrawn(state, body)
    if currency != state.currency:
        raise FailedPrecondition(
            f"penalty decision {state.decision_id!r} is in {state.currency}, not {currency}",
            reason="PAYMENT_CURRENCY",
            field_violations=[
                FieldViolation(f"event.{body}.amount.currency_code", f"must be {state.currency}")
            ],
            metadata={"decision_id": state.decision_id, "currency": state.currency},
        )
    _refuse_late(state, payment_window(state), ledger_date, body)
    due = amount_due(state)
    if amount_minor > due:
        raise FailedPrecondition(
            f"a payment of {amount_minor} {currency} minor units exceeds what penalty decision "
            f"{state.decision_id!r} still has due: {due} (total {state.total_minor}, paid "
            f"{state.paid_minor})",
            reason="OVERPAYMENT",
            field_violations=[
                FieldViolation(f"event.{body}.amount.amount_minor", f"at most {due}")
            ],
            metadata={
                "decision_id": state.decision_id,
                "due_minor": str(due),
                "paid_minor": str(state.paid_minor),
                "total_minor": str(state.total_minor),
            },
        )


def check_withdrawal(state: DecisionState) -> None:
    """Raise unless the decision may be withdrawn (once)."""
    _refuse_withdrawn(state, "penalty_withdrawn")
