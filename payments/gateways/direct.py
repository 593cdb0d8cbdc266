"""Direct-capture card payments (Saudi mada) through an acquirer's JSON-over-HTTP API.

mada rails only purchase (authorize and capture in one step) and refund, so this adapter's
capabilities are ``{PURCHASE, REFUND}``; ``authorize``, ``capture``, ``void`` and
``parse_notification`` raise :class:`~payments.gateway.GatewayRefused`.

The API is mada-like, modelled on typical acquirer REST APIs (Moyasar, HyperPay): not any one
acquirer's exact wire format. :mod:`payments.sandbox.direct` serves it locally.

Authentication: every request carries ``Authorization: Bearer <api_key>`` (401 otherwise).
Amounts are integers in halalas (1 SAR = 100 halalas); the currency is ``SAR``.

``POST /v1/payments`` creates and captures a payment::

    {"given_id": "<merchant reference>", "amount": 10000, "currency": "SAR",
     "description": "...", "callback_url": "...",
     "source": {"type": "token", "token": "<card token>"}}

  It answers 201 with the new payment, or 200 with the existing payment when ``given_id`` is
  already known with the same amount and currency (nothing is charged again); 409 when the
  ``given_id`` is known with another amount; 400 for an invalid request. A declined card is a
  payment with ``status: "failed"``, not an error.

``GET /v1/payments?given_id=<merchant reference>`` answers 200 ``{"payments": [...]}``, an empty
list when the payment never reached the acquirer. ``GET /v1/payments/<id>`` answers one payment.

``POST /v1/payments/<id>/refund`` with ``{"amount": 500, "refund_id": "<refund reference>"}``
answers 200 with the payment; a known ``refund_id`` with the same amount refunds nothing again
(409 with another amount); 400 when the amount exceeds what is left to refund or the payment is
not paid.

A payment is::

    {"id": "pay_...", "given_id": "...", "status": "paid" | "failed" | "refunded",
     "amount": 10000, "captured": 10000, "refunded": 500, "currency": "SAR",
     "description": "...", "created_at": "...",
     "source": {"type": "token", "company": "mada", "last4": "1111",
                "message": "APPROVED", "response_code": "00"},
     "refunds": [{"refund_id": "...", "amount": 500}]}

and errors are ``{"type": "invalid_request_error", "message": "..."}``.

How the adapter reads answers: a timeout, a dropped connection, a 5xx, a 408 or 429, or an
answer that cannot be read raises :class:`~payments.gateway.GatewayOutcomeUnknown`; any other
4xx raises :class:`~payments.gateway.GatewayRefused` (nothing happened).

The card: :class:`~payments.gateway.PaymentRequest` carries no card, and a card number never
reaches this service. The customer's card is tokenized on the portal's payment page (with the
acquirer's publishable key); the adapter sends that token as ``source.token``. It comes from the
``card_tokens`` callable given to :class:`DirectGateway` (the portal's lookup by merchant
reference), or else from the ``card_token`` setting (one token for every payment: demos and the
sandbox, where tokens ending in ``0002`` decline).
"""

from __future__ import annotations

import http.client
import json
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

from payments.gateway import (
    Capability,
    GatewayOutcomeUnknown,
    GatewayRefused,
    GatewayResult,
    Money,
    Notification,
    PaymentRequest,
    PaymentStatus,
)

__all__ = ["DirectGateway", "from_settings"]

_STATUSES = {
    "initiated": PaymentStatus.PENDING,
    "authorized": PaymentStatus.AUTHORIZED,
    "paid": PaymentStatus.CAPTURED,
    "refunded": PaymentStatus.CAPTURED,
    "failed": PaymentStatus.DECLINED,
    "voided": PaymentStatus.VOIDED,
}
_UNKNOWN_OUTCOME_CODES = frozenset({408, 429})


class DirectGateway:
    """The mada-like direct-capture adapter (see the module doc for the API it speaks)."""

    name = "direct"

    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        timeout_seconds: float = 10.0,
        card_token: str = "",
        card_tokens: Callable[[PaymentRequest], str] | None = None,
    ) -> None:
        if urlsplit(base_url).scheme not in {"http", "https"} or not urlsplit(base_url).netloc:
            raise ValueError(f"base_url must be an http(s) URL, got {base_url!r}")
        if not api_key:
            raise ValueError("api_key is required")
        if timeout_seconds <= 0:
            raise ValueError(f"timeout_seconds must be positive, got {timeout_seconds!r}")
        self.base_url = base_url.rstrip("/")
        self.timeout_seconds = timeout_seconds
        self._api_key = api_key
        self._card_token = card_token
        self._card_tokens = card_tokens

    def capabilities(self) -> frozenset[Capability]:
        """Purchase and refund only (mada)."""
        return frozenset({Capability.PURCHASE, Capability.REFUND})

    def purchase(self, request: PaymentRequest) -> GatewayResult:
        """Charge the card; a repeated merchant reference returns the existing payment."""
        token = self._card_tokens(request) if self._card_tokens else self._card_token
        if not token:
            raise GatewayRefused(f"no card token for {request.merchant_reference!r}")
        body: dict[str, Any] = {
            "given_id": request.merchant_reference,
            "amount": request.amount.amount_minor,
            "currency": request.amount.currency,
            "description": request.description,
            "source": {"type": "token", "token": token},
        }
        if request.notification_url:
            body["callback_url"] = request.notification_url
        answer = self._call("POST", "/v1/payments", body)
        return _result(answer, request.merchant_reference)

    def authorize(self, request: PaymentRequest) -> GatewayResult:
        """Not on mada rails."""
        raise GatewayRefused("direct (mada) payments cannot be authorized separately")

    def capture(self, merchant_reference: str, amount: Money) -> GatewayResult:
        """Not on mada rails."""
        raise GatewayRefused("direct (mada) payments are captured by purchase")

    def void(self, merchant_reference: str) -> GatewayResult:
        """Not on mada rails (refund instead)."""
        raise GatewayRefused("direct (mada) payments cannot be voided; refund them")

    def refund(
        self, merchant_reference: str, amount: Money, refund_reference: str
    ) -> GatewayResult:
        """Refund part of the payment; the refund reference is the acquirer's refund_id."""
        payment = self._find(merchant_reference)
        if payment is None:
            raise GatewayRefused(f"no payment with merchant reference {merchant_reference!r}")
        current = _result(payment, merchant_reference)
        if amount.currency != current.currency:
            raise GatewayRefused(f"payment is in {current.currency}, not {amount.currency}")
        if not refund_reference:
            raise GatewayRefused("a refund reference is required")
        if not current.gateway_reference:
            raise GatewayOutcomeUnknown("the acquirer's payment has no id")
        payment_id = quote(current.gateway_reference, safe="")
        answer = self._call(
            "POST",
            f"/v1/payments/{payment_id}/refund",
            {"amount": amount.amount_minor, "refund_id": refund_reference},
        )
        return _result(answer, merchant_reference)

    def get_status(self, merchant_reference: str) -> GatewayResult:
        """The payment found by ``given_id``; NOT_FOUND when it never reached the acquirer."""
        payment = self._find(merchant_reference)
        if payment is None:
            return GatewayResult(
                status=PaymentStatus.NOT_FOUND, merchant_reference=merchant_reference
            )
        return _result(payment, merchant_reference)

    def parse_notification(self, raw: bytes, headers: Mapping[str, str]) -> Notification:
        """This adapter takes no notifications: results come from the synchronous answer."""
        raise GatewayRefused("the direct gateway does not send notifications")

    # -- HTTP -----------------------------------------------------------------------------

    def _find(self, merchant_reference: str) -> dict[str, Any] | None:
        query = urlencode({"given_id": merchant_reference})
        answer = self._call("GET", f"/v1/payments?{query}", None)
        payments = answer.get("payments")
        if not isinstance(payments, list) or not all(isinstance(p, dict) for p in payments):
            raise GatewayOutcomeUnknown("unreadable payment list from the acquirer")
        matching = [p for p in payments if p.get("given_id") == merchant_reference]
        return matching[0] if matching else None

    def _call(self, method: str, path: str, body: dict[str, Any] | None) -> dict[str, Any]:
        data = json.dumps(body).encode() if body is not None else None
        request = urllib.request.Request(  # noqa: S310 (the scheme is checked in __init__)
            self.base_url + path,
            data=data,
            method=method,
            headers={
                "Authorization": f"Bearer {self._api_key}",
                "Accept": "application/json",
                **({"Content-Type": "application/json"} if data is not None else {}),
            },
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_seconds) as response:  # noqa: S310
                payload = response.read()
        except urllib.error.HTTPError as error:
            raise _http_error(method, path, error) from None
        except (TimeoutError, urllib.error.URLError, http.client.HTTPException, OSError) as error:
            raise GatewayOutcomeUnknown(f"{method} {path}: {error}") from None
        try:
            answer = json.loads(payload)
        except (ValueError, UnicodeDecodeError):
            raise GatewayOutcomeUnknown(f"{method} {path}: the answer is not JSON") from None
        if not isinstance(answer, dict):
            raise GatewayOutcomeUnknown(f"{method} {path}: the answer is not a JSON object")
        return answer


def _http_error(method: str, path: str, error: urllib.error.HTTPError) -> Exception:
    try:
        details = json.loads(error.read())
        message = str(details.get("message", "")) if isinstance(details, dict) else ""
    except (ValueError, UnicodeDecodeError, OSError, http.client.HTTPException):
        message = ""
    text = f"{method} {path}: HTTP {error.code} {message}".rstrip()
    if error.code >= 500 or error.code in _UNKNOWN_OUTCOME_CODES:
        return GatewayOutcomeUnknown(text)
    return GatewayRefused(text)


def _int(payment: Mapping[str, Any], name: str) -> int:
    value = payment.get(name, 0)
    if type(value) is not int or value < 0:
        raise GatewayOutcomeUnknown(f"unreadable {name} in the acquirer's answer: {value!r}")
    return value


def _result(payment: Mapping[str, Any], merchant_reference: str) -> GatewayResult:
    """The acquirer's payment object as a GatewayResult (unexpected shapes: outcome unknown)."""
    status = _STATUSES.get(str(payment.get("status")))
    if status is None:
        raise GatewayOutcomeUnknown(f"unknown payment status {payment.get('status')!r}")
    if payment.get("given_id") != merchant_reference:
        raise GatewayOutcomeUnknown(
            f"the acquirer answered for {payment.get('given_id')!r}, not {merchant_reference!r}"
        )
    source = payment.get("source")
    source = source if isinstance(source, dict) else {}
    captured = _int(payment, "captured")
    raw = {key: str(value) for key, value in payment.items() if not isinstance(value, dict | list)}
    raw.update({f"source.{key}": str(value) for key, value in source.items()})
    return GatewayResult(
        status=status,
        merchant_reference=merchant_reference,
        gateway_reference=str(payment.get("id", "")),
        authorized_minor=captured if status is PaymentStatus.CAPTURED else 0,
        captured_minor=captured,
        refunded_minor=_int(payment, "refunded"),
        currency=str(payment.get("currency", "")),
        message=str(source.get("message", "")),
        raw=raw,
    )


def from_settings(settings: Mapping[str, str]) -> DirectGateway:
    """Build the adapter: ``base_url`` and ``api_key`` (required), ``timeout_seconds`` (10),
    ``card_token`` (optional: one token for every payment, for demos and the sandbox)."""
    base_url = settings.get("base_url", "").strip()
    api_key = settings.get("api_key", "").strip()
    if not base_url or not api_key:
        raise ValueError("the direct gateway needs the settings base_url and api_key")
    timeout_text = settings.get("timeout_seconds", "").strip()
    return DirectGateway(
        base_url,
        api_key,
        timeout_seconds=float(timeout_text) if timeout_text else 10.0,
        card_token=settings.get("card_token", "").strip(),
    )
