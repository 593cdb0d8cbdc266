"""Every adapter against the shared conformance suite (tests/payments/conformance.py).

Harnesses: ``simulated`` (in process), ``direct`` (against DirectSandbox; unknown outcomes by a
real client timeout), ``direct-5xx`` (the same, unknown outcomes by 500/503 answers), and
``knet`` (against KnetSandbox, only when the KNET adapter and sandbox import) and ``cmi``
(against CmiSandbox).
"""

from __future__ import annotations

import json
import threading
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from payments.gateway import GatewayResult, Money, PaymentGateway, PaymentRequest
from payments.gateways.cmi import from_settings as cmi_from_settings
from payments.gateways.direct import DirectGateway
from payments.gateways.simulated import FaultPlan, SimulatedGateway
from payments.sandbox.cmi import CmiSandbox
from payments.sandbox.direct import DECLINING_SUFFIX, DirectSandbox
from tests.payments.conformance import CHECKS, GatewayHarness

API_KEY = "sk_test_conformance"
APPROVING_TOKEN = "tok_mada_4111"
DECLINING_TOKEN = f"tok_mada_{DECLINING_SUFFIX}"
CLIENT_TIMEOUT = 30.0
"""The direct client's timeout on every call: a bound against a hang, never reached (a short one
was reached on a loaded machine by calls that were meant to succeed)."""
IMPATIENT_TIMEOUT = 0.5
"""The direct client's timeout on a POST inside ``outcome_unknown``, whose answer the sandbox
holds until the context ends: the client gives up however loaded the machine is."""


def _simulated() -> Iterator[GatewayHarness]:
    gateway = SimulatedGateway(FaultPlan(), seed=7)

    @contextmanager
    def outcome_unknown(applied: bool) -> Iterator[None]:
        gateway.inject_outcome_unknown(applied)
        try:
            yield
        finally:
            gateway.inject_outcome_unknown(None)

    def deliver() -> list[tuple[bytes, dict[str, str]]]:
        return [gateway.notification_bytes(n) for n in gateway.drain_notifications()]

    def tamper(body: bytes) -> bytes:  # still valid JSON: only the signature can tell
        fields = json.loads(body)
        fields["captured_minor"] += 1
        return json.dumps(fields, sort_keys=True, separators=(",", ":")).encode()

    yield GatewayHarness(
        name="simulated",
        gateway=gateway,
        currency="KWD",
        arrange_decline=gateway.decline_reference,
        outcome_unknown=outcome_unknown,
        deliver_notifications=deliver,
        tamper=tamper,
        charges=lambda: gateway.applied["purchase"],
    )


class _ImpatientOnHeldPosts(DirectGateway):
    """The direct adapter, waiting IMPATIENT_TIMEOUT for a POST's answer while ``impatient``
    (the sandbox holds that answer) and CLIENT_TIMEOUT for everything else: the lookup a refund
    makes first must not time out (it did, on a loaded machine, with 0.5 s for every call)."""

    impatient = False

    def _call(self, method: str, path: str, body: dict[str, Any] | None) -> dict[str, Any]:
        held = self.impatient and method == "POST"
        self.timeout_seconds = IMPATIENT_TIMEOUT if held else CLIENT_TIMEOUT
        return super()._call(method, path, body)


def _direct(*, by_timeout: bool) -> Iterator[GatewayHarness]:
    declined: set[str] = set()

    def token_for(request: PaymentRequest) -> str:
        return DECLINING_TOKEN if request.merchant_reference in declined else APPROVING_TOKEN

    with DirectSandbox(api_key=API_KEY) as sandbox:
        gateway = _ImpatientOnHeldPosts(
            sandbox.base_url, API_KEY, timeout_seconds=CLIENT_TIMEOUT, card_tokens=token_for
        )

        @contextmanager
        def outcome_unknown(applied: bool) -> Iterator[None]:
            if not applied:
                sandbox.fail_before_apply = True
            elif by_timeout:
                sandbox.answers.hold()
                gateway.impatient = True
            else:
                sandbox.fail_after_apply = True
            try:
                yield
                if applied and by_timeout:
                    # The client gave up; the check then asks what happened: the sandbox must
                    # have applied the request (a loaded machine may run the timeout first).
                    assert sandbox.answers.wait_held(1), "the held request never arrived"
            finally:
                sandbox.fail_before_apply = sandbox.fail_after_apply = False
                gateway.impatient = False
                sandbox.answers.release()

        yield GatewayHarness(
            name="direct" if by_timeout else "direct-5xx",
            gateway=gateway,
            currency="SAR",
            arrange_decline=declined.add,
            outcome_unknown=outcome_unknown,
            charges=sandbox.payment_count,
        )


class _NotificationReceiver:
    """The portal's notification endpoint: stores each message, then answers the gateway's
    acknowledgement (stored before acknowledged, as the contract asks)."""

    def __init__(self) -> None:
        self.gateway: PaymentGateway | None = None
        self._lock = threading.Lock()
        self._received: list[tuple[bytes, dict[str, str]]] = []
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                headers = dict(self.headers.items())
                with receiver._lock:
                    receiver._received.append((body, headers))
                assert receiver.gateway is not None
                answer = receiver.gateway.parse_notification(body, headers).acknowledgement
                self.send_response(200)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, format: str, *args: object) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(
            target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}/payments/notify"

    def take(self) -> list[tuple[bytes, dict[str, str]]]:
        with self._lock:
            received, self._received = self._received, []
        return received

    def __enter__(self) -> _NotificationReceiver:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)


KNET_AMOUNT = 10_000
"""KWD 10.000 in fils."""


def _knet() -> Iterator[GatewayHarness]:
    knet = pytest.importorskip("payments.gateways.knet")
    knet_sandbox = pytest.importorskip("payments.sandbox.knet")
    with knet_sandbox.KnetSandbox() as sandbox, _NotificationReceiver() as receiver:
        settings = sandbox.settings(receipt_url="https://portal.example/receipt")
        # KNET's inquiry needs the original amount; the portal knows it for every reference it
        # made (amount_lookup), so an unknown reference is asked about, and is NOT_FOUND.
        gateway = knet.KnetGateway(
            base_url=settings["base_url"],
            tranportal_id=settings["tranportal_id"],
            password=settings["password"],
            resource_key=settings["resource_key"],
            receipt_url=settings["receipt_url"],
            timeout_seconds=60.0,  # a bound against a hang: the calls must succeed
            amount_lookup=lambda _reference: Money("KWD", KNET_AMOUNT),
        )
        receiver.gateway = gateway

        def complete(pending: GatewayResult, approve: bool) -> None:
            with urllib.request.urlopen(pending.redirect_url, timeout=60) as page:
                page.read()
            sandbox.pay(pending.merchant_reference, "CAPTURED" if approve else "NOT CAPTURED")

        def forge(body: bytes) -> bytes:
            # Someone without the resource key: a CAPTURED result encrypted with another key.
            form = dict(urllib.parse.parse_qsl(body.decode("ascii")))
            forged = knet.encrypt_trandata(
                f"result=CAPTURED&trackid={form.get('trackid', '')}&amt=10.000",
                "FORGEDRESKEY0016",
            )
            return urllib.parse.urlencode({**form, "trandata": forged}).encode("ascii")

        def charges() -> int:
            return sum(1 for p in sandbox.payments.values() if p.result == "CAPTURED")

        yield GatewayHarness(
            name="knet",
            gateway=gateway,
            currency="KWD",
            amount_minor=KNET_AMOUNT,
            complete=complete,
            deliver_notifications=receiver.take,
            tamper=forge,
            charges=charges,
            notification_url=receiver.url,
            expected_failures={
                name: "KNET has no refund inquiry: a refund answers only its own amount in "
                "refunded_minor and get_status reports no refunds (contract question: is "
                "refunded_minor the payment's running total?)"
                for name in ("refund_partial_is_idempotent", "refund_above_captured_is_refused")
            },
        )


CMI_AMOUNT = 15_050
"""MAD 150.50 in centimes."""


def _cmi() -> Iterator[GatewayHarness]:
    with CmiSandbox() as sandbox, _NotificationReceiver() as receiver:
        gateway = cmi_from_settings(sandbox.settings(return_url="https://portal.example/receipt"))
        receiver.gateway = gateway

        def complete(pending: GatewayResult, approve: bool) -> None:
            with urllib.request.urlopen(pending.redirect_url, timeout=60) as page:
                page.read()
            sandbox.pay(pending.merchant_reference, approve=approve)

        def forge(body: bytes) -> bytes:
            # Someone without the store key: the amount changed, the HASH left as it was.
            form = dict(urllib.parse.parse_qsl(body.decode("utf-8"), keep_blank_values=True))
            form["amount"] = "1.00"
            return urllib.parse.urlencode(form).encode("utf-8")

        def charges() -> int:
            return sum(1 for order in sandbox.orders.values() if order.trans_stat == "C")

        yield GatewayHarness(
            name="cmi",
            gateway=gateway,
            currency="MAD",
            amount_minor=CMI_AMOUNT,
            complete=complete,
            deliver_notifications=receiver.take,
            tamper=forge,
            charges=charges,
            notification_url=receiver.url,
            expected_failures={
                name: "CMI's ORDERSTATUS inquiry does not report refunds: get_status reports "
                "refunded_minor=0 (same contract question as KNET)"
                for name in ("refund_partial_is_idempotent", "refund_above_captured_is_refused")
            },
        )


HARNESSES: dict[str, Callable[[], Iterator[GatewayHarness]]] = {
    "cmi": _cmi,
    "simulated": _simulated,
    "direct": lambda: _direct(by_timeout=True),
    "direct-5xx": lambda: _direct(by_timeout=False),
    "knet": _knet,
}


@pytest.fixture(params=sorted(HARNESSES))
def harness(request: pytest.FixtureRequest) -> Iterator[GatewayHarness]:
    builder = HARNESSES[request.param]
    yield from builder()


@pytest.mark.parametrize("check", CHECKS, ids=lambda check: check.__name__.removeprefix("check_"))
def test_conformance(
    harness: GatewayHarness,
    check: Callable[[GatewayHarness], None],
    request: pytest.FixtureRequest,
) -> None:
    assert isinstance(harness.gateway, PaymentGateway)
    reason = harness.expected_failures.get(check.__name__.removeprefix("check_"))
    if reason is not None:
        request.applymarker(pytest.mark.xfail(reason=f"{harness.name}: {reason}", strict=True))
    check(harness)
