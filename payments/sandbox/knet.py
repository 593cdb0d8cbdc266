"""A local KNET sandbox: the raw hosted-page protocol over HTTP on 127.0.0.1.

It speaks what :mod:`payments.gateways.knet` speaks (see that module for the protocol and its
sources) and follows the same assumptions where the sources are silent:

* ``GET /kpg/PaymentHTTP.htm?param=paymentInit&trandata=...&tranportalId=...`` decrypts
  ``trandata`` with the terminal resource key, checks the tranportal id and password,
  ``action=1``, ``currencycode=414``, the amount and the track id, records the payment as
  pending and returns a tiny HTML page. Opening it again for a pending payment with the same
  amount shows the same page. A finished payment, or the same track id with another amount,
  gets ``IPAY0100114`` (duplicate record).
* :meth:`KnetSandbox.pay` plays the customer. It decides the outcome and POSTs the result
  server to server to the merchant's ``responseURL``, like KNET: a URL-encoded form with
  ``paymentid`` and ``trandata`` (the encrypted, URL-encoded result). It then reads the
  merchant's answer, which must be a single ``REDIRECT=<url>`` line. When no notification was
  acknowledged, KNET (merchant ids certified since September 2023) reverses the payment. The
  sandbox does the same unless ``reverse_unacknowledged`` is False, and its inquiry then answers
  ``REVERSED``. The ``/kpg/sandbox/pay`` links on the hosted page do the same for a person at a
  browser.
* ``POST /kpg/tranPipe.htm?param=tranInit`` (``application/xml``) answers inquiries
  (``action=8``) and refunds (``action=2``) by track id (``udf5=TrackID``). The answer is a flat
  XML fragment. Errors come as ``<error_code_tag>`` plus ``<result>!ERROR!-<code>-<text>``. A
  payment the customer has not finished answers ``INITIALIZED``.

Fault knobs for tests: :meth:`KnetSandbox.drop_next_notification`,
``duplicate_notifications`` and ``tran_pipe_answers``
(:class:`~payments.sandbox.holding.AnswerHold`): while held, each tranPipe request is recorded,
then neither applied nor answered until released, so a client times out on it whatever the
machine's load; ``tran_pipe_answers.wait_held()`` returns once it is recorded.
``notification_timeout_seconds`` (default 60 s, a bound against a hang): how long :meth:`pay`
waits for the merchant's answer; a test that needs it to come too late holds the merchant's
answer and sets a short one.

Test infrastructure only: it keeps everything in memory and has no TLS.
"""

from __future__ import annotations

import datetime as dt
import html
import itertools
import threading
import urllib.parse
from dataclasses import dataclass, field
from typing import Literal

from payments.gateways.knet import (
    CURRENCY_CODE,
    NOT_FOUND_ERROR,
    KnetCryptoError,
    decrypt_trandata,
    encrypt_trandata,
    format_amount,
    is_valid_track_id,
    parse_amount,
    parse_tran_pipe_answer,
    payment_init_path,
    tran_pipe_path,
)
from payments.sandbox._http import DELIVERY_TIMEOUT_SECONDS, HttpSandbox, TextHandler, post_form
from payments.sandbox.holding import AnswerHold

__all__ = ["Delivery", "KnetSandbox", "Outcome", "SandboxPayment"]

Outcome = Literal["CAPTURED", "NOT CAPTURED", "CANCELED"]
_OUTCOMES: tuple[Outcome, ...] = ("CAPTURED", "NOT CAPTURED", "CANCELED")
_PAY_PATH = "/kpg/sandbox/pay"


@dataclass
class Delivery:
    """One server-to-server notification attempt and the merchant's answer."""

    track_id: str
    acknowledged: bool
    redirect_url: str = ""
    answer: str = ""
    """The merchant's body, or what went wrong (connection refused, HTTP 500, ...)."""
    dropped: bool = False


@dataclass
class SandboxPayment:
    """A payment as the sandbox holds it."""

    track_id: str
    amount_fils: int
    response_url: str
    error_url: str
    payment_id: str
    udfs: dict[str, str]
    result: str = "INITIALIZED"
    tran_id: str = ""
    ref: str = ""
    auth: str = ""
    postdate: str = ""
    refunded_fils: int = 0
    deliveries: list[Delivery] = field(default_factory=list)


class _Refusal(Exception):
    def __init__(self, code: str, text: str) -> None:
        super().__init__(f"{code}-{text}")
        self.code = code
        self.text = text


class KnetSandbox(HttpSandbox):
    """A KNET payment gateway on 127.0.0.1 for tests and demos (thread-safe)."""

    _thread_name = "knet-sandbox"

    def __init__(
        self,
        *,
        tranportal_id: str = "100000101",
        password: str = "sandboxpass",  # noqa: S107 - a sandbox, not a secret
        resource_key: str = "SANDBOXRESKEY016",
        reverse_unacknowledged: bool = True,
        notification_timeout_seconds: float = DELIVERY_TIMEOUT_SECONDS,
    ) -> None:
        super().__init__()
        self.tranportal_id = tranportal_id
        self.password = password
        self.resource_key = resource_key
        self.reverse_unacknowledged = reverse_unacknowledged
        self.notification_timeout_seconds = notification_timeout_seconds
        self.duplicate_notifications = False
        self.tran_pipe_answers = AnswerHold()
        """Hold tranPipe requests (recorded, not applied): see the module doc."""
        self.payments: dict[str, SandboxPayment] = {}
        self.deliveries: list[Delivery] = []
        self.tran_pipe_requests: list[dict[str, str]] = []
        self._drop_next = False
        self._lock = threading.RLock()
        self._ids = itertools.count(1)

    def _handler_class(self) -> type[_Handler]:
        return _Handler

    def _release_held(self) -> None:
        self.tran_pipe_answers.release()

    def settings(
        self, receipt_url: str, timeout_seconds: str = f"{DELIVERY_TIMEOUT_SECONDS:g}"
    ) -> dict[str, str]:
        """Settings for ``payments.gateways.knet.from_settings`` pointing at this sandbox."""
        return {
            "base_url": self.base_url,
            "tranportal_id": self.tranportal_id,
            "password": self.password,
            "resource_key": self.resource_key,
            "receipt_url": receipt_url,
            "timeout_seconds": timeout_seconds,
        }

    # -- fault knobs

    def drop_next_notification(self) -> None:
        """The next :meth:`pay` sends no notification (as if the network lost it)."""
        with self._lock:
            self._drop_next = True

    # -- the customer

    def pay(self, track_id: str, outcome: Outcome = "CAPTURED") -> list[Delivery]:
        """Finish a pending payment with ``outcome`` and notify the merchant; the attempts."""
        if outcome not in _OUTCOMES:
            raise ValueError(f"outcome must be one of {_OUTCOMES}, got {outcome!r}")
        with self._lock:
            payment = self.payments.get(track_id)
            if payment is None or payment.result != "INITIALIZED":
                raise ValueError(f"no pending KNET payment with track id {track_id!r}")
            payment.result = outcome
            if outcome != "CANCELED":
                number = next(self._ids)
                payment.tran_id = f"{202500000000000 + number}"
                payment.ref = f"{500000000000 + number}"
                payment.auth = f"{number % 1000000:06d}" if outcome == "CAPTURED" else ""
                payment.postdate = dt.datetime.now(dt.UTC).strftime("%m%d")
            dropped, self._drop_next = self._drop_next, False
            copies = 2 if self.duplicate_notifications else 1
            body = self._notification_body(payment)
        if dropped:
            attempts = [Delivery(track_id, acknowledged=False, answer="dropped", dropped=True)]
        else:
            attempts = [self._deliver(payment.response_url, track_id, body) for _ in range(copies)]
        with self._lock:
            payment.deliveries.extend(attempts)
            self.deliveries.extend(attempts)
            acknowledged = any(attempt.acknowledged for attempt in attempts)
            if outcome == "CAPTURED" and not acknowledged and self.reverse_unacknowledged:
                payment.result = "REVERSED"
        return attempts

    def _notification_body(self, payment: SandboxPayment) -> bytes:
        result = {
            "paymentid": payment.payment_id,
            "result": payment.result,
            "auth": payment.auth,
            "avr": "N",
            "ref": payment.ref,
            "tranid": payment.tran_id,
            "postdate": payment.postdate,
            "trackid": payment.track_id,
            **{f"udf{i}": payment.udfs.get(f"udf{i}", "") for i in range(1, 6)},
            "amt": format_amount(payment.amount_fils),
            "authRespCode": "00" if payment.result == "CAPTURED" else "05",
        }
        trandata = encrypt_trandata(urllib.parse.urlencode(result), self.resource_key).upper()
        form = {"paymentid": payment.payment_id, "trandata": trandata}
        return urllib.parse.urlencode(form).encode("ascii")

    def _deliver(self, url: str, track_id: str, body: bytes) -> Delivery:
        answered, text = post_form(url, body, self.notification_timeout_seconds)
        if not answered:
            return Delivery(track_id, acknowledged=False, answer=text)
        line = text.strip()
        if line.startswith("REDIRECT=") and "\n" not in line and len(line) > len("REDIRECT="):
            return Delivery(
                track_id, True, redirect_url=line.removeprefix("REDIRECT="), answer=text
            )
        return Delivery(track_id, acknowledged=False, answer=text)

    # -- the endpoints (called from the handler threads)

    def payment_init(self, query: dict[str, str]) -> SandboxPayment:
        """Handle ``PaymentHTTP.htm?param=paymentInit``; :class:`_Refusal` on a bad request."""
        if query.get("param") != "paymentInit":
            raise _Refusal("IPAY0100213", "Problem occurred while processing the hosted request")
        if query.get("tranportalId") != self.tranportal_id:
            raise _Refusal("IPAY0100006", "Invalid tranportal ID")
        try:
            plaintext = decrypt_trandata(query.get("trandata", ""), self.resource_key)
        except KnetCryptoError as exc:
            raise _Refusal("IPAY0100176", "Decrypting transaction data failed") from exc
        fields = dict(part.partition("=")[::2] for part in plaintext.split("&"))
        self._check_credentials(fields)
        if fields.get("action") != "1":
            raise _Refusal("IPAY0100020", "Invalid action type")
        if fields.get("currencycode") != CURRENCY_CODE:
            raise _Refusal("IPAY0100022", "Invalid currency")
        amount = self._amount(fields)
        track_id = fields.get("trackid", "")
        if not is_valid_track_id(track_id):
            raise _Refusal("IPAY0100027", "Invalid track id")
        response_url = fields.get("responseURL", "")
        if urllib.parse.urlsplit(response_url).scheme not in ("http", "https"):
            raise _Refusal("IPAY0100004", "Invalid response URL")
        with self._lock:
            existing = self.payments.get(track_id)
            if existing is not None:
                same = existing.amount_fils == amount and existing.result == "INITIALIZED"
                if not same:
                    raise _Refusal("IPAY0100114", "Duplicate Record")
                return existing
            payment = SandboxPayment(
                track_id=track_id,
                amount_fils=amount,
                response_url=response_url,
                error_url=fields.get("errorURL", ""),
                payment_id=f"{100202500000000000 + next(self._ids)}",
                udfs={k: v for k, v in fields.items() if k.startswith("udf")},
            )
            self.payments[track_id] = payment
            return payment

    def tran_pipe(self, body: str) -> str:
        """Handle ``tranPipe.htm?param=tranInit`` (inquiry and refund); the XML answer."""
        fields = parse_tran_pipe_answer(body)
        with self._lock:
            self.tran_pipe_requests.append(fields)
        self.tran_pipe_answers.pass_through()
        try:
            self._check_credentials(fields)
            if fields.get("udf5") != "TrackID" or fields.get("transid") != fields.get("trackid"):
                raise _Refusal("IPAY0100032", "Invalid user defined field5")
            with self._lock:
                payment = self.payments.get(fields.get("trackid", ""))
                if payment is None:
                    raise _Refusal(NOT_FOUND_ERROR, "Transaction not found.")
                amount = self._amount(fields)
                if fields.get("action") == "8":
                    if amount != payment.amount_fils:
                        raise _Refusal("IPAY0100024", "Invalid amount")
                    return self._answer(payment, payment.result, payment.amount_fils)
                if fields.get("action") == "2":
                    return self._refund(payment, amount, fields.get("udf1", ""))
                raise _Refusal("IPAY0100020", "Invalid action type")
        except _Refusal as refusal:
            return (
                f"<error_code_tag>{refusal.code}</error_code_tag>"
                "<error_service_tag>null</error_service_tag>"
                f"<result>!ERROR!-{refusal.code}-{html.escape(refusal.text)}</result>"
            )

    def _refund(self, payment: SandboxPayment, amount: int, udf1: str) -> str:
        if payment.result != "CAPTURED":
            raise _Refusal(
                "IPAY0100136", "Transaction denied due to previous capture check failure"
            )
        if amount + payment.refunded_fils > payment.amount_fils:
            raise _Refusal("IPAY0100137", "Transaction denied due to credit amount greater")
        payment.refunded_fils += amount
        return self._answer(payment, "CAPTURED", amount, udf1=udf1)

    @staticmethod
    def _answer(payment: SandboxPayment, result: str, amount: int, udf1: str = "") -> str:
        fields = {
            "result": result,
            "auth": payment.auth,
            "ref": payment.ref,
            "avr": "N",
            "postdate": payment.postdate,
            "tranid": payment.tran_id,
            "trackid": payment.track_id,
            "payid": payment.payment_id,
            "udf1": udf1,
            "udf5": "TrackID",
            "amt": format_amount(amount),
        }
        return "".join(f"<{k}>{html.escape(v, quote=False)}</{k}>" for k, v in fields.items())

    def _check_credentials(self, fields: dict[str, str]) -> None:
        if fields.get("id") != self.tranportal_id:
            raise _Refusal("IPAY0100006", "Invalid tranportal ID")
        if fields.get("password") != self.password:
            raise _Refusal("IPAY0100015", "Invalid tranportal password")

    @staticmethod
    def _amount(fields: dict[str, str]) -> int:
        try:
            amount = parse_amount(fields.get("amt", ""))
        except ValueError as exc:
            raise _Refusal("IPAY0100024", "Invalid amount") from exc
        if amount <= 0:
            raise _Refusal("IPAY0100024", "Invalid amount")
        return amount


class _Handler(TextHandler):
    server_version = "KnetSandbox/1"

    @property
    def sandbox(self) -> KnetSandbox:
        sandbox: KnetSandbox = self.server.sandbox  # type: ignore[attr-defined]
        return sandbox

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        url = urllib.parse.urlsplit(self.path)
        query = dict(urllib.parse.parse_qsl(url.query, keep_blank_values=True))
        if url.path == payment_init_path:
            self._payment_page(query)
        elif url.path == _PAY_PATH:
            self._browser_pay(query)
        else:
            self._send(404, "text/plain", "not found")

    def do_POST(self) -> None:  # noqa: N802 - http.server's name
        url = urllib.parse.urlsplit(self.path)
        body = self._body()
        if url.path == tran_pipe_path:
            self._send(200, "application/xml", self.sandbox.tran_pipe(body))
        else:
            self._send(404, "text/plain", "not found")

    def _payment_page(self, query: dict[str, str]) -> None:
        try:
            payment = self.sandbox.payment_init(query)
        except _Refusal as refusal:
            self._send(400, "text/html", f"<p>!ERROR!-{refusal.code}-{html.escape(refusal.text)}")
            return
        links = "".join(
            f'<li><a href="{_PAY_PATH}?{urllib.parse.urlencode(link)}">{html.escape(o)}</a></li>'
            for o in _OUTCOMES
            for link in [{"trackid": payment.track_id, "outcome": o}]
        )
        page = (
            "<!doctype html><title>KNET sandbox</title>"
            f"<h1>KNET sandbox</h1><p>Track id {html.escape(payment.track_id)}, "
            f"amount {format_amount(payment.amount_fils)} KWD, payment id {payment.payment_id}.</p>"
            f"<ul>{links}</ul>"
        )
        self._send(200, "text/html", page)

    def _browser_pay(self, query: dict[str, str]) -> None:
        outcome = query.get("outcome", "CAPTURED")
        track_id = query.get("trackid", "")
        if outcome not in _OUTCOMES or track_id not in self.sandbox.payments:
            self._send(400, "text/plain", "unknown track id or outcome")
            return
        try:
            attempts = self.sandbox.pay(track_id, outcome)
        except ValueError as exc:
            self._send(409, "text/plain", str(exc))
            return
        redirect = next((a.redirect_url for a in attempts if a.acknowledged), "")
        target = redirect or self.sandbox.payments[track_id].error_url
        self.send_response(303)
        self.send_header("Location", target)
        self.send_header("Content-Length", "0")
        self.end_headers()
