"""Every command fails clearly (issue 15, item 8): the documented exit code and one line, never
a traceback, for a bad flag (2), an unreachable server (3) and a wrong credential (3); the log key
flags hint at a mix-up; ``serve`` refuses a port or a SQLite file already in use.

Exit codes (docs/operations.md): 0 ok, 1 verdict failed or not renewable, 2 usage, 3 unreachable
or refused by the server.
"""

from __future__ import annotations

import contextlib
import io
import json
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from ledger.signing import Ed25519Signer, format_signer_key, format_verifier_key
from ledger.storage.db import sqlite_url
from policy_ledger.cli import EXIT_SERVER, EXIT_USAGE, main
from tests.conftest import OPERATOR_SIGNER, ServerHandle, session_pki
from tests.durability.processes import start_server_process

PERSON = "SA:RESIDENCE_ID:2123456788"


def _cli(*argv: str) -> tuple[int, str]:
    """Run the CLI in-process: (exit code, stderr). An escaping exception fails the test."""
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            code = main(list(argv))
        except SystemExit as exit_:  # argparse's usage errors
            code = int(exit_.code or 0)
    return code, err.getvalue()


@pytest.fixture
def files(tmp_path: Path) -> dict[str, str]:
    log = Ed25519Signer.generate("test.policy-ledger/log")
    insurer = Ed25519Signer.generate("gulf-health")
    paths = {
        "pub": tmp_path / "log.key.pub",
        "private": tmp_path / "log.key",
        "insurer": tmp_path / "insurer.key",
        "events": tmp_path / "events.json",
        "request": tmp_path / "request.json",
        "state": tmp_path / "state.json",
        "token": tmp_path / "admin.token",
    }
    paths["pub"].write_text(format_verifier_key(log) + "\n")
    paths["private"].write_text(format_signer_key(log) + "\n")
    paths["insurer"].write_text(format_signer_key(insurer) + "\n")
    paths["events"].write_text(json.dumps({"eventId": "e-1", "insurerId": "gulf-health"}))
    paths["request"].write_text("{}")
    paths["token"].write_text("not-the-token\n")
    return {name: str(path) for name, path in paths.items()} | {"dir": str(tmp_path)}


def _client_commands(
    server: str, files: dict[str, str], *, credentials: bool = True
) -> dict[str, list[str]]:
    """One working command line per client command, against ``server``."""
    verifier = ["--log-verifier", f"@{files['pub']}"]

    def who(role: str, name: str) -> list[str]:
        return session_pki().cli_arguments(role, name) if credentials else []

    return {
        "audit verify": ["audit", "verify", "--server", server, *who("operator", "operator"),
                         *verifier],
        "audit watch": ["audit", "watch", "--server", server, *who("auditor", "auditor"),
                        *verifier, "--state", files["state"], "--iterations", "1"],
        "insurer submit": ["insurer", "submit", "--server", server,
                           *who("insurer", "gulf-health"), *verifier,
                           "--key", files["insurer"], files["events"]],
        "coverage check": ["coverage", "check", "--server", server, *who("portal", "SA"),
                           *verifier, "--sponsor", PERSON, "--through", "2026-12-31"],
        "renew": ["renew", "--server", server, *who("portal", "KW"), *verifier,
                  "--request", files["request"]],
        "certificate get": ["certificate", "get", "--server", server,
                            *who("operator", "operator"), "--person", PERSON,
                            "--date", "2026-11-23", "--out", f"{files['dir']}/card.json"],
        "proof export": ["proof", "export", "--server", server, *who("auditor", "auditor"),
                         "--leaf-index", "0", "--out", f"{files['dir']}/leaf.tlog-proof"],
    }  # fmt: skip


@pytest.fixture
def unreachable() -> Iterator[str]:
    """An address nothing listens on (the port is held, unbound to any listener)."""
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        yield f"127.0.0.1:{held.getsockname()[1]}"


COMMANDS = list(_client_commands("x", {k: "x" for k in ("pub", "token", "state", "insurer",
                                                        "events", "request", "dir")},
                                  credentials=False))  # fmt: skip


@pytest.mark.parametrize("command", COMMANDS)
def test_an_unreachable_server_exits_3_without_a_traceback(
    command: str, files: dict[str, str], unreachable: str
) -> None:
    code, err = _cli(*_client_commands(unreachable, files)[command])
    assert code == EXIT_SERVER, err
    assert err.startswith("error:") and "Traceback" not in err


@pytest.mark.parametrize("command", COMMANDS)
def test_a_bad_flag_exits_2_without_a_traceback(
    command: str, files: dict[str, str], unreachable: str
) -> None:
    code, err = _cli(*_client_commands(unreachable, files)[command], "--no-such-flag")
    assert code == EXIT_USAGE and "unrecognized arguments: --no-such-flag" in err


def test_a_wrong_credential_exits_3_without_a_traceback(
    server: ServerHandle, files: dict[str, str]
) -> None:
    Path(files["pub"]).write_text(server.log_verifier_key + "\n")
    commands = _client_commands(server.address, files)
    # A portal asking for another jurisdiction's household (the log itself is open to any
    # authenticated caller: docs/privacy.md), and an insurer key the server never registered.
    wrong_role = [*commands["coverage check"]]
    at = wrong_role.index("--as")
    wrong_role[at - 2 : at + 2] = session_pki().cli_arguments("portal", "KW")
    for command, arguments in (("coverage check", wrong_role), ("insurer submit", None)):
        code, err = _cli(*(arguments or commands[command]))
        assert code == EXIT_SERVER, (command, err)
        assert "Traceback" not in err


@pytest.mark.parametrize(
    ("argv", "hint"),
    [
        (["serve", "--log-verifier", "x+00000000+AA=="], "needs the log's private signer key"),
        (["serve", "--log-key", "var/log.key"], "--log-key was split in two"),
        (["audit", "verify", "--database", "sqlite+pysqlite:///x.db", "--log-key-file", "k"],
         "pass the public key as --log-verifier"),
        (["audit", "watch", "--server", "h:1", "--state", "s", "--log-key", "@k.pub"],
         "--log-key was split in two"),
    ],
)  # fmt: skip
def test_a_log_key_flag_given_for_the_other_gets_a_hint(argv: list[str], hint: str) -> None:
    code, err = _cli(*argv)
    assert code == EXIT_USAGE and hint in err


def test_a_private_key_given_as_the_verifier_or_a_public_one_as_the_key_file_gets_a_hint(
    files: dict[str, str],
) -> None:
    code, err = _cli(
        "audit", "verify", "--database", sqlite_url(files["dir"] + "/x.db"),
        "--log-verifier", f"@{files['private']}",
    )  # fmt: skip
    assert code == EXIT_USAGE and "PRIVATE signer key" in err
    code, err = _cli(
        "serve",
        "--log-key-file",
        files["pub"],
        "--insecure-plaintext",
        "--database",
        sqlite_url(files["dir"] + "/y.db"),
    )
    assert code == EXIT_USAGE and "public verifier key" in err


def test_audit_verify_takes_a_database_url_and_hints_at_a_path(files: dict[str, str]) -> None:
    code, err = _cli("audit", "verify", "--database", "var/ledger.db", "--log-verifier",
                     f"@{files['pub']}")  # fmt: skip
    assert code == EXIT_USAGE and "sqlite+pysqlite:///var/ledger.db" in err


def test_the_old_person_order_gets_a_hint_and_a_bad_check_digit_is_refused(
    unreachable: str, files: dict[str, str]
) -> None:
    base = ["coverage", "check", "--server", unreachable, "--log-verifier", f"@{files['pub']}",
            "--through", "2026-12-31"]  # fmt: skip
    code, err = _cli(*base, "--sponsor", "RESIDENCE_ID:SA:2123456788")
    assert code == EXIT_USAGE and "SA:RESIDENCE_ID:2123456788" in err
    code, err = _cli(*base, "--sponsor", "SA:RESIDENCE_ID:2123456785")
    assert code == EXIT_USAGE and "check digit" in err


def _serve(database_url: str, key_file: str, listen: str) -> subprocess.CompletedProcess[str]:
    """A second `serve` that must refuse to start (so it returns)."""
    command = [sys.executable, "-m", "policy_ledger.cli", "serve", "--database", database_url,
               "--listen", listen, "--log-key-file", key_file, "--insecure-plaintext",
               "--operator-verifier", format_verifier_key(OPERATOR_SIGNER)]  # fmt: skip
    return subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)


def test_serve_refuses_a_port_or_a_sqlite_file_already_served(files: dict[str, str]) -> None:
    first_database = sqlite_url(files["dir"] + "/first.db")
    first = start_server_process(first_database, Path(files["private"]), Path(files["dir"]))
    try:
        same_port = _serve(sqlite_url(files["dir"] + "/other.db"), files["private"], first.address)
        assert same_port.returncode == EXIT_USAGE, same_port.stderr
        assert "in use" in same_port.stderr and "Traceback" not in same_port.stderr
        same_file = _serve(first_database, files["private"], "127.0.0.1:0")
        assert same_file.returncode == EXIT_USAGE, same_file.stderr
        assert "already served by another server" in same_file.stderr
        assert "Traceback" not in same_file.stderr
    finally:
        first.stop()


@pytest.mark.parametrize(
    "argv",
    [["admin", "insurer", "list"], ["rebuild"], ["db", "upgrade"]],
    ids=["admin", "rebuild", "db-upgrade"],
)
def test_an_unreachable_database_exits_3_with_one_line(argv: list[str]) -> None:
    code, err = _cli(*argv, "--database", "postgresql+psycopg://postgres@127.0.0.1:1/none")
    assert code == EXIT_SERVER and err.startswith("error: the database is unreachable")
    assert err.count("\n") == 1 and "Traceback" not in err


def test_renew_against_a_server_without_payments_says_how_to_enable_them(
    server: ServerHandle, files: dict[str, str]
) -> None:
    Path(files["pub"]).write_text(server.log_verifier_key + "\n")
    code, err = _cli(*_client_commands(server.address, files)["renew"])
    assert code == EXIT_SERVER and "POLICY_LEDGER_PAYMENTS_AUTHORITY_KEY" in err, err
