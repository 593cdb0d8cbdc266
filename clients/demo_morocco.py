"""The Moroccan step of ``make run`` (issue 11, items 4-5; docs/beneficiaries.md).

On a server of its own (an enrolment port, the payments extension with the CMI adapter pointing
at the local CMI sandbox, a contributions authority for MA): the fund covers an insured person;
the operator issues them a temporary code; they trade it for a permanent credential (a client
certificate and their Ed25519 key); declare a spouse and a child; the fund accepts; both are
covered; the person reads their contribution status, settles it through CMI, and reads it again.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from clients.beneficiary import BeneficiaryClient, Declared, declaration_decided
from clients.channel import ClientCredentials, Connection
from clients.enrolment import enrol, write_credentials
from clients.insurer import InsurerClient
from clients.operator import OperatorClient
from clients.renewal import RenewalClient
from clients.verify import TrustedLog
from ledger.pki import init_directory, issue_into_directory
from ledger.signers import SignerRole
from ledger.signing import (
    Ed25519Signer,
    format_signer_key,
    format_verifier_key,
    parse_signer_key,
)
from ledger.storage.db import sqlite_url
from ledger.v1 import events_pb2, types_pb2
from payments.sandbox.cmi import CmiSandbox
from payments.v1 import renewal_service_pb2 as renewal_pb2

__all__ = ["run_morocco"]

LOG_NAME = "policy-ledger.demo/morocco"
FUND_ID = "cnops"
AUTHORITY_ID = "ma-contributions"
_START_TIMEOUT_SECONDS = 120.0
R = events_pb2


def _say(text: str) -> None:
    print(text, flush=True)


def _cin(value: str) -> types_pb2.PersonId:
    return types_pb2.PersonId(
        type=types_pb2.PERSON_ID_TYPE_NATIONAL_ID, value=value, country_code="MA"
    )


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _mad(centimes: int) -> str:
    """MAD from integer centimes, without a float (2 decimals)."""
    return f"{centimes // 100}.{centimes % 100:02d}"


@contextmanager
def _server(
    workdir: Path, operator: Ed25519Signer, sandbox: CmiSandbox
) -> Iterator[tuple[int, int]]:
    """``policy-ledger serve`` with an enrolment port and CMI; yield (port, enrolment port)."""
    pki = workdir / "pki"
    (workdir / "log.key").write_text(
        format_signer_key(Ed25519Signer.generate(LOG_NAME)) + "\n", encoding="utf-8"
    )
    (workdir / "operator.key").write_text(format_signer_key(operator) + "\n", encoding="utf-8")
    gateways = workdir / "gateways.json"
    gateways.write_text(
        json.dumps({"cmi": sandbox.settings(return_url="https://portal.example/receipt")}),
        encoding="utf-8",
    )
    enrol_port, port_file = _free_port(), workdir / "port"
    command = [
        *(sys.executable, "-m", "policy_ledger.cli", "serve"),
        *("--database", sqlite_url(workdir / "ledger.db"), "--listen", "127.0.0.1:0"),
        *("--log-key-file", str(workdir / "log.key"), "--port-file", str(port_file)),
        *("--tls-cert", str(pki / "server.pem"), "--tls-key", str(pki / "server.key")),
        *("--client-ca", str(pki / "ca.pem"), "--operator-verifier", format_verifier_key(operator)),
        *("--enrol-listen", f"127.0.0.1:{enrol_port}", "--client-ca-key", str(pki / "ca.key")),
        *("--operator-key-file", str(workdir / "operator.key")),
    ]
    environment = {
        **os.environ,
        "POLICY_LEDGER_PAYMENTS_AUTHORITY_KEY": str(workdir / "authority.key"),
        "POLICY_LEDGER_PAYMENTS_AUTHORITY_ID": AUTHORITY_ID,
        "POLICY_LEDGER_PAYMENTS_GATEWAYS": str(gateways),
        "POLICY_LEDGER_PAYMENTS_NOTIFY_LISTEN": "127.0.0.1:0",
    }
    with (workdir / "server.log").open("w", encoding="utf-8") as log_file:
        process = subprocess.Popen(  # noqa: S603
            command, stdout=log_file, stderr=subprocess.STDOUT, env=environment
        )
        try:
            deadline = time.monotonic() + _START_TIMEOUT_SECONDS
            while not (port_file.exists() and port_file.read_text().strip()):
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"the Moroccan server did not start: {workdir}/server.log")
                time.sleep(0.05)
            yield int(port_file.read_text()), enrol_port
        finally:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def run_morocco(workdir: Path) -> None:
    """The Moroccan step, in ``workdir/morocco`` (printed as step 9 of the story)."""
    workdir = workdir / "morocco"
    workdir.mkdir(parents=True, exist_ok=True)
    pki = workdir / "pki"
    init_directory(pki)
    for role, name in (("operator", "operator"), ("insurer", FUND_ID), ("portal", "MA")):
        issue_into_directory(pki, role, name)
    operator_signer = Ed25519Signer.generate("operator")
    fund = Ed25519Signer.generate(FUND_ID)
    authority = Ed25519Signer.generate(AUTHORITY_ID)
    (workdir / "authority.key").write_text(format_signer_key(authority) + "\n", encoding="utf-8")
    with CmiSandbox() as sandbox, _server(workdir, operator_signer, sandbox) as (port, enrol_port):
        address = f"127.0.0.1:{port}"
        verifier = _log_verifier(workdir)
        log = TrustedLog.from_verifier_key(verifier)

        def channel_as(identity: str) -> Connection:
            return Connection(address, ClientCredentials.from_directory(pki, identity))

        valid_from = dt.datetime.now(dt.UTC).replace(microsecond=0) - dt.timedelta(days=1)
        with channel_as("operator-operator").open() as channel:
            _wait_until_ready(channel)
            operator = OperatorClient(channel, signer=operator_signer, log=log)
            operator.onboard(
                FUND_ID,
                fund.public_key,
                name="CNOPS (public-sector health insurance fund)",
                licence_number="MA-ANAM-CNOPS",
                valid_from=valid_from,
            )
            operator.onboard(
                AUTHORITY_ID,
                authority.public_key,
                name="CNOPS contributions",
                licence_number="MA-CONTRIBUTIONS",
                valid_from=valid_from,
                role=SignerRole.AUTHORITY,
                jurisdiction="MA",
            )
        today = dt.datetime.now(dt.UTC).date()
        year_start, year_end = dt.date(today.year, 1, 1), dt.date(today.year, 12, 31)
        with channel_as(f"insurer-{FUND_ID}").open() as channel:
            fund_client = InsurerClient(channel, signer=fund, log=log)
            insured, spouse, child = fund_client.tokens.tokens(
                [_cin("BE123456"), _cin("BK765432"), _cin("BJ234567")]
            )
            fund_client.submit(_fund_policy(insured, year_start, year_end))
        _say(
            f"9. morocco: fund {FUND_ID!r} covers insured CIN BE123456 ({insured}) as SELF "
            f"under CNOPS-DEMO-1 for {today.year}"
        )
        signer, credentials = _enrol_person(workdir, insured, enrol_port, pki)
        with grpc.secure_channel(address, credentials.channel_credentials()) as channel:
            person = BeneficiaryClient(channel, person_token=insured, signer=signer, log=log)
            _declare_and_decide(
                person,
                channel_as(f"insurer-{FUND_ID}"),
                fund,
                log=log,
                people=(spouse, child),
                today=today,
            )
            owed = person.contribution_status("MA")
            _say(
                f"   contribution status: paid through "
                f"{'never' if not owed.HasField('paid_through') else owed.paid_through}; owes "
                f"MAD {_mad(owed.owed.amount_minor)} through {owed.owed_through.year}-"
                f"{owed.owed_through.month:02d}-{owed.owed_through.day:02d} "
                f"({owed.schedule_version})"
            )
            with channel_as("portal-MA").open() as portal_channel:
                _settle(RenewalClient(portal_channel, log=log), sandbox, year_start, year_end)
            paid = person.contribution_status("MA")
            through = paid.paid_through
            _say(
                f"   contribution status: paid through {through.year}-{through.month:02d}-"
                f"{through.day:02d}; owes MAD {_mad(paid.owed.amount_minor)}"
            )


def _log_verifier(workdir: Path) -> str:
    signer = parse_signer_key((workdir / "log.key").read_text(encoding="utf-8").strip())
    return format_verifier_key(signer)


def _wait_until_ready(channel: grpc.Channel) -> None:
    health_pb2_grpc.HealthStub(channel).Check(
        health_pb2.HealthCheckRequest(service=""), wait_for_ready=True, timeout=20
    )


def _fund_policy(insured: str, start: dt.date, end: dt.date) -> events_pb2.Event:
    event = events_pb2.Event(event_id="cnops-demo-1", insurer_id=FUND_ID)
    event.occurred_at.FromDatetime(dt.datetime.now(dt.UTC))
    body = event.policy_issued
    body.policy_id = "CNOPS-DEMO-1"
    body.sponsor_token = insured
    body.holder.person_token = insured
    body.members.add(person_token=insured, relationship=R.RELATIONSHIP_SELF)
    body.start_date.CopyFrom(types_pb2.CivilDate(year=start.year, month=start.month, day=start.day))
    body.end_date.CopyFrom(types_pb2.CivilDate(year=end.year, month=end.month, day=end.day))
    body.plan = "CNOPS-AMO"
    body.annual_premium.CopyFrom(types_pb2.Money(currency_code="MAD", amount_minor=84_000))
    return event


def _enrol_person(
    workdir: Path, insured: str, enrol_port: int, pki: Path
) -> tuple[Ed25519Signer, ClientCredentials]:
    """The operator's `enrol issue --person` (a temporary code, out of band), then the
    person's `enrol`: their permanent credential."""
    issued = subprocess.run(  # noqa: S603
        [
            *(sys.executable, "-m", "policy_ledger.cli", "enrol", "issue", "--role", "beneficiary"),
            *("--person", "MA:NATIONAL_ID:BE123456", "--ttl", "1h"),
            *("--database", sqlite_url(workdir / "ledger.db")),
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    code, token = issued[0], issued[1]
    _say(f"   operator: a temporary code for {token}, delivered out of band (`enrol issue`)")
    signer = Ed25519Signer.generate(insured)
    ca = (pki / "ca.pem").read_bytes()
    with grpc.secure_channel(
        f"127.0.0.1:{enrol_port}", grpc.ssl_channel_credentials(root_certificates=ca)
    ) as channel:
        enrolled = enrol(channel, code=code, role="beneficiary", name=token, signing_key=signer)
    write_credentials(workdir / "me", "beneficiary", token, enrolled, ca)
    receipt = enrolled.key_registered_receipt
    _say(
        f"   the insured traded it for a client certificate (spiffe://.../beneficiary/{token}) "
        f"and their Ed25519 key, registered at leaf {receipt.leaf_index if receipt else '-'}"
    )
    return signer, ClientCredentials(ca, enrolled.certificate_pem, enrolled.key_pem)


def _declare_and_decide(
    person: BeneficiaryClient,
    fund_connection: Connection,
    fund: Ed25519Signer,
    *,
    log: TrustedLog,
    people: tuple[str, str],
    today: dt.date,
) -> None:
    spouse, child = people
    marriage = ((R.DOCUMENT_KIND_MARRIAGE_CERTIFICATE, "DOC-1"),)
    birth = ((R.DOCUMENT_KIND_BIRTH_CERTIFICATE, "DOC-2"),)
    declared = person.declare(
        "CNOPS-DECL-1",
        (FUND_ID, "CNOPS-DEMO-1"),
        [
            Declared(spouse, R.RELATIONSHIP_SPOUSE, marriage),
            Declared(child, R.RELATIONSHIP_CHILD, birth),
        ],
        effective=today,
    )
    _say(
        f"   the insured declared a spouse and a child (signed by them; leaf {declared.leaf_index})"
    )
    with fund_connection.open() as channel:
        decided = InsurerClient(channel, signer=fund, log=log).submit(
            declaration_decided(
                FUND_ID,
                person.person_token,
                "CNOPS-DECL-1",
                accepted=True,
                occurred_at=dt.datetime.now(dt.UTC),
            )
        )
    covered = [
        f"{R.Relationship.Name(c.relationship).removeprefix('RELATIONSHIP_').lower()} from "
        f"{c.start_date.year}-{c.start_date.month:02d}-{c.start_date.day:02d}"
        for member in (spouse, child)
        for c in person.record(member).coverages
    ]
    _say(
        f"   the fund accepted (leaf {decided.leaf_index}): now covered under CNOPS-DEMO-1: "
        f"{', '.join(covered)}; the insured reads only their own and these records"
    )


def _settle(portal: RenewalClient, sandbox: CmiSandbox, start: dt.date, end: dt.date) -> None:
    request = renewal_pb2.QuoteRenewalRequest(
        jurisdiction="MA",
        sponsor=_cin("BE123456"),
        members=[
            renewal_pb2.RenewalMember(person=_cin("BE123456"), relationship=R.RELATIONSHIP_SELF)
        ],
        period_start=types_pb2.CivilDate(year=start.year, month=start.month, day=start.day),
        period_end=types_pb2.CivilDate(year=end.year, month=end.month, day=end.day),
    )
    quote = portal.quote(request).quote
    started = portal.start_payment(quote.quote_id, f"ma-{quote.quote_id}", gateway="cmi")
    with urllib.request.urlopen(started.redirect_url, timeout=30) as page:  # noqa: S310
        page.read()  # the customer opens CMI's hosted page...
    sandbox.pay(started.payment_id)  # ...pays; CMI calls the merchant back
    paid = portal.complete_payment(started.payment_id)
    state = renewal_pb2.PaymentState.Name(paid.state).removeprefix("PAYMENT_STATE_")
    _say(
        f"   settled MAD {_mad(quote.total.amount_minor)} through the CMI sandbox's hosted page: "
        f"{state}, one FeeCollected at leaf {paid.receipt.leaf_index} (receipt verified)"
    )
