"""A Kuwaiti renewal paid on the KNET-style hosted page, against the local sandbox: the
server-to-server result is stored before it is acknowledged with REDIRECT=, and the payment is
confirmed by inquiry on the track id before it is recorded."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select

from payments.gateways.knet import from_settings
from payments.notifications import NotificationReceiver
from payments.sandbox.knet import KnetSandbox
from payments.tables import gateway_notifications
from tests.payments.support import Stack, family_request

KEY = "0123456789ABCDEF"


@pytest.fixture
def world(tmp_path: Path) -> Iterator[tuple[Stack, KnetSandbox, NotificationReceiver]]:
    sandbox = KnetSandbox(tranportal_id="123456", password="sandbox-pass", resource_key=KEY)
    sandbox.start()
    gateway = from_settings(sandbox.settings("https://portal.example/receipt"))
    stack = Stack(tmp_path, gateways={"knet": gateway})
    gateway.amount_lookup = stack.renewals.amount_of
    receiver = NotificationReceiver(
        stack.renewals, stack.engine, {"knet": gateway}, stack.clock
    ).start()
    stack.renewals.notification_base_url = receiver.base_url
    try:
        yield stack, sandbox, receiver
    finally:
        receiver.stop()
        sandbox.stop()


def test_a_hosted_page_payment_is_stored_acknowledged_confirmed_and_recorded(
    world: tuple[Stack, KnetSandbox, NotificationReceiver],
) -> None:
    stack, sandbox, receiver = world
    quote = stack.renewals.quote(family_request(7, 3))
    payment = stack.renewals.start_payment(
        quote.quote_id, "knet-key-0001", "knet", "https://portal.example/back"
    )
    assert payment.state == "pending" and "PaymentHTTP.htm" in payment.redirect_url
    import urllib.request

    with urllib.request.urlopen(payment.redirect_url, timeout=60) as page:
        assert page.status == 200  # the customer reaches the hosted page
    inquiries_before = len(sandbox.tran_pipe_requests)
    [delivery] = sandbox.pay(payment.payment_id, "CAPTURED")
    assert delivery.acknowledged and delivery.answer.startswith("REDIRECT=")
    with stack.engine.connect() as connection:
        stored = connection.execute(select(gateway_notifications)).all()
    assert [(row.payment_id, row.verified) for row in stored] == [(payment.payment_id, "true")]
    receiver.settle(timeout_seconds=60)  # the background confirmation has finished
    assert stack.renewals.get_payment(payment.payment_id).state == "recorded"
    assert len(sandbox.tran_pipe_requests) > inquiries_before  # confirmed by inquiry
    recorded = stack.renewals.get_payment(payment.payment_id)
    assert recorded.leaf_index is not None and recorded.captured_minor == quote.total_minor


def test_a_declined_hosted_page_payment_is_declined_and_not_recorded(
    world: tuple[Stack, KnetSandbox, NotificationReceiver],
) -> None:
    stack, sandbox, receiver = world
    quote = stack.renewals.quote(family_request(8, 2))
    payment = stack.renewals.start_payment(quote.quote_id, "knet-key-0002", "knet")
    import urllib.request

    with urllib.request.urlopen(payment.redirect_url, timeout=60):
        pass  # the customer reaches the hosted page, then the card is refused
    sandbox.pay(payment.payment_id, "NOT CAPTURED")
    receiver.settle(timeout_seconds=60)
    assert stack.renewals.get_payment(payment.payment_id).state == "declined"
    assert stack.renewals.get_payment(payment.payment_id).leaf_index is None


def test_a_forged_notification_is_stored_unverified_and_believes_nothing(
    world: tuple[Stack, KnetSandbox, NotificationReceiver],
) -> None:
    import urllib.request

    from payments.gateways.knet import encrypt_trandata

    stack, _, receiver = world
    quote = stack.renewals.quote(family_request(9, 2))
    payment = stack.renewals.start_payment(quote.quote_id, "knet-key-0003", "knet")
    forged = encrypt_trandata(
        f"paymentid=1&result=CAPTURED&trackid={payment.payment_id}&amt=1.000", "FFFFFFFFFFFFFFFF"
    )
    body = f"paymentid=1&trandata={forged}".encode()
    with urllib.request.urlopen(
        urllib.request.Request(
            f"{receiver.base_url}/notify/knet",
            data=body,
            headers={"Content-Type": "application/x-www-form-urlencoded"},
        ),
        timeout=60,
    ):
        pass
    with stack.engine.connect() as connection:
        rows = connection.execute(select(gateway_notifications)).all()
    assert [row.verified for row in rows] == ["false"]
    receiver.settle(timeout_seconds=60)  # any confirmation it triggered has run
    assert stack.renewals.get_payment(payment.payment_id).state == "pending"


def test_the_portals_word_is_kept_but_never_believed(
    world: tuple[Stack, KnetSandbox, NotificationReceiver],
) -> None:
    stack, _, _ = world
    quote = stack.renewals.quote(family_request(10, 2))
    payment = stack.renewals.start_payment(quote.quote_id, "knet-key-0004", "knet")
    stack.renewals.store_portal_hint(payment.payment_id, b"result=CAPTURED&trackid=forged")
    after = stack.renewals.complete_payment(payment.payment_id)  # the gateway: not paid
    assert after.state == "pending" and after.leaf_index is None
    with stack.engine.connect() as connection:
        rows = connection.execute(select(gateway_notifications)).all()
    assert [(row.verified, bytes(row.body)) for row in rows] == [
        ("portal", b"result=CAPTURED&trackid=forged")
    ]
