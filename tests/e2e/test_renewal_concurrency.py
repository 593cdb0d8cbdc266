"""RenewalService under concurrency, on SQLite and PostgreSQL: 16 portal callers at once with
the same and with different idempotency keys (StartPayment, CompletePayment, RefundPayment).

Same key: every caller gets the first call's answer, or UNAVAILABLE "retry" while the first is
in flight, never another error. Different keys: what is left to refund is never negative and
the refunds never exceed the capture. At the end the gateway's own totals equal the ledger's."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

import grpc
import pytest
from sqlalchemy import func, select

from clients.errors import ClientError
from clients.renewal import RenewalClient
from clients.verify import TrustedLog
from ledger.signers import SignerRole
from ledger.signing import Ed25519Signer, format_signer_key
from ledger.storage.db import create_ledger_engine
from ledger.storage.tables import fee_refunds, premiums
from payments import service
from payments.renewal import Renewals
from payments.v1 import renewal_service_pb2 as pb
from tests.conftest import ServerHandle, onboard, start_server_thread
from tests.e2e.test_renewal_service import _kuwait_family

AUTHORITY = "kw-gov-health"
CALLERS = 16
_T = TypeVar("_T")


@pytest.fixture
def stack(
    database_url: str,
    log_signer: Ed25519Signer,
    operator_signer: Ed25519Signer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[tuple[ServerHandle, Renewals, TrustedLog]]:
    authority = Ed25519Signer.generate(AUTHORITY)
    key_file = tmp_path / "authority.key"
    key_file.write_text(format_signer_key(authority) + "\n", encoding="utf-8")
    monkeypatch.setenv("POLICY_LEDGER_PAYMENTS_AUTHORITY_KEY", str(key_file))
    monkeypatch.setenv("POLICY_LEDGER_PAYMENTS_AUTHORITY_ID", AUTHORITY)
    installed: list[Renewals] = []
    original = service.renewals_from_environment

    def keep(*args: object, **kwargs: object) -> Renewals:
        installed.append(original(*args, **kwargs))  # type: ignore[arg-type]
        return installed[-1]

    monkeypatch.setattr(service, "renewals_from_environment", keep)
    server = start_server_thread(database_url, log_signer, tmp_path)
    try:
        onboard(server, operator_signer, AUTHORITY, authority, role=SignerRole.AUTHORITY)
        [renewals] = installed
        yield server, renewals, TrustedLog.from_verifier_key(server.log_verifier_key)
    finally:
        server.stop()


def _all_at_once(
    server: ServerHandle,
    log: TrustedLog,
    call: Callable[[RenewalClient], _T],
    caller: tuple[str, str] = ("portal", "KW"),
) -> list[_T | ClientError]:
    """``call`` from CALLERS portal threads, each on its own channel, released together by a
    barrier (no timing: the barrier is the event they wait on)."""
    barrier = threading.Barrier(CALLERS)

    def one(position: int) -> _T | ClientError:
        with server.channel(*caller) as channel:
            client = RenewalClient(channel, log=log)
            barrier.wait(timeout=60)
            try:
                return call(client)
            except ClientError as error:
                return error

    with ThreadPoolExecutor(max_workers=CALLERS) as pool:
        return list(pool.map(one, range(CALLERS)))


def _is_retry(answer: object) -> bool:
    return (
        isinstance(answer, ClientError)
        and answer.code in {grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.ABORTED}
        and "retry" in answer.message
    )


def _settle(client: RenewalClient, call: Callable[[], pb.Payment]) -> pb.Payment:
    """Retry while the server says a first call is in flight (it answers nothing else)."""
    for _ in range(100):
        try:
            return call()
        except ClientError as error:
            if not _is_retry(error):
                raise
    raise AssertionError("still in flight after 100 retries")


def test_concurrent_callers_get_one_answer_and_the_gateway_agrees_with_the_ledger(
    stack: tuple[ServerHandle, Renewals, TrustedLog], database_url: str
) -> None:
    server, renewals, log = stack
    with server.channel("portal", "KW") as channel:
        setup = RenewalClient(channel, log=log)
        same_key = setup.quote(_kuwait_family(1, 3)).quote
        other_keys = setup.quote(_kuwait_family(2, 2)).quote

    # StartPayment, one key, 16 callers: one charge, one answer.
    answers = _all_at_once(
        server,
        log,
        lambda c: c.start_payment(same_key.quote_id, "same-key-0001", gateway="simulated"),
    )
    payments = [a for a in answers if isinstance(a, pb.Payment)]
    assert all(isinstance(a, pb.Payment) or _is_retry(a) for a in answers), answers
    assert payments and {p.payment_id for p in payments} == {payments[0].payment_id}
    assert {p.state for p in payments} == {pb.PAYMENT_STATE_RECORDED}
    payment_id = payments[0].payment_id

    # StartPayment, one quote, 16 keys: one payment; the others are told it exists.
    answers = _all_at_once(
        server,
        log,
        lambda c: c.start_payment(
            other_keys.quote_id, f"key-{threading.get_ident()}", gateway="simulated"
        ),
    )
    started = [a for a in answers if isinstance(a, pb.Payment)]
    assert len(started) == 1, answers
    assert all(
        isinstance(a, pb.Payment) or a.code == grpc.StatusCode.ALREADY_EXISTS or _is_retry(a)
        for a in answers
    ), answers
    second_id = started[0].payment_id

    # CompletePayment, 16 callers: the same recorded payment, one entry.
    answers = _all_at_once(server, log, lambda c: c.complete_payment(payment_id))
    assert all(isinstance(a, pb.Payment) for a in answers), answers
    assert {a.receipt.leaf_index for a in answers if isinstance(a, pb.Payment)} == {
        payments[0].receipt.leaf_index
    }

    # RefundPayment, one key, 16 callers: one refund.
    part = same_key.total.amount_minor * 2 // 5
    answers = _all_at_once(
        server,
        log,
        lambda c: c.refund(payment_id, part, "refund-same-key", "duplicate fee"),
        caller=("authority", "kw"),
    )
    assert all(isinstance(a, pb.Payment) or _is_retry(a) for a in answers), answers
    with server.channel("authority", "kw") as channel:
        settled = _settle(
            setup := RenewalClient(channel, log=log),
            lambda: setup.refund(payment_id, part, "refund-same-key", "duplicate fee"),
        )
    assert settled.refunded_minor == part

    # RefundPayment, 16 keys, each a fifth of the fee: only what is left is refunded.
    fifth = same_key.total.amount_minor // 5
    answers = _all_at_once(
        server,
        log,
        lambda c: c.refund(payment_id, fifth, f"refund-{threading.get_ident()}", "overcharge"),
        caller=("authority", "kw"),
    )
    refused = [a for a in answers if isinstance(a, ClientError)]
    assert all(
        a.code == grpc.StatusCode.FAILED_PRECONDITION and a.reason == "REFUND_EXCEEDS_CAPTURED"
        for a in refused
    ), refused
    granted = CALLERS - len(refused)
    assert part + granted * fifth <= same_key.total.amount_minor
    assert granted == (same_key.total.amount_minor - part) // fifth

    # The gateway's own totals are the ledger's.
    at_gateway = renewals.gateways["simulated"].snapshot()  # type: ignore[attr-defined]
    engine = create_ledger_engine(database_url)
    try:
        with engine.connect() as connection:
            fees = dict(
                connection.execute(
                    select(premiums.c.policy_id, func.sum(premiums.c.amount_minor)).group_by(
                        premiums.c.policy_id
                    )
                ).all()
            )
            refunded = dict(
                connection.execute(
                    select(fee_refunds.c.policy_id, func.sum(fee_refunds.c.amount_minor)).group_by(
                        fee_refunds.c.policy_id
                    )
                ).all()
            )
    finally:
        engine.dispose()
    assert set(at_gateway) == {payment_id, second_id}
    for quote, paid in ((same_key, payment_id), (other_keys, second_id)):
        assert at_gateway[paid].captured_minor == fees[quote.quote_id] == quote.total.amount_minor
        assert at_gateway[paid].refunded_minor == refunded.get(quote.quote_id, 0)
        assert renewals.get_payment(paid).refunded_minor == at_gateway[paid].refunded_minor
    assert at_gateway[payment_id].refunded_minor == part + granted * fifth
    assert renewals.gateways["simulated"].applied["purchase"] == 2  # type: ignore[attr-defined]
