"""A FeeRefunded entry for the whole fee ends the government coverage the fee bought, from the
refund's date; a partial refund ends nothing. The household check reflects it, and a rebuild
from the log agrees."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from sqlalchemy import select

from ledger.coverage.projector import FEE_REFUNDED, person_ref
from ledger.coverage.rebuild import rebuild_and_compare
from ledger.storage.tables import coverages, policies
from tests.payments.support import PERIOD, Stack, family_request


def _renewable(stack: Stack, number: int, first: dt.date, last: dt.date) -> bool:
    request = family_request(number, 2)
    members = [(person_ref(member.person), None) for member in request.members]
    return stack.renewals.saga.coverage.check_household(
        person_ref(request.sponsor),
        members,  # type: ignore[arg-type]
        first,
        last,
    ).renewable


def test_a_full_refund_ends_the_coverage_from_the_refund_date(tmp_path: Path) -> None:
    stack = Stack(tmp_path)
    quote = stack.renewals.quote(family_request(1, 2))
    payment = stack.renewals.start_payment(quote.quote_id, "key-full-refund", "simulated")
    assert _renewable(stack, 1, *PERIOD)
    stack.clock.advance(dt.datetime(2027, 3, 1, 10, tzinfo=dt.UTC) - stack.clock.now())  # in it
    half = quote.total_minor // 2
    stack.renewals.refund(payment.payment_id, half, "refund-half-1", "overcharge")
    assert _renewable(stack, 1, *PERIOD)  # a partial refund ends nothing
    stack.renewals.refund(
        payment.payment_id, quote.total_minor - half, "refund-rest-1", "renewal withdrawn"
    )
    assert _renewable(stack, 1, PERIOD[0], dt.date(2027, 2, 28))
    assert not _renewable(stack, 1, PERIOD[0], dt.date(2027, 3, 1))
    with stack.engine.connect() as connection:
        ended = connection.execute(
            select(coverages.c.end_date, coverages.c.end_reason).where(
                coverages.c.policy_id == quote.quote_id
            )
        ).all()
        cancelled = connection.execute(
            select(policies.c.cancelled_from, policies.c.cancel_reason).where(
                policies.c.policy_id == quote.quote_id
            )
        ).one()
    assert set(ended) == {(dt.date(2027, 2, 28), FEE_REFUNDED)}
    assert tuple(cancelled) == (dt.date(2027, 3, 1), FEE_REFUNDED)
    assert rebuild_and_compare(stack.engine).consistent


def test_a_full_refund_before_the_period_ends_all_of_it(tmp_path: Path) -> None:
    stack = Stack(tmp_path)
    quote = stack.renewals.quote(family_request(2, 2))
    payment = stack.renewals.start_payment(quote.quote_id, "key-full-early", "simulated")
    stack.renewals.refund(payment.payment_id, quote.total_minor, "refund-all-01", "withdrawn")
    assert not _renewable(stack, 2, PERIOD[0], PERIOD[0])
    # The household may renew again: nothing covers it any more.
    again = stack.renewals.quote(family_request(2, 2))
    assert stack.renewals.start_payment(again.quote_id, "key-again-01", "simulated").state == (
        "recorded"
    )
    assert _renewable(stack, 2, *PERIOD)
    assert rebuild_and_compare(stack.engine).consistent
