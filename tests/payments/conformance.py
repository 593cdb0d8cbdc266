"""The shared conformance suite: checks every payment-gateway adapter must pass.

Each check is a function taking a :class:`GatewayHarness` (the adapter plus the test-side
controls its gateway or sandbox offers). A check adapts to ``gateway.capabilities()`` and to the
harness: what does not apply is skipped with the reason, so a report shows what was not covered.

The rules come from :mod:`payments.gateway`: integer minor units; a repeated merchant reference
or refund reference never charges or refunds twice; ``get_status`` works by merchant reference
alone; a decline is a result, not an exception; refused requests change nothing; an unknown
outcome is resolved by ``get_status``; notifications are authenticated.

A new adapter gets the whole suite by adding a harness fixture to ``test_conformance.py``.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping
from contextlib import AbstractContextManager
from dataclasses import dataclass, field

import pytest

from payments.gateway import (
    Capability,
    GatewayOutcomeUnknown,
    GatewayRefused,
    GatewayResult,
    Money,
    PaymentGateway,
    PaymentRequest,
    PaymentStatus,
)

__all__ = [
    "CHECKS",
    "GatewayHarness",
    "charge",
    "check_authorize_capture_void",
    "check_decline_is_a_result",
    "check_money_is_integer_minor_units",
    "check_notifications_verified_and_tamper_evident",
    "check_purchase_outcome_unknown_resolved_by_status",
    "check_purchase_twice_charges_once",
    "check_refund_above_captured_is_refused",
    "check_refund_in_another_currency_is_refused",
    "check_refund_outcome_unknown_resolved_by_status",
    "check_refund_partial_is_idempotent",
    "check_status_by_merchant_reference_alone",
    "check_unknown_reference_is_not_found",
    "check_unsupported_operations_are_refused",
    "flip_middle_byte",
    "new_reference",
]

Delivery = tuple[bytes, dict[str, str]]


def flip_middle_byte(body: bytes) -> bytes:
    """The default tampering: one bit flipped in the middle of the body."""
    if not body:
        return b"x"
    middle = len(body) // 2
    return body[:middle] + bytes([body[middle] ^ 0x01]) + body[middle + 1 :]


@dataclass
class GatewayHarness:
    """An adapter under test and the controls its gateway (or sandbox) offers.

    Controls left as None make the checks that need them skip.
    """

    name: str
    gateway: PaymentGateway
    currency: str
    amount_minor: int = 10_000
    arrange_decline: Callable[[str], None] | None = None
    """Before ``purchase``/``authorize``: the card used for this merchant reference declines
    (direct and simulated gateways; a hosted page declines in ``complete`` instead)."""
    complete: Callable[[GatewayResult, bool], None] | None = None
    """Hosted page: given ``purchase``'s PENDING answer (with its redirect URL), the customer
    pays (True) or declines (False) on the gateway's page, and the gateway records the result."""
    outcome_unknown: Callable[[bool], AbstractContextManager[None]] | None = None
    """A context in which the next state-changing call raises GatewayOutcomeUnknown; the
    operation happened (True) or did not (False)."""
    deliver_notifications: Callable[[], list[Delivery]] | None = None
    """The server-to-server messages (body, headers) the gateway sent since the last call."""
    tamper: Callable[[bytes], bytes] = flip_middle_byte
    """How to forge a delivered notification body (default: flip one bit)."""
    charges: Callable[[], int] | None = None
    """How many charges the gateway has applied in all (to assert "charged once")."""
    notification_url: str = "https://portal.example/payments/notify"
    """Where the gateway posts notifications (a local receiver, for a hosted page)."""
    return_url: str = "https://portal.example/receipt"
    expected_failures: Mapping[str, str] = field(default_factory=dict)
    """Check name (without ``check_``) -> why this adapter is known to fail it; the test module
    marks those strict xfail, so a fixed adapter shows up as XPASS."""

    def money(self, amount_minor: int | None = None) -> Money:
        """An amount in the harness's currency (default: ``amount_minor``)."""
        return Money(self.currency, self.amount_minor if amount_minor is None else amount_minor)

    def request(self, reference: str, amount_minor: int | None = None) -> PaymentRequest:
        """A payment request for ``reference`` with return and notification URLs set."""
        return PaymentRequest(
            merchant_reference=reference,
            amount=self.money(amount_minor),
            description=f"conformance {self.name}",
            return_url=self.return_url,
            notification_url=self.notification_url,
        )

    def supports(self, capability: Capability) -> bool:
        """Whether the adapter declares ``capability``."""
        return capability in self.gateway.capabilities()


def new_reference(prefix: str = "c") -> str:
    """A fresh merchant or refund reference: letters and digits only (KNET's track-id rule)."""
    return f"{prefix}{uuid.uuid4().hex[:20]}"


def charge(harness: GatewayHarness, reference: str, *, approve: bool = True) -> GatewayResult:
    """Purchase and, on a hosted page, have the customer pay or decline; the final state."""
    gateway = harness.gateway
    hosted = harness.supports(Capability.HOSTED_PAGE)
    if not approve and not hosted:
        if harness.arrange_decline is None:
            pytest.skip(f"{harness.name}: the harness cannot make a card decline")
        harness.arrange_decline(reference)
    result = gateway.purchase(harness.request(reference))
    if hosted:
        assert result.status is PaymentStatus.PENDING, result
        assert result.redirect_url, "a hosted-page purchase answers with a redirect URL"
        if harness.complete is None:
            pytest.skip(f"{harness.name}: the harness cannot complete a hosted-page payment")
        harness.complete(result, approve)
        result = gateway.get_status(reference)
    return result


def _require(harness: GatewayHarness, *capabilities: Capability) -> None:
    missing = [c.value for c in capabilities if not harness.supports(c)]
    if missing:
        pytest.skip(f"{harness.name} does not declare {', '.join(missing)}")


def _captured(harness: GatewayHarness) -> tuple[str, GatewayResult]:
    reference = new_reference("p")
    result = charge(harness, reference)
    assert result.status is PaymentStatus.CAPTURED, result
    return reference, result


def _assert_amounts_are_ints(result: GatewayResult) -> None:
    for name in ("authorized_minor", "captured_minor", "refunded_minor"):
        assert type(getattr(result, name)) is int, f"{name} is {getattr(result, name)!r}"


# -- the checks ---------------------------------------------------------------------------------


def check_money_is_integer_minor_units(harness: GatewayHarness) -> None:
    """Money refuses floats and bools; every amount a gateway answers is an int."""
    with pytest.raises(TypeError):
        Money(harness.currency, 100.0)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        Money(harness.currency, True)
    with pytest.raises(ValueError, match="ISO 4217"):
        Money(harness.currency.lower(), 100)
    _require(harness, Capability.PURCHASE)
    reference, result = _captured(harness)
    _assert_amounts_are_ints(result)
    _assert_amounts_are_ints(harness.gateway.get_status(reference))


def check_purchase_twice_charges_once(harness: GatewayHarness) -> None:
    """A second purchase of the same merchant reference never charges again."""
    _require(harness, Capability.PURCHASE)
    before = harness.charges() if harness.charges else 0
    reference, first = _captured(harness)
    second = harness.gateway.purchase(harness.request(reference))
    status = harness.gateway.get_status(reference)
    assert status.status is PaymentStatus.CAPTURED
    assert status.captured_minor == harness.amount_minor
    if not harness.supports(Capability.HOSTED_PAGE):
        assert second.status is PaymentStatus.CAPTURED
        assert second.captured_minor == harness.amount_minor
        assert second.gateway_reference == first.gateway_reference
    if harness.charges is not None:
        assert harness.charges() - before == 1


def check_status_by_merchant_reference_alone(harness: GatewayHarness) -> None:
    """get_status finds a payment by our reference alone, with amount and currency."""
    _require(harness, Capability.PURCHASE)
    reference, _ = _captured(harness)
    status = harness.gateway.get_status(reference)
    assert status.status is PaymentStatus.CAPTURED
    assert status.merchant_reference == reference
    assert status.captured_minor == harness.amount_minor
    assert status.currency == harness.currency


def check_unknown_reference_is_not_found(harness: GatewayHarness) -> None:
    """A reference the gateway never saw is NOT_FOUND, not an error."""
    reference = new_reference("u")
    status = harness.gateway.get_status(reference)
    assert status.status is PaymentStatus.NOT_FOUND
    assert status.merchant_reference == reference
    assert status.captured_minor == 0


def check_decline_is_a_result(harness: GatewayHarness) -> None:
    """A declined card is a DECLINED result with nothing captured, not an exception."""
    _require(harness, Capability.PURCHASE)
    reference = new_reference("d")
    result = charge(harness, reference, approve=False)
    assert result.status is PaymentStatus.DECLINED, result
    assert result.captured_minor == 0
    status = harness.gateway.get_status(reference)
    assert status.status is PaymentStatus.DECLINED
    assert status.captured_minor == 0


def check_refund_partial_is_idempotent(harness: GatewayHarness) -> None:
    """A partial refund repeated with the same refund reference refunds once; two refunds add."""
    _require(harness, Capability.PURCHASE, Capability.REFUND)
    reference, _ = _captured(harness)
    part = harness.amount_minor // 4
    first_ref, second_ref = new_reference("r"), new_reference("r")
    first = harness.gateway.refund(reference, harness.money(part), first_ref)
    assert first.refunded_minor == part
    again = harness.gateway.refund(reference, harness.money(part), first_ref)
    assert again.refunded_minor == part, "the same refund reference refunded twice"
    rest = harness.amount_minor - part
    final = harness.gateway.refund(reference, harness.money(rest), second_ref)
    assert final.refunded_minor == harness.amount_minor
    status = harness.gateway.get_status(reference)
    assert status.refunded_minor == harness.amount_minor
    assert status.captured_minor == harness.amount_minor


def check_refund_above_captured_is_refused(harness: GatewayHarness) -> None:
    """A refund above what is left is refused (GatewayRefused) and refunds nothing."""
    _require(harness, Capability.PURCHASE, Capability.REFUND)
    reference, _ = _captured(harness)
    with pytest.raises(GatewayRefused):
        harness.gateway.refund(reference, harness.money(harness.amount_minor + 1), new_reference())
    assert harness.gateway.get_status(reference).refunded_minor == 0
    part = harness.amount_minor // 2
    harness.gateway.refund(reference, harness.money(part), new_reference("r"))
    with pytest.raises(GatewayRefused):
        harness.gateway.refund(reference, harness.money(part + 1), new_reference("r"))
    assert harness.gateway.get_status(reference).refunded_minor == part


def check_refund_in_another_currency_is_refused(harness: GatewayHarness) -> None:
    """A refund in another currency than the payment's is refused and refunds nothing."""
    _require(harness, Capability.PURCHASE, Capability.REFUND)
    reference, _ = _captured(harness)
    other = "USD" if harness.currency != "USD" else "EUR"
    with pytest.raises(GatewayRefused):
        harness.gateway.refund(reference, Money(other, 1), new_reference("r"))
    assert harness.gateway.get_status(reference).refunded_minor == 0


def check_unsupported_operations_are_refused(harness: GatewayHarness) -> None:
    """What the adapter does not declare raises GatewayRefused (nothing happens)."""
    gateway = harness.gateway
    reference = new_reference("x")
    attempts: dict[Capability, list[Callable[[], object]]] = {
        Capability.PURCHASE: [lambda: gateway.purchase(harness.request(reference))],
        Capability.AUTHORIZE_CAPTURE: [
            lambda: gateway.authorize(harness.request(reference)),
            lambda: gateway.capture(reference, harness.money()),
        ],
        Capability.VOID: [lambda: gateway.void(reference)],
        Capability.REFUND: [lambda: gateway.refund(reference, harness.money(), new_reference())],
        Capability.NOTIFICATIONS: [lambda: gateway.parse_notification(b"{}", {})],
    }
    unsupported = [c for c in attempts if not harness.supports(c)]
    if not unsupported:
        pytest.skip(f"{harness.name} declares every operation")
    for capability in unsupported:
        for attempt in attempts[capability]:
            with pytest.raises(GatewayRefused):
                attempt()
    assert gateway.get_status(reference).status is PaymentStatus.NOT_FOUND


def check_authorize_capture_void(harness: GatewayHarness) -> None:
    """Authorize then capture once (a repeat captures nothing more); void cancels."""
    _require(harness, Capability.AUTHORIZE_CAPTURE)
    gateway = harness.gateway
    reference = new_reference("a")
    authorized = gateway.authorize(harness.request(reference))
    assert authorized.status is PaymentStatus.AUTHORIZED
    assert authorized.authorized_minor == harness.amount_minor
    assert authorized.captured_minor == 0
    with pytest.raises(GatewayRefused):
        gateway.capture(reference, harness.money(harness.amount_minor + 1))
    captured = gateway.capture(reference, harness.money())
    assert captured.status is PaymentStatus.CAPTURED
    assert captured.captured_minor == harness.amount_minor
    try:
        again = gateway.capture(reference, harness.money())
    except GatewayRefused:
        pass  # refusing a repeated capture is as good as answering the existing state
    else:
        assert again.captured_minor == harness.amount_minor
    assert gateway.get_status(reference).captured_minor == harness.amount_minor
    with pytest.raises(GatewayRefused):
        gateway.capture(new_reference("a"), harness.money())  # nothing authorized
    if not harness.supports(Capability.VOID):
        return
    voided_reference = new_reference("v")
    gateway.authorize(harness.request(voided_reference))
    assert gateway.void(voided_reference).status is PaymentStatus.VOIDED
    with pytest.raises(GatewayRefused):
        gateway.capture(voided_reference, harness.money())
    status = gateway.get_status(voided_reference)
    assert status.status is PaymentStatus.VOIDED
    assert status.captured_minor == 0


def check_purchase_outcome_unknown_resolved_by_status(harness: GatewayHarness) -> None:
    """A purchase whose outcome is unknown is resolved by get_status, and a retry charges once."""
    _require(harness, Capability.PURCHASE)
    if harness.outcome_unknown is None:
        pytest.skip(f"{harness.name}: the harness cannot inject an unknown outcome")
    for applied in (True, False):
        before = harness.charges() if harness.charges else 0
        reference = new_reference("t")
        with harness.outcome_unknown(applied), pytest.raises(GatewayOutcomeUnknown):
            harness.gateway.purchase(harness.request(reference))
        status = harness.gateway.get_status(reference)
        if applied:
            assert status.status is not PaymentStatus.NOT_FOUND, status
        else:
            assert status.status is PaymentStatus.NOT_FOUND, status
        retried = charge(harness, reference)
        assert retried.status is PaymentStatus.CAPTURED
        assert retried.captured_minor == harness.amount_minor
        if harness.charges is not None:
            assert harness.charges() - before == 1


def check_refund_outcome_unknown_resolved_by_status(harness: GatewayHarness) -> None:
    """A refund whose outcome is unknown shows in get_status; retrying it refunds once."""
    _require(harness, Capability.PURCHASE, Capability.REFUND)
    if harness.outcome_unknown is None:
        pytest.skip(f"{harness.name}: the harness cannot inject an unknown outcome")
    for applied in (True, False):
        reference, _ = _captured(harness)
        part = harness.amount_minor // 2
        refund_reference = new_reference("r")
        with harness.outcome_unknown(applied), pytest.raises(GatewayOutcomeUnknown):
            harness.gateway.refund(reference, harness.money(part), refund_reference)
        status = harness.gateway.get_status(reference)
        assert status.refunded_minor == (part if applied else 0)
        retried = harness.gateway.refund(reference, harness.money(part), refund_reference)
        assert retried.refunded_minor == part
        assert harness.gateway.get_status(reference).refunded_minor == part


def check_notifications_verified_and_tamper_evident(harness: GatewayHarness) -> None:
    """Delivered notifications parse as verified; a forged one is only a hint."""
    _require(harness, Capability.PURCHASE, Capability.NOTIFICATIONS)
    if harness.deliver_notifications is None:
        pytest.skip(f"{harness.name}: the harness cannot deliver notifications")
    harness.deliver_notifications()  # forget earlier ones
    reference, _ = _captured(harness)
    deliveries = harness.deliver_notifications()
    assert deliveries, "a state change produced no notification"
    gateway = harness.gateway
    for body, headers in deliveries:
        notification = gateway.parse_notification(body, headers)
        assert notification.verified, notification
        assert notification.merchant_reference == reference
        assert notification.result is not None
        assert notification.result.merchant_reference == reference
        assert notification.acknowledgement
    body, headers = deliveries[-1]
    final = gateway.parse_notification(body, headers)
    assert final.result is not None
    assert final.result.status is PaymentStatus.CAPTURED
    assert final.result.captured_minor == harness.amount_minor
    forged = gateway.parse_notification(harness.tamper(body), headers)
    assert not forged.verified
    assert forged.result is None


CHECKS: tuple[Callable[[GatewayHarness], None], ...] = (
    check_money_is_integer_minor_units,
    check_purchase_twice_charges_once,
    check_status_by_merchant_reference_alone,
    check_unknown_reference_is_not_found,
    check_decline_is_a_result,
    check_refund_partial_is_idempotent,
    check_refund_above_captured_is_refused,
    check_refund_in_another_currency_is_refused,
    check_unsupported_operations_are_refused,
    check_authorize_capture_void,
    check_purchase_outcome_unknown_resolved_by_status,
    check_refund_outcome_unknown_resolved_by_status,
    check_notifications_verified_and_tamper_evident,
)
"""Every check, in the order a report reads best."""
