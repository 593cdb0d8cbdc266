"""Per-type, per-country person identifier rules: published examples, every refusal with its
accepted twin, and properties of the generators and check digits."""

from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ledger.errors import FieldViolation
from ledger.identifiers import (
    example_border_number,
    example_iqama,
    example_kuwait_civil_id,
    example_moroccan_cin,
    example_saudi_national_id,
    kuwait_civil_id_check_digit,
    luhn_check_digit,
    validate_person_id,
)
from ledger.v1 import types_pb2

TODAY = dt.date(2026, 11, 22)
FIELD = "event.policy_issued.holder.person"

RESIDENCE = types_pb2.PERSON_ID_TYPE_RESIDENCE_ID
NATIONAL = types_pb2.PERSON_ID_TYPE_NATIONAL_ID
CIVIL = types_pb2.PERSON_ID_TYPE_CIVIL_ID
PASSPORT = types_pb2.PERSON_ID_TYPE_PASSPORT
BORDER = types_pb2.PERSON_ID_TYPE_BORDER_NUMBER


def _check(kind: int, value: str, country: str, today: dt.date = TODAY) -> list[FieldViolation]:
    person = types_pb2.PersonId(type=kind, value=value, country_code=country)  # type: ignore[arg-type]
    return validate_person_id(person, FIELD, today=today)


def _refused(kind: int, value: str, country: str, *, on: str = "value") -> str:
    violations = _check(kind, value, country)
    assert len(violations) == 1, violations
    assert violations[0].field == f"{FIELD}.{on}"
    return violations[0].description


# Published examples ------------------------------------------------------------------------------

# 1000000008: README of alhazmy13/Saudi-ID-Validator and the saudi-id-validator npm/PyPI packages.
# The Kuwaiti civil IDs: doctests of stdnum/kw/cid.py in gigapay/python-stdnum.
PUBLISHED_VALID = [
    (NATIONAL, "1000000008", "SA"),
    (CIVIL, "288020122596", "KW"),
    (CIVIL, "227081660516", "KW"),
    (CIVIL, "292091998298", "KW"),
]


@pytest.mark.parametrize(("kind", "value", "country"), PUBLISHED_VALID)
def test_published_examples_are_accepted(kind: int, value: str, country: str) -> None:
    assert _check(kind, value, country) == []


def test_published_refusals() -> None:
    # Same sources: 1000000000 has a wrong check digit; 292091998297 too; 288200122596 is month 20.
    assert "check digit is 0, expected 8" in _refused(NATIONAL, "1000000000", "SA")
    assert "check digit is 7, expected 8" in _refused(CIVIL, "292091998297", "KW")
    assert "1988-20-01 is not a date" in _refused(CIVIL, "288200122596", "KW")


# Saudi iqama and national ID ---------------------------------------------------------------------

IQAMA = example_iqama(12_345_678)
SAUDI = example_saudi_national_id(12_345_678)


def test_generated_saudi_ids_are_the_expected_numbers() -> None:
    assert IQAMA == "2123456788"
    assert SAUDI == "1123456780"
    assert _check(RESIDENCE, IQAMA, "SA") == []
    assert _check(NATIONAL, SAUDI, "SA") == []


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("212345678", "a Saudi residence ID (iqama) is 10 digits starting with 2, got 9 digits"),
        ("21234567823", "a Saudi residence ID (iqama) is 10 digits starting with 2, got 11 digits"),
        (
            "2123A56782",
            "a Saudi residence ID (iqama) is 10 digits starting with 2, without letters",
        ),
        (
            "1123456783",
            "a Saudi residence ID (iqama) is 10 digits starting with 2, this one starts with 1 "
            "(numbers starting with 1 are Saudi national IDs: type NATIONAL_ID)",
        ),
        (
            "3123456781",
            "a Saudi residence ID (iqama) is 10 digits starting with 2, this one starts with 3 "
            "(numbers starting with 3 or 4 are border numbers: type BORDER_NUMBER)",
        ),
        (
            "2123456787",
            "check digit is 7, expected 8: a digit of a Saudi residence ID (iqama) is probably "
            "mistyped",
        ),
    ],
)
def test_iqama_refusals(value: str, expected: str) -> None:
    assert _refused(RESIDENCE, value, "SA") == expected


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("112345678", "a Saudi national ID is 10 digits starting with 1, got 9 digits"),
        ("11234B6783", "a Saudi national ID is 10 digits starting with 1, without letters"),
        (
            "2123456782",
            "a Saudi national ID is 10 digits starting with 1, this one starts with 2 "
            "(numbers starting with 2 are iqamas: type RESIDENCE_ID)",
        ),
        ("5123456782", "a Saudi national ID is 10 digits starting with 1, this one starts with 5"),
        (
            "1123456783",
            "check digit is 3, expected 0: a digit of a Saudi national ID is probably mistyped",
        ),
    ],
)
def test_saudi_national_id_refusals(value: str, expected: str) -> None:
    assert _refused(NATIONAL, value, "SA") == expected


def test_luhn_check_digit_matches_the_textbook_example() -> None:
    # The Luhn example of ISO/IEC 7812-1 and Wikipedia: 7992739871 -> check digit 3.
    assert luhn_check_digit("7992739871") == 3


# Border number -----------------------------------------------------------------------------------


def test_border_numbers() -> None:
    assert example_border_number(0) == "3000000000"
    assert example_border_number(1_999_999_999) == "4999999999"
    for value in ("3000000000", "4123456789"):
        assert _check(BORDER, value, "SA") == []
    shape = "a Saudi border number is 10 digits starting with 3 or 4"
    assert _refused(BORDER, "312345678", "SA") == f"{shape}, got 9 digits"
    assert _refused(BORDER, "31234567A9", "SA") == f"{shape}, without letters"
    assert _refused(BORDER, "5123456789", "SA") == f"{shape}, this one starts with 5"
    assert _refused(BORDER, "2123456782", "SA") == (
        f"{shape}, this one starts with 2 (numbers starting with 2 are iqamas: type RESIDENCE_ID)"
    )
    assert _refused(BORDER, "3123456789", "AE", on="type") == (
        "border numbers are issued by Saudi Arabia only (country SA), not AE"
    )


# Kuwaiti civil ID --------------------------------------------------------------------------------

CIVIL_1988 = example_kuwait_civil_id(dt.date(1988, 2, 1), 2259)


def test_kuwait_generator_reproduces_a_published_id() -> None:
    assert CIVIL_1988 == "288020122596"
    assert example_kuwait_civil_id(dt.date(2004, 2, 29), 0) == "304022900002"


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("28802012259", "a Kuwaiti civil ID is 12 digits, got 11 digits"),
        ("2880201225960", "a Kuwaiti civil ID is 12 digits, got 13 digits"),
        ("28802012259A", "a Kuwaiti civil ID is 12 digits, without letters"),
        (
            "188020122596",
            "the first digit of a Kuwaiti civil ID is the century of birth, 2 (1900s) or 3 "
            "(2000s), not 1",
        ),
        (
            "288023122596",
            "digits 2 to 7 of a Kuwaiti civil ID are the birth date YYMMDD, and 1988-02-31 is "
            "not a date",
        ),
        (
            "288130122596",
            "digits 2 to 7 of a Kuwaiti civil ID are the birth date YYMMDD, and 1988-13-01 is "
            "not a date",
        ),
        (
            "200022900004",
            "digits 2 to 7 of a Kuwaiti civil ID are the birth date YYMMDD, and 1900-02-29 is "
            "not a date",
        ),
        (
            "301022900004",
            "digits 2 to 7 of a Kuwaiti civil ID are the birth date YYMMDD, and 2001-02-29 is "
            "not a date",
        ),
        (
            "327010100005",
            "digits 2 to 7 of a Kuwaiti civil ID are the birth date YYMMDD, and 2027-01-01 is "
            "in the future",
        ),
        (
            "288020122597",
            "check digit is 7, expected 6: a digit of a Kuwaiti civil ID is probably mistyped",
        ),
    ],
)
def test_kuwait_civil_id_refusals(value: str, expected: str) -> None:
    assert _refused(CIVIL, value, "KW") == expected


def test_kuwait_accepted_twins() -> None:
    # Leap day of a leap year, a birth date of today, and the 2000s century digit.
    assert _check(CIVIL, example_kuwait_civil_id(dt.date(2000, 2, 29), 17), "KW") == []
    born_today = example_kuwait_civil_id(TODAY, 5)
    assert _check(CIVIL, born_today, "KW") == []
    assert _check(CIVIL, born_today, "KW", today=TODAY - dt.timedelta(days=1)) != []


def test_kuwait_payload_without_a_check_digit_is_refused() -> None:
    # 28802012259x: find the serial before 2259 whose weighted sum leaves remainder 0 or 1.
    payload = next(
        f"2880201{serial:04d}"
        for serial in range(10_000)
        if kuwait_civil_id_check_digit(f"2880201{serial:04d}") is None
    )
    for last in "0123456789":
        assert _refused(CIVIL, payload + last, "KW") == (
            "no Kuwaiti civil ID has these first 11 digits (their weighted sum leaves no "
            "possible check digit): a digit is probably mistyped"
        )


def test_kuwait_generator_skips_serials_without_a_check_digit() -> None:
    birth = dt.date(1988, 2, 1)
    bad = next(
        serial
        for serial in range(10_000)
        if kuwait_civil_id_check_digit(f"2880201{serial:04d}") is None
    )
    value = example_kuwait_civil_id(birth, bad)
    assert value[7:11] != f"{bad:04d}"
    assert _check(CIVIL, value, "KW") == []
    assert example_kuwait_civil_id(birth, bad) == value  # deterministic


# Wrong country for a type, and other countries ---------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "value", "country", "expected"),
    [
        (
            CIVIL,
            "1123456783",
            "SA",
            "Saudi Arabia issues no civil ID: use NATIONAL_ID for a Saudi citizen or "
            "RESIDENCE_ID for an iqama",
        ),
        (
            RESIDENCE,
            "288020122596",
            "KW",
            "Kuwait identifies citizens and residents by their civil ID: use type CIVIL_ID",
        ),
        (
            NATIONAL,
            "288020122596",
            "KW",
            "Kuwait identifies citizens and residents by their civil ID: use type CIVIL_ID",
        ),
        (
            BORDER,
            "3123456789",
            "KW",
            "border numbers are issued by Saudi Arabia only (country SA), not KW",
        ),
    ],
)
def test_wrong_country_for_a_type(kind: int, value: str, country: str, expected: str) -> None:
    assert _refused(kind, value, country, on="type") == expected


@pytest.mark.parametrize("country", ["AE", "QA", "OM", "BH", "EG", "DZ"])
def test_other_countries_civil_ids_take_5_to_20_digits(country: str) -> None:
    assert _check(CIVIL, "12345", country) == []
    assert _check(CIVIL, "1" * 20, country) == []
    assert _refused(CIVIL, "1234", country).endswith("is 5 to 20 digits, got 4")
    assert _refused(CIVIL, "1" * 21, country).endswith("is 5 to 20 digits, got 21")
    assert _refused(CIVIL, "12345A", country).endswith("is 5 to 20 digits, without letters")


@pytest.mark.parametrize(
    ("kind", "country"),
    [
        (kind, country)
        for kind in (RESIDENCE, NATIONAL)
        for country in ("AE", "QA", "OM", "BH", "EG", "DZ", "MA")
        if (kind, country) != (NATIONAL, "MA")  # the CIN has its own rule
    ],
)
def test_other_countries_residence_and_national_ids_take_letters_too(
    kind: int, country: str
) -> None:
    assert _check(kind, "12345", country) == []
    assert _check(kind, "BE123456", country) == []
    assert _check(kind, "1" * 20, country) == []
    shape = "is 5 to 20 letters and digits"
    assert _refused(kind, "1234", country).endswith(f"{shape}, got 4")
    assert _refused(kind, "1" * 21, country).endswith(f"{shape}, got 21")
    assert _refused(kind, "ABCDEF", country).endswith(f"{shape}, with at least one digit")


def test_other_country_descriptions_name_the_type() -> None:
    assert (
        _refused(RESIDENCE, "1234", "AE") == "a residence ID is 5 to 20 letters and digits, got 4"
    )
    assert _refused(NATIONAL, "1234", "EG") == "a national ID is 5 to 20 letters and digits, got 4"
    assert _refused(CIVIL, "1234", "OM") == "a civil ID is 5 to 20 digits, got 4"


# Passport ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("country", ["SA", "KW", "IN", "GB", "EG"])
def test_passports(country: str) -> None:
    for value in (
        "L898902C3",
        "A1234",
        "123456789",
        "ABCDE",
        "A12345678",
    ):  # L898902C3: ICAO 9303 specimen
        assert _check(PASSPORT, value, country) == []
    assert _refused(PASSPORT, "A123", country) == (
        "a passport number is 5 to 9 letters and digits, got 4"
    )
    assert _refused(PASSPORT, "A123456789", country) == (
        "a passport number is 5 to 9 letters and digits, got 10"
    )
    assert _refused(PASSPORT, "a12345", country) == (
        "a passport number has only letters A-Z and digits"
    )


# Left to the generic check -----------------------------------------------------------------------


def test_unspecified_type_and_empty_value_are_left_to_the_generic_check() -> None:
    assert _check(types_pb2.PERSON_ID_TYPE_UNSPECIFIED, "2123456787", "SA") == []
    assert _check(RESIDENCE, "", "SA") == []


def test_generators_refuse_out_of_range_arguments() -> None:
    for make, bad in (
        (example_iqama, 10**8),
        (example_saudi_national_id, -1),
        (example_border_number, 2 * 10**9),
    ):
        with pytest.raises(ValueError, match="serial must be in"):
            make(bad)
    with pytest.raises(ValueError, match="serial must be in"):
        example_kuwait_civil_id(dt.date(1990, 1, 1), 10_000)
    with pytest.raises(ValueError, match="birth must be"):
        example_kuwait_civil_id(dt.date(1899, 12, 31), 0)
    with pytest.raises(ValueError, match="birth must be"):
        example_kuwait_civil_id(dt.date(2100, 1, 1), 0)


# Properties --------------------------------------------------------------------------------------

serials = st.integers(min_value=0, max_value=10**8 - 1)
births = st.dates(min_value=dt.date(1900, 1, 1), max_value=TODAY)
positions = st.integers(min_value=0, max_value=11)
deltas = st.integers(min_value=1, max_value=9)


def _change_digit(value: str, position: int, delta: int) -> str:
    digit = (int(value[position]) + delta) % 10
    return value[:position] + str(digit) + value[position + 1 :]


@given(serials)
def test_generated_saudi_ids_and_border_numbers_validate(serial: int) -> None:
    assert _check(RESIDENCE, example_iqama(serial), "SA") == []
    assert _check(NATIONAL, example_saudi_national_id(serial), "SA") == []
    assert _check(BORDER, example_border_number(serial), "SA") == []
    assert example_iqama(serial) == example_iqama(serial)


@given(births, st.integers(min_value=0, max_value=9_999))
def test_generated_civil_ids_validate(birth: dt.date, serial: int) -> None:
    value = example_kuwait_civil_id(birth, serial)
    assert _check(CIVIL, value, "KW") == []
    assert value == example_kuwait_civil_id(birth, serial)


@given(serials, st.integers(min_value=0, max_value=9), deltas)
def test_any_single_digit_change_of_an_iqama_is_refused(
    serial: int, position: int, delta: int
) -> None:
    # Luhn detects every single-digit error: doubling with the minus-9 rule permutes 0-9.
    assert _check(RESIDENCE, _change_digit(example_iqama(serial), position, delta), "SA") != []
    assert (
        _check(NATIONAL, _change_digit(example_saudi_national_id(serial), position, delta), "SA")
        != []
    )


@given(births, st.integers(min_value=0, max_value=9_999), positions, deltas)
def test_any_single_digit_change_of_a_civil_id_is_refused(
    birth: dt.date, serial: int, position: int, delta: int
) -> None:
    # Every weight is in 1..10 and 11 is prime, so changing one payload digit by delta in 1..9
    # changes the weighted sum by weight * delta != 0 mod 11, hence the required check digit
    # (or makes it impossible); changing the check digit itself is a mismatch.
    value = example_kuwait_civil_id(birth, serial)
    assert _check(CIVIL, _change_digit(value, position, delta), "KW") != []


def test_kuwait_single_digit_detection_holds_for_every_weight_and_delta() -> None:
    # The algebra behind the property above, checked exhaustively rather than sampled.
    weights = (2, 1, 6, 3, 7, 9, 10, 5, 8, 4, 2)
    assert all(weight * delta % 11 != 0 for weight in weights for delta in range(-9, 10) if delta)


def test_today_defaults_to_the_local_date() -> None:
    person = types_pb2.PersonId(type=CIVIL, value="288020122596", country_code="KW")
    assert validate_person_id(person, FIELD) == []
    future = example_kuwait_civil_id(dt.date(2099, 12, 31), 0)
    person = types_pb2.PersonId(type=CIVIL, value=future, country_code="KW")
    assert validate_person_id(person, FIELD)[0].description.endswith("is in the future")


# Morocco: the CIN ------------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["A123456", "BE123456", "BK765432", "J12345", "AB12345"])
def test_moroccan_cin_one_or_two_letters_then_five_or_six_digits(value: str) -> None:
    assert _check(NATIONAL, value, "MA") == []


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("123456", "this one starts with a digit"),
        ("ABC12345", "this one starts with 3 letters"),
        ("BE12A456", "letters only at the start"),
        ("BE123456X", "letters only at the start"),
        ("BE1234", "got 4 digits"),
        ("A1234567", "got 7 digits"),
        ("BE", "got 0 digits"),
    ],
)
def test_moroccan_cin_refusals_say_what_is_wrong(value: str, problem: str) -> None:
    shape = "a Moroccan CIN is 1 to 2 letters then 5 or 6 digits (e.g. BE123456)"
    assert _refused(NATIONAL, value, "MA") == f"{shape}, {problem}"


def test_morocco_issues_no_civil_id() -> None:
    assert _refused(CIVIL, "123456", "MA", on="type") == (
        "Morocco issues no civil ID: a Moroccan CIN is type NATIONAL_ID"
    )


@given(st.integers(min_value=0, max_value=999_999))
def test_example_moroccan_cins_are_valid(serial: int) -> None:
    assert _check(NATIONAL, example_moroccan_cin(serial), "MA") == []


def test_example_moroccan_cin_refuses_out_of_range_serials() -> None:
    for serial in (-1, 1_000_000):
        with pytest.raises(ValueError, match="serial"):
            example_moroccan_cin(serial)
