"""The insured person's client (issue 11, item 4): declare beneficiaries, read one's record.

A person enrols with a one-time code (``policy-ledger enrol --role beneficiary --name
<their person token>``), which gives them a client certificate and registers their Ed25519 key;
with both they sign their own declarations and read their own record:

    client = BeneficiaryClient(channel, signer=signer, log=TrustedLog.from_verifier_key(KEY))
    spouse = client.tokens.token(spouse_cin)
    receipt = client.declare("decl-1", ("cnops", "CNOPS-1"), [Declared(spouse, SPOUSE, docs)],
                             effective=date(2026, 7, 1))
    record = client.record()               # their coverages and declarations
    status = client.contribution_status("MA")  # paid through, owed (payments extension)

The fund decides with :func:`declaration_decided`, signed and submitted as any insurer event.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass

import grpc

from clients.errors import from_rpc_error
from clients.insurer import InsurerClient
from clients.person_tokens import PersonTokens
from clients.verify import TrustedLog, VerifiedReceipt
from ledger.events import civil_date
from ledger.signing import Signer
from ledger.v1 import beneficiary_service_pb2 as pb
from ledger.v1 import beneficiary_service_pb2_grpc as pb_grpc
from ledger.v1 import events_pb2, types_pb2
from payments.v1 import contribution_service_pb2 as contribution_pb
from payments.v1 import contribution_service_pb2_grpc as contribution_grpc

__all__ = [
    "BeneficiaryClient",
    "Declared",
    "beneficiaries_declared",
    "declaration_decided",
    "issue_enrolment_code",
]


@dataclass(frozen=True)
class Declared:
    """One person to declare: their token, relationship, and document references."""

    person_token: str
    relationship: events_pb2.Relationship.ValueType
    documents: tuple[tuple[events_pb2.DocumentKind.ValueType, str], ...]


def beneficiaries_declared(
    insured_token: str,
    declaration_id: str,
    policy: tuple[str, str],
    people: Sequence[Declared],
    *,
    effective: dt.date,
    occurred_at: dt.datetime,
) -> events_pb2.Event:
    """The insured's ``BeneficiariesDeclared`` event (signed by the insured themselves)."""
    event = events_pb2.Event(event_id=f"declare-{declaration_id}", insurer_id=insured_token)
    event.occurred_at.FromDatetime(occurred_at)
    body = event.beneficiaries_declared
    body.declaration_id = declaration_id
    body.insured_token = insured_token
    body.policy.insurer_id, body.policy.policy_id = policy
    body.effective_date.CopyFrom(civil_date(effective))
    for person in people:
        body.beneficiaries.add(
            person_token=person.person_token,
            relationship=person.relationship,
            documents=[
                events_pb2.DocumentReference(kind=kind, reference=reference)
                for kind, reference in person.documents
            ],
        )
    return event


def declaration_decided(
    insurer_id: str,
    insured_token: str,
    declaration_id: str,
    *,
    accepted: bool,
    reason: str = "",
    occurred_at: dt.datetime,
) -> events_pb2.Event:
    """The fund's ``DeclarationDecided`` event (signed by the insurer owning the policy)."""
    event = events_pb2.Event(
        event_id=f"decide-{insured_token}-{declaration_id}", insurer_id=insurer_id
    )
    event.occurred_at.FromDatetime(occurred_at)
    body = event.declaration_decided
    body.insured_token = insured_token
    body.declaration_id = declaration_id
    body.decision = (
        events_pb2.DECLARATION_DECISION_ACCEPTED
        if accepted
        else events_pb2.DECLARATION_DECISION_REJECTED
    )
    body.reason = reason
    return event


def issue_enrolment_code(
    channel: grpc.Channel, person_token: str, ttl: str = "", *, timeout: float = 30.0
) -> pb.IssueEnrolmentCodeResponse:
    """As the fund (or the operator): a one-time enrolment code for a person it insures."""
    stub = pb_grpc.BeneficiaryServiceStub(channel)
    request = pb.IssueEnrolmentCodeRequest(person_token=person_token, ttl=ttl)
    try:
        return stub.IssueEnrolmentCode(request, timeout=timeout)
    except grpc.RpcError as error:
        raise from_rpc_error(error) from error


class BeneficiaryClient:
    """An insured person's calls, as ``beneficiary/<their person token>``."""

    def __init__(
        self,
        channel: grpc.Channel,
        *,
        person_token: str,
        signer: Signer | None,
        log: TrustedLog,
    ) -> None:
        """``signer``: the person's enrolled key (None for reads only)."""
        self.person_token = person_token
        self._submitter = (
            InsurerClient(channel, signer=signer, log=log) if signer is not None else None
        )
        self.tokens = PersonTokens(channel)
        """Person tokens of the people this person declares."""
        self._stub = pb_grpc.BeneficiaryServiceStub(channel)
        self._contributions = contribution_grpc.ContributionServiceStub(channel)

    def declare(
        self,
        declaration_id: str,
        policy: tuple[str, str],
        people: Sequence[Declared],
        *,
        effective: dt.date,
        occurred_at: dt.datetime | None = None,
    ) -> VerifiedReceipt:
        """Sign and submit a declaration; return its verified receipt (or raise ClientError)."""
        event = beneficiaries_declared(
            self.person_token,
            declaration_id,
            policy,
            people,
            effective=effective,
            occurred_at=occurred_at or dt.datetime.now(dt.UTC),
        )
        if self._submitter is None:
            raise ValueError("declaring needs the person's signing key")
        return self._submitter.submit(event)

    def record(
        self, person_token: str | None = None, *, timeout: float = 30.0
    ) -> pb.GetPersonRecordResponse:
        """The record of this person (or of one of their accepted beneficiaries)."""
        request = pb.GetPersonRecordRequest(
            person_token=person_token or self.person_token,
            purpose=types_pb2.ACCESS_PURPOSE_BENEFICIARY_SELF,
        )
        try:
            return self._stub.GetPersonRecord(request, timeout=timeout)
        except grpc.RpcError as error:
            raise from_rpc_error(error) from error

    def contribution_status(
        self, jurisdiction: str, as_of: dt.date | None = None, *, timeout: float = 30.0
    ) -> contribution_pb.GetContributionStatusResponse:
        """This person's contributions: paid through, owed through the end of as_of's month."""
        request = contribution_pb.GetContributionStatusRequest(
            person_token=self.person_token, jurisdiction=jurisdiction
        )
        if as_of is not None:
            request.as_of.CopyFrom(civil_date(as_of))
        try:
            return self._contributions.GetContributionStatus(request, timeout=timeout)
        except grpc.RpcError as error:
            raise from_rpc_error(error) from error
