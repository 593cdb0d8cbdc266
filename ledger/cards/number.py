"""Insurance card numbers: 16 ASCII digits, the last a Luhn check digit.

The Luhn algorithm ("mod 10", ISO/IEC 7812-1:2017 Annex B, the check digit of payment card and
many health insurance card numbers) detects every single-digit error and every transposition of
adjacent digits except 09/90. The computation is python-stdnum's (``stdnum.luhn``), not ours.
"""

from __future__ import annotations

from stdnum import luhn
from stdnum.exceptions import ValidationError

from ledger import limits

__all__ = ["card_number_problem", "format_card_number", "with_check_digit"]


def card_number_problem(number: str) -> str | None:
    """What is wrong with ``number`` as a card number, or None when it is one."""
    if len(number) != limits.card_number_digits or not (number.isascii() and number.isdigit()):
        return f"must be {limits.card_number_digits} digits 0-9 (no spaces)"
    try:
        luhn.validate(number)
    except ValidationError:
        return "the Luhn check digit (the last digit) is wrong"
    return None


def with_check_digit(body: str) -> str:
    """``body`` (15 digits) followed by its Luhn check digit."""
    if len(body) != limits.card_number_digits - 1 or not (body.isascii() and body.isdigit()):
        raise ValueError(f"a card number body is {limits.card_number_digits - 1} digits")
    return body + luhn.calc_check_digit(body)


def format_card_number(number: str) -> str:
    """For people: groups of four digits, e.g. ``4000 0012 3456 7899``."""
    return " ".join(number[start : start + 4] for start in range(0, len(number), 4))
