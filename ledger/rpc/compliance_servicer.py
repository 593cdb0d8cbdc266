"""ledger.v1.ComplianceService (issue 10): validate the request, ask the projections, convert.

Also holds the conversions CoverageService.CheckEmployer shares with it (an establishment and a
date range in, people with intervals out). The figures come from
:class:`ledger.compliance.employer.EmployerReader`; this module only translates.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import grpc

from ledger import limits
from ledger.compliance import penalties
from ledger.compliance.employer import ArrearsAnswer, EmployerReader, PersonObligation
from ledger.coverage.model import PersonRef
from ledger.errors import FieldViolation, refuse_violations
from ledger.events import check_date, check_identifier, civil_date
from ledger.fair import ReadPool
from ledger.rpc.decisions_servicer import PenaltyDecisionsServicer
from ledger.rpc.status import abort
from ledger.storage.log_store import StoredCheckpoint
from ledger.v1 import compliance_service_pb2 as pb
from ledger.v1 import compliance_service_pb2_grpc as pb_grpc
from ledger.v1 import coverage_service_pb2 as coverage_pb
from ledger.v1 import events_pb2, types_pb2

__all__ = [
    "ComplianceServicer",
    "EmployerRange",
    "basis_of",
    "obligation_proto",
    "parse_employer_range",
]

_T = TypeVar("_T")
_Context = grpc.aio.ServicerContext[object, object]
_COUNTRY = re.compile(r"[A-Z]{2}")
_NAME = re.compile(r"[A-Z][A-Z0-9_]*")


@dataclass(frozen=True)
class EmployerRange:
    """An establishment and a date range, as CheckEmployer and ComputeArrears name them."""

    establishment_number: str
    jurisdiction: str
    first: dt.date
    last: dt.date


def parse_employer_range(
    request: coverage_pb.CheckEmployerRequest | pb.ComputeArrearsRequest,
    violations: list[FieldViolation],
) -> EmployerRange | None:
    """The range a request names, or None after appending why not."""
    check_identifier(
        violations,
        "establishment_number",
        request.establishment_number,
        limits.reference_chars_max,
    )
    if not _COUNTRY.fullmatch(request.jurisdiction):
        violations.append(FieldViolation("jurisdiction", "ISO 3166-1 alpha-2 code, e.g. SA"))
    first = check_date(
        violations, "from_date", request.from_date, present=request.HasField("from_date")
    )
    last = check_date(
        violations, "through_date", request.through_date, present=request.HasField("through_date")
    )
    if first is None or last is None:
        return None
    if last < first:
        violations.append(FieldViolation("through_date", "before from_date"))
    elif (last - first).days + 1 > limits.employer_days_max:
        violations.append(
            FieldViolation("through_date", f"more than {limits.employer_days_max} days after")
        )
    return EmployerRange(request.establishment_number, request.jurisdiction, first, last)


def _person_proto(person: PersonRef) -> types_pb2.PersonId:
    return types_pb2.PersonId(
        type=types_pb2.PersonIdType.Value(f"PERSON_ID_TYPE_{person.id_type}"),
        value=person.value,
        country_code=person.country,
    )


def obligation_proto(person: PersonObligation) -> coverage_pb.EmployerObligation:
    """The wire form of one person's obligation and intervals."""
    answer = coverage_pb.EmployerObligation(
        person_token=person.person_token,
        relationship=events_pb2.Relationship.Value(f"RELATIONSHIP_{person.relationship.upper()}"),
        authority_id=person.authority_id,
        permit_id=person.permit_id,
        obligated_from=civil_date(person.obligated_from),
        obligated_until=civil_date(person.obligated_until),
        intervals=[
            coverage_pb.ObligationInterval(
                first_day=civil_date(interval.first),
                last_day=civil_date(interval.last),
                covered=interval.covered,
                reason=interval.reason,
                days=interval.days,
            )
            for interval in person.intervals
        ],
        uninsured_days=person.uninsured_days,
    )
    if person.person is not None:
        answer.person.CopyFrom(_person_proto(person.person))
    return answer


def basis_of(head: StoredCheckpoint, leaves: set[int]) -> coverage_pb.AnswerBasis:
    """The log state an answer was computed at, and the entries it relied on."""
    return coverage_pb.AnswerBasis(
        tree_size=head.tree_size, checkpoint=head.note_bytes, leaf_indexes=sorted(leaves)
    )


def _schedule_name(violations: list[FieldViolation], field: str, value: str) -> None:
    if not _NAME.fullmatch(value):
        violations.append(FieldViolation(field, "required: a name of the penalty schedule"))


def _money(currency: str, amount: int) -> types_pb2.Money:
    return types_pb2.Money(currency_code=currency, amount_minor=amount)


def arrears_response(answer: ArrearsAnswer) -> pb.ComputeArrearsResponse:
    """The wire form of an arrears computation."""
    currency = answer.schedule.currency
    leaves: set[int] = set()
    people = []
    for person, assessment in answer.people:
        leaves.update(person.leaf_indexes)
        line = pb.PersonArrears(
            person_token=person.person_token,
            uninsured_days=assessment.uninsured_days,
            arrears=_money(currency, assessment.arrears_minor),
            fine_uncapped=_money(currency, assessment.fine_uncapped_minor),
            fine=_money(currency, assessment.fine_minor),
            capped=assessment.capped,
            explanation=list(assessment.explanation),
        )
        if person.person is not None:
            line.person.CopyFrom(_person_proto(person.person))
        people.append(line)
    return pb.ComputeArrearsResponse(
        people=people,
        total_arrears=_money(currency, answer.total_arrears_minor),
        total_fines=_money(currency, answer.total_fines_minor),
        schedule_version=answer.schedule.version,
        schedule_source=answer.schedule.source,
        average_basis=answer.average.basis,
        average_annual_premium=_money(currency, answer.average.amount_minor),
        size_band=answer.band.band_id,
        workers=answer.workers,
        explanation=list(answer.explanation),
        basis=basis_of(answer.checkpoint, leaves),
    )


class ComplianceServicer(pb_grpc.ComplianceServiceServicer):
    """The ComplianceService: arrears and fines of employers, from the projections (here), and
    penalty decisions (:class:`ledger.rpc.decisions_servicer.PenaltyDecisionsServicer`, to which
    its methods are handed: gRPC takes one servicer per service)."""

    def __init__(
        self,
        employers: EmployerReader,
        decisions: PenaltyDecisionsServicer,
        reads: ReadPool | None = None,
    ) -> None:
        self._employers = employers
        self._decisions = decisions
        self._reads = reads or ReadPool()

    async def GetPenaltyDecision(
        self, request: pb.GetPenaltyDecisionRequest, context: _Context
    ) -> pb.GetPenaltyDecisionResponse:
        """See :meth:`PenaltyDecisionsServicer.GetPenaltyDecision`."""
        return await self._decisions.GetPenaltyDecision(request, context)

    async def ListPenaltyDecisions(
        self, request: pb.ListPenaltyDecisionsRequest, context: _Context
    ) -> pb.ListPenaltyDecisionsResponse:
        """See :meth:`PenaltyDecisionsServicer.ListPenaltyDecisions`."""
        return await self._decisions.ListPenaltyDecisions(request, context)

    async def _run(self, context: _Context, function: Callable[[], _T], *, read: bool) -> _T:
        try:
            return await self._reads.run(function) if read else function()
        except Exception as error:  # every failure becomes a status; bugs are logged there
            await abort(context, error)

    async def ComputeArrears(
        self, request: pb.ComputeArrearsRequest, context: _Context
    ) -> pb.ComputeArrearsResponse:
        """Arrears and fines of an establishment for a period, every figure explained."""

        def parse() -> tuple[EmployerRange, penalties.Establishment]:
            violations: list[FieldViolation] = []
            found = parse_employer_range(request, violations)
            _schedule_name(violations, "activity", request.activity)
            _schedule_name(violations, "region", request.region)
            if request.category:
                check_identifier(violations, "category", request.category, limits.plan_chars_max)
            refuse_violations(violations)
            assert found is not None
            establishment = penalties.Establishment(
                found.establishment_number, 1, request.activity, request.region
            )
            return found, establishment

        found, establishment = await self._run(context, parse, read=False)

        def compute() -> Any:
            return self._employers.compute_arrears(
                establishment, found.jurisdiction, found.first, found.last, request.category
            )

        answer: ArrearsAnswer = await self._run(context, compute, read=True)
        return arrears_response(answer)
