"""KNET adapter (payments.gateways.knet) against the local KNET sandbox (payments.sandbox.knet)."""

from __future__ import annotations

import threading
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from hypothesis import given
from hypothesis import strategies as st

from payments.gateway import (
    Capability,
    GatewayOutcomeUnknown,
    GatewayRefused,
    Money,
    Notification,
    PaymentGateway,
    PaymentRequest,
    PaymentStatus,
)
from payments.gateways.knet import (
    KnetCryptoError,
    KnetGateway,
    decrypt_trandata,
    encrypt_trandata,
    format_amount,
    from_settings,
    parse_amount,
)
from payments.sandbox.holding import AnswerHold
from payments.sandbox.knet import KnetSandbox

KEY = "SANDBOXRESKEY016"
PLAINTEXT = (
    "id=100000101&password=sandboxpass&action=1&langid=EN&currencycode=414&amt=100.500"
    "&trackid=REN20250001"
)
# Made with OpenSSL, the library behind openssl_encrypt in KNET's PHP raw sample:
#   printf %s "$PLAINTEXT" | openssl enc -aes-128-cbc -K <hex(KEY)> -iv <hex(KEY)> | xxd -p
OPENSSL_TRANDATA = (
    "3dcc30e4193f1dd802d85c3d1c386190431429048d328b8d3e3579e0120782a652c6a4440af635a3fba19f69"
    "e7ce59c36c91a4ce006c6727d4b321336236c8dabc280ebb62ea1e1918e0bd98d907c100e20d13c9211ddadf"
    "dfaad547913012df03604ad60c70777fa8f940eb3cdd3242"
)


# --- crypto and amounts -------------------------------------------------------------------------


def test_trandata_matches_openssl_vector() -> None:
    assert encrypt_trandata(PLAINTEXT, KEY) == OPENSSL_TRANDATA
    assert decrypt_trandata(OPENSSL_TRANDATA, KEY) == PLAINTEXT
    assert decrypt_trandata(OPENSSL_TRANDATA.upper(), KEY) == PLAINTEXT  # K-064 samples: upper


@given(st.text())
def test_trandata_round_trip(text: str) -> None:
    assert decrypt_trandata(encrypt_trandata(text, KEY), KEY) == text


def test_trandata_refuses_wrong_key_and_garbage() -> None:
    with pytest.raises(KnetCryptoError):
        decrypt_trandata(OPENSSL_TRANDATA, "ANOTHERKEY000016")
    for bad in ("", "zz", OPENSSL_TRANDATA[:-2], OPENSSL_TRANDATA + "00"):
        with pytest.raises(KnetCryptoError):
            decrypt_trandata(bad, KEY)
    with pytest.raises(ValueError, match="16"):
        encrypt_trandata("x", "short")


@given(st.integers(min_value=0, max_value=10**9))
def test_amount_round_trip(fils: int) -> None:
    text = format_amount(fils)
    assert text.count(".") == 1
    assert len(text.split(".")[1]) == 3
    assert parse_amount(text) == fils


def test_amount_examples() -> None:
    assert format_amount(100500) == "100.500"
    assert format_amount(0) == "0.000"
    assert format_amount(7) == "0.007"
    assert parse_amount("100.5") == 100500
    assert parse_amount("20.550") == 20550
    assert parse_amount("10") == 10000


@pytest.mark.parametrize(
    "text",
    [
        "1.0001",
        "-1.000",
        "+1.000",
        "",
        " 1.000",
        "1.000\n",
        "1e3",
        "1.",
        ".5",
        "abc",
        "1,000",
        "\u0661",
    ],
)
def test_amount_parse_refuses(text: str) -> None:
    with pytest.raises(ValueError):
        parse_amount(text)


def test_amount_format_refuses_negative_and_non_int() -> None:
    with pytest.raises(ValueError):
        format_amount(-1)
    with pytest.raises(TypeError):
        format_amount(1.5)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        format_amount(True)


# --- fixtures -----------------------------------------------------------------------------------


@dataclass
class Merchant:
    """A tiny merchant notification endpoint: parses, stores, then acknowledges (when
    ``answers`` is held: once released)."""

    gateway: KnetGateway | None = None
    notifications: list[Notification] = field(default_factory=list)
    url: str = ""
    answers: AnswerHold = field(default_factory=AnswerHold)


@pytest.fixture
def sandbox() -> Iterator[KnetSandbox]:
    with KnetSandbox() as running:
        yield running


@pytest.fixture
def merchant() -> Iterator[Merchant]:
    state = Merchant()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: object) -> None:
            pass

        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            assert state.gateway is not None
            notification = state.gateway.parse_notification(body, dict(self.headers.items()))
            state.notifications.append(notification)  # stored before it is acknowledged
            state.answers.pass_through()
            try:
                self.send_response(200)
                self.send_header("Content-Type", "text/plain")
                self.end_headers()
                self.wfile.write(notification.acknowledgement)
            except OSError:
                pass  # KNET gave up (timed out) before the answer

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    state.url = f"http://127.0.0.1:{server.server_address[1]}/knet/notify"
    try:
        yield state
    finally:
        state.answers.release()
        server.shutdown()
        server.server_close()


CLIENT_TIMEOUT = "30"
"""The gateway's timeout on calls that must succeed: a bound against a hang, never reached (a
short one can be reached on a loaded machine)."""
IMPATIENT_TIMEOUT = "0.5"
"""The timeout of the gateway whose calls the sandbox holds (hold_tran_pipe): it gives up
however loaded the machine is, since no answer comes before the test releases it."""


@pytest.fixture
def gateway(sandbox: KnetSandbox, merchant: Merchant) -> KnetGateway:
    settings = sandbox.settings(receipt_url="https://moi.example/renewal/receipt")
    settings["timeout_seconds"] = CLIENT_TIMEOUT
    merchant.gateway = from_settings(settings)
    return merchant.gateway


@pytest.fixture
def impatient(sandbox: KnetSandbox, merchant: Merchant) -> KnetGateway:
    """A gateway that waits IMPATIENT_TIMEOUT for an answer (the merchant's too)."""
    settings = sandbox.settings(receipt_url="https://moi.example/renewal/receipt")
    settings["timeout_seconds"] = IMPATIENT_TIMEOUT
    merchant.gateway = from_settings(settings)
    return merchant.gateway


def purchase(gateway: KnetGateway, merchant: Merchant, ref: str, fils: int = 100500) -> str:
    result = gateway.purchase(
        PaymentRequest(
            merchant_reference=ref,
            amount=Money("KWD", fils),
            description="health insurance fee",
            notification_url=merchant.url,
        )
    )
    assert result.status is PaymentStatus.PENDING
    with urllib.request.urlopen(result.redirect_url, timeout=60) as page:  # the customer's browser
        assert ref in page.read().decode()
    return result.redirect_url


# --- flows --------------------------------------------------------------------------------------


def test_gateway_satisfies_protocol(gateway: KnetGateway) -> None:
    as_protocol: PaymentGateway = gateway
    assert isinstance(as_protocol, PaymentGateway)
    assert gateway.name == "knet"
    assert gateway.capabilities() == {
        Capability.PURCHASE,
        Capability.HOSTED_PAGE,
        Capability.NOTIFICATIONS,
        Capability.REFUND,
    }


def test_redirect_url_shape(gateway: KnetGateway, sandbox: KnetSandbox, merchant: Merchant) -> None:
    url = urllib.parse.urlsplit(purchase(gateway, merchant, "REN1"))
    assert url.path == "/kpg/PaymentHTTP.htm"
    query = dict(urllib.parse.parse_qsl(url.query))
    assert query["param"] == "paymentInit"
    assert query["tranportalId"] == sandbox.tranportal_id
    assert query["responseURL"] == merchant.url
    plain = decrypt_trandata(query["trandata"], KEY)
    assert "action=1&" in plain
    assert "currencycode=414&" in plain
    assert "amt=100.500&" in plain
    assert "trackid=REN1&" in plain
    assert "password=sandboxpass" in plain
    assert "sandboxpass" not in url.query  # only inside trandata


def test_captured_flow(gateway: KnetGateway, sandbox: KnetSandbox, merchant: Merchant) -> None:
    purchase(gateway, merchant, "REN2")
    assert gateway.get_status("REN2").status is PaymentStatus.PENDING

    (delivery,) = sandbox.pay("REN2", "CAPTURED")

    assert delivery.acknowledged
    assert delivery.redirect_url == "https://moi.example/renewal/receipt?trackid=REN2"
    (notification,) = merchant.notifications
    assert notification.verified
    assert notification.merchant_reference == "REN2"
    assert notification.result is not None
    assert notification.result.status is PaymentStatus.CAPTURED
    assert notification.result.captured_minor == 100500
    assert notification.result.gateway_reference == sandbox.payments["REN2"].payment_id
    status = gateway.get_status("REN2")
    assert status.status is PaymentStatus.CAPTURED
    assert status.captured_minor == 100500
    assert status.currency == "KWD"
    assert status.gateway_reference == sandbox.payments["REN2"].payment_id


@pytest.mark.parametrize("outcome", ["NOT CAPTURED", "CANCELED"])
def test_declined_flow(
    gateway: KnetGateway, sandbox: KnetSandbox, merchant: Merchant, outcome: str
) -> None:
    purchase(gateway, merchant, "REN3")
    sandbox.pay("REN3", outcome)  # type: ignore[arg-type]
    (notification,) = merchant.notifications
    assert notification.verified
    assert notification.result is not None
    assert notification.result.status is PaymentStatus.DECLINED
    assert notification.result.message == outcome
    status = gateway.get_status("REN3")
    assert status.status is PaymentStatus.DECLINED
    assert status.captured_minor == 0


def test_tampered_notification_is_unverified(gateway: KnetGateway, sandbox: KnetSandbox) -> None:
    body = urllib.parse.urlencode({"paymentid": "1", "trandata": OPENSSL_TRANDATA[:-2] + "00"})
    for raw in (body.encode(), b"trandata=zz", b"\xff\xfe", b"", b"Error=IPAY0100048&trackid=REN9"):
        notification = gateway.parse_notification(raw, {})
        assert not notification.verified
        assert notification.result is None
        assert notification.acknowledgement.startswith(b"REDIRECT=")


def test_notification_with_another_amount_is_unverified(
    gateway: KnetGateway, merchant: Merchant
) -> None:
    purchase(gateway, merchant, "REN4", fils=5000)
    fields = "paymentid=1&result=CAPTURED&trackid=REN4&amt=0.005"
    raw = urllib.parse.urlencode({"trandata": encrypt_trandata(fields, KEY)}).encode()
    notification = gateway.parse_notification(raw, {})
    assert not notification.verified
    assert notification.result is None


def test_duplicate_notifications(
    gateway: KnetGateway, sandbox: KnetSandbox, merchant: Merchant
) -> None:
    sandbox.duplicate_notifications = True
    purchase(gateway, merchant, "REN5")
    deliveries = sandbox.pay("REN5")
    assert [d.acknowledged for d in deliveries] == [True, True]
    assert [n.result.status for n in merchant.notifications if n.result] == [
        PaymentStatus.CAPTURED,
        PaymentStatus.CAPTURED,
    ]
    assert gateway.get_status("REN5").status is PaymentStatus.CAPTURED


@pytest.mark.parametrize(("reverse", "expected"), [(True, "DECLINED"), (False, "CAPTURED")])
def test_dropped_notification(
    gateway: KnetGateway, sandbox: KnetSandbox, merchant: Merchant, reverse: bool, expected: str
) -> None:
    sandbox.reverse_unacknowledged = reverse
    purchase(gateway, merchant, "REN6")
    sandbox.drop_next_notification()
    (delivery,) = sandbox.pay("REN6")
    assert delivery.dropped
    assert not merchant.notifications
    assert gateway.get_status("REN6").status is PaymentStatus[expected]


@pytest.mark.parametrize(("reverse", "expected"), [(True, "DECLINED"), (False, "CAPTURED")])
def test_notification_answered_too_late_is_unacknowledged(
    gateway: KnetGateway, sandbox: KnetSandbox, merchant: Merchant, reverse: bool, expected: str
) -> None:
    """The merchant stores the result but its REDIRECT= comes after KNET gave up: for KNET it
    was not acknowledged (reversed since September 2023). The answer is held until KNET has
    given up, so the timeout fires however loaded the machine is."""
    sandbox.reverse_unacknowledged = reverse
    sandbox.notification_timeout_seconds = 0.5  # reached for sure: no answer before release
    purchase(gateway, merchant, "REN13")
    merchant.answers.hold()
    try:
        (delivery,) = sandbox.pay("REN13")
        assert merchant.answers.wait_held()  # the merchant did get it, and stored it
    finally:
        merchant.answers.release()
    assert not delivery.acknowledged
    assert "timed out" in delivery.answer
    assert [n.result.status for n in merchant.notifications if n.result] == [PaymentStatus.CAPTURED]
    assert gateway.get_status("REN13").status is PaymentStatus[expected]


def test_unacknowledged_notification_is_recorded(sandbox: KnetSandbox, merchant: Merchant) -> None:
    gateway = KnetGateway(
        base_url=sandbox.base_url,
        tranportal_id=sandbox.tranportal_id,
        password=sandbox.password,
        resource_key=sandbox.resource_key,
        receipt_url="https://moi.example/r",
        timeout_seconds=float(CLIENT_TIMEOUT),
    )
    result = gateway.purchase(
        PaymentRequest("REN7", Money("KWD", 1000), "fee", notification_url="http://127.0.0.1:9/x")
    )
    urllib.request.urlopen(result.redirect_url, timeout=60).close()
    (delivery,) = sandbox.pay("REN7")  # nobody listens on port 9
    assert not delivery.acknowledged
    assert gateway.get_status("REN7").status is PaymentStatus.DECLINED  # KNET reversed it


def test_unknown_track_id_is_not_found(gateway: KnetGateway) -> None:
    lookup = KnetGateway(
        base_url=gateway._base_url,
        tranportal_id="100000101",
        password="sandboxpass",
        resource_key=KEY,
        receipt_url="https://moi.example/r",
        timeout_seconds=float(CLIENT_TIMEOUT),
        amount_lookup=lambda ref: Money("KWD", 1000),
    )
    assert lookup.get_status("NEVERSENT1").status is PaymentStatus.NOT_FOUND
    assert gateway.get_status("not-a-track-id").status is PaymentStatus.NOT_FOUND


def test_inquiry_without_amount_is_unknown(gateway: KnetGateway) -> None:
    with pytest.raises(GatewayOutcomeUnknown, match="amount"):
        gateway.get_status("NEVERSENT2")


def test_inquiry_timeout(impatient: KnetGateway, sandbox: KnetSandbox, merchant: Merchant) -> None:
    purchase(impatient, merchant, "REN8")
    sandbox.tran_pipe_answers.hold()  # no answer comes until released: the gateway times out
    try:
        with pytest.raises(GatewayOutcomeUnknown):
            impatient.get_status("REN8")
    finally:
        sandbox.tran_pipe_answers.release()


def test_inquiry_against_nothing_is_unknown() -> None:
    gateway = KnetGateway(
        base_url="http://127.0.0.1:9",
        tranportal_id="1",
        password="p",
        resource_key=KEY,
        receipt_url="https://moi.example/r",
        timeout_seconds=0.5,
        amount_lookup=lambda ref: Money("KWD", 1000),
    )
    with pytest.raises(GatewayOutcomeUnknown):
        gateway.get_status("REN10")


def test_refund(gateway: KnetGateway, sandbox: KnetSandbox, merchant: Merchant) -> None:
    purchase(gateway, merchant, "REN11")
    sandbox.pay("REN11")
    first = gateway.refund("REN11", Money("KWD", 500), "RF1")
    assert first.refunded_minor == 500
    assert gateway.refund("REN11", Money("KWD", 500), "RF1") == first  # same reference: once
    assert sandbox.payments["REN11"].refunded_fils == 500
    with pytest.raises(GatewayRefused):
        gateway.refund("REN11", Money("KWD", 700), "RF1")  # reference reused for another refund
    with pytest.raises(GatewayRefused):
        gateway.refund("REN11", Money("KWD", 100001), "RF2")  # more than is left
    assert sandbox.payments["REN11"].refunded_fils == 500


def test_refund_of_declined_payment_is_refused(
    gateway: KnetGateway, sandbox: KnetSandbox, merchant: Merchant
) -> None:
    purchase(gateway, merchant, "REN12")
    sandbox.pay("REN12", "NOT CAPTURED")
    with pytest.raises(GatewayRefused):
        gateway.refund("REN12", Money("KWD", 500), "RF3")


def test_refund_timeout_is_never_resent(
    impatient: KnetGateway, sandbox: KnetSandbox, merchant: Merchant
) -> None:
    purchase(impatient, merchant, "REN13")
    sandbox.pay("REN13")
    sandbox.tran_pipe_answers.hold()  # the refund is not answered: the gateway times out
    try:
        with pytest.raises(GatewayOutcomeUnknown):
            impatient.refund("REN13", Money("KWD", 500), "RF4")
        # The sandbox has recorded it (a loaded machine may run the client's timeout first).
        assert sandbox.tran_pipe_answers.wait_held(1)
    finally:
        sandbox.tran_pipe_answers.release()
    with pytest.raises(GatewayOutcomeUnknown):
        impatient.refund("REN13", Money("KWD", 500), "RF4")
    assert [r["udf1"] for r in sandbox.tran_pipe_requests if r["action"] == "2"] == ["RF4"]


def test_unsupported_operations_are_refused(gateway: KnetGateway) -> None:
    request = PaymentRequest("REN14", Money("KWD", 1000), "fee", notification_url="http://x/n")
    with pytest.raises(GatewayRefused):
        gateway.authorize(request)
    with pytest.raises(GatewayRefused):
        gateway.capture("REN14", Money("KWD", 1000))
    with pytest.raises(GatewayRefused):
        gateway.void("REN14")


@pytest.mark.parametrize(
    "request_",
    [
        PaymentRequest("REN-15", Money("KWD", 1000), "fee", notification_url="http://x/n"),
        PaymentRequest("R" * 41, Money("KWD", 1000), "fee", notification_url="http://x/n"),
        PaymentRequest("REN15", Money("USD", 1000), "fee", notification_url="http://x/n"),
        PaymentRequest("REN15", Money("KWD", 0), "fee", notification_url="http://x/n"),
        PaymentRequest("REN15", Money("KWD", 1000), "fee"),
        PaymentRequest("REN15", Money("KWD", 1000), "fee", notification_url="http://x/n?a=1&b=2"),
    ],
)
def test_purchase_refusals(gateway: KnetGateway, request_: PaymentRequest) -> None:
    with pytest.raises(GatewayRefused):
        gateway.purchase(request_)


def test_from_settings_validates() -> None:
    good = {
        "base_url": "https://www.kpaytest.com.kw",
        "tranportal_id": "1",
        "password": "p",
        "resource_key": KEY,
        "receipt_url": "https://moi.example/r",
        "timeout_seconds": "7.5",
    }
    assert isinstance(from_settings(good), KnetGateway)
    for key in ("base_url", "resource_key", "receipt_url"):
        with pytest.raises(ValueError, match=key):
            from_settings({k: v for k, v in good.items() if k != key})
    for key, value in [
        ("resource_key", "short"),
        ("base_url", "http://kpay.example"),
        ("timeout_seconds", "soon"),
        ("timeout_seconds", "0"),
    ]:
        with pytest.raises(ValueError):
            from_settings({**good, key: value})
