"""README's "Run a server of your own" works verbatim (issue 15, item 7): the fenced block after
the ``operator-path`` marker is extracted from README.md, not retyped, and run with ``bash -e``
in a fresh directory laid out like a clone (``.venv/`` and ``examples/``, no ``var/``), on a free
port. It starts a server with renewals on, licenses an insurer, submits examples, checks a
household, collects a renewal fee, audits the server and stops it; every line must succeed."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

from ledger.clock import SystemClock
from tests.conftest import ServerHandle, SessionPki
from tests.dated import moved_json, moved_text, years_to_fit
from tests.ports import free_port, free_ports

CLI = [sys.executable, "-m", "policy_ledger.cli"]
ROOT = Path(__file__).resolve().parents[2]
MARKER = "<!-- operator-path:"
README_PATH_FITS_THROUGH = dt.date(2027, 6, 30)
"""The last day the block holds as written: it checks a household from today through 2027-06-30
(a "through" date before today is refused). Its first day is 2026-07-01 (the check's span of at
most a year), so every day of a year is covered and a move by whole years always fits; both ends
were run under libfaketime (tests/README.md)."""


def operator_path_block(readme: str) -> str:
    """The lines of the ```sh block that follows the marker (the marker must be there once)."""
    assert readme.count(MARKER) == 1, "README.md must mark its operator path once"
    lines = readme[readme.index(MARKER) :].splitlines()
    assert lines[1] == "```sh", "the marker must sit right above a ```sh block"
    end = lines.index("```", 2)
    return "\n".join(lines[2:end]) + "\n"


def test_the_readme_operator_path_runs_verbatim(tmp_path: Path) -> None:
    years = years_to_fit(SystemClock().now().date(), README_PATH_FITS_THROUGH)
    block = moved_text(operator_path_block((ROOT / "README.md").read_text(encoding="utf-8")), years)
    (tmp_path / ".venv").symlink_to(ROOT / ".venv")
    shutil.copytree(ROOT / "examples", tmp_path / "examples")
    for example in (tmp_path / "examples").rglob("*.json") if years else ():
        document = json.loads(example.read_text(encoding="utf-8"))
        example.write_text(json.dumps(moved_json(document, years)), encoding="utf-8")
    environment = {k: v for k, v in os.environ.items() if not k.startswith("POLICY_LEDGER_")}
    port, enrol_port = free_ports(2)
    environment["PORT"] = str(port)
    environment["ENROL_PORT"] = str(enrol_port)
    shell = subprocess.Popen(
        ["bash", "-e", "-c", block],
        cwd=tmp_path,
        env=environment,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # its own process group: a failed run leaves no server behind
    )
    try:
        output, _ = shell.communicate(timeout=600)
    finally:
        # ProcessLookupError: the block ended and stopped its server; nothing is left.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(shell.pid, signal.SIGKILL)
    assert shell.returncode == 0, output
    assert "SERVING" in output
    assert "InsurerLicensed at leaf 2" in output
    assert "3 accepted, 0 refused" in output
    assert moved_text("RENEWABLE through 2027-06-30", years) in output
    assert "NOT RENEWABLE" not in output
    assert "KeyRegistered at leaf 3" in output  # the renewal authority's key
    assert ": RECORDED" in output and "receipt verified" in output  # the renewal's fee
    assert "verified:" in output and "root" in output  # the audit passed
    server_log = (tmp_path / "var" / "serve.log").read_text(encoding="utf-8")
    assert "stopped cleanly" in server_log


def test_health_answers_serving_from_a_running_server(server: ServerHandle) -> None:
    command = [*CLI, "health", *server.cli_arguments("auditor", "auditor"), "--wait", "30"]
    answered = subprocess.run(command, check=False, capture_output=True, text=True, timeout=120)
    assert answered.returncode == 0 and answered.stdout.strip() == "SERVING", answered


def test_health_of_a_server_that_never_answers_exits_3_without_a_traceback(
    pki: SessionPki,
) -> None:
    address = f"127.0.0.1:{free_port()}"  # nothing listens there
    command = [*CLI, "health", "--server", address, *pki.cli_arguments("auditor", "auditor")]
    for wait in ([], ["--wait", "0.5"]):
        answered = subprocess.run(
            [*command, *wait], check=False, capture_output=True, text=True, timeout=120
        )
        assert answered.returncode == 3, answered
        assert "Traceback" not in answered.stderr and "did not answer" in answered.stderr
