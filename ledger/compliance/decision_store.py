"""Penalty decisions in the projections: recording the decision events, and reading them back.

The projector (:mod:`ledger.coverage.projector`) hands every ``PenaltyAssessed``,
``ObjectionFiled``, ``ObjectionRejected``, ``PenaltyPaid`` and ``PenaltyWithdrawn`` entry to
:func:`apply_decision_event`, inside the batch transaction and after the signer's role was
checked against ``ledger.signers.SIGNING_RULES``. It reads the decision's state, lets the pure
rules of :mod:`ledger.compliance.decisions` refuse the entry (nothing written then), and only
then writes. ``policy-ledger rebuild`` replays the same code.

Conditions beyond the signing table: a follow-up entry is signed by the principal that assessed
the decision, or by the operator; a decision id is assessed once; the schedule a decision names
is a packaged penalty schedule, in whose currency the decision is.
"""

from __future__ import annotations

import datetime as dt
import functools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, Row, insert, select

from ledger.compliance import decisions
from ledger.compliance.decisions import DecisionState, Filing, Stage
from ledger.compliance.penalties import PenaltySchedule, load_penalty_schedules
from ledger.errors import (
    AlreadyExists,
    FailedPrecondition,
    FieldViolation,
    NotFound,
    PermissionDenied,
)
from ledger.signers import OPERATOR_ID
from ledger.storage.tables import penalty_decision_entries, penalty_decisions, penalty_lines
from ledger.v1 import events_pb2

__all__ = [
    "DECISION_BODIES",
    "DecisionRecord",
    "apply_decision_event",
    "decision_state",
    "list_decisions",
    "read_decision",
]

DECISION_BODIES = (
    "penalty_assessed",
    "objection_filed",
    "objection_rejected",
    "penalty_paid",
    "penalty_withdrawn",
)
"""The ``Event.body`` fields this module records."""

FILED, REJECTED, PAID, WITHDRAWN = "FILED", "REJECTED", "PAID", "WITHDRAWN"
"""``penalty_decision_entries.kind`` values."""


@dataclass(frozen=True)
class DecisionRecord:
    """One decision as the projections hold it."""

    decision: Row[Any]
    lines: tuple[Row[Any], ...]
    entries: tuple[Row[Any], ...]
    state: DecisionState

    @property
    def withdrawn_reason(self) -> str:
        """The withdrawal's reason ("" when not withdrawn)."""
        return next((row.reference for row in self.entries if row.kind == WITHDRAWN), "")

    @property
    def leaf_indexes(self) -> tuple[int, ...]:
        """The assessment and every entry that followed it, ascending."""
        return (self.decision.leaf_index, *(row.leaf_index for row in self.entries))


@functools.cache
def _schedules() -> dict[str, PenaltySchedule]:
    return {schedule.version: schedule for schedule in load_penalty_schedules()}


def _stage(value: events_pb2.ObjectionStage.ValueType) -> Stage:
    return Stage(events_pb2.ObjectionStage.Name(value).removeprefix("OBJECTION_STAGE_"))


def _date(civil: Any) -> dt.date:
    return dt.date(civil.year, civil.month, civil.day)


def decision_state(decision: Row[Any], entries: Sequence[Row[Any]]) -> DecisionState:
    """The rules' view of a decision row and the entries that followed it (in log order)."""
    filings: list[Filing] = []
    paid = 0
    withdrawn: int | None = None
    for row in entries:
        if row.kind == FILED:
            filings.append(Filing(Stage(row.stage), row.leaf_index, row.ledger_date))
        elif row.kind == REJECTED:
            filings = [
                Filing(f.stage, f.leaf_index, f.filed_on, row.ledger_date, row.leaf_index)
                if f.stage == row.stage and f.rejected_on is None
                else f
                for f in filings
            ]
        elif row.kind == PAID:
            paid += row.amount_minor
        elif row.kind == WITHDRAWN:
            withdrawn = row.leaf_index
    return DecisionState(
        decision_id=decision.decision_id,
        assessed_leaf_index=decision.leaf_index,
        assessed_on=decision.assessed_on,
        currency=decision.currency_code,
        total_minor=decision.total_minor,
        paid_minor=paid,
        filings=tuple(filings),
        withdrawn_leaf_index=withdrawn,
    )


def read_decision(connection: Connection, decision_id: str) -> DecisionRecord | None:
    """The decision ``decision_id`` with its lines and entries, or None."""
    decision = connection.execute(
        select(penalty_decisions).where(penalty_decisions.c.decision_id == decision_id)
    ).first()
    if decision is None:
        return None
    return _record(connection, decision)


def _record(connection: Connection, decision: Row[Any]) -> DecisionRecord:
    lines = connection.execute(
        select(penalty_lines)
        .where(penalty_lines.c.decision_id == decision.decision_id)
        .order_by(penalty_lines.c.position)
    ).all()
    entries = connection.execute(
        select(penalty_decision_entries)
        .where(penalty_decision_entries.c.decision_id == decision.decision_id)
        .order_by(penalty_decision_entries.c.leaf_index)
    ).all()
    return DecisionRecord(decision, tuple(lines), tuple(entries), decision_state(decision, entries))


def list_decisions(
    connection: Connection, establishment_number: str, after_leaf_index: int, limit: int
) -> list[DecisionRecord]:
    """The establishment's decisions assessed after entry ``after_leaf_index`` (-1: from the
    first), oldest first, at most ``limit``."""
    rows = connection.execute(
        select(penalty_decisions)
        .where(
            penalty_decisions.c.establishment_number == establishment_number,
            penalty_decisions.c.leaf_index > after_leaf_index,
        )
        .order_by(penalty_decisions.c.leaf_index)
        .limit(limit)
    ).all()
    return [_record(connection, row) for row in rows]


def apply_decision_event(
    connection: Connection,
    event: events_pb2.Event,
    leaf_index: int,
    ledger_date: dt.date,
) -> list[str]:
    """Check and record one decision entry; return the subjects it names (for the index).

    Raises a LedgerError naming the rule (nothing written) when the rules refuse it.
    """
    kind = event.WhichOneof("body") or ""
    if kind == "penalty_assessed":
        return _assessed(connection, event, leaf_index, ledger_date)
    body = getattr(event, kind)
    record = _followed_decision(connection, event, kind, body.decision_id)
    state = record.state
    values: dict[str, Any] = {"stage": "", "amount_minor": 0, "reference": ""}
    if kind == "objection_filed":
        stage = _stage(body.stage)
        decisions.check_objection(state, stage, ledger_date)
        values |= {"kind": FILED, "stage": str(stage), "reference": body.reference}
    elif kind == "objection_rejected":
        stage = _stage(body.stage)
        decisions.check_rejection(state, stage)
        values |= {"kind": REJECTED, "stage": str(stage), "reference": body.reference}
    elif kind == "penalty_paid":
        decisions.check_payment(
            state, body.amount.amount_minor, body.amount.currency_code, ledger_date
        )
        values |= {
            "kind": PAID,
            "amount_minor": body.amount.amount_minor,
            "reference": body.payment_reference,
        }
    else:
        decisions.check_withdrawal(state)
        values |= {"kind": WITHDRAWN, "reference": body.reason}
    connection.execute(
        insert(penalty_decision_entries).values(
            leaf_index=leaf_index,
            decision_id=body.decision_id,
            ledger_date=ledger_date,
            **values,
        )
    )
    return _subjects(record.decision.decision_id, record.decision.establishment_number)


def _subjects(decision_id: str, establishment_number: str) -> list[str]:
    return [f"penalty:{decision_id}", f"establishment:{establishment_number}"]


def _followed_decision(
    connection: Connection, event: events_pb2.Event, kind: str, decision_id: str
) -> DecisionRecord:
    """The decision a follow-up entry names, once its signer may act on it."""
    field = f"event.{kind}.decision_id"
    record = read_decision(connection, decision_id)
    if record is None:
        raise NotFound(
            f"no penalty decision {decision_id!r} was assessed",
            reason="DECISION_NOT_FOUND",
            field_violations=[FieldViolation(field, "no such decision")],
            metadata={"decision_id": decision_id},
        )
    regulator = record.decision.regulator_id
    if event.insurer_id not in (regulator, OPERATOR_ID):
        raise PermissionDenied(
            f"penalty decision {decision_id!r} was assessed by {regulator!r}: only it or the "
            f"operator records what follows, not {event.insurer_id!r}",
            reason="DECISION_NOT_OWN",
            field_violations=[FieldViolation("event.insurer_id", f"not {regulator!r}")],
            metadata={"decision_id": decision_id, "regulator_id": regulator},
        )
    return record


def _assessed(
    connection: Connection, event: events_pb2.Event, leaf_index: int, ledger_date: dt.date
) -> list[str]:
    body = event.penalty_assessed
    field = "event.penalty_assessed"
    if read_decision(connection, body.decision_id) is not None:
        raise AlreadyExists(
            f"penalty decision {body.decision_id!r} was already assessed",
            reason="DECISION_EXISTS",
            field_violations=[FieldViolation(f"{field}.decision_id", "already assessed")],
            metadata={"decision_id": body.decision_id},
        )
    _check_schedule(body, field)
    if body.computed_at_tree_size > leaf_index:
        raise FailedPrecondition(
            f"the computation read a tree of size {body.computed_at_tree_size}, larger than the "
            f"log before this entry ({leaf_index})",
            reason="COMPUTATION_FROM_THE_FUTURE",
            field_violations=[
                FieldViolation(f"{field}.computed_at_tree_size", f"at most {leaf_index}")
            ],
            metadata={"tree_size": str(leaf_index)},
        )
    connection.execute(
        insert(penalty_decisions).values(
            decision_id=body.decision_id,
            regulator_id=event.insurer_id,
            establishment_number=body.establishment_number,
            period_start=_date(body.period_start),
            period_end=_date(body.period_end),
            schedule_version=body.schedule_version,
            currency_code=body.total.currency_code,
            total_minor=body.total.amount_minor,
            computed_at_tree_size=body.computed_at_tree_size,
            assessed_on=ledger_date,
            leaf_index=leaf_index,
        )
    )
    connection.execute(
        insert(penalty_lines),
        [
            {
                "decision_id": body.decision_id,
                "position": position,
                "person_token": line.person_token,
                "uninsured_days": line.uninsured_days,
                "arrears_minor": line.arrears.amount_minor,
                "fine_minor": line.fine.amount_minor,
            }
            for position, line in enumerate(body.lines)
        ],
    )
    return [
        *_subjects(body.decision_id, body.establishment_number),
        *(f"person:{line.person_token}" for line in body.lines),
    ]


def _check_schedule(body: events_pb2.PenaltyAssessed, field: str) -> None:
    schedule = _schedules().get(body.schedule_version)
    if schedule is None:
        known = ", ".join(sorted(_schedules()))
        raise FailedPrecondition(
            f"penalty schedule {body.schedule_version!r} is not one of the ledger's ({known})",
            reason="SCHEDULE_UNKNOWN",
            field_violations=[FieldViolation(f"{field}.schedule_version", f"one of {known}")],
            metadata={"schedule_version": body.schedule_version},
        )
    if body.total.currency_code != schedule.currency:
        raise FailedPrecondition(
            f"penalty schedule {schedule.version} is in {schedule.currency}, the decision in "
            f"{body.total.currency_code}",
            reason="SCHEDULE_CURRENCY",
            field_violations=[
                FieldViolation(f"{field}.total.currency_code", f"must be {schedule.currency}")
            ],
            metadata={"schedule_version": schedule.version, "currency": schedule.currency},
        )
