"""The example events in examples/ (issue 15, item 7): one file per event type, each submitted
through the CLI (`policy-ledger insurer submit`) to a real server with the signer its type needs,
and accepted once the state it needs exists; before that, refused with the reason the test names,
writing nothing."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from google.protobuf import json_format
from sqlalchemy import create_engine, func, select

from ledger.clock import SystemClock
from ledger.events import civil_date
from ledger.signing import Ed25519Signer, format_signer_key
from ledger.storage.tables import log_entries
from ledger.storage.vault_store import person_identities
from ledger.v1 import events_pb2
from tests.conftest import OPERATOR_SIGNER, ServerHandle, start_server_thread
from tests.dated import moved_json, years_to_fit

CLI = [sys.executable, "-m", "policy_ledger.cli"]
EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


@pytest.fixture
def server(database_url: str, log_signer: Ed25519Signer, tmp_path: Path) -> Iterator[ServerHandle]:
    """A running server on the machine's clock, not the tests' (tests/clock.py): the CLI
    processes these tests run register keys valid from the machine's now, and the server must
    not be behind them. The examples' dates do not depend on the day."""
    handle = start_server_thread(database_url, log_signer, tmp_path, clock=SystemClock())
    yield handle
    handle.stop()


def run(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*CLI, *args], capture_output=True, text=True, check=check, timeout=120)


def _tree_size(server: ServerHandle) -> int:
    with server.running.engine.connect() as connection:
        return int(connection.execute(select(func.count()).select_from(log_entries)).scalar_one())


def _file_of(body: str) -> Path:
    return EXAMPLES / f"{body.replace('_', '-')}.json"


def test_every_event_type_has_one_example_whose_body_is_that_type() -> None:
    bodies = [field.name for field in events_pb2.Event.DESCRIPTOR.oneofs_by_name["body"].fields]
    for body in bodies:
        document = json.loads(_file_of(body).read_text(encoding="utf-8"))
        event = events_pb2.Event()
        json_format.ParseDict(document, event)
        assert event.WhichOneof("body") == body
    listed = sorted(path.name for path in EXAMPLES.glob("*.json"))
    assert listed == sorted(_file_of(body).name for body in bodies)
    readme = (EXAMPLES / "README.md").read_text(encoding="utf-8")
    assert all(_file_of(body).name in readme for body in bodies)


class _Operator:
    """The CLI as the server's operator, with the test's operator key in a file."""

    def __init__(self, server: ServerHandle, tmp_path: Path) -> None:
        self.server = server
        self.key = tmp_path / "operator.key"
        self.key.write_text(format_signer_key(OPERATOR_SIGNER) + "\n", encoding="utf-8")
        self.options = [
            *server.cli_arguments("operator", "operator"),
            "--operator-key",
            str(self.key),
            "--log-verifier",
            server.log_verifier_key,
        ]

    def add_key(self, principal: str, key_file: Path, *extra: str) -> str:
        return run(
            "admin", "insurer", "add-key", "--insurer", principal,
            "--verifier-key-file", f"{key_file}.pub", *extra, *self.options,
        ).stdout  # fmt: skip

    def submit(
        self, role: str, name: str, key: Path, *files: str
    ) -> subprocess.CompletedProcess[str]:
        return run(
            "insurer", "submit", *self.server.cli_arguments(role, name),
            "--log-verifier", self.server.log_verifier_key, "--key", str(key),
            *(str(EXAMPLES / file) for file in files), check=False,
        )  # fmt: skip


INSURER_EXAMPLES_FIT_THROUGH = dt.date(2027, 5, 31)
"""The last ledger date the insurer examples fit as written: policy-cancelled.json's transfer
takes effect on 2027-07-01 with at least 30 days' notice after insurer-change-notified.json is
sequenced, and card-issued.json's card must not be expired when it is issued (2027-06-30)."""


def _insurer_examples_dated_for(today: dt.date, files: list[str], folder: Path) -> list[str]:
    """The insurer examples as written while they fit ``today`` (the server's day); after that,
    copies in ``folder`` with their dates moved by whole years (tests/dated.py)."""
    years = years_to_fit(today, INSURER_EXAMPLES_FIT_THROUGH)
    if years == 0:
        return files
    copies = []
    for file in files:
        copy = folder / file
        document = json.loads((EXAMPLES / file).read_text(encoding="utf-8"))
        copy.write_text(json.dumps(moved_json(document, years)), encoding="utf-8")
        copies.append(str(copy))
    return copies


def test_insurer_examples_are_refused_until_the_insurer_is_licensed_then_accepted(
    server: ServerHandle, tmp_path: Path
) -> None:
    operator = _Operator(server, tmp_path)
    acme_key = tmp_path / "acme.key"
    run("keygen", "--name", "acme-health", "--out", str(acme_key))
    operator.add_key("acme-health", acme_key)
    size = _tree_size(server)
    files = ["policy-issued.json", "premium-paid.json", "member-added.json"]
    files += ["member-removed.json", "insurer-change-notified.json", "policy-cancelled.json"]
    files += ["card-issued.json", "card-replaced.json", "card-revoked.json"]
    dated = tmp_path / "examples"
    dated.mkdir()
    files = _insurer_examples_dated_for(SystemClock().now().date(), files, dated)
    refused = operator.submit("insurer", "acme-health", acme_key, files[0])
    assert refused.returncode == 3, refused
    assert "REFUSED" in refused.stdout and "INSURER_NOT_LICENSED" in refused.stdout
    assert _tree_size(server) == size  # nothing written
    licensed = run(
        "admin", "insurer", "license", "--insurer", "acme-health", "--name", "Acme Health",
        "--licence-number", "CCHI-0007", "--effective", "2026-01-01", *operator.options,
    ).stdout  # fmt: skip
    assert f"InsurerLicensed at leaf {size}" in licensed
    accepted = operator.submit("insurer", "acme-health", acme_key, *files)
    assert accepted.returncode == 0, accepted
    assert "9 accepted, 0 refused" in accepted.stdout
    assert _tree_size(server) == size + 1 + 9
    # policy-issued.json's "@2019-08-21" went to the vault with the token, not into the entry.
    # (A fresh engine: the server's pooled connections may read an older snapshot.)
    engine = create_engine(server.running.engine.url)
    try:
        with engine.connect() as connection:
            born = connection.execute(
                select(person_identities.c.birth_date).where(
                    person_identities.c.value == "2000000030"
                )
            ).scalar_one()
            leaves = b"".join(connection.execute(select(log_entries.c.entry_bytes)).scalars())
    finally:
        engine.dispose()
    assert born == dt.date(2019, 8, 21)
    assert civil_date(born).SerializeToString() not in leaves and b"2019-08-21" not in leaves


def test_license_refuses_a_bad_date_before_anything_is_written(
    server: ServerHandle, tmp_path: Path
) -> None:
    operator = _Operator(server, tmp_path)
    size = _tree_size(server)
    bad = run(
        "admin", "insurer", "license", "--insurer", "acme-health", "--name", "Acme Health",
        "--licence-number", "CCHI-0007", "--effective", "2026-13-01", *operator.options,
        check=False,
    )  # fmt: skip
    assert bad.returncode == 2 and "--effective" in bad.stderr
    assert _tree_size(server) == size


def test_operator_examples_are_accepted_from_the_operator(
    server: ServerHandle, tmp_path: Path
) -> None:
    operator = _Operator(server, tmp_path)
    files = ["key-registered.json", "insurer-licensed.json"]
    files += ["insurer-suspended.json", "key-revoked.json", "person-erased.json"]
    size = _tree_size(server)
    accepted = operator.submit("operator", "operator", operator.key, *files)
    assert accepted.returncode == 0, accepted
    assert "5 accepted, 0 refused" in accepted.stdout
    assert _tree_size(server) == size + 5


def test_authority_examples_are_refused_without_the_authority_key_then_accepted(
    server: ServerHandle, tmp_path: Path
) -> None:
    operator = _Operator(server, tmp_path)
    authority_key = tmp_path / "kw-authority.key"
    run("keygen", "--name", "kw-authority", "--out", str(authority_key))
    size = _tree_size(server)
    files = ["fee-collected.json", "fee-refunded.json"]
    refused = operator.submit("authority", "kw-authority", authority_key, *files)
    assert refused.returncode == 3 and "0 accepted, 2 refused" in refused.stdout, refused
    assert _tree_size(server) == size  # an unregistered key writes nothing
    operator.add_key("kw-authority", authority_key, "--role", "authority", "--jurisdiction", "KW")
    accepted = operator.submit("authority", "kw-authority", authority_key, *files)
    assert accepted.returncode == 0, accepted
    assert "2 accepted, 0 refused" in accepted.stdout
    assert _tree_size(server) == size + 1 + 2


def test_permit_examples_are_refused_without_the_authority_key_then_accepted(
    server: ServerHandle, tmp_path: Path
) -> None:
    """Task A (issue 10): the residence authority's permit events."""
    operator = _Operator(server, tmp_path)
    authority_key = tmp_path / "sa-residence.key"
    run("keygen", "--name", "sa-residence", "--out", str(authority_key))
    size = _tree_size(server)
    files = ["permit-issued.json", "permit-renewed.json", "permit-ended.json"]
    refused = operator.submit("authority", "sa-residence", authority_key, *files)
    assert refused.returncode == 3 and "0 accepted, 3 refused" in refused.stdout, refused
    assert _tree_size(server) == size  # an unregistered key writes nothing
    operator.add_key("sa-residence", authority_key, "--role", "authority")
    accepted = operator.submit("authority", "sa-residence", authority_key, *files)
    assert accepted.returncode == 0, accepted
    assert "3 accepted, 0 refused" in accepted.stdout
    assert _tree_size(server) == size + 1 + 3


def test_regulator_examples_are_refused_without_the_regulator_key_then_accepted(
    server: ServerHandle, tmp_path: Path
) -> None:
    """Penalty decisions (task B): the regulator `cchi` submits its decision and what followed,
    and `compliance decision get` shows it, verified."""
    operator = _Operator(server, tmp_path)
    regulator_key = tmp_path / "cchi.key"
    run("keygen", "--name", "cchi", "--out", str(regulator_key))
    size = _tree_size(server)
    files = ["penalty-assessed.json", "objection-filed.json", "objection-rejected.json"]
    files += ["penalty-paid.json"]
    refused = operator.submit("regulator", "cchi", regulator_key, *files)
    assert refused.returncode == 3 and "0 accepted, 4 refused" in refused.stdout, refused
    assert _tree_size(server) == size  # an unregistered key writes nothing
    operator.add_key("cchi", regulator_key, "--role", "regulator")
    accepted = operator.submit("regulator", "cchi", regulator_key, *files)
    assert accepted.returncode == 0, accepted
    assert "4 accepted, 0 refused" in accepted.stdout
    assert _tree_size(server) == size + 1 + 4
    shown = run(
        "compliance", "decision", "get", "--decision", "CCHI-2026-0001",
        *server.cli_arguments("auditor", "auditor"), "--log-verifier", server.log_verifier_key,
    )  # fmt: skip
    assert "CCHI-2026-0001: ASSESSED" in shown.stdout
    assert "paid 100000 SAR minor units, due 220000 SAR minor units" in shown.stdout
    assert "objection: by" in shown.stdout and "grievance: by" in shown.stdout
    withdrawn = operator.submit("regulator", "cchi", regulator_key, "penalty-withdrawn.json")
    assert withdrawn.returncode == 0, withdrawn
    listed = run(
        "compliance", "decision", "list", "--establishment", "7001234567",
        *server.cli_arguments("regulator", "cchi"), "--log-verifier", server.log_verifier_key,
    )  # fmt: skip
    assert "CCHI-2026-0001: WITHDRAWN" in listed.stdout and "due 0 SAR" in listed.stdout


def test_funder_examples_are_refused_without_the_funder_key_then_accepted(
    server: ServerHandle, tmp_path: Path
) -> None:
    """Task D (issue 11): the Zakat chamber's cohort, contribution and end (docs/funds.md)."""
    operator = _Operator(server, tmp_path)
    funder_key = tmp_path / "zakat-chamber.key"
    run("keygen", "--name", "zakat-chamber", "--out", str(funder_key))
    size = _tree_size(server)
    files = ["cohort-enrolled.json", "contribution-paid.json", "cohort-ended.json"]
    refused = operator.submit("funder", "zakat-chamber", funder_key, *files)
    assert refused.returncode == 3 and "0 accepted, 3 refused" in refused.stdout, refused
    assert _tree_size(server) == size  # an unregistered key writes nothing
    operator.add_key("zakat-chamber", funder_key, "--role", "funder")
    accepted = operator.submit("funder", "zakat-chamber", funder_key, *files)
    assert accepted.returncode == 0, accepted
    assert "3 accepted, 0 refused" in accepted.stdout
    assert _tree_size(server) == size + 1 + 3
