"""payments.v1.ContributionService (issue 11, item 5): the servicer and its authorization rows.

Thin: check the request's form, read the status (:mod:`payments.contributions`) in a thread on
one snapshot, convert. Who may ask for whose status is decided before it runs (the rows below).
"""

from __future__ import annotations

import asyncio
import datetime as dt

import grpc
from sqlalchemy import Engine

from ledger.clock import Clock
from ledger.coverage import rules
from ledger.coverage.person_record import PersonRecordReader
from ledger.errors import FieldViolation, refuse_violations
from ledger.events import check_date, check_person_token, civil_date
from ledger.rpc.authorization import Grant, Limit, Rule
from ledger.rpc.status import abort
from ledger.storage.log_store import LogStore
from ledger.v1 import coverage_service_pb2, types_pb2
from payments import fees
from payments.contributions import ContributionStatus, contribution_status
from payments.v1 import contribution_service_pb2 as pb
from payments.v1 import contribution_service_pb2_grpc as pb_grpc

__all__ = ["SERVICE_NAME", "ContributionServicer", "contribution_rules"]

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["ContributionService"].full_name
_Context = grpc.aio.ServicerContext[object, object]


def contribution_rules(engine: Engine) -> list[Rule]:
    """A person asks for their own status (Limit.PERSON); a portal for its jurisdiction; the
    renewal authority, the operator and auditors for anyone's."""
    own = Grant("beneficiary", Limit.PERSON, people=PersonRecordReader(engine).readable_by)
    return [
        Rule(
            f"/{SERVICE_NAME}/GetContributionStatus",
            (
                own,
                Grant("portal", Limit.JURISDICTION),
                Grant("authority"),
                Grant("operator"),
                Grant("auditor"),
            ),
        )
    ]


def status_response(
    status: ContributionStatus, checkpoint: bytes
) -> pb.GetContributionStatusResponse:
    """The wire form of a contribution status; ``checkpoint`` is the note as served."""
    response = pb.GetContributionStatusResponse(
        person_token=status.person_token,
        insured_since=civil_date(status.insured_since),
        owed=types_pb2.Money(currency_code=status.currency, amount_minor=status.owed_minor),
        owed_through=civil_date(status.owed_through),
        schedule_version=status.schedule_version,
        basis=coverage_service_pb2.AnswerBasis(
            tree_size=status.head.tree_size, checkpoint=checkpoint
        ),
    )
    if status.paid_through is not None:
        response.paid_through.CopyFrom(civil_date(status.paid_through))
    return response


class ContributionServicer(pb_grpc.ContributionServiceServicer):
    """Contribution status, from the ledger's projections and the dated schedule."""

    def __init__(self, engine: Engine, clock: Clock) -> None:
        self._engine = engine
        self._clock = clock
        self._log = LogStore(engine)

    async def GetContributionStatus(
        self, request: pb.GetContributionStatusRequest, context: _Context
    ) -> pb.GetContributionStatusResponse:
        """Paid through and owed through the end of the month of as_of."""
        try:
            as_of = self._parse(request)
            return await asyncio.to_thread(
                self._status, request.person_token, request.jurisdiction, as_of
            )
        except Exception as error:  # every failure becomes a status; bugs are logged there
            await abort(context, error)

    def _parse(self, request: pb.GetContributionStatusRequest) -> dt.date:
        violations: list[FieldViolation] = []
        check_person_token(violations, "person_token", request.person_token)
        if request.jurisdiction not in fees.default_schedules().jurisdictions:
            supported = ", ".join(fees.default_schedules().jurisdictions)
            violations.append(FieldViolation("jurisdiction", f"supported: {supported}"))
        as_of = (
            check_date(violations, "as_of", request.as_of, present=True)
            if request.HasField("as_of")
            else rules.ledger_date(self._clock.now())
        )
        refuse_violations(violations)
        assert as_of is not None  # refused above otherwise
        return as_of

    def _status(
        self, person_token: str, jurisdiction: str, as_of: dt.date
    ) -> pb.GetContributionStatusResponse:
        with self._engine.connect() as connection:
            status = contribution_status(connection, person_token, jurisdiction, as_of)
        return status_response(status, self._log.served_note(status.head))
