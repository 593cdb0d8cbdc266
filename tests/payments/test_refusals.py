"""Refuse before money moves; return what was captured when the record is refused for good.

The quote and the payment run the FeeCollected rules the append runs (one function,
``ledger.coverage.projector.check_fee_collected``) plus the ledger's admission of the signed
entry; a refusal charges nothing and writes nothing. When state changes between the check and
the record (coverage appeared, authority suspended, key revoked), the captured fee is refunded
in full by the gateway and the payment ends ``returned``."""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy import func, select

from ledger.coverage.projector import person_ref
from ledger.errors import AlreadyExists, FailedPrecondition
from ledger.identity.erasure import ErasedPerson
from ledger.identity.vault import tokens_in_transaction
from ledger.storage.tables import coverages, log_entries, premiums
from payments.erasure import redact_person
from payments.gateway import PaymentStatus
from payments.renewal import Crash
from payments.tables import idempotency_keys, payment_history, payments, quotes
from tests.payments.support import Stack, family_request


def _counts(stack: Stack) -> tuple[int, int, int, int]:
    """(ledger entries, quotes, payments, idempotency keys)."""
    with stack.engine.connect() as connection:
        return tuple(  # type: ignore[return-value]
            int(connection.execute(select(func.count()).select_from(table)).scalar_one())
            for table in (log_entries, quotes, payments, idempotency_keys)
        )


def test_a_second_renewal_for_a_covered_household_is_refused_at_the_quote(
    tmp_path: Path,
) -> None:
    stack = Stack(tmp_path)
    first = stack.renewals.quote(family_request(1, 2))
    assert stack.renewals.start_payment(first.quote_id, "key-first-01", "simulated").state == (
        "recorded"
    )
    before, charged = _counts(stack), stack.gateway.snapshot()
    with pytest.raises(FailedPrecondition) as raised:
        stack.renewals.quote(family_request(1, 2))
    assert raised.value.reason == "DOUBLE_COVERAGE"
    assert "nothing is charged" in raised.value.message
    assert _counts(stack) == before and stack.gateway.snapshot() == charged


def test_a_payment_is_refused_when_the_household_was_covered_after_the_quote(
    tmp_path: Path,
) -> None:
    stack = Stack(tmp_path)
    first = stack.renewals.quote(family_request(1, 2))
    second = stack.renewals.quote(family_request(1, 2))  # both quoted before either is paid
    stack.renewals.start_payment(first.quote_id, "key-first-01", "simulated")
    before, charged = _counts(stack), stack.gateway.snapshot()
    with pytest.raises(FailedPrecondition) as raised:
        stack.renewals.start_payment(second.quote_id, "key-second-1", "simulated")
    assert raised.value.reason == "DOUBLE_COVERAGE"
    assert _counts(stack) == before and stack.gateway.snapshot() == charged


@pytest.mark.parametrize(
    ("change", "reason"),
    [("suspend_authority", "KEY_REVOKED"), ("revoke_authority_key", "KEY_REVOKED")],
)
def test_quotes_and_payments_are_refused_when_the_authority_cannot_sign(
    tmp_path: Path, change: str, reason: str
) -> None:
    stack = Stack(tmp_path)
    quote = stack.renewals.quote(family_request(1, 2))
    getattr(stack, change)()
    before = _counts(stack)
    with pytest.raises(FailedPrecondition) as raised:
        stack.renewals.start_payment(quote.quote_id, "key-refused-1", "simulated")
    assert raised.value.reason == reason
    with pytest.raises(FailedPrecondition) as again:
        stack.renewals.quote(family_request(2, 2))
    assert again.value.reason == reason
    assert _counts(stack) == before and stack.gateway.snapshot() == {}


def _cover_meanwhile(stack: Stack) -> None:
    """Another portal renews the same household and its fee is recorded first."""
    other = stack.renewals.quote(family_request(1, 2))
    stack.renewals.start_payment(other.quote_id, "key-meanwhile", "simulated")


def _erase_sponsor(stack: Stack) -> None:
    """The sponsor is erased between the capture and the record (the erasure hook redacts the
    quote, so its FeeCollected can no longer be built)."""
    sponsor = person_ref(family_request(1, 2).sponsor)
    with stack.engine.begin() as connection:
        [token] = tokens_in_transaction(connection, [sponsor], stack.clock.now())
        redact_person(connection, ErasedPerson(token, sponsor))


@pytest.mark.parametrize(
    "change", ["cover", "suspend_authority", "revoke_authority_key", "erase_sponsor"]
)
def test_a_capture_whose_record_is_refused_for_good_is_returned(
    tmp_path: Path, change: str
) -> None:
    stack = Stack(tmp_path)
    quote = stack.renewals.quote(family_request(1, 2))
    stack.at_point["after_gateway_charge"] = {
        "cover": lambda: _cover_meanwhile(stack),
        "erase_sponsor": lambda: _erase_sponsor(stack),
    }.get(change) or getattr(stack, change)
    payment = stack.renewals.start_payment(quote.quote_id, "key-returned", "simulated")
    assert payment.state == "returned", payment
    assert payment.leaf_index is None and "refused" in payment.message
    at_gateway = stack.gateway.snapshot()[payment.payment_id]
    assert at_gateway.status is PaymentStatus.CAPTURED
    assert at_gateway.refunded_minor == at_gateway.captured_minor == quote.total_minor
    # Nothing of this payment reached the ledger: no fee, no coverage it would have bought.
    with stack.engine.connect() as connection:
        assert not connection.execute(
            select(premiums).where(premiums.c.policy_id == quote.quote_id)
        ).first()
        assert not connection.execute(
            select(coverages).where(coverages.c.policy_id == quote.quote_id)
        ).first()
    # The record went in flight before it was refused (erase_sponsor: refused while building
    # the entry, inside the transaction that moved it to recording, which still commits).
    with stack.engine.connect() as connection:
        moves = connection.execute(
            select(payment_history.c.from_state, payment_history.c.to_state)
            .where(payment_history.c.payment_id == payment.payment_id)
            .order_by(payment_history.c.history_id)
        ).all()
    assert [tuple(move) for move in moves] == [
        ("started", "captured"),
        ("captured", "recording"),
        ("recording", "returning"),
        ("returning", "returned"),
    ]
    # Repeats and reconciliation change nothing and refund nothing more.
    assert stack.renewals.start_payment(quote.quote_id, "key-returned", "simulated") == payment
    assert stack.renewals.complete_payment(payment.payment_id) == payment
    stack.renewals.reconcile(stale_after=dt.timedelta(0))
    assert stack.gateway.snapshot()[payment.payment_id] == at_gateway
    assert stack.gateway.applied["refund"] == 1


def test_a_return_whose_refund_timed_out_is_finished_by_completion(tmp_path: Path) -> None:
    stack = Stack(tmp_path)
    quote = stack.renewals.quote(family_request(1, 2))

    def cover_then_time_out() -> None:
        _cover_meanwhile(stack)
        stack.gateway.inject_outcome_unknown(applied=False)

    stack.at_point["after_gateway_charge"] = cover_then_time_out
    payment = stack.renewals.start_payment(quote.quote_id, "key-returning", "simulated")
    assert payment.state == "returning"  # a refund in flight: never captured-and-unresolved
    assert stack.gateway.snapshot()[payment.payment_id].refunded_minor == 0
    done = stack.renewals.complete_payment(payment.payment_id)
    assert done.state == "returned"
    assert stack.gateway.snapshot()[payment.payment_id].refunded_minor == quote.total_minor


def _die(point: str) -> Callable[[], None]:
    def crash() -> None:
        raise Crash(point)

    return crash


def test_reconcile_returns_a_captured_fee_the_ledger_now_refuses(tmp_path: Path) -> None:
    """The issue's case: captured, the process died before recording, and meanwhile the
    authority was suspended. Reconcile lists it, says what the gateway said, and returns it."""
    stack = Stack(tmp_path)
    quote = stack.renewals.quote(family_request(1, 2))
    stack.at_point["after_captured_saved"] = _die("after_captured_saved")
    with pytest.raises(Crash):
        stack.renewals.start_payment(quote.quote_id, "key-recon-01", "simulated")
    payment_id, _ = stack.renewals.ids_of(quote_id=quote.quote_id)
    assert payment_id is not None
    # Saved as captured and moved to recording in one transaction: nothing submitted yet.
    assert stack.renewals.get_payment(payment_id).state == "recording"
    stack.suspend_authority()
    [item] = stack.renewals.reconcile(stale_after=dt.timedelta(0))
    assert (item.kind, item.id, item.before, item.after) == (
        "payment",
        payment_id,
        "recording",
        "returned",
    )
    assert item.gateway_said == f"captured (captured {quote.total_minor}, refunded 0)"
    assert not item.needs_person
    assert stack.gateway.snapshot()[payment_id].refunded_minor == quote.total_minor
    assert stack.renewals.reconcile(stale_after=dt.timedelta(0)) == []


def test_reconcile_looks_only_at_what_is_older_than_the_stale_age(tmp_path: Path) -> None:
    stack = Stack(tmp_path)
    quote = stack.renewals.quote(family_request(1, 2))
    stack.at_point["after_captured_saved"] = _die("after_captured_saved")
    with pytest.raises(Crash):
        stack.renewals.start_payment(quote.quote_id, "key-recon-03", "simulated")
    assert stack.renewals.reconcile(stale_after=dt.timedelta(minutes=5)) == []
    stack.clock.advance(dt.timedelta(minutes=5))
    [item] = stack.renewals.reconcile(stale_after=dt.timedelta(minutes=5))
    assert (item.before, item.after, item.needs_person) == ("recording", "recorded", False)


def test_a_quote_priced_by_a_schedule_no_longer_in_force_is_not_collected(
    tmp_path: Path,
) -> None:
    stack = Stack(tmp_path)
    stack.clock.advance(dt.datetime(2025, 12, 22, 23, 50, tzinfo=dt.UTC) - stack.clock.now())
    quote = stack.renewals.quote(family_request(1, 2))
    assert quote.schedule_version == "kw-legacy"
    stack.clock.advance(dt.timedelta(minutes=15))  # midnight: kw-2025-12-23 is in force
    before = _counts(stack)
    with pytest.raises(FailedPrecondition) as raised:
        stack.renewals.start_payment(quote.quote_id, "key-schedule1", "simulated")
    assert raised.value.reason == "FEE_SCHEDULE_CHANGED"
    assert _counts(stack) == before and stack.gateway.snapshot() == {}


def _whether_the_lock_is_free_at_each_check(stack: Stack) -> list[bool]:
    """From now on, each check of a fee (the ledger's admission of its signed entry) first
    tries SQLite's write lock from another connection: the list says, check by check, whether
    it was free (the check ran outside any write transaction)."""
    lock_free: list[bool] = []
    check = stack.recorder.check

    def check_and_try_the_lock(event: object) -> None:
        other = sqlite3.connect(stack.engine.url.database or "", timeout=0, isolation_level=None)
        try:
            other.execute("BEGIN IMMEDIATE")
            other.execute("ROLLBACK")
            lock_free.append(True)
        except sqlite3.OperationalError as error:
            assert "locked" in str(error)
            lock_free.append(False)
        finally:
            other.close()
        check(event)  # type: ignore[arg-type]

    stack.recorder.check = check_and_try_the_lock  # type: ignore[method-assign]
    return lock_free


def test_a_payment_checks_that_its_fee_can_be_recorded_before_it_takes_the_write_lock(
    tmp_path: Path,
) -> None:
    """On SQLite every write transaction holds the database's one write lock, so StartPayment
    runs the check (the admission of the signed entry, the FeeCollected rules) before its write
    transaction: while the check runs, another writer can take the lock at once."""
    stack = Stack(tmp_path)
    quote = stack.renewals.quote(family_request(1, 2))
    lock_free = _whether_the_lock_is_free_at_each_check(stack)
    payment = stack.renewals.start_payment(quote.quote_id, "key-first-01", "simulated")
    assert payment.state == "recorded"
    assert lock_free == [True]
    # A refusal found there still writes nothing and charges nothing.
    second = stack.renewals.quote(family_request(2, 2))
    # (The quote checks inside its write transaction: it issues new people's tokens there.)
    assert lock_free == [True, False]
    stack.revoke_authority_key()
    before, charged = _counts(stack), stack.gateway.snapshot()
    with pytest.raises(FailedPrecondition) as raised:
        stack.renewals.start_payment(second.quote_id, "key-second-1", "simulated")
    assert raised.value.reason == "KEY_REVOKED"
    assert lock_free == [True, False, True]
    assert _counts(stack) == before and stack.gateway.snapshot() == charged


@pytest.mark.parametrize("same_key", [False, True])
def test_a_payment_started_between_the_check_and_the_write_is_found_by_the_unique_keys(
    tmp_path: Path, same_key: bool
) -> None:
    """StartPayment's write transaction does not read the key and the quote's payment again
    once the check before it found them absent (SQLite): another call that saves either in
    between fails this one's insert on the unique key, and this one is answered as the repeat
    it has become (same key) or QUOTE_ALREADY_PAID (another key). One charge, one record."""
    stack = Stack(tmp_path)
    quote = stack.renewals.quote(family_request(1, 2))
    other_key = "key-first-01" if same_key else "key-other-01"
    uow = stack.renewals.saga.uow
    write = uow.write
    others: list[object] = []

    @contextlib.contextmanager
    def another_call_first() -> Iterator[object]:
        if not others:  # this call's write transaction, its check done: the other call now
            others.append(None)
            others.append(stack.renewals.start_payment(quote.quote_id, other_key, "simulated"))
        with write() as connection:
            yield connection

    uow.write = another_call_first  # type: ignore[method-assign]
    if same_key:
        payment = stack.renewals.start_payment(quote.quote_id, "key-first-01", "simulated")
        assert payment == others[1]
        assert payment.state == "recorded"
    else:
        with pytest.raises(AlreadyExists) as raised:
            stack.renewals.start_payment(quote.quote_id, "key-first-01", "simulated")
        assert raised.value.reason == "QUOTE_ALREADY_PAID"
    [charged] = stack.gateway.snapshot().values()
    assert charged.captured_minor == quote.total_minor
    assert _counts(stack)[1:] == (1, 1, 1)  # one quote, one payment, one key
    with stack.engine.connect() as connection:
        fees = connection.execute(
            select(func.count()).select_from(premiums).where(premiums.c.policy_id == quote.quote_id)
        ).scalar_one()
    assert fees == 1


def test_a_household_renewing_again_is_checked_before_the_quote_takes_the_write_lock(
    tmp_path: Path,
) -> None:
    """A quote for people the vault knows (a household renewing again) runs the check before
    its write transaction, as StartPayment does; a refusal there writes nothing. A quote naming
    someone new still checks inside it, where the new person's token is issued."""
    stack = Stack(tmp_path)
    first = stack.renewals.quote(family_request(1, 2))
    stack.renewals.start_payment(first.quote_id, "key-first-01", "simulated")
    lock_free = _whether_the_lock_is_free_at_each_check(stack)
    # The same household, the same period: refused before the lock, nothing written.
    before = _counts(stack)
    with pytest.raises(FailedPrecondition) as raised:
        stack.renewals.quote(family_request(1, 2))
    assert raised.value.reason == "DOUBLE_COVERAGE"
    assert lock_free == [True] and _counts(stack) == before
    # The next year: checked before the lock, and quoted.
    next_year = dataclasses.replace(
        family_request(1, 2),
        period_start=dt.date(2028, 1, 1),
        period_end=dt.date(2028, 12, 31),
    )
    quote = stack.renewals.quote(next_year)
    assert lock_free == [True, True] and quote.payable
    assert _counts(stack)[1] == before[1] + 1
    # A household with one new member: checked inside the write transaction.
    stack.renewals.quote(dataclasses.replace(next_year, members=family_request(1, 3).members))
    assert lock_free == [True, True, False]
