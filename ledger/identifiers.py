"""Per-type, per-country rules for person identifiers, and generators of valid examples.

A ``ledger.v1.PersonId`` is a ``type``, a ``value`` and the ``country_code`` of the issuing state.
Its generic shape (value non-empty, at most 32 characters of A-Z0-9, a two-letter country, a known
type) is checked by ``ledger.events._check_person``; this module adds what depends on the type and
the country:

* Saudi Arabia (SA): residence ID (iqama, 10 digits starting with 2) and national ID (10 digits
  starting with 1), both ending in a Luhn check digit; border number (10 digits starting with 3
  or 4, no known check digit).
* Kuwait (KW): civil ID, 12 digits: century of birth, YYMMDD birth date, 4-digit serial and a
  weighted modulo-11 check digit.
* Morocco (MA): national ID (the CIN, carte nationale d'identité électronique): one or two
  letters (the issuing office's prefix) then 5 or 6 digits, e.g. ``BE123456``; no check digit.
  Morocco issues no civil ID (use NATIONAL_ID).
* Other countries: civil IDs are 5 to 20 digits; residence and national IDs 5 to 20 letters and
  digits, at least one a digit; no check digit.
* Passports of any issuing state: 5 to 9 characters A-Z0-9 (the ICAO 9303 document-number field).

:func:`validate_person_id` reports at most one violation per field, the first rule broken, in
words a portal operator can act on. Types and values the generic check already refuses
(unspecified or unknown type, empty value) are left to it, so nothing is reported twice.

The ``example_*`` generators return valid values, deterministic in their arguments, for tests
and the demo. The rules and their public sources are in ``docs/identifiers.md``.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

from ledger.errors import FieldViolation
from ledger.v1 import types_pb2

__all__ = [
    "example_border_number",
    "example_iqama",
    "example_kuwait_civil_id",
    "example_moroccan_cin",
    "example_saudi_national_id",
    "kuwait_civil_id_check_digit",
    "luhn_check_digit",
    "validate_person_id",
]

SAUDI_ARABIA = "SA"
KUWAIT = "KW"
MOROCCO = "MA"

_SAUDI_ID_DIGITS = 10
_KUWAIT_CIVIL_ID_DIGITS = 12
_GENERIC_DIGITS_MIN = 5
_GENERIC_DIGITS_MAX = 20
_PASSPORT_CHARS_MIN = 5
_PASSPORT_CHARS_MAX = 9
_CIN_LETTERS_MAX = 2
_CIN_DIGITS_MIN = 5
_CIN_DIGITS_MAX = 6

# Weights of the Kuwaiti civil ID check digit over its first 11 digits.
_KUWAIT_WEIGHTS = (2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
# Century digit of a Kuwaiti civil ID -> first year of the century of birth.
_KUWAIT_CENTURIES = {"2": 1900, "3": 2000}

_DIGITS = frozenset("0123456789")
_LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
_PASSPORT_CHARS = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789")

_T = types_pb2
_IQAMA = "a Saudi residence ID (iqama)"
_SAUDI_NATIONAL = "a Saudi national ID"
_BORDER = "a Saudi border number"
_KUWAIT_CIVIL = "a Kuwaiti civil ID"


def luhn_check_digit(payload: str) -> int:
    """The Luhn (ISO/IEC 7812-1) check digit to append to the decimal string ``payload``.

    Starting from the rightmost payload digit, every other digit is doubled (minus 9 when the
    double exceeds 9); the check digit brings the total to a multiple of 10.
    """
    total = 0
    for position, char in enumerate(reversed(payload)):
        digit = int(char)
        if position % 2 == 0:
            digit *= 2
            if digit > 9:
                digit -= 9
        total += digit
    return (10 - total % 10) % 10


def kuwait_civil_id_check_digit(payload: str) -> int | None:
    """The check digit of a Kuwaiti civil ID from its first 11 digits, or None if there is none.

    check = 11 - (sum of digit x weight, weights 2,1,6,3,7,9,10,5,8,4,2) mod 11. When the
    remainder is 0 or 1 the result (11 or 10) is not a digit: no civil ID has that payload.
    """
    if len(payload) != len(_KUWAIT_WEIGHTS):
        raise ValueError(f"a civil ID payload is {len(_KUWAIT_WEIGHTS)} digits, got {payload!r}")
    total = sum(int(char) * weight for char, weight in zip(payload, _KUWAIT_WEIGHTS, strict=True))
    check = 11 - total % 11
    return check if check <= 9 else None


def validate_person_id(
    person: types_pb2.PersonId, field: str, *, today: dt.date | None = None
) -> list[FieldViolation]:
    """The violations of the per-type, per-country rules by ``person``; [] when it is valid.

    ``field`` is the dotted path of ``person`` in the request; violations name
    ``{field}.value`` or ``{field}.type``. ``today`` (default: the local date) bounds the birth
    date encoded in a Kuwaiti civil ID. An unspecified or unknown type and an empty value are
    left to the generic check (``ledger.events``), which refuses them.
    """
    value = person.value
    country = person.country_code
    kind = person.type
    if not value or kind not in _RULES:
        return []
    type_problem = _type_country_problem(kind, country)
    if type_problem is not None:
        return [FieldViolation(f"{field}.type", type_problem)]
    problem = _RULES[kind](value, country, today or dt.date.today())
    return [] if problem is None else [FieldViolation(f"{field}.value", problem)]


def _type_country_problem(kind: int, country: str) -> str | None:
    if kind == _T.PERSON_ID_TYPE_BORDER_NUMBER and country != SAUDI_ARABIA:
        return f"border numbers are issued by Saudi Arabia only (country SA), not {country}"
    if kind == _T.PERSON_ID_TYPE_CIVIL_ID and country == SAUDI_ARABIA:
        return (
            "Saudi Arabia issues no civil ID: use NATIONAL_ID for a Saudi citizen "
            "or RESIDENCE_ID for an iqama"
        )
    if kind in (_T.PERSON_ID_TYPE_RESIDENCE_ID, _T.PERSON_ID_TYPE_NATIONAL_ID) and (
        country == KUWAIT
    ):
        return "Kuwait identifies citizens and residents by their civil ID: use type CIVIL_ID"
    if kind == _T.PERSON_ID_TYPE_CIVIL_ID and country == MOROCCO:
        return "Morocco issues no civil ID: a Moroccan CIN is type NATIONAL_ID"
    return None


def _residence_id(value: str, country: str, today: dt.date) -> str | None:
    if country == SAUDI_ARABIA:
        return _saudi_luhn_id(value, _IQAMA, "2")
    return _generic_letters_and_digits(value, "a residence ID")


def _national_id(value: str, country: str, today: dt.date) -> str | None:
    if country == SAUDI_ARABIA:
        return _saudi_luhn_id(value, _SAUDI_NATIONAL, "1")
    if country == MOROCCO:
        return _moroccan_cin(value)
    return _generic_letters_and_digits(value, "a national ID")


def _moroccan_cin(value: str) -> str | None:
    """One or two letters (the issuing office's prefix), then 5 or 6 digits."""
    shape = (
        f"a Moroccan CIN is 1 to {_CIN_LETTERS_MAX} letters then {_CIN_DIGITS_MIN} or "
        f"{_CIN_DIGITS_MAX} digits (e.g. BE123456)"
    )
    letters = len(value) - len(value.lstrip(_LETTERS))
    digits = value[letters:]
    if letters == 0:
        return f"{shape}, this one starts with a digit"
    if letters > _CIN_LETTERS_MAX:
        return f"{shape}, this one starts with {letters} letters"
    if not set(digits) <= _DIGITS:
        return f"{shape}, letters only at the start"
    if not _CIN_DIGITS_MIN <= len(digits) <= _CIN_DIGITS_MAX:
        return f"{shape}, got {len(digits)} digits"
    return None


def _civil_id(value: str, country: str, today: dt.date) -> str | None:
    if country == KUWAIT:
        return _kuwait_civil_id(value, today)
    return _generic_digits(value, "a civil ID")


def _passport(value: str, country: str, today: dt.date) -> str | None:
    if not set(value) <= _PASSPORT_CHARS:
        return "a passport number has only letters A-Z and digits"
    if not _PASSPORT_CHARS_MIN <= len(value) <= _PASSPORT_CHARS_MAX:
        return (
            f"a passport number is {_PASSPORT_CHARS_MIN} to {_PASSPORT_CHARS_MAX} letters "
            f"and digits, got {len(value)}"
        )
    return None


def _border_number(value: str, country: str, today: dt.date) -> str | None:
    shape = _BORDER + " is 10 digits starting with 3 or 4"
    if not set(value) <= _DIGITS:
        return f"{shape}, without letters"
    if len(value) != _SAUDI_ID_DIGITS:
        return f"{shape}, got {len(value)} digits"
    if value[0] not in "34":
        return f"{shape}, this one starts with {value[0]}{_saudi_first_digit_hint(value[0])}"
    return None


_RULES: dict[int, Callable[[str, str, dt.date], str | None]] = {
    _T.PERSON_ID_TYPE_RESIDENCE_ID: _residence_id,
    _T.PERSON_ID_TYPE_NATIONAL_ID: _national_id,
    _T.PERSON_ID_TYPE_CIVIL_ID: _civil_id,
    _T.PERSON_ID_TYPE_PASSPORT: _passport,
    _T.PERSON_ID_TYPE_BORDER_NUMBER: _border_number,
}


def _saudi_first_digit_hint(first: str) -> str:
    if first == "1":
        return " (numbers starting with 1 are Saudi national IDs: type NATIONAL_ID)"
    if first == "2":
        return " (numbers starting with 2 are iqamas: type RESIDENCE_ID)"
    if first in "34":
        return " (numbers starting with 3 or 4 are border numbers: type BORDER_NUMBER)"
    return ""


def _saudi_luhn_id(value: str, what: str, first: str) -> str | None:
    shape = f"{what} is 10 digits starting with {first}"
    if not set(value) <= _DIGITS:
        return f"{shape}, without letters"
    if len(value) != _SAUDI_ID_DIGITS:
        return f"{shape}, got {len(value)} digits"
    if value[0] != first:
        return f"{shape}, this one starts with {value[0]}{_saudi_first_digit_hint(value[0])}"
    expected = luhn_check_digit(value[:-1])
    if int(value[-1]) != expected:
        return (
            f"check digit is {value[-1]}, expected {expected}: "
            f"a digit of {what} is probably mistyped"
        )
    return None


def _kuwait_civil_id(value: str, today: dt.date) -> str | None:
    shape = f"{_KUWAIT_CIVIL} is 12 digits"
    if not set(value) <= _DIGITS:
        return f"{shape}, without letters"
    if len(value) != _KUWAIT_CIVIL_ID_DIGITS:
        return f"{shape}, got {len(value)} digits"
    century = _KUWAIT_CENTURIES.get(value[0])
    if century is None:
        return (
            f"the first digit of {_KUWAIT_CIVIL} is the century of birth, 2 (1900s) "
            f"or 3 (2000s), not {value[0]}"
        )
    date_problem = _kuwait_birth_date_problem(century, value[1:7], today)
    return date_problem or _kuwait_check_digit_problem(value)


def _kuwait_check_digit_problem(value: str) -> str | None:
    expected = kuwait_civil_id_check_digit(value[:11])
    if expected is None:
        return (
            "no Kuwaiti civil ID has these first 11 digits (their weighted sum leaves no "
            "possible check digit): a digit is probably mistyped"
        )
    if int(value[-1]) != expected:
        return (
            f"check digit is {value[-1]}, expected {expected}: "
            f"a digit of {_KUWAIT_CIVIL} is probably mistyped"
        )
    return None


def _kuwait_birth_date_problem(century: int, yymmdd: str, today: dt.date) -> str | None:
    year, month, day = century + int(yymmdd[0:2]), int(yymmdd[2:4]), int(yymmdd[4:6])
    try:
        birth = dt.date(year, month, day)
    except ValueError:
        return (
            f"digits 2 to 7 of {_KUWAIT_CIVIL} are the birth date YYMMDD, and "
            f"{year:04d}-{month:02d}-{day:02d} is not a date"
        )
    if birth > today:
        return (
            f"digits 2 to 7 of {_KUWAIT_CIVIL} are the birth date YYMMDD, and "
            f"{birth.isoformat()} is in the future"
        )
    return None


def _generic_digits(value: str, what: str) -> str | None:
    shape = f"{what} is {_GENERIC_DIGITS_MIN} to {_GENERIC_DIGITS_MAX} digits"
    if not set(value) <= _DIGITS:
        return f"{shape}, without letters"
    if not _GENERIC_DIGITS_MIN <= len(value) <= _GENERIC_DIGITS_MAX:
        return f"{shape}, got {len(value)}"
    return None


def _generic_letters_and_digits(value: str, what: str) -> str | None:
    """Residence and national IDs of states whose format is not encoded: some carry letters;
    5 to 20 characters A-Z0-9 with at least one digit."""
    shape = f"{what} is {_GENERIC_DIGITS_MIN} to {_GENERIC_DIGITS_MAX} letters and digits"
    if not _GENERIC_DIGITS_MIN <= len(value) <= _GENERIC_DIGITS_MAX:
        return f"{shape}, got {len(value)}"
    if not set(value) & _DIGITS:
        return f"{shape}, with at least one digit"
    return None


def _saudi_luhn_example(first: str, serial: int) -> str:
    if not 0 <= serial < 10**8:
        raise ValueError(f"serial must be in [0, 10**8), got {serial}")
    payload = f"{first}{serial:08d}"
    return f"{payload}{luhn_check_digit(payload)}"


def example_iqama(serial: int) -> str:
    """A valid Saudi iqama: ``2``, ``serial`` on 8 digits (0 <= serial < 10**8), check digit."""
    return _saudi_luhn_example("2", serial)


def example_saudi_national_id(serial: int) -> str:
    """A valid Saudi national ID: ``1``, ``serial`` on 8 digits, Luhn check digit."""
    return _saudi_luhn_example("1", serial)


def example_border_number(serial: int) -> str:
    """A valid Saudi border number: 3000000000 + serial (0 <= serial < 2 * 10**9)."""
    if not 0 <= serial < 2 * 10**9:
        raise ValueError(f"serial must be in [0, 2 * 10**9), got {serial}")
    return str(3 * 10**9 + serial)


def example_kuwait_civil_id(birth: dt.date, serial: int) -> str:
    """A valid Kuwaiti civil ID for someone born on ``birth`` (in 1900-2099).

    The value does not depend on the clock: it validates on any ``today`` on or after ``birth``
    (a birth date in the future is refused by :func:`validate_person_id`).

    The serial is ``serial`` (0 <= serial < 10**4) or, when those 11 digits admit no check digit,
    the next serial (modulo 10**4) that does. Two of the 11 remainders admit no check digit and
    the next serial moves the weighted sum by a nonzero amount modulo 11 (+2 within a tens
    block), so at most two more serials are tried (checked exhaustively over every prefix).
    """
    if not 0 <= serial < 10**4:
        raise ValueError(f"serial must be in [0, 10**4), got {serial}")
    if not dt.date(1900, 1, 1) <= birth <= dt.date(2099, 12, 31):
        raise ValueError(f"birth must be in 1900-2099, got {birth.isoformat()}")
    century = "2" if birth.year < 2000 else "3"
    prefix = f"{century}{birth:%y%m%d}"
    for step in range(10**4):
        payload = f"{prefix}{(serial + step) % 10**4:04d}"
        check = kuwait_civil_id_check_digit(payload)
        if check is not None:
            return f"{payload}{check}"
    raise AssertionError("unreachable: at most two serials in a row lack a check digit")


def example_moroccan_cin(serial: int) -> str:
    """A valid Moroccan CIN: prefix ``BE`` (Casablanca) and a 6-digit serial (0 to 999999)."""
    if not 0 <= serial < 10**_CIN_DIGITS_MAX:
        raise ValueError(f"serial must be in 0..{10**_CIN_DIGITS_MAX - 1}, got {serial}")
    return f"BE{serial:06d}"
