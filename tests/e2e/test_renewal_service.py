"""payments.v1.RenewalService end to end: a real server with the payments extension, the
simulated gateway, and the portal's client verifying every recorded payment's receipt."""

from __future__ import annotations

import datetime as dt
import logging
import socket
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc
import pytest
from sqlalchemy import text

from clients.errors import ClientError, from_rpc_error
from clients.portal import PortalClient
from clients.renewal import RenewalClient
from clients.verify import TrustedLog
from ledger.signers import SignerRole
from ledger.signing import Ed25519Signer, format_signer_key
from ledger.storage.db import create_ledger_engine
from ledger.v1 import events_pb2, types_pb2
from payments.notifications import NOTIFY_LISTEN_ENVIRONMENT
from payments.saga import payment_id_of
from payments.v1 import renewal_service_pb2 as pb
from payments.v1 import renewal_service_pb2_grpc as pb_grpc
from tests.builders import person
from tests.conftest import ServerHandle, onboard, start_server_thread
from tests.payments.support import civil_id

AUTHORITY = "kw-gov-health"
R = events_pb2


@pytest.fixture
def stack(
    database_url: str,
    log_signer: Ed25519Signer,
    operator_signer: Ed25519Signer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[tuple[ServerHandle, RenewalClient, grpc.Channel]]:
    authority = _authority_environment(tmp_path, monkeypatch)
    server = start_server_thread(database_url, log_signer, tmp_path)
    try:
        onboard(server, operator_signer, AUTHORITY, authority, SignerRole.AUTHORITY)
        trusted = TrustedLog.from_verifier_key(server.log_verifier_key)
        with server.channel("portal", "KW") as channel:
            yield server, RenewalClient(channel, log=trusted), channel
    finally:
        server.stop()


def _authority_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Ed25519Signer:
    """A renewal authority whose key the servers started next sign fees with."""
    authority = Ed25519Signer.generate(AUTHORITY)
    key_file = tmp_path / "authority.key"
    key_file.write_text(format_signer_key(authority) + "\n", encoding="utf-8")
    monkeypatch.setenv("POLICY_LEDGER_PAYMENTS_AUTHORITY_KEY", str(key_file))
    monkeypatch.setenv("POLICY_LEDGER_PAYMENTS_AUTHORITY_ID", AUTHORITY)
    return authority


def _kuwait_family(number: int, size: int = 3) -> pb.QuoteRenewalRequest:
    kinds = [
        (R.RELATIONSHIP_SELF, pb.RESIDENCE_CATEGORY_PRIVATE_SECTOR_WORKER),
        (R.RELATIONSHIP_SPOUSE, pb.RESIDENCE_CATEGORY_DEPENDENT),
        (R.RELATIONSHIP_CHILD, pb.RESIDENCE_CATEGORY_DEPENDENT),
        (R.RELATIONSHIP_DOMESTIC_WORKER, pb.RESIDENCE_CATEGORY_DOMESTIC_WORKER),
    ]
    request = pb.QuoteRenewalRequest(
        jurisdiction="KW",
        sponsor=civil_id(number, 0),
        period_start=types_pb2.CivilDate(year=2027, month=1, day=1),
        period_end=types_pb2.CivilDate(year=2027, month=12, day=31),
    )
    for position, (relationship, category) in enumerate(kinds[:size]):
        request.members.add(
            person=civil_id(number, position),
            relationship=relationship,
            residence_category=category,
            birth_date=types_pb2.CivilDate(year=2015, month=5, day=5),
            domestic_worker_ordinal=1 if category == pb.RESIDENCE_CATEGORY_DOMESTIC_WORKER else 0,
        )
    return request


def _entries(database_url: str) -> int:
    engine = create_ledger_engine(database_url)
    try:
        with engine.connect() as connection:
            return int(connection.execute(text("SELECT count(*) FROM log_entries")).scalar())
    finally:
        engine.dispose()


def test_a_kuwaiti_renewal_is_quoted_paid_and_recorded_with_a_verified_receipt(
    stack: tuple[ServerHandle, RenewalClient, grpc.Channel], database_url: str
) -> None:
    server, renewals, _ = stack
    quote = renewals.quote(_kuwait_family(1, 4)).quote
    assert quote.payable and quote.total.currency_code == "KWD"
    assert quote.total.amount_minor == sum(line.amount.amount_minor for line in quote.lines)
    assert [line.rule_id for line in quote.lines][:2] == ["KW25-RESIDENCE", "KW25-DEPENDENT"]
    payment = renewals.start_payment(quote.quote_id, "portal-key-0001", gateway="simulated")
    assert payment.state == pb.PAYMENT_STATE_RECORDED  # receipt verified by the client
    assert payment.captured_minor == quote.total.amount_minor
    again = renewals.start_payment(quote.quote_id, "portal-key-0001", gateway="simulated")
    assert again.payment_id == payment.payment_id and again.receipt.leaf_index == (
        payment.receipt.leaf_index
    )
    before = _entries(database_url)
    with pytest.raises(ClientError) as raised:
        renewals.start_payment(quote.quote_id, "portal-key-0001", gateway="knet")
    assert raised.value.code == grpc.StatusCode.ALREADY_EXISTS
    assert [v.field for v in raised.value.field_violations] == ["gateway"]
    # A portal may not refund (PERMISSION_DENIED, nothing written); the renewal authority may.
    with pytest.raises(ClientError) as raised:
        renewals.refund(payment.payment_id, 1_000, "refund-key-0001", "duplicate fee")
    assert raised.value.code == grpc.StatusCode.PERMISSION_DENIED
    assert _entries(database_url) == before
    with server.channel("authority", AUTHORITY) as channel:
        authority = RenewalClient(
            channel, log=TrustedLog.from_verifier_key(server.log_verifier_key)
        )
        refunded = authority.refund(payment.payment_id, 1_000, "refund-key-0001", "duplicate fee")
    assert refunded.refunded_minor == 1_000
    assert _entries(database_url) == before + 1  # the refund, once
    by_quote = renewals.get(quote_id=quote.quote_id)
    assert by_quote.payment.payment_id == payment.payment_id


def test_a_renewal_stores_its_payment_its_history_and_its_key(
    stack: tuple[ServerHandle, RenewalClient, grpc.Channel], database_url: str
) -> None:
    """What one renewal leaves in the payments' tables, row by row (the saga's statements are
    built once and run with parameters; its record step is one transaction)."""
    _, renewals, _ = stack
    quote = renewals.quote(_kuwait_family(7, 2)).quote
    payment = renewals.start_payment(quote.quote_id, "portal-key-rows1", gateway="simulated")
    assert payment.state == pb.PAYMENT_STATE_RECORDED
    engine = create_ledger_engine(database_url)
    try:
        with engine.connect() as connection:
            row = connection.execute(
                text(
                    "SELECT quote_id, gateway, state, currency_code, amount_minor, "
                    "captured_minor, refunded_minor, gateway_reference, redirect_url, "
                    "leaf_index, message FROM payments WHERE payment_id = :id"
                ),
                {"id": payment.payment_id},
            ).one()
            history = connection.execute(
                text(
                    "SELECT refund_id, from_state, to_state, why, gateway_reference, leaf_index "
                    "FROM payment_history WHERE payment_id = :id ORDER BY history_id"
                ),
                {"id": payment.payment_id},
            ).all()
            key = connection.execute(
                text(
                    "SELECT operation, request_json, result_id FROM idempotency_keys "
                    "WHERE idempotency_key = 'portal-key-rows1'"
                )
            ).one()
            quotes_stored = connection.execute(
                text("SELECT total_minor, currency_code FROM quotes WHERE quote_id = :id"),
                {"id": quote.quote_id},
            ).all()
    finally:
        engine.dispose()
    reference = row.gateway_reference
    assert reference
    total = quote.total.amount_minor
    assert tuple(row) == (
        quote.quote_id, "simulated", "recorded", "KWD", total, total, 0, reference, "",
        payment.receipt.leaf_index, "FeeCollected appended",
    )  # fmt: skip
    assert [tuple(step) for step in history] == [
        ("", "started", "captured", "", reference, None),
        ("", "captured", "recording", "FeeCollected submitted", "", None),
        ("", "recording", "recorded", "FeeCollected appended", "", payment.receipt.leaf_index),
    ]
    assert tuple(key) == (
        "start_payment",
        '{"gateway":"simulated","operation":"start_payment","quote_id":"'
        + quote.quote_id
        + '","return_url":""}',
        payment.payment_id,
    )
    assert [tuple(q) for q in quotes_stored] == [(total, "KWD")]


def test_a_saudi_renewal_is_refused_while_a_member_is_uninsured(
    stack: tuple[ServerHandle, RenewalClient, grpc.Channel], database_url: str
) -> None:
    server, _, _ = stack
    saudi_portal = server.channel("portal", "SA")
    renewals = RenewalClient(
        saudi_portal, log=TrustedLog.from_verifier_key(server.log_verifier_key)
    )
    request = pb.QuoteRenewalRequest(
        jurisdiction="SA",
        sponsor=person(900),
        period_start=types_pb2.CivilDate(year=2027, month=1, day=1),
        period_end=types_pb2.CivilDate(year=2027, month=12, day=31),
    )
    request.members.add(person=person(900), relationship=R.RELATIONSHIP_SELF)
    request.members.add(person=person(901), relationship=R.RELATIONSHIP_DOMESTIC_WORKER)
    before = _entries(database_url)
    response = renewals.quote(request)
    assert not response.quote.payable
    assert not response.household.renewable
    assert [m.covered for m in response.household.members] == [False, False]
    with pytest.raises(ClientError) as raised:
        renewals.start_payment(response.quote.quote_id, "portal-key-sa-1", gateway="simulated")
    assert raised.value.reason == "QUOTE_NOT_PAYABLE"
    assert _entries(database_url) == before
    saudi_portal.close()


@pytest.mark.parametrize(
    ("mutate", "field"),
    [
        (lambda r: setattr(r, "jurisdiction", "FR"), "jurisdiction"),
        (lambda r: r.ClearField("members"), "members"),
        (
            lambda r: r.period_end.CopyFrom(types_pb2.CivilDate(year=2026, month=1, day=1)),
            "period_end",
        ),
        (lambda r: setattr(r.members[1], "residence_category", 0), "members[1].residence_category"),
        (lambda r: setattr(r.members[0].person, "value", "123"), "members[0].person.value"),
    ],
)
def test_bad_quote_requests_are_invalid_argument_and_write_nothing(
    stack: tuple[ServerHandle, RenewalClient, grpc.Channel],
    database_url: str,
    mutate: object,
    field: str,
) -> None:
    _, renewals, _ = stack
    request = _kuwait_family(2)
    mutate(request)  # type: ignore[operator]
    with pytest.raises(ClientError) as raised:
        renewals.quote(request)
    if field == "jurisdiction":
        # A portal/KW asking for another jurisdiction is refused before validation.
        assert raised.value.code == grpc.StatusCode.PERMISSION_DENIED, str(raised.value)
    else:
        assert raised.value.code == grpc.StatusCode.INVALID_ARGUMENT
        assert field in [v.field for v in raised.value.field_violations], str(raised.value)
    engine = create_ledger_engine(database_url)
    try:
        with engine.connect() as connection:
            assert connection.execute(text("SELECT count(*) FROM quotes")).scalar() == 0
    finally:
        engine.dispose()


def test_a_server_without_an_authority_key_has_no_renewal_service(
    server: ServerHandle,
) -> None:
    with server.channel("portal", "KW") as channel:
        client = RenewalClient(channel, log=TrustedLog.from_verifier_key(server.log_verifier_key))
        with pytest.raises(ClientError) as raised:
            client.quote(_kuwait_family(3))
    assert raised.value.code == grpc.StatusCode.UNIMPLEMENTED


def test_the_renew_command_quotes_pays_and_prints_the_receipt(
    stack: tuple[ServerHandle, RenewalClient, grpc.Channel], tmp_path: Path
) -> None:
    import contextlib
    import io

    from google.protobuf import json_format

    from policy_ledger.cli import main

    server, _, _ = stack
    request = tmp_path / "family.json"
    request.write_text(json_format.MessageToJson(_kuwait_family(7)))
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(
            [
                "renew",
                *server.cli_arguments("portal", "KW"),
                "--log-verifier",
                server.log_verifier_key,
                "--request",
                str(request),
                "--idempotency-key",
                "cli-renew-0001",
            ]
        )
    assert code == 0, out.getvalue()
    assert "RECORDED" in out.getvalue() and "receipt verified" in out.getvalue()


def test_an_oversized_gateway_result_is_refused_and_nothing_is_stored(
    stack: tuple[ServerHandle, RenewalClient, grpc.Channel], database_url: str
) -> None:
    _, renewals, _ = stack
    quote = renewals.quote(_kuwait_family(11)).quote
    payment = renewals.start_payment(quote.quote_id, "portal-key-0011", gateway="simulated")
    with pytest.raises(ClientError) as raised:
        renewals.complete_payment(payment.payment_id, gateway_result=b"x" * (8 * 1024 + 1))
    assert raised.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert [v.field for v in raised.value.field_violations] == ["gateway_result"]
    engine = create_ledger_engine(database_url)
    try:
        with engine.connect() as connection:
            stored = connection.execute(text("SELECT count(*) FROM gateway_notifications"))
            assert stored.scalar() == 0
    finally:
        engine.dispose()


@pytest.mark.parametrize(
    ("method", "fields", "field"),
    [
        ("StartPayment", {"quote_id": "", "idempotency_key": "key-00000001"}, "quote_id"),
        ("StartPayment", {"gateway": "no such!", "idempotency_key": "key-00000002"}, "gateway"),
        ("StartPayment", {"return_url": "x" * 2001, "idempotency_key": "key-3abc"}, "return_url"),
        ("StartPayment", {"idempotency_key": "short"}, "idempotency_key"),
        ("StartPayment", {"gateway": "knet", "idempotency_key": "key-00000005"}, "gateway"),
        ("RefundPayment", {"payment_id": "pay1", "amount_minor": 0}, "amount_minor"),
        ("GetRenewal", {}, "key"),
    ],
)
def test_bad_payment_requests_are_invalid_argument_and_write_nothing(
    stack: tuple[ServerHandle, RenewalClient, grpc.Channel],
    database_url: str,
    method: str,
    fields: dict[str, object],
    field: str,
) -> None:
    from clients.errors import from_rpc_error
    from payments.v1 import renewal_service_pb2_grpc as pb_grpc

    _, renewals, _ = stack
    quote = renewals.quote(_kuwait_family(12)).quote
    request_type = getattr(pb, f"{method}Request")
    defaults = (
        {"quote_id": quote.quote_id, "gateway": "simulated"} if method == "StartPayment" else {}
    )
    request = request_type(**{**defaults, **fields})
    server, _, _ = stack
    # Refunds are the renewal authority's; every other call here is the portal's.
    role, name = ("authority", AUTHORITY) if method == "RefundPayment" else ("portal", "KW")
    with server.channel(role, name) as caller, pytest.raises(grpc.RpcError) as raised:
        getattr(pb_grpc.RenewalServiceStub(caller), method)(request)
    error = from_rpc_error(raised.value)
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT, str(error)
    assert field in [v.field for v in error.field_violations], str(error)
    engine = create_ledger_engine(database_url)
    try:
        with engine.connect() as connection:
            for table in ("payments", "idempotency_keys", "refunds"):
                assert connection.execute(text(f"SELECT count(*) FROM {table}")).scalar() == 0
    finally:
        engine.dispose()


def _refund_outcome(renewals: RenewalClient, payment_id: str) -> str:
    try:
        refunded = renewals.refund(payment_id, 1_000, "refund-key-race", "duplicate fee")
    except ClientError as error:
        return f"{error.code.name}: {error}"
    return f"OK refunded {refunded.refunded_minor}"


def test_concurrent_refunds_with_one_idempotency_key_refund_once_and_answer_alike(
    stack: tuple[ServerHandle, RenewalClient, grpc.Channel], database_url: str
) -> None:
    """Issue 15: concurrent RefundPayment calls with one idempotency key answered INTERNAL.
    Now each gets the first call's answer, or UNAVAILABLE "retry" while the first is in flight
    (issue 9), and the refund is recorded once."""
    server, renewals, _ = stack
    quote = renewals.quote(_kuwait_family(2, 2)).quote
    payment = renewals.start_payment(quote.quote_id, "portal-key-race", gateway="simulated")
    before = _entries(database_url)
    callers = 8
    with server.channel("authority", AUTHORITY) as channel:
        authority = RenewalClient(
            channel, log=TrustedLog.from_verifier_key(server.log_verifier_key)
        )
        with ThreadPoolExecutor(max_workers=callers) as pool:
            outcomes = list(
                pool.map(lambda _: _refund_outcome(authority, payment.payment_id), range(callers))
            )
        assert "OK refunded 1000" in outcomes, outcomes
        assert all(
            outcome == "OK refunded 1000"
            or (outcome.startswith("UNAVAILABLE") and "retry" in outcome)
            for outcome in outcomes
        ), outcomes
        assert _refund_outcome(authority, payment.payment_id) == "OK refunded 1000"
    assert _entries(database_url) == before + 1  # the refund, once


def _answer(server: ServerHandle, caller: tuple[str, str], method: str, request: Any) -> str:
    """``STATUS REASON`` of ``method`` called on ``server`` as ``role/name`` (``OK`` when
    answered)."""
    with server.channel(*caller) as channel:
        try:
            getattr(pb_grpc.RenewalServiceStub(channel), method)(request)
        except grpc.RpcError as raised:
            error = from_rpc_error(raised)
            return f"{error.code.name} {error.reason}"
    return "OK"


def test_a_call_naming_a_payment_is_answered_alike_by_a_process_that_quoted_it_and_another(
    database_url: str,
    log_signer: Ed25519Signer,
    operator_signer: Ed25519Signer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A process remembers the jurisdiction of the quotes and payments it made; a process
    # started afterwards on the same database (one at a time: SQLite has one server) remembers
    # nothing it did not read. Each pair of answers is the one that made them, then the next.
    authority = _authority_environment(tmp_path, monkeypatch)
    kuwait, saudi = ("portal", "KW"), ("portal", "SA")
    refund = pb.RefundPaymentRequest(amount_minor=1_000, idempotency_key="refund-key-alike")
    calls: list[tuple[tuple[str, str], str, Any]] = [
        (caller, method, request)
        for caller in (kuwait, saudi)
        for method, request in (
            ("GetRenewal", pb.GetRenewalRequest()),
            ("CompletePayment", pb.CompletePaymentRequest()),
        )
    ]
    calls += [(saudi, "RefundPayment", refund), (("authority", AUTHORITY), "RefundPayment", refund)]

    def answers(server: ServerHandle) -> list[str]:
        return [_answer(server, caller, method, request) for caller, method, request in calls]

    quoting = start_server_thread(database_url, log_signer, tmp_path)
    try:
        onboard(quoting, operator_signer, AUTHORITY, authority, SignerRole.AUTHORITY)
        with quoting.channel(*kuwait) as channel:
            portal = RenewalClient(
                channel, log=TrustedLog.from_verifier_key(quoting.log_verifier_key)
            )
            quote = portal.quote(_kuwait_family(21)).quote
        for _, _, request in calls:  # the payment's id is known before the payment exists
            request.payment_id = payment_id_of(quote.quote_id)
        before = answers(quoting)
    finally:
        quoting.stop()
    not_found = "NOT_FOUND PAYMENT_NOT_FOUND"
    not_a_portal_call = "PERMISSION_DENIED ROLE_NOT_ALLOWED"
    # Nothing of Kuwait's exists yet to be refused: NOT_FOUND for either portal.
    assert before == [not_found] * 4 + [not_a_portal_call, not_found]
    paying = start_server_thread(database_url, log_signer, tmp_path)
    try:
        assert answers(paying) == before
        with paying.channel(*kuwait) as channel:
            portal = RenewalClient(
                channel, log=TrustedLog.from_verifier_key(paying.log_verifier_key)
            )
            payment = portal.start_payment(quote.quote_id, "portal-key-alike", gateway="simulated")
        assert payment.state == pb.PAYMENT_STATE_RECORDED
        after = answers(paying)  # the authority's refund is made here, once
    finally:
        paying.stop()
    refused = "PERMISSION_DENIED JURISDICTION_NOT_CALLER"
    assert after == ["OK", "OK", refused, refused, not_a_portal_call, "OK"]
    reading = start_server_thread(database_url, log_signer, tmp_path)
    try:
        assert answers(reading) == after  # the refund's key answers as it did
    finally:
        reading.stop()


_RELEASED_AT_STOP = ("renewal", "gateway-notifications", "confirm", "access")
"""The threads of the renewal servicer, the receiver, its confirmations, the access writer (the
read pool and grpc's client poller end on their own time)."""


def test_a_stopped_server_releases_the_payments_threads_and_the_notification_port(
    database_url: str,
    log_signer: Ed25519Signer,
    operator_signer: Ed25519Signer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The renewal servicer's threads, the access records' writer and the notification receiver
    (its listener, its thread, its confirmations) outlived the server's stop: an in-process
    caller (a test, an embedding) kept them for good. The extension now registers them on
    ServerContext.on_stop, and the server releases them once no call is under way."""
    authority = _authority_environment(tmp_path, monkeypatch)
    monkeypatch.setenv(NOTIFY_LISTEN_ENVIRONMENT, "127.0.0.1:0")
    before = set(threading.enumerate())
    with caplog.at_level(logging.INFO, logger="payments.service"):
        server = start_server_thread(database_url, log_signer, tmp_path)
    [receiver_url] = [
        record.args[0]  # type: ignore[index]
        for record in caplog.records
        if record.getMessage().startswith("gateway notifications on ")
    ]
    port = int(str(receiver_url).rsplit(":", 1)[1])
    try:
        onboard(server, operator_signer, AUTHORITY, authority, SignerRole.AUTHORITY)
        with server.channel("portal", "KW") as channel:
            trusted = TrustedLog.from_verifier_key(server.log_verifier_key)
            assert RenewalClient(channel, log=trusted).quote(_kuwait_family(3, 2)).quote.quote_id
            # An answer about a person: its access record is written by the writer's thread.
            PortalClient(channel, log=trusted).check_household(
                civil_id(3, 0), [], through=dt.date(2027, 12, 31), jurisdiction="KW"
            )
        names = {thread.name for thread in set(threading.enumerate()) - before}
        assert any(name.startswith("renewal") for name in names), names
        assert any(name.startswith("access") for name in names), names
        assert "gateway-notifications" in names
    finally:
        server.stop()
    left = sorted(
        thread.name
        for thread in set(threading.enumerate()) - before
        if thread.name.startswith(_RELEASED_AT_STOP)
    )
    assert left == [], left
    with pytest.raises(ConnectionRefusedError), socket.create_connection(("127.0.0.1", port)):
        pass
