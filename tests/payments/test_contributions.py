"""A Moroccan insured person's contribution status (payments/contributions.py) read from the
ledger after settlements through the renewal saga: paid through the last month a recorded
contribution pays for, owed from the day after through the end of the month asked about; a
contribution refunded in full no longer counts."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from ledger.errors import NotFound
from ledger.signing import Ed25519Signer
from ledger.v1 import events_pb2, types_pb2
from payments import fees
from payments.contributions import contribution_status, month_end
from payments.renewal import MemberInput, QuoteRequest
from tests.builders import issued, token, use_vault
from tests.conftest import onboard_directly, pending
from tests.payments.support import NOW, Stack

FUND = "cnops"
INSURED = types_pb2.PersonId(
    type=types_pb2.PERSON_ID_TYPE_NATIONAL_ID, value="BE123456", country_code="MA"
)
AS_OF = dt.date(2026, 6, 15)


def _settle(stack: Stack, start: dt.date, end: dt.date, key: str) -> str:
    """Quote the insured alone for start..end and pay it (simulated gateway); the payment id."""
    quote = stack.renewals.quote(
        QuoteRequest(
            jurisdiction="MA",
            sponsor=INSURED,
            sponsor_is_kuwaiti=False,
            members=(
                MemberInput(
                    INSURED, fees.Relationship.SELF, fees.ResidenceCategory.OTHER, None, None
                ),
            ),
            period_start=start,
            period_end=end,
        )
    )
    payment = stack.renewals.start_payment(quote.quote_id, key, "simulated")
    assert payment.state == "recorded", payment
    return payment.payment_id


@pytest.fixture
def stack(tmp_path: Path) -> Stack:
    stack = Stack(tmp_path)
    use_vault(stack.engine)  # the tokens the saga's FeeCollected will name
    fund = Ed25519Signer.generate(FUND)
    onboard_directly(stack.engine, stack.appender, stack.operator, FUND, fund, NOW)
    insured = token(INSURED)
    policy = issued(
        FUND, "CNOPS-1", insured, [(insured, events_pb2.RELATIONSHIP_SELF)],
        dt.date(2026, 1, 1), dt.date(2026, 12, 31),
    )  # fmt: skip
    [receipt] = stack.appender.append_batch([pending(fund, policy)], NOW)
    assert not isinstance(receipt, Exception), receipt
    return stack


def _status(stack: Stack, as_of: dt.date = AS_OF) -> tuple[dt.date | None, int]:
    with stack.engine.connect() as connection:
        status = contribution_status(connection, token(INSURED), "MA", as_of)
    assert (status.currency, status.schedule_version) == ("MAD", "ma-2005-08-18")
    assert status.insured_since == dt.date(2026, 1, 1)
    assert status.owed_through == month_end(as_of)
    return status.paid_through, status.owed_minor


def test_owed_from_the_start_of_insurance_then_from_the_day_after_the_last_paid(
    stack: Stack,
) -> None:
    assert _status(stack) == (None, 6 * 7_000)  # January to June, MAD 70.00 a month
    _settle(stack, dt.date(2026, 1, 1), dt.date(2026, 3, 31), "ma-contribution-q1")
    assert _status(stack) == (dt.date(2026, 3, 31), 3 * 7_000)  # April to June
    _settle(stack, dt.date(2026, 4, 1), dt.date(2026, 12, 31), "ma-contribution-rest")
    assert _status(stack) == (dt.date(2026, 12, 31), 0)  # paid ahead


def test_a_contribution_refunded_in_full_no_longer_counts(stack: Stack) -> None:
    payment_id = _settle(stack, dt.date(2026, 1, 1), dt.date(2026, 3, 31), "ma-contribution-q1")
    stack.renewals.refund(payment_id, 3 * 7_000, "ma-refund-q1", "paid twice")
    assert _status(stack) == (None, 6 * 7_000)


def test_a_person_not_insured_owes_nothing_and_is_told_so(stack: Stack) -> None:
    stranger = token(
        types_pb2.PersonId(
            type=types_pb2.PERSON_ID_TYPE_NATIONAL_ID, value="BH345678", country_code="MA"
        )
    )
    with stack.engine.connect() as connection, pytest.raises(NotFound) as raised:
        contribution_status(connection, stranger, "MA", AS_OF)
    assert raised.value.reason == "NOT_INSURED"
