"""A local CMI sandbox: the 3D_PAY_HOSTING protocol with the ver3 hash over HTTP on 127.0.0.1.

It speaks what :mod:`payments.gateways.cmi` speaks (see that module for the protocol, its
sources and the assumptions made where they are silent):

* ``GET`` or ``POST /fim/est3Dgate`` with the request fields checks the ver3 ``HASH`` with the
  store key, the client id, ``storetype=3D_PAY_HOSTING``, ``trantype`` (``PreAuth`` or
  ``Auth``), ``currency=504``, the amount and the order id, records the payment as pending and
  returns a tiny HTML page. The same order id with the same amount shows the page again; a
  finished order, or another amount, is refused (``ProcReturnCode`` 99, "duplicate order").
* :meth:`CmiSandbox.pay` plays the customer: it decides the outcome and POSTs the callback to
  ``callbackUrl`` (the request fields, the result fields and a fresh ``HASH``). The merchant's
  answer decides the rest: ``ACTION=POSTAUTH`` captures an approved pre-authorization;
  ``APPROVED`` acknowledges without capturing; anything else is not acknowledged, and the
  pre-authorization stays open (``TRANS_STAT`` ``A``) until a ``PostAuth`` request.
* ``POST /fim/api`` answers ``CC5Request`` documents: ``ORDERSTATUS`` inquiries, ``PostAuth``
  (capture) and ``Credit`` (refund, at most what was captured).

Fault knobs for tests: :meth:`CmiSandbox.drop_next_callback` and ``tamper_next_callback``.
``callback_timeout_seconds`` (default 60 s, a bound against a hang) is how long :meth:`pay`
waits for the merchant's answer.

Test infrastructure only: it keeps everything in memory and has no TLS.
"""

from __future__ import annotations

import html
import itertools
import threading
import urllib.parse
from dataclasses import dataclass, field

from payments.gateways.cmi import (
    API_PATH,
    CURRENCY_CODE,
    GATE_PATH,
    NOT_FOUND_MESSAGE,
    NOT_FOUND_RETURN_CODE,
    format_amount,
    is_valid_order_id,
    parse_amount,
    parse_cc5_response,
    ver3_hash,
    verify_ver3_hash,
)
from payments.sandbox._http import DELIVERY_TIMEOUT_SECONDS, HttpSandbox, TextHandler, post_form

__all__ = ["CallbackDelivery", "CmiSandbox", "SandboxOrder"]


@dataclass
class CallbackDelivery:
    """One server-to-server callback and the merchant's answer."""

    order_id: str
    answer: str
    """The merchant's body, or what went wrong (connection refused, HTTP 500, ...)."""
    dropped: bool = False


@dataclass
class SandboxOrder:
    """An order as the sandbox holds it."""

    order_id: str
    amount_centimes: int
    trantype: str
    fields: dict[str, str]
    trans_stat: str = "PN"
    trans_id: str = ""
    auth_code: str = ""
    captured_centimes: int = 0
    refunded_centimes: int = 0
    callbacks: list[CallbackDelivery] = field(default_factory=list)


class _Refusal(Exception):
    pass


class CmiSandbox(HttpSandbox):
    """A CMI gateway on 127.0.0.1 for tests and demos (thread-safe)."""

    _thread_name = "cmi-sandbox"

    def __init__(
        self,
        *,
        client_id: str = "600000001",
        store_key: str = "SANDBOX|STORE\\KEY",
        api_name: str = "sandboxapi",
        api_password: str = "sandboxpass",  # noqa: S107 - a sandbox, not a secret
        callback_timeout_seconds: float = DELIVERY_TIMEOUT_SECONDS,
    ) -> None:
        super().__init__()
        self.client_id = client_id
        self.store_key = store_key
        self.api_name = api_name
        self.api_password = api_password
        self.callback_timeout_seconds = callback_timeout_seconds
        self.orders: dict[str, SandboxOrder] = {}
        self.callbacks: list[CallbackDelivery] = []
        self.api_requests: list[dict[str, str]] = []
        self.tamper_next_callback = False
        self._drop_next = False
        self._lock = threading.RLock()
        self._ids = itertools.count(1)

    def _handler_class(self) -> type[_Handler]:
        return _Handler

    def settings(
        self, return_url: str, timeout_seconds: str = f"{DELIVERY_TIMEOUT_SECONDS:g}"
    ) -> dict[str, str]:
        """Settings for ``payments.gateways.cmi.from_settings`` pointing at this sandbox."""
        return {
            "base_url": self.base_url,
            "client_id": self.client_id,
            "store_key": self.store_key,
            "api_name": self.api_name,
            "api_password": self.api_password,
            "shop_url": return_url,
            "ok_url": return_url,
            "fail_url": return_url,
            "timeout_seconds": timeout_seconds,
        }

    def drop_next_callback(self) -> None:
        """The next :meth:`pay` sends no callback (as if the network lost it)."""
        with self._lock:
            self._drop_next = True

    # -- the customer

    def pay(self, order_id: str, approve: bool = True) -> CallbackDelivery:
        """Finish a pending order (approved or declined) and call the merchant back."""
        with self._lock:
            order = self.orders.get(order_id)
            if order is None or order.trans_stat != "PN":
                raise ValueError(f"no pending CMI order {order_id!r}")
            number = next(self._ids)
            order.trans_id = f"25{number:013d}"
            if approve:
                order.auth_code = f"{number % 1000000:06d}"
                order.trans_stat = "A" if order.trantype == "PreAuth" else "C"
                if order.trantype == "Auth":
                    order.captured_centimes = order.amount_centimes
            else:
                order.trans_stat = "D"
            body = self._callback_body(order, approve)
            dropped, self._drop_next = self._drop_next, False
            url = order.fields.get("callbackUrl", "")
        delivery = (
            CallbackDelivery(order_id, answer="dropped", dropped=True)
            if dropped
            else self._deliver(url, order_id, body)
        )
        with self._lock:
            order.callbacks.append(delivery)
            self.callbacks.append(delivery)
            if delivery.answer.strip() == "ACTION=POSTAUTH" and order.trans_stat == "A":
                order.trans_stat = "C"
                order.captured_centimes = order.amount_centimes
        return delivery

    def _callback_body(self, order: SandboxOrder, approve: bool) -> bytes:
        fields = {k: v for k, v in order.fields.items() if k.lower() != "hash"}
        fields.update(
            {
                "Response": "Approved" if approve else "Declined",
                "ProcReturnCode": "00" if approve else "05",
                "AuthCode": order.auth_code,
                "TransId": order.trans_id,
                "HostRefNum": f"5{order.trans_id[-11:]}",
                "ErrMsg": "" if approve else "Refusée",
                "mdStatus": "1",
            }
        )
        fields["HASH"] = ver3_hash(fields, self.store_key)
        if self.tamper_next_callback:
            self.tamper_next_callback = False
            fields["amount"] = format_amount(order.amount_centimes + 1)
        return urllib.parse.urlencode(fields).encode("utf-8")

    def _deliver(self, url: str, order_id: str, body: bytes) -> CallbackDelivery:
        _, text = post_form(url, body, self.callback_timeout_seconds)
        return CallbackDelivery(order_id, answer=text)

    # -- the endpoints (called from the handler threads)

    def payment_request(self, fields: dict[str, str]) -> SandboxOrder:
        """Handle est3Dgate; :class:`_Refusal` on a bad request."""
        if not verify_ver3_hash(fields, self.store_key):
            raise _Refusal("hash does not verify")
        if fields.get("clientid") != self.client_id:
            raise _Refusal("unknown clientid")
        if fields.get("storetype") != "3D_PAY_HOSTING":
            raise _Refusal("storetype must be 3D_PAY_HOSTING")
        if fields.get("trantype") not in ("PreAuth", "Auth"):
            raise _Refusal("trantype must be PreAuth or Auth")
        if fields.get("currency") != CURRENCY_CODE:
            raise _Refusal("currency must be 504")
        if fields.get("hashAlgorithm") != "ver3":
            raise _Refusal("hashAlgorithm must be ver3")
        amount = self._amount(fields.get("amount", ""))
        order_id = fields.get("oid", "")
        if not is_valid_order_id(order_id):
            raise _Refusal("invalid oid")
        if urllib.parse.urlsplit(fields.get("callbackUrl", "")).scheme not in ("http", "https"):
            raise _Refusal("invalid callbackUrl")
        with self._lock:
            existing = self.orders.get(order_id)
            if existing is not None:
                if existing.amount_centimes != amount or existing.trans_stat != "PN":
                    raise _Refusal("duplicate order")
                return existing
            order = SandboxOrder(order_id, amount, fields["trantype"], dict(fields))
            self.orders[order_id] = order
            return order

    def api(self, body: str) -> str:
        """Handle a CC5Request; the CC5Response."""
        fields = parse_cc5_response(body)
        with self._lock:
            self.api_requests.append(fields)
            try:
                if (fields.get("Name"), fields.get("Password"), fields.get("ClientId")) != (
                    self.api_name,
                    self.api_password,
                    self.client_id,
                ):
                    raise _Refusal("authentication failed")
                order = self.orders.get(fields.get("OrderId", ""))
                if order is None:
                    return _response(
                        {
                            "Response": "Error",
                            "ProcReturnCode": NOT_FOUND_RETURN_CODE,
                            "ErrMsg": f"{NOT_FOUND_MESSAGE} for {fields.get('OrderId', '')}",
                        }
                    )
                if fields.get("ORDERSTATUS") == "QUERY":
                    return self._status(order)
                if fields.get("Type") == "PostAuth":
                    return self._post_auth(order, self._amount(fields.get("Total", "")))
                if fields.get("Type") == "Credit":
                    if fields.get("Currency") != CURRENCY_CODE:
                        raise _Refusal("currency must be 504")
                    return self._credit(order, self._amount(fields.get("Total", "")))
                raise _Refusal("unsupported request")
            except _Refusal as refusal:
                return _response(
                    {"Response": "Error", "ProcReturnCode": "99", "ErrMsg": str(refusal)}
                )

    def _status(self, order: SandboxOrder) -> str:
        return _response(
            {
                "OrderId": order.order_id,
                "Response": "Approved",
                "ProcReturnCode": "00",
                "TransId": order.trans_id,
            },
            extra={
                "TRANS_STAT": order.trans_stat,
                "ORIG_TRANS_AMT": str(order.amount_centimes),
                "CAPTURE_AMT": str(order.captured_centimes),
                "AUTH_CODE": order.auth_code,
                "ORDERSTATUS": f"ORD_ID:{order.order_id}\tTRANS_STAT:{order.trans_stat}",
            },
        )

    def _post_auth(self, order: SandboxOrder, amount: int) -> str:
        if order.trans_stat != "A" or amount > order.amount_centimes:
            raise _Refusal("no open pre-authorization for this amount")
        order.trans_stat = "C"
        order.captured_centimes = amount
        return _response(
            {"OrderId": order.order_id, "Response": "Approved", "ProcReturnCode": "00"}
        )

    def _credit(self, order: SandboxOrder, amount: int) -> str:
        if order.trans_stat not in ("C", "S"):
            raise _Refusal("order not captured")
        if amount + order.refunded_centimes > order.captured_centimes:
            raise _Refusal("credit amount greater than captured")
        order.refunded_centimes += amount
        number = next(self._ids)
        return _response(
            {
                "OrderId": order.order_id,
                "Response": "Approved",
                "ProcReturnCode": "00",
                "TransId": f"26{number:013d}",
            }
        )

    @staticmethod
    def _amount(text: str) -> int:
        try:
            amount = parse_amount(text)
        except ValueError as exc:
            raise _Refusal("invalid amount") from exc
        if amount <= 0:
            raise _Refusal("invalid amount")
        return amount


def _response(fields: dict[str, str], extra: dict[str, str] | None = None) -> str:
    leaves = "".join(f"<{k}>{html.escape(v, quote=False)}</{k}>" for k, v in fields.items())
    if extra:
        leaves += (
            "<Extra>"
            + "".join(f"<{k}>{html.escape(v, quote=False)}</{k}>" for k, v in extra.items())
            + "</Extra>"
        )
    return f'<?xml version="1.0" encoding="UTF-8"?><CC5Response>{leaves}</CC5Response>'


class _Handler(TextHandler):
    server_version = "CmiSandbox/1"

    @property
    def sandbox(self) -> CmiSandbox:
        sandbox: CmiSandbox = self.server.sandbox  # type: ignore[attr-defined]
        return sandbox

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        url = urllib.parse.urlsplit(self.path)
        if url.path == GATE_PATH:
            self._gate(url.query)
        else:
            self._send(404, "text/plain", "not found")

    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        url = urllib.parse.urlsplit(self.path)
        body = self._body()
        if url.path == GATE_PATH:
            self._gate(body)
        elif url.path == API_PATH:
            self._send(200, "text/xml", self.sandbox.api(body))
        else:
            self._send(404, "text/plain", "not found")

    def _gate(self, form: str) -> None:
        fields = dict(urllib.parse.parse_qsl(form, keep_blank_values=True))
        try:
            order = self.sandbox.payment_request(fields)
        except _Refusal as refusal:
            self._send(400, "text/html", f"<p>ProcReturnCode 99: {html.escape(str(refusal))}")
            return
        page = (
            "<!doctype html><title>CMI sandbox</title><h1>CMI sandbox</h1>"
            f"<p>Commande {html.escape(order.order_id)}, "
            f"{format_amount(order.amount_centimes)} MAD.</p>"
        )
        self._send(200, "text/html", page)
