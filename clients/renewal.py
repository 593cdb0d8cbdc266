"""The renewal portal's payment client: quote, pay, complete, refund; receipts verified.

renewals = RenewalClient(channel, log=TrustedLog.from_verifier_key(LOG_VERIFIER_KEY))
quote = renewals.quote(request).quote
payment = renewals.start_payment(quote.quote_id, idempotency_key, gateway="knet", return_url=...)
# hosted page: send the customer to payment.redirect_url; when they come back:
payment = renewals.complete_payment(payment.payment_id)
# payment.state == PAYMENT_STATE_RECORDED; its ledger receipt was verified by the client.
"""

from __future__ import annotations

import grpc

from clients.errors import from_rpc_error
from clients.verify import TrustedLog, verify_receipt
from ledger.entry import decode_entry
from payments.v1 import renewal_service_pb2 as pb
from payments.v1 import renewal_service_pb2_grpc as pb_grpc

__all__ = ["RenewalClient"]


class RenewalClient:
    """RenewalService calls; a recorded payment's receipt is verified before it is returned."""

    def __init__(self, channel: grpc.Channel, *, log: TrustedLog, timeout: float = 60.0) -> None:
        self._stub = pb_grpc.RenewalServiceStub(channel)
        self._log = log
        self._timeout = timeout

    def _verified(self, payment: pb.Payment) -> pb.Payment:
        if payment.state == pb.PAYMENT_STATE_RECORDED:
            payload = decode_entry(payment.receipt.entry).envelope.payload
            verify_receipt(payment.receipt, self._log, payload)
        return payment

    def quote(self, request: pb.QuoteRenewalRequest) -> pb.QuoteRenewalResponse:
        """Price a renewal (or check the household, in a private-insurance state)."""
        try:
            response: pb.QuoteRenewalResponse = self._stub.QuoteRenewal(
                request, timeout=self._timeout
            )
        except grpc.RpcError as error:
            raise from_rpc_error(error) from None
        return response

    def start_payment(
        self, quote_id: str, idempotency_key: str, *, gateway: str, return_url: str = ""
    ) -> pb.Payment:
        """Start collecting a quote's fee."""
        request = pb.StartPaymentRequest(
            quote_id=quote_id,
            idempotency_key=idempotency_key,
            gateway=gateway,
            return_url=return_url,
        )
        try:
            response = self._stub.StartPayment(request, timeout=self._timeout)
        except grpc.RpcError as error:
            raise from_rpc_error(error) from None
        return self._verified(response.payment)

    def complete_payment(self, payment_id: str, gateway_result: bytes = b"") -> pb.Payment:
        """Have the server confirm the payment with the gateway (and record it); pass what the
        gateway handed the portal, if anything (kept as an unverified hint)."""
        try:
            response = self._stub.CompletePayment(
                pb.CompletePaymentRequest(payment_id=payment_id, gateway_result=gateway_result),
                timeout=self._timeout,
            )
        except grpc.RpcError as error:
            raise from_rpc_error(error) from None
        return self._verified(response.payment)

    def refund(
        self, payment_id: str, amount_minor: int, idempotency_key: str, reason: str = ""
    ) -> pb.Payment:
        """Refund part of a recorded fee."""
        request = pb.RefundPaymentRequest(
            payment_id=payment_id,
            amount_minor=amount_minor,
            idempotency_key=idempotency_key,
            reason=reason,
        )
        try:
            response = self._stub.RefundPayment(request, timeout=self._timeout)
        except grpc.RpcError as error:
            raise from_rpc_error(error) from None
        return self._verified(response.payment)

    def get(self, *, payment_id: str = "", quote_id: str = "") -> pb.GetRenewalResponse:
        """A renewal's quote and payment."""
        request = (
            pb.GetRenewalRequest(payment_id=payment_id)
            if payment_id
            else pb.GetRenewalRequest(quote_id=quote_id)
        )
        try:
            response: pb.GetRenewalResponse = self._stub.GetRenewal(request, timeout=self._timeout)
        except grpc.RpcError as error:
            raise from_rpc_error(error) from None
        return response
