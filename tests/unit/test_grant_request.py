"""A grant request's own checks (ledger/identity/resolution_grants.py): the bounds are
inclusive, and each bad field is named."""

from __future__ import annotations

import pytest

from ledger import limits
from ledger.errors import InvalidArgument
from ledger.identity.resolution_grants import check_grant_request

TOKEN = "pt_" + "a" * 26


@pytest.mark.parametrize(
    ("additional", "reason"),
    [
        (1, "r"),
        (limits.beneficiary_resolutions_grant_max, "ticket 4411"),
        (1, "x" * limits.resolution_grant_reason_chars_max),
        (1, "ticket 4411 : famille nombreuse, عائلة كبيرة"),  # any printable text
    ],
)
def test_the_bounds_are_inclusive(additional: int, reason: str) -> None:
    check_grant_request(TOKEN, additional, reason)


@pytest.mark.parametrize(
    ("token", "additional", "reason", "fields"),
    [
        ("", 1, "r", ["person_token"]),
        ("pt_" + "a" * 25, 1, "r", ["person_token"]),
        (TOKEN, 0, "r", ["additional"]),
        (TOKEN, limits.beneficiary_resolutions_grant_max + 1, "r", ["additional"]),
        (TOKEN, -1, "r", ["additional"]),
        (TOKEN, 1, "", ["reason"]),
        (TOKEN, 1, " \u00a0 ", ["reason"]),
        (TOKEN, 1, "x" * (limits.resolution_grant_reason_chars_max + 1), ["reason"]),
        (TOKEN, 1, "a\tb", ["reason"]),
        (TOKEN, 1, "a\u200bb", ["reason"]),  # a format character is not printable either
        ("x", 0, "", ["person_token", "additional", "reason"]),
    ],
)
def test_each_bad_field_is_named(
    token: str, additional: int, reason: str, fields: list[str]
) -> None:
    with pytest.raises(InvalidArgument) as caught:
        check_grant_request(token, additional, reason)
    assert caught.value.details.reason == "GRANT_REQUEST_INVALID"
    assert [violation.field for violation in caught.value.details.field_violations] == fields
