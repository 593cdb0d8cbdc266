"""The compliance client, decisions part (task B): penalty decisions with verified answers.

Every answer carries the signed checkpoint it was read at; the client verifies it with the
trusted log key before returning (as :class:`clients.portal.PortalClient` does).

client = ComplianceClient(channel, log=TrustedLog.from_verifier_key(LOG_VERIFIER_KEY))
answer = client.get_decision("CCHI-2026-0001")
print(answer.response.decision.due.amount_minor)
"""

from __future__ import annotations

from typing import TypeVar

import grpc

from clients.errors import from_rpc_error
from clients.portal import VerifiedAnswer
from clients.verify import TrustedLog, verify_checkpoint
from ledger.v1 import compliance_service_pb2 as pb
from ledger.v1 import compliance_service_pb2_grpc as pb_grpc
from ledger.v1 import coverage_service_pb2

__all__ = ["ComplianceClient"]

_R = TypeVar("_R")


class ComplianceClient:
    """ComplianceService decision calls; each answer's checkpoint is verified."""

    def __init__(self, channel: grpc.Channel, *, log: TrustedLog, timeout: float = 30.0) -> None:
        self._stub = pb_grpc.ComplianceServiceStub(channel)
        self._log = log
        self._timeout = timeout

    def _verified(
        self, response: _R, basis: coverage_service_pb2.AnswerBasis
    ) -> VerifiedAnswer[_R]:
        checkpoint = verify_checkpoint(basis.checkpoint, self._log)
        if checkpoint.size != basis.tree_size:
            raise ValueError(
                f"the answer names tree size {basis.tree_size}, its checkpoint {checkpoint.size}"
            )
        return VerifiedAnswer(response, checkpoint)

    def get_decision(self, decision_id: str) -> VerifiedAnswer[pb.GetPenaltyDecisionResponse]:
        """One penalty decision."""
        try:
            response = self._stub.GetPenaltyDecision(
                pb.GetPenaltyDecisionRequest(decision_id=decision_id), timeout=self._timeout
            )
        except grpc.RpcError as error:
            raise from_rpc_error(error) from None
        return self._verified(response, response.basis)

    def list_decisions(
        self, establishment_number: str, *, page_size: int = 0, page_token: str = ""
    ) -> VerifiedAnswer[pb.ListPenaltyDecisionsResponse]:
        """One page of an establishment's decisions."""
        request = pb.ListPenaltyDecisionsRequest(
            establishment_number=establishment_number, page_size=page_size, page_token=page_token
        )
        try:
            response = self._stub.ListPenaltyDecisions(request, timeout=self._timeout)
        except grpc.RpcError as error:
            raise from_rpc_error(error) from None
        return self._verified(response, response.basis)
