"""What ``make run`` shows: a real server on SQLite, an insurer submitting signed events, and an
auditor verifying the log offline with nothing but the log's public key.

The server runs as a separate process (``policy-ledger serve``) so the demo crosses a real gRPC
connection and a real process boundary, and stops it with SIGTERM at the end.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from clients.audit_cli import fetch_checkpoint_note as auditor_checkpoint_note
from clients.audit_cli import fetch_entries as entries_from_server
from clients.auditor import AuditorClient
from clients.channel import ClientCredentials, Connection
from clients.demo_morocco import run_morocco
from clients.demo_permits import show_permits
from clients.demo_sudan import run_sudan_step
from clients.errors import ClientError
from clients.insurer import InsurerClient
from clients.offline.audit import KeyHistory
from clients.offline.audit import audit as offline_audit
from clients.offline.note import Checkpoint as OfflineCheckpoint
from clients.offline.note import VerifierKey, verify_checkpoint
from clients.offline.witness_policy import WitnessPolicy, WitnessPolicyError, verify_cosignatures
from clients.operator import OPERATOR_ID, OperatorClient
from clients.portal import PortalClient, civil_date
from clients.renewal import RenewalClient
from clients.samples import iqama, sample_events
from clients.verify import TrustedLog, VerifiedReceipt
from clients.witness.process import running_witness
from ledger.identifiers import example_kuwait_civil_id
from ledger.keys import insurer_key_id
from ledger.pki import init_directory, issue_into_directory
from ledger.signers import SignerRole
from ledger.signing import format_verifier_key, generate_keypair, parse_signer_key
from ledger.storage.db import sqlite_url
from ledger.v1 import events_pb2, types_pb2
from payments.v1 import renewal_service_pb2 as renewal_pb2

__all__ = ["run_demo"]

LOG_NAME = "policy-ledger.demo/log"
WITNESS_NAME = "witness.policy-ledger.demo/w1"
INSURER_ID = "gulf-health"
AUTHORITY_ID = "kw-gov-health"
"""The collecting authority of Kuwait's renewal fee: a principal of role authority."""
_START_TIMEOUT_SECONDS = 120.0  # a loaded machine (CI, tests in parallel) starts slowly


def say(text: str) -> None:
    """One line of the story."""
    print(text, flush=True)


@contextmanager
def running_server(
    workdir: Path, pki: Path, operator_verifier: str, *witness_options: str
) -> Iterator[int]:
    """Start ``policy-ledger serve`` (mTLS with the certificates in ``pki``) on a free port;
    yield the port; stop it with SIGTERM."""
    port_file = workdir / "port"
    command = [
        sys.executable,
        "-m",
        "policy_ledger.cli",
        "serve",
        "--database",
        sqlite_url(workdir / "ledger.db"),
        "--listen",
        "127.0.0.1:0",
        "--log-key-file",
        str(workdir / "log.key"),
        "--tls-cert",
        str(pki / "server.pem"),
        "--tls-key",
        str(pki / "server.key"),
        "--client-ca",
        str(pki / "ca.pem"),
        "--operator-verifier",
        operator_verifier,
        "--port-file",
        str(port_file),
        *(f"--witness={option}" for option in witness_options),
    ]
    log_file = (workdir / "server.log").open("w", encoding="utf-8")
    environment = {
        **os.environ,
        "POLICY_LEDGER_PAYMENTS_AUTHORITY_KEY": str(workdir / "authority.key"),
        "POLICY_LEDGER_PAYMENTS_AUTHORITY_ID": AUTHORITY_ID,
    }
    environment.pop("POLICY_LEDGER_PAYMENTS_GATEWAYS", None)  # the simulated gateway
    process = subprocess.Popen(  # noqa: S603
        command, stdout=log_file, stderr=subprocess.STDOUT, env=environment
    )
    try:
        yield _wait_for_port(process, port_file)
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            code = process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            code = process.wait()
        log_file.close()
        say(f"server stopped (exit code {code}); its log is {workdir / 'server.log'}")


def _wait_for_port(process: subprocess.Popen[bytes], port_file: Path) -> int:
    deadline = time.monotonic() + _START_TIMEOUT_SECONDS
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"server exited early with code {process.returncode}")
        if port_file.exists() and port_file.read_text().strip():
            return int(port_file.read_text())
        time.sleep(0.05)
    raise RuntimeError("server did not start in time")


def _wait_until_serving(channel: grpc.Channel) -> None:
    stub = health_pb2_grpc.HealthStub(channel)
    response = stub.Check(
        health_pb2.HealthCheckRequest(service=""), wait_for_ready=True, timeout=20
    )
    if response.status != health_pb2.HealthCheckResponse.SERVING:
        raise RuntimeError("server is not serving")


def run_demo(*, events_count: int, workdir: Path) -> int:
    """Run the whole story; return the process exit code."""
    shutil.rmtree(workdir, ignore_errors=True)
    workdir.mkdir(parents=True)
    started = time.monotonic()
    log_signer_key, log_verifier_key = generate_keypair(LOG_NAME)
    (workdir / "log.key").write_text(log_signer_key + "\n", encoding="utf-8")
    insurer_signer = parse_signer_key(generate_keypair(INSURER_ID)[0])
    operator_signer = parse_signer_key(generate_keypair(OPERATOR_ID)[0])
    authority_key = generate_keypair(AUTHORITY_ID)[0]
    (workdir / "authority.key").write_text(authority_key + "\n", encoding="utf-8")
    authority_signer = parse_signer_key(authority_key)
    trusted = TrustedLog.from_verifier_key(log_verifier_key)
    pki = workdir / "pki"
    init_directory(pki)
    for role, name in (("insurer", INSURER_ID), ("authority", AUTHORITY_ID)):
        issue_into_directory(pki, role, name)
    say("policy-ledger demo: a signed, append-only ledger of health-insurance policy events")
    say(f"  log key      {log_verifier_key}")
    say(f"  mTLS         CA, server and one certificate per caller in {pki} (`pki init`)")
    with (
        running_witness(workdir, WITNESS_NAME, log_verifier_key) as (witness_url, witness_key),
        running_server(
            workdir, pki, format_verifier_key(operator_signer), f"{witness_url}={witness_key}"
        ) as port,
        ExitStack() as channels,
    ):

        def channel_as(identity: str) -> grpc.Channel:
            connection = Connection(
                f"127.0.0.1:{port}", ClientCredentials.from_directory(pki, identity)
            )
            return channels.enter_context(connection.open())

        channel = channel_as("operator-operator")
        _wait_until_serving(channel)
        say(f"  server       127.0.0.1:{port}, SQLite at {workdir / 'ledger.db'}")
        operator = OperatorClient(channel, signer=operator_signer, log=trusted)
        # Keys are valid from a day back so that events dated today are signable (a key signs
        # only what happened while it was valid); one instant, so re-registering is idempotent.
        keys_valid_from = dt.datetime.now(dt.UTC).replace(microsecond=0) - dt.timedelta(days=1)
        _onboard_insurer(operator, insurer_signer.public_key, keys_valid_from)
        insurer = InsurerClient(
            channel_as(f"insurer-{INSURER_ID}"), signer=insurer_signer, log=trusted
        )
        occurred_at = dt.datetime.now(dt.UTC)
        first = _submit(insurer, events_count, occurred_at)
        _show_refusals(insurer, occurred_at)
        _check_households(
            PortalClient(channel_as("portal-SA"), log=trusted),
            PortalClient(channel_as("portal-KW"), log=trusted),
            occurred_at.date(),
        )
        show_permits(
            say,
            operator=operator,
            channel_as=channel_as,
            trusted=trusted,
            keys_valid_from=keys_valid_from,
            today=occurred_at.date(),
            pki=pki,
        )
        _renew(
            operator,
            authority_signer.public_key,
            RenewalClient(channel_as("portal-KW"), log=trusted),
            RenewalClient(channel_as("portal-SA"), log=trusted),
            keys_valid_from,
        )
        _audit(
            AuditorClient(channel_as("auditor-auditor"), log=trusted),
            first,
            Connection(
                f"127.0.0.1:{port}", ClientCredentials.from_directory(pki, "auditor-auditor")
            ),
            log_verifier_key,
        )
        _show_witness(
            Connection(
                f"127.0.0.1:{port}", ClientCredentials.from_directory(pki, "auditor-auditor")
            ),
            log_verifier_key,
            witness_url,
            witness_key,
        )
        run_sudan_step(  # task D (issue 11): a funded cohort
            operator, pki, channel_as, trusted=trusted, keys_valid_from=keys_valid_from, say=say
        )
    run_morocco(workdir)  # Task F (issue 11): the insured acts for themselves; contributions
    say(f"done in {time.monotonic() - started:.1f} s")
    return 0


def _onboard_insurer(
    operator: OperatorClient, insurer_public_key: bytes, valid_from: dt.datetime
) -> None:
    key, licence = operator.onboard(
        INSURER_ID,
        insurer_public_key,
        name="Gulf Health Cooperative Insurance",
        licence_number="CCHI-DEMO-0042",
        valid_from=valid_from,
    )
    licence_leaf = licence.leaf_index if licence is not None else "-"
    key_id = insurer_key_id(insurer_public_key)
    say(
        f"1. operator: registered insurer {INSURER_ID!r} with key {key_id}"
        f" and licensed it (signed KeyRegistered at leaf {key.leaf_index}, InsurerLicensed at "
        f"leaf {licence_leaf}; leaf 0 is the genesis entry naming the operator's key)"
    )


def _submit(insurer: InsurerClient, events_count: int, occurred_at: dt.datetime) -> VerifiedReceipt:
    events = list(
        sample_events(events_count, INSURER_ID, occurred_at, tokens=insurer.tokens.tokens)
    )
    unary_count = min(10, len(events))
    started = time.monotonic()
    receipts = [insurer.submit(event) for event in events[:unary_count]]
    for result in insurer.submit_stream(events[unary_count:]):
        if isinstance(result, ClientError):
            raise result
        receipts.append(result)
    elapsed = time.monotonic() - started
    first, last = receipts[0], receipts[-1]
    say(
        f"2. insurer: signed and submitted {len(receipts)} events ({unary_count} one by one, "
        f"{len(receipts) - unary_count} on one stream) in {elapsed:.2f} s; every receipt's "
        "checkpoint signature and inclusion proof verified on arrival"
    )
    say(
        f"   first receipt: leaf {first.leaf_index}, checkpoint of size {first.checkpoint.size}; "
        f"last: leaf {last.leaf_index}, tree size {last.checkpoint.size}, "
        f"root {last.checkpoint.root_hash.hex()[:16]}..."
    )
    return first


def _check_households(portal: PortalClient, other_portal: PortalClient, today: dt.date) -> None:
    """A renewal portal asks whether two households are insured through a new permit's end;
    another state's portal may not ask about a Saudi renewal (mTLS identity, one table)."""
    through = today + dt.timedelta(days=300)
    family = [
        (iqama(0), events_pb2.RELATIONSHIP_SELF),
        (iqama(1), events_pb2.RELATIONSHIP_SPOUSE),
        (iqama(2), events_pb2.RELATIONSHIP_CHILD),
    ]
    maid = (iqama(15), events_pb2.RELATIONSHIP_DOMESTIC_WORKER)
    say(f"4. renewal portal: checks households through {through} (the new permit's end)")
    for label, members in (("the family", family), ("the family and its maid", [*family, maid])):
        answer = portal.check_household(
            iqama(0), members, as_of=today, through=through, jurisdiction="SA"
        )
        response = answer.response
        verdict = "RENEWABLE" if response.renewable else "BLOCKED"
        say(
            f"   sponsor {iqama(0).value}, {label}: {verdict} "
            f"(answer at tree size {answer.checkpoint.size}, checkpoint verified, "
            f"entries relied on: {list(response.basis.leaf_indexes)})"
        )
        for member in response.members:
            if not member.covered:
                relationship = events_pb2.Relationship.Name(member.relationship)
                kind = relationship.removeprefix("RELATIONSHIP_").lower()
                say(f"     blocks it: {member.person.value} ({kind}): {member.detail}")
    try:
        other_portal.check_household(
            iqama(0), family, as_of=today, through=through, jurisdiction="SA"
        )
    except ClientError as refused:
        say(f"   portal/KW asking about the same Saudi household: refused, {refused}")
    else:
        raise RuntimeError("portal/KW read a Saudi household: the authorization table failed")


def _renew(
    operator: OperatorClient,
    authority_key: bytes,
    renewals: RenewalClient,
    saudi_renewals: RenewalClient,
    valid_from: dt.datetime,
) -> None:
    """Kuwait: quote a family's renewal, pay through the simulated gateway, get the receipt.
    Saudi Arabia: a renewal refused while a member has no private insurance."""
    operator.onboard(
        AUTHORITY_ID,
        authority_key,
        name="Kuwait government health insurance (renewal fees)",
        licence_number="KW-MOH-RENEWALS",
        valid_from=valid_from,
        role=SignerRole.AUTHORITY,
        jurisdiction="KW",
    )
    start = dt.date.today() + dt.timedelta(days=30)
    request = renewal_pb2.QuoteRenewalRequest(
        jurisdiction="KW",
        sponsor=_kuwait_civil_id(0),
        period_start=civil_date(start),
        period_end=civil_date(start + dt.timedelta(days=364)),
    )
    family = [
        (events_pb2.RELATIONSHIP_SELF, renewal_pb2.RESIDENCE_CATEGORY_PRIVATE_SECTOR_WORKER),
        (events_pb2.RELATIONSHIP_SPOUSE, renewal_pb2.RESIDENCE_CATEGORY_DEPENDENT),
        (events_pb2.RELATIONSHIP_CHILD, renewal_pb2.RESIDENCE_CATEGORY_DEPENDENT),
        (events_pb2.RELATIONSHIP_DOMESTIC_WORKER, renewal_pb2.RESIDENCE_CATEGORY_DOMESTIC_WORKER),
    ]
    for position, (relationship, category) in enumerate(family):
        request.members.add(
            person=_kuwait_civil_id(position),
            relationship=relationship,
            residence_category=category,
            birth_date=civil_date(dt.date(2014, 2, 2)),
            domestic_worker_ordinal=1 if position == 3 else 0,
        )
    quote = renewals.quote(request).quote
    lines = ", ".join(f"{line.rule_id} {_kwd(line.amount.amount_minor)}" for line in quote.lines)
    say(
        f"5. renewal: Kuwait's portal quotes {quote.quote_id} for 4 members, "
        f"{quote.total.currency_code} {_kwd(quote.total.amount_minor)} "
        f"({quote.schedule_version}: {lines})"
    )
    payment = renewals.start_payment(quote.quote_id, f"demo-{quote.quote_id}", gateway="simulated")
    state = renewal_pb2.PaymentState.Name(payment.state).removeprefix("PAYMENT_STATE_")
    checkpoint_size = int(payment.receipt.checkpoint.split(b"\n")[1])
    say(
        f"   paid through the simulated gateway: {state}; ledger receipt leaf "
        f"{payment.receipt.leaf_index}, inclusion proof of {len(payment.receipt.inclusion_proof)}"
        f" hashes verified against checkpoint size {checkpoint_size}"
    )
    again = renewals.start_payment(quote.quote_id, f"demo-{quote.quote_id}", gateway="simulated")
    say(
        f"   the portal retried with the same idempotency key: same payment "
        f"{again.payment_id == payment.payment_id}, charged once "
        f"({again.captured_minor == quote.total.amount_minor})"
    )
    saudi = renewal_pb2.QuoteRenewalRequest(
        jurisdiction="SA",
        sponsor=iqama(0),
        period_start=civil_date(start),
        period_end=civil_date(start + dt.timedelta(days=364)),
    )
    saudi.members.add(person=iqama(0), relationship=events_pb2.RELATIONSHIP_SELF)
    saudi.members.add(person=iqama(15), relationship=events_pb2.RELATIONSHIP_DOMESTIC_WORKER)
    household = saudi_renewals.quote(saudi).household
    blockers = [f"{m.person.value} ({m.detail})" for m in household.members if not m.covered]
    say(
        f"   Saudi renewal of sponsor {iqama(0).value}: "
        f"{'RENEWABLE' if household.renewable else 'REFUSED'}; not insured through the new "
        f"permit's end: {'; '.join(blockers)}"
    )


def _kwd(fils: int) -> str:
    """KWD from integer fils, without a float (3 decimals)."""
    return f"{fils // 1000}.{fils % 1000:03d}"


def _kuwait_civil_id(position: int) -> types_pb2.PersonId:
    return types_pb2.PersonId(
        type=types_pb2.PERSON_ID_TYPE_CIVIL_ID,
        value=example_kuwait_civil_id(dt.date(1984, 7, 1), 3 * position),
        country_code="KW",
    )


def _show_refusals(insurer: InsurerClient, occurred_at: dt.datetime) -> None:
    """Resubmit the first event exactly as sent (``occurred_at`` is the same), then altered."""
    original = next(sample_events(1, INSURER_ID, occurred_at, tokens=insurer.tokens.tokens))
    again = insurer.submit(original)
    say(
        "3. refusals: the same event sent again returns its first receipt "
        f"(leaf {again.leaf_index}, duplicate={again.duplicate})"
    )
    changed = next(sample_events(1, INSURER_ID, occurred_at, tokens=insurer.tokens.tokens))
    changed.policy_issued.annual_premium.amount_minor += 1
    try:
        insurer.submit(changed)
    except ClientError as error:
        field = error.field_violations[0].field if error.field_violations else "?"
        say(
            f"   the same event id with a different premium is refused: {error.code.name}, "
            f"field {field}"
        )
    forged = insurer.sign(changed)
    forged.signatures[0].sig = bytes(64)
    try:
        insurer.submit_envelope(forged)
    except ClientError as error:
        say(f"   a forged signature is refused: {error.code.name} {error.reason}")


def _audit(
    auditor: AuditorClient,
    first: VerifiedReceipt,
    address: Connection,
    log_verifier_key: str,
) -> None:
    latest = auditor.checkpoint()
    say(
        f"6. auditor: fetched the latest checkpoint: size {latest.size}, "
        f"root {latest.root_hash.hex()[:16]}..., signature verified with the log key"
    )
    auditor.verify_consistency(first.checkpoint, latest)
    say(
        f"   consistency proof from size {first.checkpoint.size} to {latest.size}: verified "
        "(history was only appended to)"
    )
    samples = sorted({0, latest.size // 2, latest.size - 1})
    for index in samples:
        auditor.verify_inclusion(index, latest)
    say(f"   inclusion proofs of leaves {samples}: verified")
    # The full audit runs the offline verifier (clients/offline: no server code at all).
    key = VerifierKey.parse(log_verifier_key)
    checkpoint = verify_checkpoint(auditor_checkpoint_note(address), key)
    history = KeyHistory(key.public_key)
    report = offline_audit(
        entries_from_server(address, checkpoint.size),
        checkpoint,
        key.public_key,
        history=history,
        trusted=[
            OfflineCheckpoint(
                first.checkpoint.origin, first.checkpoint.size, first.checkpoint.root_hash
            )
        ],
    )
    signers = ", ".join(f"{count} by {who}" for who, count in sorted(report.signers.items()))
    say(
        f"   full audit by the offline verifier: {report.entries_checked} entries re-hashed, "
        f"{report.signatures_checked} signatures verified ({signers}), root recomputed and "
        "equal to the checkpoint's, and to the first receipt's at its size"
    )
    say(
        f"   key history learned from the log alone: {len(history.records())} keys "
        "(genesis, KeyRegistered, KeyRevoked entries), each signature checked against the key "
        "valid at its entry"
    )
    say("   verdict: the ledger is consistent, complete and signed")


def _show_witness(
    connection: Connection, log_verifier_key: str, url: str, witness_key: str
) -> None:
    """7. The witness beside the server cosigned the log's checkpoints (docs/witness.md)."""
    key = VerifierKey.parse(log_verifier_key)
    policy = WitnessPolicy.parse([witness_key], 1)
    # The log submits in the background: the latest checkpoint is cosigned a moment after it
    # is made, so look until it is (the demo's only wait on another process).
    deadline = time.monotonic() + _START_TIMEOUT_SECONDS
    while True:
        note = auditor_checkpoint_note(connection)
        try:
            cosigned = verify_cosignatures(note, policy)
            break
        except WitnessPolicyError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)
    checkpoint = verify_checkpoint(note, key)
    say(
        f"7. witness: {WITNESS_NAME} ({url}) cosigned checkpoint {checkpoint.size} "
        f"(C2SP tlog-witness, cosignature/v1 at {cosigned[0].timestamp}); verified with a "
        "1-of-1 witness policy: no split view without the witness"
    )
