"""ledger.v1.ComplianceService, decisions part (task B): validate, read, convert.

A decision's state comes from the projections (:mod:`ledger.compliance.decision_store`), read in
one snapshot with the checkpoint it is answered at; its deadlines and status are the pure
rules' (:mod:`ledger.compliance.decisions`). Whether a deadline has passed is judged on the
server clock's UTC date (the ledger's "today"), as the non-payment rule is.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TypeVar

import grpc
from sqlalchemy import Connection, Engine

from ledger import limits
from ledger.clock import Clock
from ledger.compliance import decisions
from ledger.compliance.decision_store import DecisionRecord, list_decisions, read_decision
from ledger.errors import FieldViolation, NotFound, refuse_violations
from ledger.events import check_identifier, civil_date
from ledger.fair import ReadPool
from ledger.rpc.status import abort
from ledger.storage.log_store import LogStore, StoredCheckpoint, latest_checkpoint
from ledger.v1 import compliance_service_pb2 as pb
from ledger.v1 import coverage_service_pb2, events_pb2, types_pb2

__all__ = ["PenaltyDecisionsServicer", "decision_proto"]

_T = TypeVar("_T")
_Context = grpc.aio.ServicerContext[object, object]

_STATUS = {
    decisions.Status.ASSESSED: pb.PENALTY_STATUS_ASSESSED,
    decisions.Status.OBJECTED: pb.PENALTY_STATUS_OBJECTED,
    decisions.Status.PAID: pb.PENALTY_STATUS_PAID,
    decisions.Status.WITHDRAWN: pb.PENALTY_STATUS_WITHDRAWN,
}
_KIND = {
    decisions.WindowKind.PAYMENT: pb.PENALTY_DEADLINE_KIND_PAYMENT,
    decisions.WindowKind.OBJECTION: pb.PENALTY_DEADLINE_KIND_OBJECTION,
    decisions.WindowKind.GRIEVANCE: pb.PENALTY_DEADLINE_KIND_GRIEVANCE,
}
_STAGE = {
    decisions.Stage.OBJECTION: events_pb2.OBJECTION_STAGE_OBJECTION,
    decisions.Stage.GRIEVANCE: events_pb2.OBJECTION_STAGE_GRIEVANCE,
}


def _money(currency: str, amount_minor: int) -> types_pb2.Money:
    return types_pb2.Money(currency_code=currency, amount_minor=amount_minor)


def decision_proto(record: DecisionRecord, today: dt.date) -> pb.PenaltyDecision:
    """The wire form of a decision, its deadlines judged on ``today``."""
    row, state = record.decision, record.state
    currency = row.currency_code
    pending = decisions.pending_stage(state)
    return pb.PenaltyDecision(
        decision_id=row.decision_id,
        regulator_id=row.regulator_id,
        establishment_number=row.establishment_number,
        period_start=civil_date(row.period_start),
        period_end=civil_date(row.period_end),
        schedule_version=row.schedule_version,
        lines=[
            events_pb2.PenaltyLine(
                person_token=line.person_token,
                uninsured_days=line.uninsured_days,
                arrears=_money(currency, line.arrears_minor),
                fine=_money(currency, line.fine_minor),
            )
            for line in record.lines
        ],
        total=_money(currency, state.total_minor),
        paid=_money(currency, state.paid_minor),
        due=_money(currency, decisions.amount_due(state)),
        status=_STATUS[decisions.status(state)],
        assessed_on=civil_date(state.assessed_on),
        deadlines=[
            pb.PenaltyDeadline(
                kind=_KIND[window.kind],
                counted_from=civil_date(window.counted_from),
                counted_from_leaf_index=window.counted_from_leaf_index,
                last_day=civil_date(window.last_day),
                days=window.days,
                passed=not window.holds(today),
            )
            for window in decisions.deadlines(state)
        ],
        pending_stage=_STAGE[pending]
        if pending is not None
        else events_pb2.OBJECTION_STAGE_UNSPECIFIED,
        withdrawn_reason=record.withdrawn_reason,
        leaf_indexes=list(record.leaf_indexes),
    )


class PenaltyDecisionsServicer:
    """Penalty decisions for regulators, the operator and auditors."""

    def __init__(
        self, engine: Engine, clock: Clock, log_store: LogStore, reads: ReadPool | None = None
    ) -> None:
        self._engine = engine
        self._clock = clock
        self._log_store = log_store
        self._reads = reads or ReadPool()

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

    def _basis(self, head: StoredCheckpoint, leaves: list[int]) -> coverage_service_pb2.AnswerBasis:
        return coverage_service_pb2.AnswerBasis(
            tree_size=head.tree_size,
            checkpoint=self._log_store.served_note(head),
            leaf_indexes=sorted(set(leaves)),
        )

    async def _run(self, context: _Context, function: Callable[[], _T]) -> _T:
        try:
            return await self._reads.run(function)
        except Exception as error:  # every failure becomes a status; bugs are logged there
            await abort(context, error)

    async def GetPenaltyDecision(
        self, request: pb.GetPenaltyDecisionRequest, context: _Context
    ) -> pb.GetPenaltyDecisionResponse:
        """One decision, its status, amounts and deadlines."""

        def read() -> pb.GetPenaltyDecisionResponse:
            violations: list[FieldViolation] = []
            check_identifier(
                violations,
                "decision_id",
                request.decision_id,
                limits.penalty_decision_id_chars_max,
            )
            refuse_violations(violations)
            with self._snapshot() as connection:
                head = latest_checkpoint(connection)
                record = read_decision(connection, request.decision_id)
            if record is None:
                raise NotFound(
                    f"no penalty decision {request.decision_id!r}",
                    reason="DECISION_NOT_FOUND",
                    field_violations=[FieldViolation("decision_id", "no such decision")],
                )
            return pb.GetPenaltyDecisionResponse(
                decision=decision_proto(record, self._clock.now().astimezone(dt.UTC).date()),
                basis=self._basis(head, list(record.leaf_indexes)),
            )

        return await self._run(context, read)

    async def ListPenaltyDecisions(
        self, request: pb.ListPenaltyDecisionsRequest, context: _Context
    ) -> pb.ListPenaltyDecisionsResponse:
        """An establishment's decisions, oldest first, paged."""

        def read() -> pb.ListPenaltyDecisionsResponse:
            after, size = _parse_list(request)
            with self._snapshot() as connection:
                head = latest_checkpoint(connection)
                records = list_decisions(connection, request.establishment_number, after, size + 1)
            page = records[:size]
            today = self._clock.now().astimezone(dt.UTC).date()
            more = len(records) > size
            return pb.ListPenaltyDecisionsResponse(
                decisions=[decision_proto(record, today) for record in page],
                next_page_token=str(page[-1].decision.leaf_index) if more else "",
                basis=self._basis(head, [leaf for r in page for leaf in r.leaf_indexes]),
            )

        return await self._run(context, read)


def _parse_list(request: pb.ListPenaltyDecisionsRequest) -> tuple[int, int]:
    """(the leaf index the page starts after, the page size); refuses what is malformed."""
    violations: list[FieldViolation] = []
    check_identifier(
        violations,
        "establishment_number",
        request.establishment_number,
        limits.reference_chars_max,
    )
    if request.page_size > limits.penalty_decisions_page_max:
        violations.append(
            FieldViolation("page_size", f"at most {limits.penalty_decisions_page_max}")
        )
    after = -1
    if request.page_token:
        if not (request.page_token.isascii() and request.page_token.isdigit()) or len(
            request.page_token
        ) > len(str(limits.request_integer_max)):
            violations.append(FieldViolation("page_token", "not a token this service gave"))
        else:
            after = int(request.page_token)
    refuse_violations(violations)
    return after, request.page_size or limits.penalty_decisions_page_default
