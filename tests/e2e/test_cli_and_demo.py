"""The command line and the demo, as a newcomer runs them (real processes)."""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from ledger.signing import format_signer_key, parse_signer_key, parse_verifier_key
from ledger.storage.db import sqlite_url
from tests.conftest import OPERATOR_SIGNER, ServerHandle

CLI = [sys.executable, "-m", "policy_ledger.cli"]


def run(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, check=check, timeout=120)


def test_help_lists_every_command_with_examples() -> None:
    output = run("--help").stdout
    for command in ("serve", "keygen", "db", "admin", "demo", "rebuild", "payments"):
        assert command in output
    assert "Examples:" in output
    assert "Example:" in run("admin", "insurer", "add-key", "--help").stdout


@pytest.mark.parametrize(
    "command",
    [
        ["serve"],
        ["pki", "init"],
        ["pki", "issue"],
        ["access", "list"],
        ["keygen"],
        ["db", "upgrade"],
        ["admin", "insurer", "add-key"],
        ["admin", "insurer", "revoke-key"],
        ["admin", "insurer", "license"],
        ["health"],
        ["admin", "insurer", "list"],
        ["admin", "beneficiary", "resolutions"],
        ["admin", "beneficiary", "grant"],
        ["audit", "verify"],
        ["audit", "watch"],
        ["proof", "export"],
        ["proof", "verify"],
        ["certificate", "get"],
        ["certificate", "verify"],
        ["certificate", "page"],
        ["insurer", "submit"],
        ["coverage", "check"],
        ["renew"],
        ["payments", "reconcile"],
        ["rebuild"],
        ["demo"],
        ["witness", "keygen"],
        ["witness", "serve"],
        ["compliance", "decision", "get"],
        ["compliance", "decision", "list"],
    ],
)
def test_every_command_has_help_with_an_example(command: list[str]) -> None:
    import contextlib
    import io

    from policy_ledger.cli import main

    out = io.StringIO()
    with contextlib.redirect_stdout(out), pytest.raises(SystemExit) as done:
        main([*command, "--help"])
    assert done.value.code == 0
    assert "Example" in out.getvalue(), command


def test_keygen_writes_a_private_key_file_and_prints_the_verifier_key(tmp_path: Path) -> None:
    out = tmp_path / "log.key"
    printed = run("keygen", "--name", "example.org/log", "--out", str(out)).stdout.strip()
    signer = parse_signer_key(out.read_text().strip())
    verifier = parse_verifier_key(printed)
    assert verifier.public_key == signer.public_key and verifier.name == "example.org/log"
    assert (out.stat().st_mode & 0o777) == 0o600
    assert Path(f"{out}.pub").read_text().strip() == printed
    again = run("keygen", "--name", "x", "--out", str(out), check=False)
    assert again.returncode == 2 and "exists" in again.stderr
    assert parse_signer_key(out.read_text().strip()).public_key == signer.public_key


def test_admin_key_commands_round_trip(server: ServerHandle, tmp_path: Path) -> None:
    """add-key and revoke-key sign KeyRegistered / KeyRevoked with the operator's key and
    submit them; list reads the projection from the database."""
    key_file = tmp_path / "acme.key"
    generated = run("keygen", "--name", "acme-health", "--out", str(key_file))
    operator_key = tmp_path / "operator.key"
    operator_key.write_text(format_signer_key(OPERATOR_SIGNER) + "\n", encoding="utf-8")
    operator = [
        *server.cli_arguments("operator", "operator"),
        "--operator-key",
        str(operator_key),
        "--log-verifier",
        server.log_verifier_key,
    ]
    added = run(
        "admin",
        "insurer",
        "add-key",
        "--insurer",
        "acme-health",
        "--verifier-key-file",
        f"{key_file}.pub",
        *operator,
    ).stdout
    key_id = added.split()[1]
    assert key_id.startswith("ed25519:") and "KeyRegistered at leaf 1" in added
    # keygen and add-key name the key in the same form.
    assert f"key id {key_id}" in generated.stderr
    database = str(server.running.engine.url.render_as_string(hide_password=False))
    listed = run("admin", "insurer", "list", "--database", database).stdout
    assert key_id in listed and "revoked -" in listed and "insurer" in listed
    revoke = ["admin", "insurer", "revoke-key", "--key-id", key_id, "--reason", "lost", *operator]
    assert "KeyRevoked at leaf 2" in run(*revoke).stdout
    again = run(*revoke, check=False)
    assert again.returncode == 3 and "already revoked" in again.stderr  # refused by the server
    unknown = run(*revoke[:4], "ed25519:0000000000000000", *revoke[5:], check=False)
    assert unknown.returncode == 3 and "no key" in unknown.stderr


def test_serve_without_a_log_key_says_how_to_make_one(tmp_path: Path) -> None:
    result = run(
        "serve",
        "--log-key-file",
        str(tmp_path / "missing.key"),
        "--database",
        sqlite_url(tmp_path / "x.db"),
        "--insecure-plaintext",
        check=False,
    )
    assert result.returncode == 2 and "policy-ledger keygen" in result.stderr


def test_serve_without_tls_settings_refuses_to_start_and_says_what_to_pass(
    tmp_path: Path,
) -> None:
    database = tmp_path / "x.db"
    result = run("serve", "--database", sqlite_url(database), check=False)
    assert result.returncode == 2  # a usage mistake
    assert "--tls-cert FILE --tls-key FILE --client-ca FILE" in result.stderr
    assert "--insecure-plaintext" in result.stderr
    assert not database.exists()  # refused before opening anything


def test_pki_init_writes_guessable_files_and_issue_adds_one(tmp_path: Path) -> None:
    out = tmp_path / "pki"
    run("pki", "init", "--out", str(out))
    names = {path.name for path in out.iterdir()}
    for expected in (
        "ca.pem", "ca.key", "server.pem", "server.key", "operator-operator.pem",
        "auditor-auditor.key", "portal-KW.pem", "insurer-acme-health.pem",
    ):  # fmt: skip
        assert expected in names
    run("pki", "issue", "--out", str(out), "--role", "insurer", "--name", "gulf-health")
    assert (out / "insurer-gulf-health.pem").exists()
    again = run("pki", "init", "--out", str(out), check=False)
    assert again.returncode == 2 and "exists" in again.stderr  # the CA is never replaced


def demo_steps(story: str) -> list[tuple[int, str]]:
    """The demo's numbered steps as it prints them: ``N. title: ...``."""
    return [
        (int(found.group(1)), found.group(2))
        for found in re.finditer(r"^(\d+)\. ([a-z ]+): ", story, flags=re.MULTILINE)
    ]


def readme_demo_steps() -> list[tuple[int, str]]:
    """README's list under "What `make run` shows": ``N. **title**``."""
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text(encoding="utf-8")
    section = readme.split("## What `make run` shows", 1)[1].split("\n## ", 1)[0]
    return [
        (int(found.group(1)), found.group(2))
        for found in re.finditer(r"^(\d+)\. \*\*([a-z ]+)\*\*", section, flags=re.MULTILINE)
    ]


def test_the_demo_tells_the_whole_story(tmp_path: Path) -> None:
    env = dict(os.environ)
    result = subprocess.run(
        [*CLI, "demo", "--events", "60", "--workdir", str(tmp_path / "demo")],
        capture_output=True,
        text=True,
        timeout=180,
        env=env,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    story = result.stdout
    for expected in (
        "registered insurer",
        "submitted 60 events",
        "duplicate=True",
        "ALREADY_EXISTS",
        "UNAUTHENTICATED",
        "consistency proof",
        # Task A (issue 10): the permit step adds the authority's key and its PermitIssued.
        "full audit by the offline verifier: 67 entries",
        "key history learned from the log alone: 4 keys",
        "(domestic_worker): NO_COVERAGE 90 days",
        "fines 200000 SAR minor units (schedule sa-2025-illustrative, MARKET average",
        "5. renewal: Kuwait's portal quotes",
        "paid through the simulated gateway: RECORDED",
        "same payment True, charged once (True)",
        "REFUSED; not insured through the new permit's end",
        "the family: RENEWABLE",
        "the family and its maid: BLOCKED",
        "blocks it:",
        "(domestic_worker): no policy covers",
        "portal/KW asking about the same Saudi household: refused, PERMISSION_DENIED",
        "verdict",
        "cosigned checkpoint",
        "verified with a 1-of-1 witness policy",
        "exit code 0",
        # Task F (issue 11): the insured acts for themselves; the contribution settled via CMI.
        "traded it for a client certificate",
        "the fund accepted",
        "spouse from",
        "settled MAD 840.00 through the CMI sandbox's hosted page: RECORDED",
        "owes MAD 0.00",
    ):
        assert expected in story, expected
    # Before settling, the insured owes the statutory floor (MAD 70 a month, ma-2005-08-18) from
    # the policy's start, 1 January, through the end of the demo's month: the amount depends on
    # the day the demo runs (it read "owes MAD 840.00" only in December), so it is checked
    # against the month the line itself names. Settling pays the whole year: 12 x 70 = 840.
    owed = re.search(
        r"^ +contribution status: paid through never; owes MAD (\d+)\.00 through "
        r"(\d{4})-(\d{2})-(\d{2}) \(ma-2005-08-18\)$",
        story,
        flags=re.MULTILINE,
    )
    assert owed, story
    through = dt.date(int(owed[2]), int(owed[3]), int(owed[4]))
    assert (through + dt.timedelta(days=1)).day == 1, "owed through the end of a month"
    assert int(owed[1]) == 70 * through.month
    assert f"under CNOPS-DEMO-1 for {through.year}" in story
    # README's "What `make run` shows" lists the demo's steps: same numbers, same titles.
    assert readme_demo_steps() == demo_steps(story)
    assert [number for number, _ in demo_steps(story)] == list(range(1, 10))
    # The projections the demo built agree with its log; tampering with them is reported.
    database = sqlite_url(tmp_path / "demo" / "ledger.db")
    rebuilt = run("rebuild", "--database", database)
    assert "projections match the log" in rebuilt.stdout
    import sqlite3

    with sqlite3.connect(tmp_path / "demo" / "ledger.db") as connection:
        connection.execute("UPDATE policies SET plan = 'VIP' WHERE policy_id = 'POL-00000003'")
    tampered = run("rebuild", "--database", database, "--json", check=False)
    assert tampered.returncode == 1
    report = json.loads(tampered.stdout)
    assert report["consistent"] is False
    assert [d["table"] for d in report["divergences"]] == ["policies"]
    assert "plan (stored 'VIP'" in report["divergences"][0]["description"]


@pytest.mark.parametrize("args", [["keygen"], ["serve", "--batch-entries", "0"], ["nope"]])
def test_bad_command_lines_are_refused(args: list[str], tmp_path: Path) -> None:
    result = run(*args, check=False)
    assert result.returncode != 0
