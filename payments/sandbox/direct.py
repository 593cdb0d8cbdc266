"""A local sandbox of the mada-like direct-capture acquirer API, for tests and demos.

It speaks the API documented in :mod:`payments.gateways.direct` over HTTP on 127.0.0.1 (an
ephemeral port), keeps its state in memory and is idempotent by ``given_id`` (our merchant
reference) and by refund ``refund_id``. Cards whose token ends in ``0002`` are declined
(``status: failed``); any other token pays.

Knobs, for the failure paths of the adapter (they act on state-changing ``POST`` requests only,
so a lookup never trips them):

* ``answers`` (:class:`~payments.sandbox.holding.AnswerHold`): while held, the sandbox applies
  each request, then keeps its answer until released, so the client times out on a request that
  did happen, whatever the machine's load; ``answers.wait_held()`` returns once it is applied;
* ``fail_after_apply``: the sandbox applies the request, then answers 500 (outcome unknown to
  the client, but it happened);
* ``fail_before_apply``: the sandbox answers 503 without applying anything.

Usage::

    sandbox = DirectSandbox(api_key="sk_test_sandbox")
    sandbox.start()
    gateway = DirectGateway(sandbox.base_url, "sk_test_sandbox", card_token="tok_4242")
    ...
    sandbox.stop()
"""

from __future__ import annotations

import datetime as dt
import hmac
import itertools
import json
import threading
from collections import Counter
from dataclasses import dataclass, field
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler
from typing import Any, Self
from urllib.parse import parse_qs, urlsplit

from payments.sandbox._http import HttpSandbox
from payments.sandbox.holding import AnswerHold

__all__ = ["DECLINING_SUFFIX", "DirectSandbox"]

DECLINING_SUFFIX = "0002"
"""A card token ending in this is declined."""

_MAX_BODY = 64 * 1024


class _ApiError(Exception):
    def __init__(self, status: HTTPStatus, kind: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.kind = kind
        self.message = message


@dataclass
class _Payment:
    id: str
    given_id: str
    amount: int
    currency: str
    description: str
    token: str
    status: str
    message: str
    response_code: str
    created_at: str
    callback_url: str = ""
    refunds: dict[str, int] = field(default_factory=dict)

    @property
    def captured(self) -> int:
        return self.amount if self.status in {"paid", "refunded"} else 0

    @property
    def refunded(self) -> int:
        return sum(self.refunds.values())

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "given_id": self.given_id,
            "status": self.status,
            "amount": self.amount,
            "captured": self.captured,
            "refunded": self.refunded,
            "currency": self.currency,
            "description": self.description,
            "callback_url": self.callback_url,
            "created_at": self.created_at,
            "source": {
                "type": "token",
                "company": "mada",
                "last4": self.token[-4:],
                "message": self.message,
                "response_code": self.response_code,
            },
            "refunds": [
                {"refund_id": refund_id, "amount": amount}
                for refund_id, amount in self.refunds.items()
            ],
        }


class DirectSandbox(HttpSandbox):
    """An in-memory mada-like acquirer on 127.0.0.1 (see the module doc for the API and knobs)."""

    _thread_name = "direct-sandbox"

    def __init__(self, api_key: str = "sk_test_sandbox") -> None:
        super().__init__()
        self.api_key = api_key
        self.answers = AnswerHold()
        """Hold the answers to state-changing requests (applied first): see the module doc."""
        self.fail_after_apply = False
        self.fail_before_apply = False
        self.requests: Counter[str] = Counter()
        """Requests received, by ``"METHOD /route"`` (e.g. ``"POST /v1/payments"``)."""
        self._lock = threading.Lock()
        self._by_id: dict[str, _Payment] = {}
        self._by_given_id: dict[str, _Payment] = {}
        self._ids = itertools.count(1)

    # -- lifecycle (HttpSandbox) ----------------------------------------------------------

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        return _handler_for(self)

    def _release_held(self) -> None:
        self.answers.release()

    def start(self) -> Self:
        """Listen on 127.0.0.1, port 0 (any free port), in a daemon thread; no-op if running."""
        return self if self.running else super().start()

    # -- inspection -----------------------------------------------------------------------

    def payment(self, given_id: str) -> dict[str, Any] | None:
        """The payment with this merchant reference, as the API shows it, or None."""
        with self._lock:
            payment = self._by_given_id.get(given_id)
            return payment.to_json() if payment is not None else None

    def payment_count(self) -> int:
        """How many payments were created (a repeated given_id creates none)."""
        with self._lock:
            return len(self._by_id)

    # -- the API --------------------------------------------------------------------------

    def handle(
        self, method: str, target: str, headers: dict[str, str], body: bytes
    ) -> tuple[HTTPStatus, dict[str, Any]]:
        """Serve one request; raises nothing (errors are JSON answers)."""
        split = urlsplit(target)
        parts = [part for part in split.path.split("/") if part]
        route = _route(method, parts)
        with self._lock:
            self.requests[f"{method} {route}"] += 1
        try:
            self._authenticate(headers)
            if method == "POST":
                if self.fail_before_apply:
                    raise _ApiError(HTTPStatus.SERVICE_UNAVAILABLE, "api_error", "try again")
                fields = _json_object(body)
                status, answer = self._post(parts, fields)
                self.answers.pass_through()
                if self.fail_after_apply:
                    raise _ApiError(HTTPStatus.INTERNAL_SERVER_ERROR, "api_error", "internal")
                return status, answer
            if method == "GET":
                return self._get(parts, parse_qs(split.query))
            raise _ApiError(HTTPStatus.METHOD_NOT_ALLOWED, "invalid_request_error", method)
        except _ApiError as error:
            return error.status, {"type": error.kind, "message": error.message}

    def _authenticate(self, headers: dict[str, str]) -> None:
        given = headers.get("authorization", "")
        expected = f"Bearer {self.api_key}"
        if not hmac.compare_digest(given.encode(), expected.encode()):
            raise _ApiError(HTTPStatus.UNAUTHORIZED, "authentication_error", "invalid API key")

    def _get(
        self, parts: list[str], query: dict[str, list[str]]
    ) -> tuple[HTTPStatus, dict[str, Any]]:
        with self._lock:
            if parts == ["v1", "payments"]:
                given_ids = query.get("given_id", [])
                if len(given_ids) != 1:
                    raise _ApiError(
                        HTTPStatus.BAD_REQUEST, "invalid_request_error", "given_id is required"
                    )
                payment = self._by_given_id.get(given_ids[0])
                return HTTPStatus.OK, {"payments": [payment.to_json()] if payment else []}
            if len(parts) == 3 and parts[:2] == ["v1", "payments"]:
                return HTTPStatus.OK, self._payment_by_id(parts[2]).to_json()
        raise _ApiError(HTTPStatus.NOT_FOUND, "not_found", "no such route")

    def _post(self, parts: list[str], fields: dict[str, Any]) -> tuple[HTTPStatus, dict[str, Any]]:
        with self._lock:
            if parts == ["v1", "payments"]:
                return self._create(fields)
            if len(parts) == 4 and parts[:2] == ["v1", "payments"] and parts[3] == "refund":
                return self._refund(self._payment_by_id(parts[2]), fields)
        raise _ApiError(HTTPStatus.NOT_FOUND, "not_found", "no such route")

    def _payment_by_id(self, payment_id: str) -> _Payment:
        payment = self._by_id.get(payment_id)
        if payment is None:
            raise _ApiError(HTTPStatus.NOT_FOUND, "not_found", f"no payment {payment_id}")
        return payment

    def _create(self, fields: dict[str, Any]) -> tuple[HTTPStatus, dict[str, Any]]:
        given_id = _text(fields, "given_id")
        amount = _positive_int(fields, "amount")
        currency = _text(fields, "currency")
        if currency != "SAR":
            raise _ApiError(HTTPStatus.BAD_REQUEST, "invalid_request_error", "currency must be SAR")
        source = fields.get("source")
        if not isinstance(source, dict) or source.get("type") != "token":
            raise _ApiError(
                HTTPStatus.BAD_REQUEST, "invalid_request_error", "source must be a token"
            )
        token = _text(source, "token")
        existing = self._by_given_id.get(given_id)
        if existing is not None:
            if (existing.amount, existing.currency) != (amount, currency):
                raise _ApiError(
                    HTTPStatus.CONFLICT,
                    "idempotency_error",
                    f"given_id {given_id} was used for {existing.currency} {existing.amount}",
                )
            return HTTPStatus.OK, existing.to_json()
        declined = token.endswith(DECLINING_SUFFIX)
        payment = _Payment(
            id=f"pay_{next(self._ids):08x}",
            given_id=given_id,
            amount=amount,
            currency=currency,
            description=str(fields.get("description", "")),
            callback_url=str(fields.get("callback_url", "")),
            token=token,
            status="failed" if declined else "paid",
            message="DECLINED: insufficient funds" if declined else "APPROVED",
            response_code="51" if declined else "00",
            created_at=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        )
        self._by_id[payment.id] = payment
        self._by_given_id[given_id] = payment
        return HTTPStatus.CREATED, payment.to_json()

    def _refund(
        self, payment: _Payment, fields: dict[str, Any]
    ) -> tuple[HTTPStatus, dict[str, Any]]:
        refund_id = _text(fields, "refund_id")
        amount = _positive_int(fields, "amount")
        if refund_id in payment.refunds:
            if payment.refunds[refund_id] != amount:
                raise _ApiError(
                    HTTPStatus.CONFLICT,
                    "idempotency_error",
                    f"refund_id {refund_id} refunded {payment.refunds[refund_id]}",
                )
            return HTTPStatus.OK, payment.to_json()
        if payment.status not in {"paid", "refunded"}:
            raise _ApiError(
                HTTPStatus.BAD_REQUEST, "invalid_request_error", f"payment is {payment.status}"
            )
        refundable = payment.captured - payment.refunded
        if amount > refundable:
            raise _ApiError(
                HTTPStatus.BAD_REQUEST,
                "invalid_request_error",
                f"amount {amount} exceeds the refundable {refundable}",
            )
        payment.refunds[refund_id] = amount
        if payment.refunded == payment.captured:
            payment.status = "refunded"
        return HTTPStatus.OK, payment.to_json()


def _route(method: str, parts: list[str]) -> str:
    if len(parts) >= 3 and parts[:2] == ["v1", "payments"]:
        return "/" + "/".join(["v1", "payments", "{id}", *parts[3:]])
    return "/" + "/".join(parts)


def _json_object(body: bytes) -> dict[str, Any]:
    try:
        fields = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        raise _ApiError(
            HTTPStatus.BAD_REQUEST, "invalid_request_error", "body is not JSON"
        ) from None
    if not isinstance(fields, dict):
        raise _ApiError(HTTPStatus.BAD_REQUEST, "invalid_request_error", "body is not an object")
    return fields


def _text(fields: dict[str, Any], name: str) -> str:
    value = fields.get(name)
    if not isinstance(value, str) or not value:
        raise _ApiError(HTTPStatus.BAD_REQUEST, "invalid_request_error", f"{name} is required")
    return value


def _positive_int(fields: dict[str, Any], name: str) -> int:
    value = fields.get(name)
    if type(value) is not int or value <= 0:
        raise _ApiError(
            HTTPStatus.BAD_REQUEST,
            "invalid_request_error",
            f"{name} must be a positive integer (halalas)",
        )
    return value


def _handler_for(sandbox: DirectSandbox) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self) -> None:
            self._serve("GET")

        def do_POST(self) -> None:
            self._serve("POST")

        def _serve(self, method: str) -> None:
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(min(length, _MAX_BODY)) if length > 0 else b""
            headers = {key.lower(): value for key, value in self.headers.items()}
            status, answer = sandbox.handle(method, self.path, headers, body)
            payload = json.dumps(answer).encode()
            try:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)
            except OSError:
                pass  # the client gave up (timed out) before the answer

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler
