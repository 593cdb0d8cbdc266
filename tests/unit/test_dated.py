"""tests/dated.py moves dated documentation by whole years; the moves must keep every date's day
of the year and touch nothing else."""

from __future__ import annotations

import datetime as dt

from tests.dated import moved_json, moved_text, years_to_fit


def test_years_to_fit_is_zero_through_the_last_day_then_the_fewest_whole_years() -> None:
    last = dt.date(2027, 6, 30)
    assert years_to_fit(dt.date(2026, 12, 6), last) == 0
    assert years_to_fit(last, last) == 0
    assert years_to_fit(dt.date(2027, 7, 1), last) == 1
    assert years_to_fit(dt.date(2028, 6, 30), last) == 1
    assert years_to_fit(dt.date(2031, 1, 1), last) == 4


def test_moved_text_moves_iso_dates_only() -> None:
    text = "--through 2027-06-30 --effective 2026-01-01 CCHI-0042 port 50051 id 2000000014"
    assert moved_text(text, 2) == (
        "--through 2029-06-30 --effective 2028-01-01 CCHI-0042 port 50051 id 2000000014"
    )
    assert moved_text(text, 0) is text
    assert moved_text("2028-02-29", 1) == "2029-02-28"


def test_moved_json_moves_civil_dates_at_any_depth_and_nothing_else() -> None:
    document = {
        "eventId": "2026-01-01",  # a string, not a civil date: left as it is
        "policyIssued": {
            "startDate": {"year": 2026, "month": 1, "day": 1},
            "members": [{"birthDate": {"year": 2014, "month": 2, "day": 2}}],
            "annualPremium": {"currencyCode": "SAR", "amountMinor": "450000"},
        },
    }
    assert moved_json(document, 3) == {
        "eventId": "2026-01-01",
        "policyIssued": {
            "startDate": {"year": 2029, "month": 1, "day": 1},
            "members": [{"birthDate": {"year": 2017, "month": 2, "day": 2}}],
            "annualPremium": {"currencyCode": "SAR", "amountMinor": "450000"},
        },
    }
    assert moved_json(document, 0) is document
