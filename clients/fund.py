"""The funds' client (task D, issue 11): FundService totals, with the answer's checkpoint
verified against the trusted log key before it is returned (as the portal's answers are).

funds = FundClient(channel, log=TrustedLog.from_verifier_key(LOG_VERIFIER_KEY))
answer = funds.totals("zakat-chamber", (2026, 1), (2026, 12))
for total in answer.response.totals: print(total.state_code, total.owed.amount_minor)
"""

from __future__ import annotations

import grpc

from clients.errors import from_rpc_error
from clients.portal import VerifiedAnswer
from clients.verify import TrustedLog, verify_checkpoint
from ledger.v1 import fund_service_pb2 as pb
from ledger.v1 import fund_service_pb2_grpc as pb_grpc

__all__ = ["FundClient"]


class FundClient:
    """FundService calls."""

    def __init__(self, channel: grpc.Channel, *, log: TrustedLog, timeout: float = 30.0) -> None:
        self._stub = pb_grpc.FundServiceStub(channel)
        self._log = log
        self._timeout = timeout

    def totals(
        self,
        funder_id: str,
        from_month: tuple[int, int],
        to_month: tuple[int, int],
        *,
        state_code: str = "",
    ) -> VerifiedAnswer[pb.GetFundTotalsResponse]:
        """The totals of ``funder_id`` ("" for every funder) for the months (year, month)."""
        request = pb.GetFundTotalsRequest(
            funder_id=funder_id,
            from_month=pb.YearMonth(year=from_month[0], month=from_month[1]),
            to_month=pb.YearMonth(year=to_month[0], month=to_month[1]),
            state_code=state_code,
        )
        try:
            response = self._stub.GetFundTotals(request, timeout=self._timeout)
        except grpc.RpcError as error:
            raise from_rpc_error(error) from None
        checkpoint = verify_checkpoint(response.checkpoint, self._log)
        if checkpoint.size != response.tree_size:
            raise ValueError(
                f"the answer names tree size {response.tree_size}, its checkpoint {checkpoint.size}"
            )
        return VerifiedAnswer(response, checkpoint)
