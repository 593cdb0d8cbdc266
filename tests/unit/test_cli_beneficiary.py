"""``policy-ledger beneficiary declare`` needs each declared person's birth date (the ledger
gives a person someone else's token only with it: docs/privacy.md); the command line refuses a
person without one before connecting."""

from __future__ import annotations

import pytest

from policy_ledger.cli import main

_DECLARE = [
    "--server", "127.0.0.1:1", "--credentials", "var/none",
    "--as", "beneficiary-pt_abcdefghijklmnopqrstuvwxyz", "--log-verifier", "@log.pub",
    "--key", "me.key", "--declaration-id", "DECL-1", "--policy", "cnops/CNOPS-0001",
    "--effective", "2026-07-01",
]  # fmt: skip


@pytest.mark.parametrize(
    ("declared", "complaint"),
    [
        ("MA:NATIONAL_ID:BK765432=MARRIAGE_CERTIFICATE:DOC-1", "@YYYY-MM-DD"),
        ("MA:NATIONAL_ID:BK765432@1984-13-09=MARRIAGE_CERTIFICATE:DOC-1", "not a date"),
    ],
    ids=["no birth date", "not a date"],
)
def test_a_declared_person_without_a_birth_date_is_refused(
    declared: str, complaint: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        # The person first: argparse reports the first bad argument (the others need files).
        main(["beneficiary", "declare", "--spouse", declared, *_DECLARE])
    assert exited.value.code == 2
    assert complaint in capsys.readouterr().err
