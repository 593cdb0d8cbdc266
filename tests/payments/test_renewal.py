"""The renewal saga: quote, collect, record once; refunds; idempotency; and the seeded
fault-injection run (crashes at every step, gateway timeouts with unknown outcome, declines)."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import random
from collections import Counter
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest
from sqlalchemy import event, func, select

from ledger.coverage.rebuild import rebuild_and_compare
from ledger.errors import AlreadyExists, FailedPrecondition, NotFound, Unavailable
from ledger.storage.tables import fee_refunds, log_entries, premiums
from payments.gateway import PaymentStatus
from payments.gateways.simulated import FaultPlan
from payments.renewal import Crash, PaymentRecord
from payments.tables import payment_history, payments
from tests.payments.support import AUTHORITY, Stack, family_request

FAULT_RENEWALS = int(os.environ.get("POLICY_LEDGER_FAULT_RENEWALS", "1000"))
"""Renewals in the fault-injection run (``make faults`` runs many more)."""


def _entries(stack: Stack) -> int:
    with stack.engine.connect() as connection:
        return int(connection.execute(select(func.count()).select_from(log_entries)).scalar_one())


def test_a_renewal_is_quoted_collected_and_recorded_once(tmp_path: Path) -> None:
    stack = Stack(tmp_path)
    quote = stack.renewals.quote(family_request(1, 3))
    assert quote.payable and quote.currency == "KWD"
    assert quote.total_minor == sum(line.amount_minor for line in quote.lines) > 0
    assert all(type(line.amount_minor) is int for line in quote.lines)
    payment = stack.renewals.start_payment(quote.quote_id, "key-0001-start", "simulated")
    assert payment.state == "recorded" and payment.leaf_index is not None
    # The same key again: the same payment, nothing charged or written again.
    before = _entries(stack)
    again = stack.renewals.start_payment(quote.quote_id, "key-0001-start", "simulated")
    assert again == payment and _entries(stack) == before
    assert stack.gateway.snapshot()[payment.payment_id].captured_minor == quote.total_minor
    # Completing again changes nothing.
    assert stack.renewals.complete_payment(payment.payment_id).state == "recorded"
    assert _entries(stack) == before
    # The fee bought the government coverage of every member for the permit period.
    verdict = stack.renewals.saga.coverage.check_household(
        *_household(family_request(1, 3)), quote.period_start, quote.period_end
    )
    assert verdict.renewable
    assert {c.insurer_id for m in verdict.members for c in m.coverages} == {AUTHORITY}


def _household(request: object) -> tuple[object, list[tuple[object, None]]]:
    from ledger.coverage.projector import person_ref

    return person_ref(request.sponsor), [(person_ref(m.person), None) for m in request.members]  # type: ignore[attr-defined]


def test_the_capture_and_the_move_to_recording_commit_together(tmp_path: Path) -> None:
    """The capture is saved in the transaction that moves the payment to recording: when that
    transaction fails, neither is saved (the payment stays started, money at the gateway), and
    completing the payment asks the gateway and records it once, with the same history."""
    stack = Stack(tmp_path)
    quote = stack.renewals.quote(family_request(1, 2))
    entries = _entries(stack)

    def fail_the_move_to_recording(
        _connection: object, _cursor: object, statement: str, parameters: object, *_: object
    ) -> None:
        if statement.startswith("INSERT INTO payment_history") and "recording" in str(parameters):
            raise RuntimeError("the disk went away")

    event.listen(stack.engine, "before_cursor_execute", fail_the_move_to_recording)
    with pytest.raises(RuntimeError, match="disk went away"):
        stack.renewals.start_payment(quote.quote_id, "key-capture-1", "simulated")
    event.remove(stack.engine, "before_cursor_execute", fail_the_move_to_recording)
    payment_id, _ = stack.renewals.ids_of(quote_id=quote.quote_id)
    assert payment_id is not None
    stuck = stack.renewals.get_payment(payment_id)
    assert (stuck.state, stuck.captured_minor, stuck.gateway_reference) == ("started", 0, "")
    assert _history(stack, payment_id) == []  # (opening it writes no history row)
    assert stack.gateway.snapshot()[payment_id].captured_minor == quote.total_minor
    assert _entries(stack) == entries

    done = stack.renewals.complete_payment(payment_id)
    assert done.state == "recorded" and done.captured_minor == quote.total_minor
    assert _entries(stack) == entries + 1
    assert done == stack.renewals.get_payment(payment_id)
    assert _history(stack, payment_id) == [
        ("started", "captured"),
        ("captured", "recording"),
        ("recording", "recorded"),
    ]


def test_start_payment_answers_the_payment_as_stored(tmp_path: Path) -> None:
    """StartPayment builds its answer from what it saved (no read after the record): the
    answer equals the stored payment, and the history has each move once, the gateway's
    reference on the capture."""
    stack = Stack(tmp_path)
    quote = stack.renewals.quote(family_request(1, 2))
    payment = stack.renewals.start_payment(quote.quote_id, "key-answer-1", "simulated")
    assert payment == stack.renewals.get_payment(payment.payment_id)
    assert payment.state == "recorded" and payment.gateway_reference
    assert _history(stack, payment.payment_id) == [
        ("started", "captured"),
        ("captured", "recording"),
        ("recording", "recorded"),
    ]
    with stack.engine.connect() as connection:
        [reference] = connection.execute(
            select(payment_history.c.gateway_reference).where(
                payment_history.c.payment_id == payment.payment_id,
                payment_history.c.to_state == "captured",
            )
        ).scalars()
    assert reference == payment.gateway_reference


def _history(stack: Stack, payment_id: str) -> list[tuple[str, str]]:
    with stack.engine.connect() as connection:
        return [
            (row.from_state, row.to_state)
            for row in connection.execute(
                select(payment_history.c.from_state, payment_history.c.to_state)
                .where(payment_history.c.payment_id == payment_id)
                .order_by(payment_history.c.history_id)
            )
        ]


def test_an_idempotency_key_reused_for_another_request_is_refused(tmp_path: Path) -> None:
    stack = Stack(tmp_path)
    first = stack.renewals.quote(family_request(1, 2))
    second = stack.renewals.quote(family_request(2, 2))
    stack.renewals.start_payment(first.quote_id, "key-reused-1", "simulated")
    before = _entries(stack)
    with pytest.raises(AlreadyExists) as raised:
        stack.renewals.start_payment(second.quote_id, "key-reused-1", "simulated")
    assert raised.value.reason == "IDEMPOTENCY_KEY_REUSED"
    assert [v.field for v in raised.value.details.field_violations] == ["quote_id"]
    assert _entries(stack) == before


def test_expired_and_unpayable_quotes_are_refused_and_nothing_is_charged(tmp_path: Path) -> None:
    import datetime as dt

    stack = Stack(tmp_path)
    quote = stack.renewals.quote(family_request(1, 2))
    stack.clock.advance(dt.timedelta(hours=1))
    with pytest.raises(FailedPrecondition) as raised:
        stack.renewals.start_payment(quote.quote_id, "key-expired-1", "simulated")
    assert raised.value.reason == "QUOTE_EXPIRED"
    assert stack.gateway.snapshot() == {}


def test_a_declined_card_is_declined_and_not_recorded(tmp_path: Path) -> None:
    stack = Stack(tmp_path, plan=FaultPlan(decline_rate=1.0))
    quote = stack.renewals.quote(family_request(1, 2))
    before = _entries(stack)
    payment = stack.renewals.start_payment(quote.quote_id, "key-declined", "simulated")
    assert payment.state == "declined" and payment.leaf_index is None
    assert _entries(stack) == before


def test_refunds_are_partial_repeatable_idempotent_and_bounded(tmp_path: Path) -> None:
    stack = Stack(tmp_path)
    quote = stack.renewals.quote(family_request(1, 2))
    payment = stack.renewals.start_payment(quote.quote_id, "key-refunds-1", "simulated")
    part = quote.total_minor // 4
    after_one = stack.renewals.refund(payment.payment_id, part, "refund-key-1", "overcharge")
    again = stack.renewals.refund(payment.payment_id, part, "refund-key-1", "overcharge")
    assert after_one.refunded_minor == again.refunded_minor == part
    stack.renewals.refund(payment.payment_id, part, "refund-key-2", "second")
    before = _entries(stack)
    with pytest.raises(FailedPrecondition) as raised:
        stack.renewals.refund(payment.payment_id, quote.total_minor, "refund-key-3", "too much")
    assert raised.value.reason == "REFUND_EXCEEDS_CAPTURED"
    assert _entries(stack) == before
    assert stack.gateway.snapshot()[payment.payment_id].refunded_minor == 2 * part


def _start(stack: Stack, quote_id: str, key: str) -> PaymentRecord | None:
    """StartPayment as a portal does it: retried with the same key after a crash or a
    "retry" answer; None when every attempt was cut short."""
    for _attempt in range(3):
        try:
            return stack.renewals.start_payment(quote_id, key, "simulated")
        except (Crash, Unavailable):  # Unavailable: the first call's charge is in flight
            continue
    return None


def _meanwhile(stack: Stack, number: int, rng: random.Random) -> tuple[str, Callable[[], None]]:
    """A permanent refusal arriving between the charge and the record: another portal renews
    the same household first (a duplicate renewal), or the authority is suspended."""
    if rng.random() < 0.75:
        other = stack.renewals.quote(family_request(number, 1 + number % 4))

        def other_portal_first() -> None:
            with contextlib.suppress(Crash, Unavailable):
                _start(stack, other.quote_id, f"other-{number:06d}")

        return "duplicate", other_portal_first
    return "suspended", stack.suspend_authority


def test_seeded_faults_never_double_charge_or_lose_a_record(tmp_path: Path) -> None:
    """Crashes at every saga step, gateway timeouts whose outcome is unknown (applied or not),
    declines, permanent refusals after the charge (a duplicate renewal of the same household
    from another portal, the authority suspended), the ledger not answering while a fee is
    recorded (appended anyway, not appended, or appended late), notifications for unknown
    payments; then reconciliation. At the end: no double charge, nothing captured and
    unresolved, every captured fee recorded once or returned once, refunds within what was
    captured."""
    stack = Stack(
        tmp_path,
        plan=FaultPlan(decline_rate=0.05, timeout_rate=0.15, timeout_applied_rate=0.5),
        seed=20261123,
    )
    stack.crash_rate = 0.08
    stack.recorder.rate = 0.04  # the ledger's answer lost: applied, lost, or appended late
    rng = random.Random(7)
    refusals: Counter[str] = Counter()
    for number in range(FAULT_RENEWALS):
        quote = stack.renewals.quote(family_request(number, 1 + number % 4))
        if rng.random() < 0.05:
            kind, change = _meanwhile(stack, number, rng)
            refusals[kind] += 1
            stack.at_point["after_gateway_charge"] = change
        payment = _start(stack, quote.quote_id, f"start-{number:06d}")
        stack.at_point.clear()
        if stack.suspended:
            stack.relicense_authority()
        if number % 25 == 0:  # submissions that outlived their caller reach the sequencer
            stack.recorder.land_late()
        if number % 50 == 0:  # a gateway notification for a payment we never started
            with pytest.raises(NotFound):
                stack.renewals.complete_payment(f"payunknown{number:014d}")
        if payment is None:
            continue
        if rng.random() < 0.5:
            # A crash, or the gateway not answering (Unavailable): the outcome stays unknown.
            with contextlib.suppress(Crash, Unavailable):
                payment = stack.renewals.complete_payment(payment.payment_id)
        if payment.state == "recorded" and rng.random() < 0.2:
            with contextlib.suppress(Crash, Unavailable):
                stack.renewals.refund(
                    payment.payment_id,
                    max(1, payment.amount_minor // 3),
                    f"refund-{number:06d}",
                    "test",
                )
    # The faults stop; reconciliation repairs what they left.
    stack.crash_rate = 0.0
    stack.gateway.plan = replace(stack.gateway.plan, timeout_rate=0.0)
    stack.recorder.rate = 0.0
    stack.renewals.reconcile(stale_after=dt.timedelta(0))
    stack.recorder.land_late()  # after reconcile resubmitted or returned them: no effect
    for _round in range(2):
        stack.renewals.reconcile(stale_after=dt.timedelta(0))
    assert stack.crashes > 0 and refusals["duplicate"] > 0 and refusals["suspended"] > 0
    assert set(stack.recorder.faults) == set(stack.recorder.FAULTS)
    _check_every_fee_is_recorded_once_or_returned(stack)


def _check_every_fee_is_recorded_once_or_returned(stack: Stack) -> None:
    gateway = stack.gateway.snapshot()
    with stack.engine.connect() as connection:
        payment_ids = list(connection.execute(select(payments.c.payment_id)).scalars())
        fees_by_renewal = dict(
            connection.execute(
                select(premiums.c.policy_id, func.count())
                .where(premiums.c.insurer_id == AUTHORITY)
                .group_by(premiums.c.policy_id)
            ).all()
        )
        refunded_in_ledger = dict(
            connection.execute(
                select(fee_refunds.c.policy_id, func.sum(fee_refunds.c.amount_minor)).group_by(
                    fee_refunds.c.policy_id
                )
            ).all()
        )
        stuck = connection.execute(
            select(func.count()).where(payments.c.state.in_(["captured", "recording", "returning"]))
        ).scalar_one()
    captured_total = sum(
        p.captured_minor for p in gateway.values() if p.status is PaymentStatus.CAPTURED
    )
    refunded_total = sum(p.refunded_minor for p in gateway.values())
    figures = {
        "renewals": FAULT_RENEWALS,
        "payments": len(payment_ids),
        "double_charges": stack.gateway.applied["purchase"] - len(gateway),
        "captured_unresolved": stuck,
        "refunds_over_captured": sum(
            1 for p in gateway.values() if p.refunded_minor > p.captured_minor
        ),
        "refunded_minor": refunded_total,
        "captured_minor": captured_total,
        "recorded_twice": sum(1 for count in fees_by_renewal.values() if count > 1),
        "crashes": stack.crashes,
        "ledger_timeouts": dict(stack.recorder.faults),
    }
    print(f"\nfault run: {json.dumps(figures, sort_keys=True)}")  # `make faults` shows it
    assert stuck == 0  # nothing captured and unresolved
    recorded = returned = 0
    for payment_id in payment_ids:
        ours = stack.renewals.get_payment(payment_id)
        theirs = gateway.get(payment_id)
        captured = theirs is not None and theirs.status is PaymentStatus.CAPTURED
        assert captured == (ours.state in {"recorded", "returned"}), (payment_id, ours, theirs)
        if not captured:
            assert ours.quote_id not in fees_by_renewal
            continue
        assert theirs is not None and theirs.captured_minor == ours.amount_minor
        assert theirs.refunded_minor <= theirs.captured_minor
        if ours.state == "returned":  # returned once, in full, and never recorded
            returned += 1
            assert theirs.refunded_minor == theirs.captured_minor
            assert ours.quote_id not in fees_by_renewal
            continue
        recorded += 1
        assert fees_by_renewal.get(ours.quote_id) == 1  # recorded exactly once
        assert refunded_in_ledger.get(ours.quote_id, 0) == theirs.refunded_minor
        assert ours.refunded_minor == theirs.refunded_minor
    assert recorded > FAULT_RENEWALS // 2 and returned > 0
    print(f"fault run: recorded {recorded}, returned {returned}")
    assert stack.gateway.applied["purchase"] == len(gateway)  # one charge per payment
    assert rebuild_and_compare(stack.engine).consistent
