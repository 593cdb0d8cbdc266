"""What the hosted-page adapters (KNET, CMI) share: URL, money and timeout checks, the HTTP POST
that reads an unanswered call as an unknown outcome, and refund idempotency by
``refund_reference`` in this process (neither gateway has a refund idempotency key or a refund
inquiry)."""

from __future__ import annotations

import threading
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping
from http.client import HTTPException

from payments.gateway import (
    Capability,
    GatewayOutcomeUnknown,
    GatewayRefused,
    GatewayResult,
    Money,
)

__all__ = [
    "HOSTED_PAGE_CAPABILITIES",
    "RefundsOnce",
    "check_base_url",
    "check_money",
    "check_timeout",
    "post",
    "timeout_setting",
]

HOSTED_PAGE_CAPABILITIES = frozenset(
    {
        Capability.PURCHASE,
        Capability.HOSTED_PAGE,
        Capability.NOTIFICATIONS,
        Capability.REFUND,
    }
)


def check_base_url(base_url: str) -> str:
    """``base_url`` without a trailing ``/``; ValueError unless https (or http to this host)."""
    parsed = urllib.parse.urlsplit(base_url)
    if parsed.scheme not in ("https", "http") or not parsed.netloc:
        raise ValueError(f"base_url must be an http(s) URL, got {base_url!r}")
    if parsed.scheme == "http" and parsed.hostname not in ("127.0.0.1", "localhost", "::1"):
        raise ValueError("base_url must be https (plain http only for a local sandbox)")
    return base_url.rstrip("/")


def check_timeout(timeout_seconds: float) -> float:
    if not timeout_seconds > 0:
        raise ValueError("timeout_seconds must be positive")
    return timeout_seconds


def timeout_setting(settings: Mapping[str, str], gateway: str, default: str = "10") -> float:
    """The ``timeout_seconds`` setting as a number (ValueError naming ``gateway`` if not)."""
    try:
        return float(settings.get("timeout_seconds", default))
    except ValueError as exc:
        raise ValueError(f"{gateway} setting timeout_seconds must be a number") from exc


def check_money(amount: Money, currency: str, gateway: str) -> None:
    """GatewayRefused unless ``amount`` is a positive amount in ``currency``."""
    if amount.currency != currency:
        raise GatewayRefused(f"{gateway} charges {currency} only, not {amount.currency}")
    if amount.amount_minor <= 0:
        raise GatewayRefused("the amount must be positive")


def post(url: str, data: bytes, content_type: str, timeout_seconds: float, what: str) -> str:
    """POST ``data``; the answer's body. GatewayOutcomeUnknown (``what: the error``) when no
    readable answer comes: the request may have been applied."""
    request = urllib.request.Request(  # noqa: S310 - scheme checked by check_base_url
        url, data=data, headers={"Content-Type": content_type}, method="POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout_seconds) as answer:  # noqa: S310
            body: str = answer.read().decode("utf-8")
    except (urllib.error.URLError, HTTPException, OSError, UnicodeDecodeError) as exc:
        raise GatewayOutcomeUnknown(f"{what}: {exc}") from exc
    return body


class RefundsOnce:
    """One ``refund_reference`` refunds once in this process (thread-safe).

    A refund whose outcome is unknown stays recorded as in flight and is never sent again here;
    a refused one (or any other failure) is forgotten, so it may be tried again.
    """

    def __init__(self, in_flight_hint: str) -> None:
        self._in_flight_hint = in_flight_hint
        """Where to reconcile a refund whose outcome is unknown (the end of that error)."""
        self._lock = threading.Lock()
        self._refunds: dict[str, tuple[str, Money, GatewayResult | None]] = {}

    def once(
        self,
        refund_reference: str,
        ref: str,
        amount: Money,
        send: Callable[[], GatewayResult],
    ) -> GatewayResult:
        """``send()``'s answer, or the answer to the earlier refund with this reference.

        GatewayRefused if the reference was used for another refund; GatewayOutcomeUnknown if
        it is in flight or its outcome was unknown.
        """
        with self._lock:
            seen = self._refunds.get(refund_reference)
            if seen is None:
                self._refunds[refund_reference] = (ref, amount, None)
        if seen is not None:
            return self._repeated(refund_reference, ref, amount, seen)
        try:
            answer = send()
        except GatewayOutcomeUnknown:
            raise  # stays recorded as in flight: never sent twice by this process
        except BaseException:
            with self._lock:
                del self._refunds[refund_reference]
            raise
        with self._lock:
            self._refunds[refund_reference] = (ref, amount, answer)
        return answer

    def _repeated(
        self,
        refund_reference: str,
        ref: str,
        amount: Money,
        seen: tuple[str, Money, GatewayResult | None],
    ) -> GatewayResult:
        seen_ref, seen_amount, answer = seen
        if (seen_ref, seen_amount) != (ref, amount):
            raise GatewayRefused(f"refund_reference {refund_reference} was used for another refund")
        if answer is None:
            raise GatewayOutcomeUnknown(
                f"refund {refund_reference} is in flight or its outcome is unknown; "
                + self._in_flight_hint
            )
        return answer
