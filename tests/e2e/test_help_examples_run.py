"""The examples in every ``--help`` run as printed (issue 15, item 8) against a real server and
database this test sets up, in a folder holding the files the examples read.

Only the placeholders the top-level help documents (its "Placeholders:" section) are replaced:
the server's address and enrolment port (the test picks free ports), the enrolment code, a key id,
the log's verifier key and the PostgreSQL URL. Each example must exit as the help documents (0;
`coverage check` 0 for a renewable household). Commands that run until stopped (`serve`,
`witness serve`, `audit watch`) must start, say they serve or print their first verdict, and stop
cleanly on SIGTERM.

The examples and the files they read are dated for 2026-27; from the day after
``HELP_EXAMPLES_FIT_THROUGH`` the test runs them with their dates moved forward by whole years
(tests/dated.py): the only change besides the placeholders.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import shlex
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from ledger.clock import SystemClock
from policy_ledger.cli import _parser
from tests.dated import moved_json, moved_text, years_to_fit
from tests.e2e.test_help_examples import EXAMPLES
from tests.ports import free_ports

HELP_EXAMPLES_FIT_THROUGH = dt.date(2027, 6, 30)
"""The last day the examples hold as written (`coverage check ... --through 2027-06-30`; a
"through" date before today is refused). They hold from 2026-07-01 (both ends were run under
libfaketime, tests/README.md), a whole year, so a move by whole years always fits."""
YEARS = years_to_fit(SystemClock().now().date(), HELP_EXAMPLES_FIT_THROUGH)
EXAMPLE_SECONDS_MAX = 120.0
"""A bound against a hang, not a speed check."""
EXAMPLES_FOLDER = Path(__file__).parents[2] / "examples"
PROGRAM = str(Path(sys.executable).with_name("policy-ledger"))
LONG_RUNNING = (
    "policy-ledger serve ",
    "policy-ledger witness serve ",
    "policy-ledger audit watch ",
)


def placeholders(help_text: str) -> list[str]:
    """The placeholders the help documents: the quoted words of its "Placeholders:" section."""
    section = help_text.split("Placeholders:", 1)
    assert len(section) == 2, "the top-level help documents no placeholders"
    return re.findall(r"`([^`]+)`", section[1])


PLACEHOLDERS = placeholders(_parser().format_help())


@dataclass
class Runner:
    """Runs examples in a folder, with the documented placeholders replaced."""

    folder: Path
    values: dict[str, str] = field(default_factory=dict)
    ran: set[str] = field(default_factory=set)
    failures: list[str] = field(default_factory=list)

    def argv(self, example: str) -> list[str]:
        text = moved_text(example, YEARS)
        for placeholder, value in self.values.items():
            assert placeholder in PLACEHOLDERS, f"{placeholder} is not a documented placeholder"
            text = text.replace(placeholder, value)
        return [PROGRAM, *shlex.split(text)[1:]]

    def example(self, prefix: str) -> str:
        matches = [example for example in EXAMPLES if example.startswith(prefix)]
        assert matches, f"no help example starts with {prefix!r}"
        return matches[0]

    def run(self, prefix: str, expected: tuple[int, ...] = (0,)) -> str:
        """Run the example starting with ``prefix``; its stdout."""
        example = self.example(prefix)
        self.ran.add(example)
        done = subprocess.run(
            self.argv(example),
            cwd=self.folder,
            capture_output=True,
            text=True,
            timeout=EXAMPLE_SECONDS_MAX,
            check=False,
        )
        if done.returncode not in expected:
            output = (done.stdout + done.stderr)[-600:]
            self.failures.append(f"{example}\n  -> exit {done.returncode}: {output}")
        return done.stdout

    def start(self, prefix: str, ready: str) -> subprocess.Popen[str]:
        """Start the long-running example; return once its output shows ``ready``."""
        example = self.example(prefix)
        self.ran.add(example)
        process = subprocess.Popen(
            self.argv(example),
            cwd=self.folder,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        assert process.stdout is not None
        seen = []
        for line in process.stdout:
            seen.append(line)
            if ready in line:
                return process
            if "Traceback" in line or line.startswith("error:"):
                break
        process.kill()
        process.wait()
        self.failures.append(f"{example}\n  -> exit {process.returncode}: {''.join(seen)[-600:]}")
        return process

    def stop(self, process: subprocess.Popen[str]) -> None:
        """SIGTERM: the command stops cleanly (exit 0)."""
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=EXAMPLE_SECONDS_MAX)
        if process.returncode != 0:
            self.failures.append(f"{process.args!r}\n  -> exit {process.returncode} on SIGTERM")


def _setup(folder: Path, *arguments: str) -> None:
    """A command the examples need run first (not an example itself)."""
    done = subprocess.run(
        [PROGRAM, *arguments], cwd=folder, capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, f"{arguments}: {done.stderr}"


def _events(count: int) -> list[dict[str, object]]:
    """What `insurer submit events.json` reads: policies for the people the other examples
    name, and premiums enough that the log reaches the leaf `proof export` asks for."""

    def person(value: str) -> str:
        return f"id:SA:RESIDENCE_ID:{value}"

    policy = {
        "eventId": "acme-help-1",
        "insurerId": "acme-health",
        "policyIssued": {
            "policyId": "ACME-HELP-1",
            "sponsorToken": person("2000000006"),
            "holder": {"personToken": person("2000000006")},
            "members": [
                {"personToken": person("2000000006"), "relationship": "RELATIONSHIP_SELF"},
                {"personToken": person("2000000014"), "relationship": "RELATIONSHIP_SPOUSE"},
                {"personToken": person("2123456788"), "relationship": "RELATIONSHIP_CHILD"},
                {"personToken": person("2000000048"), "relationship": "RELATIONSHIP_CHILD"},
            ],
            "startDate": {"year": 2026, "month": 1, "day": 1},
            "endDate": {"year": 2027, "month": 12, "day": 31},
            "plan": "CCHI-BASIC",
            "annualPremium": {"currencyCode": "SAR", "amountMinor": "450000"},
        },
    }
    premium = json.loads((Path(__file__).parents[2] / "examples/premium-paid.json").read_text())
    premiums = []
    for number in range(count):
        event = json.loads(json.dumps(premium))
        event["eventId"] = f"acme-help-premium-{number}"
        event["insurerId"] = "acme-health"
        event["premiumPaid"]["policyId"] = "ACME-HELP-1"
        event["premiumPaid"]["payer"]["party"]["personToken"] = person("2000000006")
        premiums.append(event)
    insured = "id:MA:NATIONAL_ID:BE123456"  # task F: the fund's policy of a Moroccan insured
    moroccan = {
        "eventId": "acme-help-ma",
        "insurerId": "acme-health",
        "policyIssued": {
            "policyId": "ACME-HELP-MA",
            "sponsorToken": insured,
            "holder": {"personToken": insured},
            "members": [{"personToken": insured, "relationship": "RELATIONSHIP_SELF"}],
            "startDate": {"year": 2026, "month": 1, "day": 1},
            "endDate": {"year": 2027, "month": 12, "day": 31},
            "plan": "CNOPS-AMO",
            "annualPremium": {"currencyCode": "MAD", "amountMinor": "84000"},
        },
    }
    return [policy, moroccan, *premiums]


@pytest.fixture
def runner(tmp_path: Path) -> Iterator[Runner]:
    yield Runner(tmp_path)


# About 45 commands run one after another, each a new Python process: about 100 s on an idle
# machine, past pytest's default 300 s bound when the machine is loaded (an e2e stress loop
# failed so at a load average of 9 on 2 cores). Each command keeps its own bound
# (EXAMPLE_SECONDS_MAX); this one only guards against a hang of the whole sequence.
@pytest.mark.timeout(45 * EXAMPLE_SECONDS_MAX)
def test_every_help_example_runs_as_printed(
    runner: Runner, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = runner.folder
    grpc_port, enrol_port, metrics_port = free_ports(3)  # three different ports
    runner.values = {
        "127.0.0.1:50051": f"127.0.0.1:{grpc_port}",
        "127.0.0.1:50052": f"127.0.0.1:{enrol_port}",
        "127.0.0.1:8380": f"127.0.0.1:{metrics_port}",
        "postgresql+psycopg://ledger@db/ledger": "sqlite+pysqlite:///var/upgraded.db",
    }
    # Keys and certificates.
    runner.run("policy-ledger keygen --name policy-ledger.example/log")
    runner.run("policy-ledger pki init")
    runner.run("policy-ledger pki issue")
    runner.run("policy-ledger witness keygen")
    for name, out in (
        ("operator", "var/operator.key"),
        ("acme-health", "var/acme.key"),  # `enrol` registers it
        ("acme-health", "acme.key"),  # `admin insurer add-key ... acme.key.pub`
        ("acme-health", "acme2.key"),  # `admin insurer add-key ... acme.pub`
        ("gov-health", "var/authority.key"),  # the payments extension's authority
    ):
        _setup(folder, "keygen", "--name", name, "--out", out)
    (folder / "acme.pub").write_text((folder / "acme2.key.pub").read_text())
    family = json.loads((EXAMPLES_FOLDER / "requests/renewal-kw-family.json").read_text())
    (folder / "family.json").write_text(json.dumps(moved_json(family, YEARS)))
    verifier = (folder / "var/log.key.pub").read_text().strip()
    for name in ("log.pub", "log.key.pub"):
        (folder / name).write_text(verifier + "\n")
    (folder / "events.json").write_text(json.dumps(moved_json(_events(45), YEARS)))
    runner.values["policy-ledger.example/log+1234abcd+AQ..."] = verifier

    # The payments extension, configured as docs/payments.md says (environment).
    monkeypatch.setenv("POLICY_LEDGER_PAYMENTS_AUTHORITY_KEY", str(folder / "var/authority.key"))
    monkeypatch.setenv("POLICY_LEDGER_PAYMENTS_AUTHORITY_ID", "gov-health")
    server = runner.start("policy-ledger serve --database", "policy-ledger serving on port")
    try:
        _setup(
            folder,
            *("admin", "insurer", "add-key", "--insurer", "gov-health", "--role", "authority"),
            *("--jurisdiction", "KW", "--verifier-key-file", "var/authority.key.pub"),
            *("--server", runner.values["127.0.0.1:50051"], "--credentials", "var/pki"),
            *("--as", "operator-operator", "--operator-key", "var/operator.key"),
            *("--log-verifier", "@var/log.key.pub"),
        )
        runner.run("policy-ledger health")
        runner.run(
            "policy-ledger admin insurer add-key --insurer acme-health "
            "--verifier-key-file acme.key.pub"
        )
        runner.run("policy-ledger admin insurer license")
        runner.run("policy-ledger admin insurer list")
        code = runner.run("policy-ledger enrol issue --role insurer").split()
        runner.values["CODE"] = code[0] if code else "CODE"
        runner.run(
            "policy-ledger enrol --server 127.0.0.1:50052 --ca var/pki/ca.pem --code CODE  "
            "--role insurer"
        )
        runner.run("policy-ledger insurer submit")  # signed with var/acme.key, enrolled
        # Task F (issue 11): a person enrols, declares, the fund decides, the person reads.
        issued = runner.run("policy-ledger enrol issue --role beneficiary").split()
        runner.values["CODE"] = issued[0] if issued else "CODE"
        runner.values["pt_abcdefghijklmnopqrstuvwxyz"] = issued[1] if len(issued) > 1 else "?"
        runner.run(
            "policy-ledger enrol --server 127.0.0.1:50052 --ca var/pki/ca.pem --code CODE  "
            "--role beneficiary"
        )
        runner.run("policy-ledger beneficiary declare")
        runner.run("policy-ledger fund decide")
        runner.run("policy-ledger beneficiary record")
        runner.run("policy-ledger beneficiary contributions")
        runner.run("policy-ledger fund issue-code")  # the fund's code for its insured
        # The operator reads the person's resolutions (two people declared), then grants more.
        runner.run("policy-ledger admin beneficiary resolutions")
        runner.run("policy-ledger admin beneficiary grant")
        runner.run("policy-ledger coverage check")
        runner.run("policy-ledger coverage employer")  # Task A (issue 10): nobody on record
        runner.run("policy-ledger compliance arrears")
        runner.run("policy-ledger compliance decision list")  # none recorded: an empty list
        runner.run("policy-ledger compliance decision get", expected=(3,))  # NOT_FOUND
        runner.run("policy-ledger coverage watch")  # task C: --once, caught up
        runner.run("policy-ledger certificate get")
        runner.run("policy-ledger certificate verify")
        runner.run("policy-ledger certificate page")
        runner.run("policy-ledger proof export")
        runner.run("policy-ledger proof verify")
        runner.run("policy-ledger audit verify --server")
        watch = runner.start("policy-ledger audit watch", "verified")
        runner.stop(watch)
        runner.run("policy-ledger fund totals")  # task D: no cohort yet, an empty answer
        runner.run("policy-ledger access list --caller")
        runner.run("policy-ledger access list --person")
        runner.run("policy-ledger renew")
        runner.run("policy-ledger erase --person")
        runner.run("policy-ledger erase --expired")
        listed = runner.run("policy-ledger admin insurer list")
        key_ids = re.findall(r"ed25519:[0-9a-f]{16}", listed)
        runner.values["ed25519:0123abcd4567ef89"] = key_ids[0] if key_ids else "?"
        runner.run("policy-ledger admin insurer revoke-key")
    finally:
        runner.stop(server)
    runner.run("policy-ledger audit verify --database")
    runner.run("policy-ledger rebuild")
    runner.run("policy-ledger payments reconcile")
    runner.run("policy-ledger db upgrade")
    witness = runner.start("policy-ledger witness serve", " on http://")
    runner.stop(witness)
    other = runner.start("policy-ledger serve --listen", "policy-ledger serving on port")
    try:
        runner.run(
            "policy-ledger admin insurer add-key --insurer acme-health --verifier-key-file acme.pub"
        )
    finally:
        runner.stop(other)
    runner.run("policy-ledger demo --events")

    assert not runner.failures, "\n".join(runner.failures)
    assert runner.ran == set(EXAMPLES) - {"policy-ledger demo"}, set(EXAMPLES) - runner.ran
    assert os.path.isdir(folder / "var")
