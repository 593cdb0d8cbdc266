"""An in-process payment gateway with seeded fault injection, for tests, demos and benchmarks.

:class:`SimulatedGateway` keeps its own ledger of payments by merchant reference and implements
the :class:`~payments.gateway.PaymentGateway` contract structurally (purchase, authorize and
capture, void, refund, notifications). It keeps every rule of the contract:

* a second ``purchase``/``authorize`` of the same merchant reference returns the existing state
  and never charges twice (a different amount or currency for a known reference is refused);
* a refund reference refunds once; refunds never exceed what was captured;
* a declined payment is a result with status ``DECLINED`` (from ``FaultPlan.decline_rate`` or
  ``FaultPlan.declined_references``), never an exception.

Faults come from a :class:`FaultPlan` and a seed, and are deterministic for a given seed and a
given sequence of calls (the gateway draws the same number of random values on every call):

* ``decline_rate``: a new purchase or authorization is declined;
* ``timeout_rate``: a state-changing call raises :class:`~payments.gateway.GatewayOutcomeUnknown`;
  the operation did happen (probability ``timeout_applied_rate``) or did not, and only
  ``get_status`` tells. ``get_status`` itself is never faulted: it is the way out;
* every state change queues a verified :class:`~payments.gateway.Notification` in an outbox;
  :meth:`SimulatedGateway.drain_notifications` hands them out with ``lose_rate`` (dropped for
  good), ``duplicate_rate`` (delivered twice) and ``reorder`` (shuffled) applied;
* ``latency_seconds``: every call sleeps this long (outside the lock), e.g. 0.05 s in the
  benchmark.

Crash points are the caller's business (the saga), not the gateway's; ``calls`` (every call,
faulted or not) and ``applied`` (calls that changed state) count per operation, so a test can
assert "captured exactly once".

Serialized notifications (:meth:`SimulatedGateway.notification_bytes`) are a JSON body with an
HMAC-SHA256 of the body, hex, in the header ``X-Simulated-Signature``; ``parse_notification``
answers an unsigned or badly signed body with ``verified=False`` and no result (a hint).

:func:`from_settings` is the entry point ``simulated`` of ``policy_ledger.payment_gateways``.
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import json
import random
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

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

__all__ = [
    "DEFAULT_HMAC_KEY",
    "SIGNATURE_HEADER",
    "FaultPlan",
    "SimulatedGateway",
    "from_settings",
]

SIGNATURE_HEADER = "X-Simulated-Signature"
DEFAULT_HMAC_KEY = "simulated-gateway-notification-key"
"""Not a secret: the simulator is for tests and demos. Set ``hmac_key`` to change it."""

_ACK = b"OK"


def _rate(name: str, value: float) -> float:
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be between 0 and 1, got {value!r}")
    return value


@dataclass(frozen=True)
class FaultPlan:
    """Which faults the simulated gateway injects, and how often (rates are in [0, 1])."""

    decline_rate: float = 0.0
    """A new purchase or authorization is declined."""
    timeout_rate: float = 0.0
    """A state-changing call raises GatewayOutcomeUnknown."""
    timeout_applied_rate: float = 0.5
    """Of the timed-out calls, the share whose operation happened anyway."""
    duplicate_rate: float = 0.0
    """A drained notification is delivered twice."""
    lose_rate: float = 0.0
    """A drained notification is never delivered."""
    reorder: bool = False
    """Drained notifications are shuffled."""
    latency_seconds: float = 0.0
    """Every call sleeps this long."""
    declined_references: frozenset[str] = frozenset()
    """Merchant references whose purchase or authorization is always declined."""

    def __post_init__(self) -> None:
        for name in (
            "decline_rate",
            "timeout_rate",
            "timeout_applied_rate",
            "duplicate_rate",
            "lose_rate",
        ):
            _rate(name, getattr(self, name))
        if self.latency_seconds < 0:
            raise ValueError(f"latency_seconds must be >= 0, got {self.latency_seconds!r}")


@dataclass(frozen=True)
class _Draw:
    """The random values one call consumes (always all of them, for determinism)."""

    timed_out: bool
    applied: bool
    declined: bool


@dataclass
class _Payment:
    merchant_reference: str
    gateway_reference: str
    currency: str
    amount_minor: int
    status: PaymentStatus
    authorized_minor: int = 0
    captured_minor: int = 0
    refunded_minor: int = 0
    message: str = ""
    refunds: dict[str, int] = field(default_factory=dict)
    sequence: int = 0
    """Bumped on every state change; carried by notifications so consumers can order them."""


class SimulatedGateway:
    """An in-process gateway with its own thread-safe ledger and seeded faults."""

    name = "simulated"

    def __init__(
        self,
        plan: FaultPlan | None = None,
        *,
        seed: int = 0,
        hmac_key: bytes | str = DEFAULT_HMAC_KEY,
    ) -> None:
        self.plan = plan if plan is not None else FaultPlan()
        self.seed = seed
        self._key = hmac_key.encode() if isinstance(hmac_key, str) else bytes(hmac_key)
        self._rng = random.Random(seed)  # noqa: S311 (seeded faults, not cryptography)
        self._delivery_rng = random.Random(self._rng.getrandbits(64))  # noqa: S311
        self._lock = threading.Lock()
        self._payments: dict[str, _Payment] = {}
        self._refund_owner: dict[str, str] = {}
        self._outbox: list[Notification] = []
        self._ids = itertools.count(1)
        self._forced: bool | None = None
        self._declined: set[str] = set(self.plan.declined_references)
        self.calls: Counter[str] = Counter()
        """Every call per operation, faulted or not."""
        self.applied: Counter[str] = Counter()
        """Calls per operation that changed state (``applied["capture"] == 1``: captured once)."""

    # -- the contract ---------------------------------------------------------------------

    def capabilities(self) -> frozenset[Capability]:
        """Purchase, authorize/capture, void, refund and notifications."""
        return frozenset(
            {
                Capability.PURCHASE,
                Capability.AUTHORIZE_CAPTURE,
                Capability.VOID,
                Capability.REFUND,
                Capability.NOTIFICATIONS,
            }
        )

    def purchase(self, request: PaymentRequest) -> GatewayResult:
        """Authorize and capture; a known reference returns its existing state."""
        return self._call("purchase", lambda draw: self._start(request, draw, capture=True))

    def authorize(self, request: PaymentRequest) -> GatewayResult:
        """Reserve the amount; a known reference returns its existing state."""
        return self._call("authorize", lambda draw: self._start(request, draw, capture=False))

    def capture(self, merchant_reference: str, amount: Money) -> GatewayResult:
        """Capture an authorization, at most what was authorized; repeating it is harmless."""
        return self._call("capture", lambda _draw: self._capture(merchant_reference, amount))

    def void(self, merchant_reference: str) -> GatewayResult:
        """Cancel an authorization that was not captured; repeating it is harmless."""
        return self._call("void", lambda _draw: self._void(merchant_reference))

    def refund(
        self, merchant_reference: str, amount: Money, refund_reference: str
    ) -> GatewayResult:
        """Refund part of what was captured; one refund reference refunds once."""
        return self._call(
            "refund", lambda _draw: self._refund(merchant_reference, amount, refund_reference)
        )

    def get_status(self, merchant_reference: str) -> GatewayResult:
        """The payment's state by merchant reference (never faulted, only delayed)."""
        self._sleep()
        with self._lock:
            self.calls["get_status"] += 1
            payment = self._payments.get(merchant_reference)
            if payment is None:
                return GatewayResult(
                    status=PaymentStatus.NOT_FOUND, merchant_reference=merchant_reference
                )
            return self._result(payment)

    def parse_notification(self, raw: bytes, headers: Mapping[str, str]) -> Notification:
        """Check the HMAC signature and parse; a bad or missing signature gives a hint only."""
        with self._lock:
            self.calls["parse_notification"] += 1
        signature = _header(headers, SIGNATURE_HEADER)
        try:
            fields = json.loads(raw)
            reference = (
                str(fields.get("merchant_reference", "")) if isinstance(fields, dict) else ""
            )
        except (ValueError, UnicodeDecodeError):
            fields, reference = None, ""
        if signature is None or not hmac.compare_digest(signature, self._sign(raw)):
            return Notification(
                merchant_reference=reference, verified=False, result=None, acknowledgement=_ACK
            )
        try:
            result = _result_from_fields(fields)
        except (KeyError, TypeError, ValueError):
            return Notification(
                merchant_reference=reference, verified=False, result=None, acknowledgement=_ACK
            )
        return Notification(
            merchant_reference=result.merchant_reference,
            verified=True,
            result=result,
            acknowledgement=_ACK,
        )

    # -- for tests and drivers ------------------------------------------------------------

    def inject_outcome_unknown(self, applied: bool | None) -> None:
        """Make the next state-changing call raise GatewayOutcomeUnknown after applying the
        operation (True) or without applying it (False); None cancels a pending injection."""
        with self._lock:
            self._forced = applied

    def decline_reference(self, merchant_reference: str) -> None:
        """Decline a future purchase or authorization of this merchant reference."""
        with self._lock:
            self._declined.add(merchant_reference)

    def drain_notifications(self) -> list[Notification]:
        """The queued notifications, with the plan's loss, duplication and reordering."""
        with self._lock:
            queued, self._outbox = self._outbox, []
            delivered: list[Notification] = []
            for notification in queued:
                lost = self._delivery_rng.random() < self.plan.lose_rate
                duplicated = self._delivery_rng.random() < self.plan.duplicate_rate
                if lost:
                    continue
                delivered.append(notification)
                if duplicated:
                    delivered.append(notification)
            if self.plan.reorder:
                self._delivery_rng.shuffle(delivered)
            return delivered

    def notification_bytes(self, notification: Notification) -> tuple[bytes, dict[str, str]]:
        """The wire form of a notification: a JSON body and its signature header."""
        if notification.result is None:
            raise ValueError("only a notification with a result can be serialized")
        body = json.dumps(
            _fields_from_result(notification.result), sort_keys=True, separators=(",", ":")
        ).encode()
        return body, {"Content-Type": "application/json", SIGNATURE_HEADER: self._sign(body)}

    def snapshot(self) -> dict[str, GatewayResult]:
        """Every payment's state, by merchant reference (for reconciliation tests)."""
        with self._lock:
            return {ref: self._result(payment) for ref, payment in self._payments.items()}

    # -- internals ------------------------------------------------------------------------

    def _sleep(self) -> None:
        if self.plan.latency_seconds > 0:
            time.sleep(self.plan.latency_seconds)

    def _draw(self) -> _Draw:
        timed_out = self._rng.random() < self.plan.timeout_rate
        applied = self._rng.random() < self.plan.timeout_applied_rate
        declined = self._rng.random() < self.plan.decline_rate
        if self._forced is not None:
            timed_out, applied, self._forced = True, self._forced, None
        return _Draw(timed_out=timed_out, applied=applied, declined=declined)

    def _call(self, operation: str, apply: Callable[[_Draw], GatewayResult]) -> GatewayResult:
        self._sleep()
        with self._lock:
            self.calls[operation] += 1
            draw = self._draw()
            if draw.timed_out and not draw.applied:
                raise GatewayOutcomeUnknown(f"simulated timeout in {operation} (not applied)")
            try:
                result = apply(draw)
            except GatewayRefused:
                if draw.timed_out:
                    raise GatewayOutcomeUnknown(
                        f"simulated timeout in {operation} (refused)"
                    ) from None
                raise
            if draw.timed_out:
                raise GatewayOutcomeUnknown(f"simulated timeout in {operation} (applied)")
            return result

    def _changed(self, operation: str, payment: _Payment) -> GatewayResult:
        payment.sequence += 1
        self.applied[operation] += 1
        result = self._result(payment)
        self._outbox.append(
            Notification(
                merchant_reference=payment.merchant_reference,
                verified=True,
                result=result,
                acknowledgement=_ACK,
            )
        )
        return result

    def _start(self, request: PaymentRequest, draw: _Draw, *, capture: bool) -> GatewayResult:
        operation = "purchase" if capture else "authorize"
        amount = request.amount
        if amount.amount_minor <= 0:
            raise GatewayRefused(f"amount must be positive, got {amount.amount_minor}")
        if not request.merchant_reference:
            raise GatewayRefused("a merchant reference is required")
        existing = self._payments.get(request.merchant_reference)
        if existing is not None:
            if (existing.currency, existing.amount_minor) != (amount.currency, amount.amount_minor):
                raise GatewayRefused(
                    f"merchant reference {request.merchant_reference!r} was used for "
                    f"{existing.currency} {existing.amount_minor}"
                )
            return self._result(existing)
        payment = _Payment(
            merchant_reference=request.merchant_reference,
            gateway_reference=f"sim-{next(self._ids):06d}",
            currency=amount.currency,
            amount_minor=amount.amount_minor,
            status=PaymentStatus.DECLINED,
        )
        self._payments[payment.merchant_reference] = payment
        if draw.declined or request.merchant_reference in self._declined:
            payment.message = "declined (simulated)"
            return self._changed(operation, payment)
        payment.authorized_minor = amount.amount_minor
        if capture:
            payment.status = PaymentStatus.CAPTURED
            payment.captured_minor = amount.amount_minor
            payment.message = "captured"
        else:
            payment.status = PaymentStatus.AUTHORIZED
            payment.message = "authorized"
        return self._changed(operation, payment)

    def _known(self, merchant_reference: str) -> _Payment:
        payment = self._payments.get(merchant_reference)
        if payment is None:
            raise GatewayRefused(f"no payment with merchant reference {merchant_reference!r}")
        return payment

    def _capture(self, merchant_reference: str, amount: Money) -> GatewayResult:
        payment = self._known(merchant_reference)
        if amount.currency != payment.currency:
            raise GatewayRefused(f"payment is in {payment.currency}, not {amount.currency}")
        if (
            payment.status is PaymentStatus.CAPTURED
            and payment.captured_minor == amount.amount_minor
        ):
            return self._result(payment)  # a repeated capture: already done
        if payment.status is not PaymentStatus.AUTHORIZED:
            raise GatewayRefused(f"cannot capture a payment that is {payment.status.value}")
        if not 0 < amount.amount_minor <= payment.authorized_minor:
            raise GatewayRefused(
                f"capture {amount.amount_minor} is outside (0, {payment.authorized_minor}]"
            )
        payment.status = PaymentStatus.CAPTURED
        payment.captured_minor = amount.amount_minor
        payment.message = "captured"
        return self._changed("capture", payment)

    def _void(self, merchant_reference: str) -> GatewayResult:
        payment = self._known(merchant_reference)
        if payment.status is PaymentStatus.VOIDED:
            return self._result(payment)
        if payment.status is not PaymentStatus.AUTHORIZED:
            raise GatewayRefused(f"cannot void a payment that is {payment.status.value}")
        payment.status = PaymentStatus.VOIDED
        payment.message = "voided"
        return self._changed("void", payment)

    def _refund(
        self, merchant_reference: str, amount: Money, refund_reference: str
    ) -> GatewayResult:
        payment = self._known(merchant_reference)
        if not refund_reference:
            raise GatewayRefused("a refund reference is required")
        if amount.currency != payment.currency:
            raise GatewayRefused(f"payment is in {payment.currency}, not {amount.currency}")
        owner = self._refund_owner.get(refund_reference)
        if owner is not None:
            if owner != merchant_reference:
                raise GatewayRefused(f"refund reference {refund_reference!r} belongs to {owner!r}")
            if payment.refunds[refund_reference] != amount.amount_minor:
                raise GatewayRefused(
                    f"refund reference {refund_reference!r} refunded "
                    f"{payment.refunds[refund_reference]}, not {amount.amount_minor}"
                )
            return self._result(payment)  # a repeated refund: already done
        if payment.status is not PaymentStatus.CAPTURED:
            raise GatewayRefused(f"cannot refund a payment that is {payment.status.value}")
        refundable = payment.captured_minor - payment.refunded_minor
        if not 0 < amount.amount_minor <= refundable:
            raise GatewayRefused(f"refund {amount.amount_minor} is outside (0, {refundable}]")
        payment.refunds[refund_reference] = amount.amount_minor
        self._refund_owner[refund_reference] = merchant_reference
        payment.refunded_minor += amount.amount_minor
        payment.message = "refunded"
        return self._changed("refund", payment)

    def _result(self, payment: _Payment) -> GatewayResult:
        result = GatewayResult(
            status=payment.status,
            merchant_reference=payment.merchant_reference,
            gateway_reference=payment.gateway_reference,
            authorized_minor=payment.authorized_minor,
            captured_minor=payment.captured_minor,
            refunded_minor=payment.refunded_minor,
            currency=payment.currency,
            message=payment.message,
        )
        raw = {key: str(value) for key, value in _fields_from_result(result).items()}
        raw["sequence"] = str(payment.sequence)
        return replace(result, raw=raw)

    def _sign(self, body: bytes) -> str:
        return hmac.new(self._key, body, hashlib.sha256).hexdigest()


def _header(headers: Mapping[str, str], name: str) -> str | None:
    wanted = name.lower()
    for key, value in headers.items():
        if key.lower() == wanted:
            return value
    return None


def _fields_from_result(result: GatewayResult) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "merchant_reference": result.merchant_reference,
        "gateway_reference": result.gateway_reference,
        "status": result.status.value,
        "authorized_minor": result.authorized_minor,
        "captured_minor": result.captured_minor,
        "refunded_minor": result.refunded_minor,
        "currency": result.currency,
        "message": result.message,
    }
    if "sequence" in result.raw:
        fields["sequence"] = int(result.raw["sequence"])
    return fields


def _minor(fields: Mapping[str, Any], name: str) -> int:
    value = fields[name]
    if type(value) is not int:
        raise TypeError(f"{name} must be an int")
    return value


def _result_from_fields(fields: Any) -> GatewayResult:
    if not isinstance(fields, dict):
        raise TypeError("a notification body is a JSON object")
    raw = {str(key): str(value) for key, value in fields.items()}
    return GatewayResult(
        status=PaymentStatus(fields["status"]),
        merchant_reference=str(fields["merchant_reference"]),
        gateway_reference=str(fields.get("gateway_reference", "")),
        authorized_minor=_minor(fields, "authorized_minor"),
        captured_minor=_minor(fields, "captured_minor"),
        refunded_minor=_minor(fields, "refunded_minor"),
        currency=str(fields.get("currency", "")),
        message=str(fields.get("message", "")),
        raw=raw,
    )


def _float(settings: Mapping[str, str], name: str, default: float) -> float:
    text = settings.get(name, "").strip()
    return float(text) if text else default


def from_settings(settings: Mapping[str, str]) -> SimulatedGateway:
    """Build a simulated gateway from string settings; every fault defaults to off.

    Settings: ``seed`` (int, 0), ``decline_rate``, ``timeout_rate`` (0), ``timeout_applied_rate``
    (0.5), ``duplicate_rate``, ``lose_rate`` (0), ``reorder`` (``true``/``false``, false),
    ``latency_seconds`` (0), ``declined_references`` (comma-separated), ``hmac_key``.
    """
    seed_text = settings.get("seed", "").strip()
    declined = settings.get("declined_references", "")
    plan = FaultPlan(
        decline_rate=_float(settings, "decline_rate", 0.0),
        timeout_rate=_float(settings, "timeout_rate", 0.0),
        timeout_applied_rate=_float(settings, "timeout_applied_rate", 0.5),
        duplicate_rate=_float(settings, "duplicate_rate", 0.0),
        lose_rate=_float(settings, "lose_rate", 0.0),
        reorder=settings.get("reorder", "").strip().lower() in {"1", "true", "yes", "on"},
        latency_seconds=_float(settings, "latency_seconds", 0.0),
        declined_references=frozenset(ref.strip() for ref in declined.split(",") if ref.strip()),
    )
    return SimulatedGateway(
        plan,
        seed=int(seed_text) if seed_text else 0,
        hmac_key=settings.get("hmac_key", "") or DEFAULT_HMAC_KEY,
    )
