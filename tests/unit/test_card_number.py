"""Insurance card numbers (docs/cards.md): 16 digits, the last a Luhn check digit. Hypothesis
checks what the check digit is for: every single-digit error and every transposition of two
adjacent different digits (but 0/9, which Luhn cannot see) is caught."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from ledger.cards.number import card_number_problem, format_card_number, with_check_digit
from ledger.cards.validation import CARD_BODY_CHECKS
from ledger.errors import FieldViolation
from ledger.v1 import events_pb2

bodies = st.text(alphabet="0123456789", min_size=15, max_size=15)


@given(bodies)
def test_a_number_with_its_check_digit_is_valid(body: str) -> None:
    number = with_check_digit(body)
    assert len(number) == 16 and number.startswith(body)
    assert card_number_problem(number) is None


@given(bodies, st.integers(0, 15), st.integers(1, 9))
def test_every_single_digit_error_is_caught(body: str, position: int, shift: int) -> None:
    number = with_check_digit(body)
    wrong = str((int(number[position]) + shift) % 10)
    changed = number[:position] + wrong + number[position + 1 :]
    assert card_number_problem(changed) == "the Luhn check digit (the last digit) is wrong"


@given(bodies, st.integers(0, 14))
def test_adjacent_transpositions_are_caught_but_09(body: str, position: int) -> None:
    number = with_check_digit(body)
    a, b = number[position], number[position + 1]
    swapped = number[:position] + b + a + number[position + 2 :]
    if a == b or {a, b} == {"0", "9"}:
        return
    assert card_number_problem(swapped) is not None


def test_forms_that_are_not_card_numbers() -> None:
    good = with_check_digit("400000123456789")
    assert good == "4000001234567899"
    for wrong in ("", good[:-1], good + "0", "4000 0012 3456 7899", "٤" * 16, "a" * 16):
        assert card_number_problem(wrong) is not None, wrong
    assert format_card_number(good) == "4000 0012 3456 7899"


def test_admission_names_the_field_of_a_bad_number() -> None:
    event = events_pb2.Event()
    event.card_revoked.card_number = "4000001234567898"
    event.card_revoked.reason = events_pb2.CARD_REASON_LOST
    violations: list[FieldViolation] = []
    CARD_BODY_CHECKS["card_revoked"](violations, "event.card_revoked", event.card_revoked)
    assert [v.field for v in violations] == ["event.card_revoked.card_number"]
