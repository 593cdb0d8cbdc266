"""``policy-ledger erase --expired`` (issue 14 item 5): everyone past their jurisdiction's
retention period is erased, by token, saying why; a second run erases nobody and writes nothing
(on SQLite and PostgreSQL)."""

from __future__ import annotations

import contextlib
import datetime as dt
import io
from pathlib import Path

from clients.insurer import InsurerClient
from clients.verify import TrustedLog
from ledger.identity.retention import load_retention_periods
from ledger.signing import Ed25519Signer, format_signer_key
from policy_ledger.cli import main
from tests import clock as test_clock
from tests.builders import R, issued, person, token
from tests.conftest import OPERATOR_SIGNER, ServerHandle, onboard
from tests.stack import row_counts

INSURER = "gulf-health"
OLD_SPONSOR, OLD_WIFE, CURRENT = person(7001), person(7002), person(7003)


def _cli(*arguments: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(arguments))
    return code, out.getvalue(), err.getvalue()


def test_every_jurisdiction_has_a_period_file_with_a_basis() -> None:
    periods = load_retention_periods()
    assert {period.jurisdiction for period in periods} == {"SA", "KW", "MA", "SD"}
    assert all(period.retention_days > 0 and period.basis for period in periods)


def test_erase_expired_erases_the_people_past_their_period_once(
    server: ServerHandle,
    database_url: str,
    operator_signer: Ed25519Signer,
    insurer_signer: Ed25519Signer,
    tmp_path: Path,
) -> None:
    onboard(server, operator_signer, INSURER, insurer_signer)
    log = TrustedLog.from_verifier_key(server.log_verifier_key)
    with server.channel("insurer", INSURER) as channel:
        insurer = InsurerClient(channel, signer=insurer_signer, log=log)
        old = [(OLD_SPONSOR, R.RELATIONSHIP_SELF), (OLD_WIFE, R.RELATIONSHIP_SPOUSE)]
        insurer.submit(
            issued(INSURER, "OLD", OLD_SPONSOR, old, dt.date(2016, 1, 1), dt.date(2016, 12, 31))
        )
        today = test_clock.now().date()
        insurer.submit(
            issued(INSURER, "NOW", CURRENT, [(CURRENT, R.RELATIONSHIP_SELF)], today, today)
        )
    key = tmp_path / "operator.key"
    key.write_text(format_signer_key(OPERATOR_SIGNER) + "\n", encoding="utf-8")
    command = [
        "erase", "--expired", "--database", database_url,
        *server.cli_arguments("operator", "operator"),
        "--operator-key", str(key), "--log-verifier", server.log_verifier_key,
    ]  # fmt: skip
    expired = {token(OLD_SPONSOR), token(OLD_WIFE)}
    code, out, err = _cli(*command)
    assert code == 0, err
    erased = {line.split()[1] for line in out.splitlines()}
    assert erased == expired
    assert "2016-12-31" in out and "Personal Data Protection Law" in out
    assert all(OLD_SPONSOR.value not in line for line in out.splitlines())
    assert "2 person(s) erased" in err
    before = row_counts(database_url)
    code, out, err = _cli(*command)  # idempotent: nobody left to erase, nothing written
    assert (code, out) == (0, "") and "0 person(s) erased" in err
    assert row_counts(database_url) == before
    assert token(CURRENT) not in erased
