"""CMI adapter (payments.gateways.cmi) against the local CMI sandbox (payments.sandbox.cmi)."""

from __future__ import annotations

import urllib.parse
import urllib.request
from collections.abc import Iterator

import pytest
from hypothesis import given
from hypothesis import strategies as st

from payments.gateway import (
    GatewayRefused,
    Money,
    PaymentGateway,
    PaymentRequest,
    PaymentStatus,
    load_gateway,
)
from payments.gateways.cmi import (
    ACK_CAPTURE,
    ACK_DECLINED,
    ACK_FAILURE,
    CmiGateway,
    auto_post_form,
    format_amount,
    from_settings,
    parse_amount,
    parse_cc5_response,
    ver3_hash,
    verify_ver3_hash,
)
from payments.sandbox.cmi import CmiSandbox

FIELDS = {
    "clientid": "600000001",
    "storetype": "3D_PAY_HOSTING",
    "trantype": "PreAuth",
    "amount": "150.50",
    "currency": "504",
    "oid": "REN20250001",
    "okUrl": "https://portal.example/ok",
    "failUrl": "https://portal.example/ko",
    "callbackUrl": "https://portal.example/cb",
    "shopurl": "https://portal.example",
    "lang": "fr",
    "rnd": "abc|def",
    "hashAlgorithm": "ver3",
    "encoding": "UTF-8",
}
STORE_KEY = "KEY\\x"
# Made with OpenSSL from the documented rule (names ordered case-insensitively, values escaped
# and joined with "|", then "|" and the escaped store key; encoding left out):
#   P='150.50|https://portal.example/cb|600000001|504|https://portal.example/ko|ver3|fr|
#      REN20250001|https://portal.example/ok|abc\|def|https://portal.example|3D_PAY_HOSTING|
#      PreAuth|KEY\\x'   (one line)
#   printf %s "$P" | openssl dgst -sha512 -binary | base64 -w0
EXPECTED_HASH = (
    "5h7aj0pecAvD7tkfRXWbEF7YXmyT7F7ZK5exr+k1mAottnDZOy3/69aJFomdkhsxiOUgzJIxRqlgMsGqgKbHmA=="
)
AMOUNT = Money("MAD", 15_050)


# --- hash and amounts ---------------------------------------------------------------------------


def test_ver3_hash_matches_openssl_vector() -> None:
    assert ver3_hash(FIELDS, STORE_KEY) == EXPECTED_HASH
    assert verify_ver3_hash({**FIELDS, "HASH": EXPECTED_HASH}, STORE_KEY)


def test_ver3_hash_ignores_hash_and_encoding_and_name_case() -> None:
    shuffled = dict(reversed(list(FIELDS.items())))
    assert ver3_hash(shuffled, STORE_KEY) == EXPECTED_HASH
    assert ver3_hash({**FIELDS, "encoding": "ISO-8859-9", "hash": "x"}, STORE_KEY) == EXPECTED_HASH


def test_ver3_hash_natural_order_and_escaping_matter() -> None:
    # natcasesort: BillToStreet2 before BillToStreet12 (digits compared as numbers).
    ordered = {"BillToStreet12": "b", "BillToStreet2": "a"}
    assert ver3_hash(ordered, "k") == ver3_hash({"billtostreet2": "a", "x12": "b"}, "k")
    # Without escaping "a|" + "b" and "a" + "|b" would hash alike.
    assert ver3_hash({"a": "x|", "b": "y"}, "k") != ver3_hash({"a": "x", "b": "|y"}, "k")


@pytest.mark.parametrize(
    "change",
    [
        {"amount": "150.51"},
        {"oid": "REN20250002"},
        {"HASH": EXPECTED_HASH[:-4] + "AAA="},
        {"HASH": ""},
    ],
)
def test_verify_refuses_any_change(change: dict[str, str]) -> None:
    assert not verify_ver3_hash({**FIELDS, "HASH": EXPECTED_HASH, **change}, STORE_KEY)


def test_verify_refuses_another_store_key() -> None:
    assert not verify_ver3_hash({**FIELDS, "HASH": EXPECTED_HASH}, "KEY\\y")


@given(st.integers(min_value=0, max_value=10**9))
def test_amount_round_trip(centimes: int) -> None:
    text = format_amount(centimes)
    assert len(text.split(".")[1]) == 2
    assert parse_amount(text) == centimes


@pytest.mark.parametrize("bad", ["", "-1.00", "1,50", "1.505", "1e3", " 1.00", "\uff11.00", "1."])
def test_parse_amount_refuses(bad: str) -> None:
    with pytest.raises(ValueError):
        parse_amount(bad)


def test_format_amount_refuses_floats_and_negatives() -> None:
    with pytest.raises(TypeError):
        format_amount(1.5)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        format_amount(-1)


def test_cc5_parser_does_not_expand_entities() -> None:
    body = '<!DOCTYPE x [<!ENTITY e "boom">]><CC5Response><ErrMsg>&e;</ErrMsg></CC5Response>'
    assert parse_cc5_response(body) == {"ErrMsg": "&e;"}


# --- against the sandbox ------------------------------------------------------------------------


@pytest.fixture
def sandbox() -> Iterator[CmiSandbox]:
    with CmiSandbox() as running:
        yield running


@pytest.fixture
def gateway(sandbox: CmiSandbox) -> CmiGateway:
    return from_settings(sandbox.settings(return_url="https://portal.example/receipt"))


def _request(reference: str, url: str = "https://portal.example/notify") -> PaymentRequest:
    return PaymentRequest(reference, AMOUNT, "renewal", notification_url=url)


def _open(url: str) -> None:
    with urllib.request.urlopen(url, timeout=60) as page:
        page.read()


def test_registered_under_the_entry_point(sandbox: CmiSandbox) -> None:
    loaded = load_gateway("cmi", sandbox.settings(return_url="https://portal.example/r"))
    assert isinstance(loaded, CmiGateway)
    assert isinstance(loaded, PaymentGateway)


def test_settings_are_checked() -> None:
    with pytest.raises(ValueError, match="store_key"):
        from_settings({"base_url": "https://cmi.example"})
    settings = {
        "base_url": "http://cmi.example",  # plain http only for a local sandbox
        "client_id": "1",
        "store_key": "k",
        "api_name": "n",
        "api_password": "p",
        "shop_url": "https://s",
        "ok_url": "https://s",
        "fail_url": "https://s",
    }
    with pytest.raises(ValueError, match="https"):
        from_settings(settings)
    with pytest.raises(ValueError, match="language"):
        from_settings({**settings, "base_url": "https://cmi.example", "language": "de"})


def test_purchase_fields_are_signed_and_the_form_posts_them(gateway: CmiGateway) -> None:
    pending = gateway.purchase(_request("REN1"))
    assert pending.status is PaymentStatus.PENDING
    fields = dict(pending.raw)
    assert fields["currency"] == "504"
    assert fields["amount"] == "150.50"
    assert fields["storetype"] == "3D_PAY_HOSTING"
    assert fields["hashAlgorithm"] == "ver3"
    query = dict(urllib.parse.parse_qsl(urllib.parse.urlsplit(pending.redirect_url).query))
    assert query == fields
    form = auto_post_form(pending)
    assert 'method="post"' in form
    assert "/fim/est3Dgate" in form
    assert f'value="{fields["HASH"]}"' in form


@pytest.mark.parametrize(
    ("reference", "amount"),
    [("REN 1", AMOUNT), ("R" * 65, AMOUNT), ("REN1", Money("KWD", 1)), ("REN1", Money("MAD", 0))],
)
def test_purchase_refuses_bad_requests(
    gateway: CmiGateway, sandbox: CmiSandbox, reference: str, amount: Money
) -> None:
    with pytest.raises(GatewayRefused):
        gateway.purchase(PaymentRequest(reference, amount, "x", notification_url="https://n"))
    assert not sandbox.orders


def test_sandbox_refuses_a_request_with_a_bad_hash(
    gateway: CmiGateway, sandbox: CmiSandbox
) -> None:
    pending = gateway.purchase(_request("REN2"))
    forged = {**pending.raw, "amount": "1.00"}
    url = pending.redirect_url.partition("?")[0] + "?" + urllib.parse.urlencode(forged)
    with pytest.raises(urllib.error.HTTPError) as refused:
        _open(url)
    assert refused.value.code == 400
    assert not sandbox.orders


def test_callback_verified_is_captured_by_the_acknowledgement(
    gateway: CmiGateway, sandbox: CmiSandbox, notify_url: str
) -> None:
    _open(gateway.purchase(_request("REN3", notify_url)).redirect_url)
    assert gateway.get_status("REN3").status is PaymentStatus.PENDING
    delivery = sandbox.pay("REN3")
    assert delivery.answer == ACK_CAPTURE.decode()
    status = gateway.get_status("REN3")
    assert status.status is PaymentStatus.CAPTURED
    assert status.captured_minor == AMOUNT.amount_minor


def test_unacknowledged_preauthorization_is_captured_by_postauth(
    gateway: CmiGateway, sandbox: CmiSandbox
) -> None:
    _open(gateway.purchase(_request("REN4")).redirect_url)
    sandbox.drop_next_callback()
    assert sandbox.pay("REN4").dropped
    status = gateway.get_status("REN4")
    assert status.status is PaymentStatus.AUTHORIZED
    assert status.authorized_minor == AMOUNT.amount_minor
    assert status.captured_minor == 0
    captured = gateway.capture("REN4", AMOUNT)
    assert captured.status is PaymentStatus.CAPTURED
    assert captured.captured_minor == AMOUNT.amount_minor
    with pytest.raises(GatewayRefused):  # nothing left to capture
        gateway.capture("REN4", AMOUNT)


def test_declined_callback_is_acknowledged_without_capture(
    gateway: CmiGateway, sandbox: CmiSandbox, notify_url: str
) -> None:
    _open(gateway.purchase(_request("REN5", notify_url)).redirect_url)
    assert sandbox.pay("REN5", approve=False).answer == ACK_DECLINED.decode()
    status = gateway.get_status("REN5")
    assert status.status is PaymentStatus.DECLINED
    assert status.captured_minor == 0


def test_tampered_callback_is_only_a_hint_and_nothing_is_captured(
    gateway: CmiGateway, sandbox: CmiSandbox, notify_url: str
) -> None:
    _open(gateway.purchase(_request("REN6", notify_url)).redirect_url)
    sandbox.tamper_next_callback = True
    assert sandbox.pay("REN6").answer == ACK_FAILURE.decode()
    status = gateway.get_status("REN6")
    assert status.status is PaymentStatus.AUTHORIZED  # still only pre-authorized
    assert status.captured_minor == 0


def test_parse_notification_refuses_garbage_and_foreign_clients(gateway: CmiGateway) -> None:
    for raw in (b"", b"\xff\xfe", b"oid=REN7&Response=Approved&ProcReturnCode=00"):
        notification = gateway.parse_notification(raw, {})
        assert not notification.verified
        assert notification.result is None
        assert notification.acknowledgement == ACK_FAILURE
    # Correctly hashed with our key but for another merchant's client id: refused.
    fields = {**FIELDS, "clientid": "999", "Response": "Approved", "ProcReturnCode": "00"}
    fields["HASH"] = ver3_hash(fields, "SANDBOX|STORE\\KEY")
    notification = gateway.parse_notification(urllib.parse.urlencode(fields).encode(), {})
    assert not notification.verified
    assert notification.merchant_reference == "REN20250001"  # the hint


def test_unknown_order_is_not_found(gateway: CmiGateway) -> None:
    assert gateway.get_status("NEVERSEEN").status is PaymentStatus.NOT_FOUND
    assert gateway.get_status("not valid!").status is PaymentStatus.NOT_FOUND


def test_wrong_api_credentials_are_an_unknown_outcome(sandbox: CmiSandbox) -> None:
    from payments.gateway import GatewayOutcomeUnknown

    settings = sandbox.settings(return_url="https://portal.example/r")
    gateway = from_settings({**settings, "api_password": "wrong"})
    with pytest.raises(GatewayOutcomeUnknown):
        gateway.get_status("REN8")


@pytest.fixture
def notify_url(gateway: CmiGateway) -> Iterator[str]:
    """A merchant callback endpoint answering the adapter's acknowledgement."""
    from tests.payments.test_conformance import _NotificationReceiver

    with _NotificationReceiver() as receiver:
        receiver.gateway = gateway
        yield receiver.url
