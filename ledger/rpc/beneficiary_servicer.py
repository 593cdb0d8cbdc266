"""ledger.v1.BeneficiaryService: a person's own record (issue 11, item 4).

Who may read whose record is decided before this servicer runs (``Limit.PERSON`` in the
authorization table); the access record is stored by the access interceptor. This module only
checks the request's form, reads (:mod:`ledger.coverage.person_record`) and converts.
"""

from __future__ import annotations

import asyncio

import grpc

from ledger.coverage.person_record import PersonRecord, PersonRecordReader
from ledger.errors import FailedPrecondition, FieldViolation, refuse_violations
from ledger.events import check_person_token, civil_date
from ledger.fair import ReadPool
from ledger.fund_enrolment import FundEnrolment
from ledger.rpc.identity import current_caller
from ledger.rpc.status import abort
from ledger.storage.log_store import LogStore
from ledger.v1 import beneficiary_service_pb2 as pb
from ledger.v1 import beneficiary_service_pb2_grpc as pb_grpc
from ledger.v1 import coverage_service_pb2, events_pb2

__all__ = ["BeneficiaryServicer", "record_response"]

_Context = grpc.aio.ServicerContext[object, object]


def _relationship(name: str) -> events_pb2.Relationship.ValueType:
    return events_pb2.Relationship.Value(f"RELATIONSHIP_{name.upper()}")


def record_response(record: PersonRecord, checkpoint: bytes) -> pb.GetPersonRecordResponse:
    """The wire form of a person's record; ``checkpoint`` is the note as served."""
    response = pb.GetPersonRecordResponse(
        person_token=record.person_token,
        basis=coverage_service_pb2.AnswerBasis(
            tree_size=record.head.tree_size, checkpoint=checkpoint
        ),
    )
    for coverage in record.coverages:
        response.coverages.add(
            insurer_id=coverage.insurer_id,
            policy_id=coverage.policy_id,
            sponsor_token=coverage.sponsor_token,
            relationship=_relationship(coverage.relationship),
            start_date=civil_date(coverage.start),
            end_date=civil_date(coverage.end),
            end_reason=coverage.end_reason,
        )
    for declaration in record.declarations:
        answer = response.declarations.add(
            declaration_id=declaration.declaration_id,
            policy=events_pb2.PolicyRef(
                insurer_id=declaration.insurer_id, policy_id=declaration.policy_id
            ),
            status=pb.DeclarationStatus.Value(f"DECLARATION_STATUS_{declaration.status}"),
            reason=declaration.reason,
            declared_leaf_index=declaration.declared_leaf_index,
            decided_leaf_index=declaration.decided_leaf_index or 0,
        )
        for person in declaration.people:
            answer.beneficiaries.add(
                person_token=person.person_token,
                relationship=_relationship(person.relationship),
                documents=[
                    events_pb2.DocumentReference(
                        kind=events_pb2.DocumentKind.Value(f"DOCUMENT_KIND_{kind}"),
                        reference=reference,
                    )
                    for kind, reference in person.documents
                ],
            )
    return response


class BeneficiaryServicer(pb_grpc.BeneficiaryServiceServicer):
    """A person's record, from the projections; a fund's enrolment codes for its insured."""

    def __init__(
        self,
        reader: PersonRecordReader,
        log_store: LogStore,
        reads: ReadPool | None = None,
        enrolment: FundEnrolment | None = None,
    ) -> None:
        self._reader = reader
        self._log_store = log_store
        self._reads = reads or ReadPool()
        self._enrolment = enrolment

    async def IssueEnrolmentCode(
        self, request: pb.IssueEnrolmentCodeRequest, context: _Context
    ) -> pb.IssueEnrolmentCodeResponse:
        """A one-time code for a person the calling fund insures."""
        try:
            if self._enrolment is None:
                raise FailedPrecondition(
                    "this server issues no enrolment codes", reason="ENROLMENT_OFF"
                )
            enrolment, caller = self._enrolment, current_caller()
            code, expires = await asyncio.to_thread(
                enrolment.issue,
                (caller.role, caller.name) if caller else None,
                request.person_token,
                request.ttl,
            )
            response = pb.IssueEnrolmentCodeResponse(code=code)
            response.expires_at.FromDatetime(expires)
            return response
        except Exception as error:  # every failure becomes a status; bugs are logged there
            await abort(context, error)

    async def GetPersonRecord(
        self, request: pb.GetPersonRecordRequest, context: _Context
    ) -> pb.GetPersonRecordResponse:
        """The person's coverages and declarations."""
        try:
            violations: list[FieldViolation] = []
            check_person_token(violations, "person_token", request.person_token)
            refuse_violations(violations)
            token = request.person_token
            return await self._reads.run(lambda: self._answer(token))
        except Exception as error:  # every failure becomes a status; bugs are logged there
            await abort(context, error)

    def _answer(self, person_token: str) -> pb.GetPersonRecordResponse:
        """Runs in a read thread."""
        record = self._reader.record(person_token)
        return record_response(record, self._log_store.served_note(record.head))
