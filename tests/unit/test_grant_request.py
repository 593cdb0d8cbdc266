"""A grant request's own checks (ledger/identity/resolution_grants.py): the bounds are
inclusive, and each bad field is named."""

from __future__ import annotations

import pytest

from ledger import limits
from ledger.errors import InvalidArgument
from ledger.identity.resolution_grants import check_grant_request

TOKEN = "pt_" + "a" * 26
REQUEST_ID = "ticket-4411-1"


@pytest.mark.parametrize(
    ("additional", "reason", "request_id"),
    [
        (1, "r", REQUEST_ID),
        (limits.beneficiary_resolutions_grant_max, "ticket 4411", REQUEST_ID),
        (1, "x" * limits.resolution_grant_reason_chars_max, REQUEST_ID),
        (1, "ticket 4411 : famille nombreuse, عائلة كبيرة", REQUEST_ID),  # any printable text
        (1, "r", "k" * limits.resolution_grant_request_id_chars_min),
        (1, "r", "k" * limits.resolution_grant_request_id_chars_max),
        (1, "r", "0f8fad5b-d9cb-469f-a165-70867728950e"),  # the CLI's default: a UUID
        (1, "r", "ticket 4411 / طلب 1"),  # printable, as payments' idempotency keys
    ],
)
def test_the_bounds_are_inclusive(additional: int, reason: str, request_id: str) -> None:
    check_grant_request(TOKEN, additional, reason, request_id)


@pytest.mark.parametrize(
    ("token", "additional", "reason", "request_id", "fields"),
    [
        ("", 1, "r", REQUEST_ID, ["person_token"]),
        ("pt_" + "a" * 25, 1, "r", REQUEST_ID, ["person_token"]),
        (TOKEN, 0, "r", REQUEST_ID, ["additional"]),
        (TOKEN, limits.beneficiary_resolutions_grant_max + 1, "r", REQUEST_ID, ["additional"]),
        (TOKEN, -1, "r", REQUEST_ID, ["additional"]),
        (TOKEN, 1, "", REQUEST_ID, ["reason"]),
        (TOKEN, 1, " \u00a0 ", REQUEST_ID, ["reason"]),
        (
            TOKEN,
            1,
            "x" * (limits.resolution_grant_reason_chars_max + 1),
            REQUEST_ID,
            ["reason"],
        ),
        (TOKEN, 1, "a\tb", REQUEST_ID, ["reason"]),
        (TOKEN, 1, "a\u200bb", REQUEST_ID, ["reason"]),  # a format character is not printable
        (TOKEN, 1, "r", "", ["request_id"]),
        (TOKEN, 1, "r", "k" * (limits.resolution_grant_request_id_chars_min - 1), ["request_id"]),
        (TOKEN, 1, "r", "k" * (limits.resolution_grant_request_id_chars_max + 1), ["request_id"]),
        (TOKEN, 1, "r", "ticket-4411\n", ["request_id"]),
        (TOKEN, 1, "r", "ticket\x004411", ["request_id"]),
        ("x", 0, "", "", ["person_token", "additional", "reason", "request_id"]),
    ],
)
def test_each_bad_field_is_named(
    token: str, additional: int, reason: str, request_id: str, fields: list[str]
) -> None:
    with pytest.raises(InvalidArgument) as caught:
        check_grant_request(token, additional, reason, request_id)
    assert caught.value.details.reason == "GRANT_REQUEST_INVALID"
    assert [violation.field for violation in caught.value.details.field_violations] == fields
