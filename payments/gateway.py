"""The payment-gateway adapter contract (ARCHITECTURE.md section 6).

An adapter speaks one gateway's protocol; the renewal saga (``payments.renewal``) speaks only
this contract, and adapts its flow to what :meth:`PaymentGateway.capabilities` says:

* a rail that only purchases and refunds (mada-like direct capture) is driven by ``purchase``;
* a rail with authorize/capture is authorized first and captured once the renewal is recorded;
* a hosted-page rail (KNET-style) answers ``purchase`` with ``PENDING`` and a redirect URL; its
  server-to-server notification is parsed by ``parse_notification`` and stored before it is
  acknowledged, and the result is always confirmed with ``get_status`` before the renewal is
  delivered.

Rules every adapter keeps (the shared conformance suite checks them):

* money is integer minor units with an ISO 4217 currency, never a float;
* a timeout, a dropped connection or an answer that cannot be read raises
  :class:`GatewayOutcomeUnknown`: the operation may or may not have happened, and only
  ``get_status(merchant_reference)`` tells;
* a request the gateway refused for sure raises :class:`GatewayRefused` (nothing happened);
  a declined card is not an exception but a result with status ``DECLINED``;
* ``get_status`` works with the merchant reference alone (the gateway's own id may never have
  reached us);
* repeating an operation with the same merchant reference (or refund reference) never charges
  or refunds twice.

Third-party adapters register a factory in the entry-point group ``policy_ledger.payment_gateways``
(see :func:`load_gateway` and docs/payments.md).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from typing import Protocol, runtime_checkable

__all__ = [
    "ENTRY_POINT_GROUP",
    "Capability",
    "GatewayOutcomeUnknown",
    "GatewayRefused",
    "GatewayResult",
    "Money",
    "Notification",
    "PaymentGateway",
    "PaymentRequest",
    "PaymentStatus",
    "load_gateway",
]

ENTRY_POINT_GROUP = "policy_ledger.payment_gateways"


@dataclass(frozen=True, order=True)
class Money:
    """An amount in integer minor units of an ISO 4217 currency (KWD: 3 decimals, fils)."""

    currency: str
    amount_minor: int

    def __post_init__(self) -> None:
        if type(self.amount_minor) is not int:  # bool and float are refused too
            raise TypeError(f"amount_minor must be an int, got {type(self.amount_minor).__name__}")
        if len(self.currency) != 3 or not self.currency.isascii() or not self.currency.isupper():
            raise ValueError(f"currency must be an ISO 4217 code, got {self.currency!r}")


class Capability(enum.Enum):
    """What a gateway can do."""

    PURCHASE = "purchase"
    """Authorize and capture in one step."""
    AUTHORIZE_CAPTURE = "authorize_capture"
    """Authorize now, capture (or void) later."""
    VOID = "void"
    """Cancel an authorization (or a same-day purchase) before settlement."""
    REFUND = "refund"
    """Return captured money, partially and repeatedly."""
    HOSTED_PAGE = "hosted_page"
    """The customer pays on the gateway's page: purchase answers PENDING with a redirect URL."""
    NOTIFICATIONS = "notifications"
    """The gateway posts results server to server (parse_notification)."""


class PaymentStatus(enum.Enum):
    """A payment's state at the gateway."""

    PENDING = "pending"
    """Started; the customer has not finished (hosted page) or the gateway has not decided."""
    AUTHORIZED = "authorized"
    CAPTURED = "captured"
    DECLINED = "declined"
    VOIDED = "voided"
    NOT_FOUND = "not_found"
    """The gateway has no payment with this merchant reference (it never reached it)."""


@dataclass(frozen=True)
class PaymentRequest:
    """What the saga asks a gateway to charge."""

    merchant_reference: str
    """Ours, derived from the renewal; unique per payment attempt; the gateway's track id."""
    amount: Money
    description: str
    return_url: str = ""
    """Where a hosted page sends the customer back."""
    notification_url: str = ""
    """Where a gateway posts its server-to-server result."""


@dataclass(frozen=True)
class GatewayResult:
    """The gateway's answer about one payment."""

    status: PaymentStatus
    merchant_reference: str
    gateway_reference: str = ""
    """The gateway's own id (payment id, transaction id), when it gave one."""
    authorized_minor: int = 0
    captured_minor: int = 0
    refunded_minor: int = 0
    """Running totals of the payment (not the amount of the last operation). A gateway that
    cannot report refunds in get_status (KNET has no refund inquiry) reports 0 there."""
    currency: str = ""
    redirect_url: str = ""
    """For PENDING on a hosted-page gateway: where to send the customer."""
    message: str = ""
    """The gateway's words (result code, decline reason), for people."""
    raw: Mapping[str, str] = field(default_factory=dict)
    """The gateway's fields as received, kept for reconciliation and disputes."""


@dataclass(frozen=True)
class Notification:
    """A server-to-server message from the gateway."""

    merchant_reference: str
    verified: bool
    """True when the adapter authenticated it (signature, decryption with our key). An
    unverified notification is only a hint: query get_status before believing it."""
    result: GatewayResult | None
    acknowledgement: bytes
    """What to answer the gateway once the notification is stored (KNET: ``REDIRECT=<url>``)."""


class GatewayOutcomeUnknown(Exception):
    """The gateway may or may not have done it (timeout, connection lost, unreadable answer)."""


class GatewayRefused(Exception):
    """The gateway refused the request for sure; nothing happened (bad request, bad state)."""


@runtime_checkable
class PaymentGateway(Protocol):
    """One payment gateway (see module doc for the rules)."""

    name: str

    def capabilities(self) -> frozenset[Capability]:
        """What this gateway can do."""
        ...

    def purchase(self, request: PaymentRequest) -> GatewayResult:
        """Charge (authorize and capture), or start a hosted-page payment (PENDING + URL)."""
        ...

    def authorize(self, request: PaymentRequest) -> GatewayResult:
        """Reserve the amount without capturing it."""
        ...

    def capture(self, merchant_reference: str, amount: Money) -> GatewayResult:
        """Capture an authorized payment (at most what was authorized). A repeat, or a capture
        of a payment the gateway captured meanwhile, may answer its state or raise
        :class:`GatewayRefused`: the saga reads ``get_status`` after a refused capture."""
        ...

    def void(self, merchant_reference: str) -> GatewayResult:
        """Cancel an authorization."""
        ...

    def refund(
        self, merchant_reference: str, amount: Money, refund_reference: str
    ) -> GatewayResult:
        """Refund part or all of the captured amount; one refund_reference refunds once."""
        ...

    def get_status(self, merchant_reference: str) -> GatewayResult:
        """The payment's state at the gateway, by our reference alone."""
        ...

    def parse_notification(self, raw: bytes, headers: Mapping[str, str]) -> Notification:
        """Authenticate and parse a server-to-server message."""
        ...


def load_gateway(name: str, settings: Mapping[str, str]) -> PaymentGateway:
    """The adapter registered under ``name`` in the entry-point group, built with ``settings``.

    A registered factory is a callable ``factory(settings: Mapping[str, str]) -> PaymentGateway``.
    """
    for point in entry_points(group=ENTRY_POINT_GROUP):
        if point.name == name:
            gateway = point.load()(settings)
            if not isinstance(gateway, PaymentGateway):
                raise TypeError(f"gateway {name!r} does not implement PaymentGateway")
            return gateway
    known = sorted(point.name for point in entry_points(group=ENTRY_POINT_GROUP))
    raise LookupError(f"no payment gateway {name!r}; registered: {', '.join(known) or 'none'}")
