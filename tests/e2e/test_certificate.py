"""Coverage certificates end to end: an insurer issues a policy over gRPC, a person's
certificate is fetched, verified offline with the log key alone, rendered as a QR code, and
checked by the ``certificate`` commands; bad requests and uncovered days are refused."""

from __future__ import annotations

import argparse
import datetime as dt
import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest

from clients import samples
from clients.certificate import CertificateClient, certificate_qr, render_qr_png
from clients.cli_certificate import register
from clients.errors import InvalidArgumentError, NotFoundError, from_rpc_error
from clients.insurer import InsurerClient
from clients.offline.certificate import CertificateError, load_bundle, verify_certificate
from clients.verify import TrustedLog
from ledger.merkle import leaf_hash
from ledger.signing import Ed25519Signer, format_verifier_key
from ledger.v1 import coverage_service_pb2 as cpb
from ledger.v1 import coverage_service_pb2_grpc as cpb_grpc
from ledger.v1 import events_pb2, types_pb2
from tests import clock as test_clock
from tests.builders import issued, tokens
from tests.conftest import ServerHandle, onboard

GULF, NAJM = "gulf-health", "najm-care"


@dataclass
class Issued:
    """A running server where gulf-health issued sample policy 1 today."""

    server: ServerHandle
    channel: grpc.Channel
    receipt_leaf: int
    today: dt.date
    sponsor: types_pb2.PersonId


@pytest.fixture
def issued_policy(
    server: ServerHandle, operator_signer: Ed25519Signer, insurer_signer: Ed25519Signer
) -> Iterator[Issued]:
    onboard(server, operator_signer, GULF, insurer_signer)
    now = test_clock.now()
    log = TrustedLog.from_verifier_key(server.log_verifier_key)
    with server.channel("insurer", GULF) as channel:
        insurer = InsurerClient(channel, signer=insurer_signer, log=log)
        receipt = insurer.submit(samples.policy_issued(1, GULF, now, tokens=tokens))
    # Certificates are a person's data: the operator (answering the person) reads them here.
    with server.channel("operator", "operator") as channel:
        yield Issued(server, channel, receipt.leaf_index, now.date(), samples.iqama(16))


def test_a_certificate_verifies_offline_and_fits_a_qr_code(
    issued_policy: Issued, tmp_path: Path
) -> None:
    world = issued_policy
    client = CertificateClient(world.channel, log_key=world.server.log_verifier_key)
    [certificate] = client.get(world.sponsor, world.today)
    statement = certificate.statement
    assert statement is not None
    assert statement.person == f"SA:RESIDENCE_ID:{world.sponsor.value}"
    assert (statement.insurer, statement.policy, statement.plan) == (
        GULF,
        "POL-00000001",
        "CCHI-BASIC",
    )
    assert (statement.date, statement.start) == (world.today, world.today)
    assert statement.end == world.today + dt.timedelta(days=364)
    assert statement.relationship == "self"
    # The leaf is the PolicyIssued entry, as the insurer's receipt says.
    assert statement.leaf_index == world.receipt_leaf
    assert certificate.bundle.entry is not None
    assert statement.leaf_hash == leaf_hash(certificate.bundle.entry)
    assert certificate.coverage.policy_id == "POL-00000001"

    # Offline, from the bytes alone (a fresh call, no client state).
    again = verify_certificate(
        certificate.bundle.certificate,
        world.server.log_verifier_key,
        checkpoint=certificate.bundle.checkpoint,
        entry=certificate.bundle.entry,
    )
    assert again == statement
    # Another log's key refuses it.
    stranger = format_verifier_key(Ed25519Signer.generate("test.policy-ledger/log"))
    with pytest.raises(CertificateError, match="not signed by the log key"):
        verify_certificate(certificate.bundle.certificate, stranger)

    qr = certificate_qr(certificate.bundle.certificate)
    assert qr.mode == "byte" and int(qr.version) <= 40
    png = tmp_path / "card.png"
    render_qr_png(certificate.bundle.certificate, png)
    assert png.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")


def test_a_dependant_gets_the_certificate_of_the_entry_that_covered_them(
    issued_policy: Issued,
) -> None:
    world = issued_policy
    wife = samples.iqama(17)
    [certificate] = CertificateClient(world.channel, log_key=world.server.log_verifier_key).get(
        wife, world.today + dt.timedelta(days=100)
    )
    assert certificate.statement is not None
    assert certificate.statement.relationship == "spouse"
    assert certificate.statement.leaf_index == world.receipt_leaf


def test_overlapping_insurers_give_one_certificate_each(
    issued_policy: Issued, operator_signer: Ed25519Signer
) -> None:
    world = issued_policy
    najm = Ed25519Signer.generate(NAJM)
    onboard(world.server, operator_signer, NAJM, najm)
    log = TrustedLog.from_verifier_key(world.server.log_verifier_key)
    top_up = issued(
        NAJM,
        "TOPUP-1",
        world.sponsor,
        [(world.sponsor, events_pb2.RELATIONSHIP_SELF)],
        world.today - dt.timedelta(days=10),
        world.today + dt.timedelta(days=30),
    )
    with world.server.channel("insurer", NAJM) as channel:
        receipt = InsurerClient(channel, signer=najm, log=log).submit(top_up)
    certificates = CertificateClient(world.channel, log_key=world.server.log_verifier_key).get(
        world.sponsor, world.today
    )
    statements = [c.statement for c in certificates if c.statement is not None]
    assert len(statements) == 2
    assert {(s.insurer, s.policy, s.leaf_index) for s in statements} == {
        (GULF, "POL-00000001", world.receipt_leaf),
        (NAJM, "TOPUP-1", receipt.leaf_index),
    }
    # All of one answer: one tree size, one checkpoint.
    assert len({s.tree_size for s in statements}) == 1
    assert len({c.bundle.checkpoint for c in certificates}) == 1


def test_no_coverage_is_not_found(issued_policy: Issued) -> None:
    world = issued_policy
    client = CertificateClient(world.channel)
    for person, day in [
        (world.sponsor, world.today + dt.timedelta(days=365)),
        (world.sponsor, world.today - dt.timedelta(days=1)),
        (samples.iqama(99_999), world.today),
    ]:
        with pytest.raises(NotFoundError) as raised:
            client.get(person, day)
        assert raised.value.reason == "COVERAGE_NOT_FOUND"


def test_bad_requests_are_invalid_arguments(issued_policy: Issued) -> None:
    stub = cpb_grpc.CoverageServiceStub(issued_policy.channel)
    day = types_pb2.CivilDate(year=2026, month=11, day=23)
    bad_iqama = types_pb2.PersonId(
        type=types_pb2.PERSON_ID_TYPE_RESIDENCE_ID, value="2123456780", country_code="SA"
    )
    cases = [
        (cpb.GetCoverageCertificateRequest(date=day), ["person"]),
        (cpb.GetCoverageCertificateRequest(person=issued_policy.sponsor), ["date"]),
        (
            cpb.GetCoverageCertificateRequest(
                person=issued_policy.sponsor, date=types_pb2.CivilDate(year=2026, month=2, day=30)
            ),
            ["date"],
        ),
        (cpb.GetCoverageCertificateRequest(person=bad_iqama, date=day), ["person.value"]),
        (cpb.GetCoverageCertificateRequest(), ["person", "date"]),
    ]
    for request, fields in cases:
        request.purpose = types_pb2.ACCESS_PURPOSE_BENEFICIARY_SELF
        with pytest.raises(grpc.RpcError) as raised:
            stub.GetCoverageCertificate(request, timeout=30)
        error = from_rpc_error(raised.value)
        assert isinstance(error, InvalidArgumentError)
        assert error.reason == "REQUEST_INVALID"
        assert [v.field for v in error.field_violations] == fields


def _cli(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="policy-ledger")
    register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return int(args.handler(args))


def test_the_certificate_commands(
    issued_policy: Issued, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    world = issued_policy
    key_file = tmp_path / "log.pub"
    key_file.write_text(world.server.log_verifier_key + "\n", encoding="utf-8")
    out, qr = tmp_path / "card.json", tmp_path / "card.png"
    person = f"SA:RESIDENCE_ID:{world.sponsor.value}"
    code = _cli(
        "certificate",
        "get",
        *world.server.cli_arguments("operator", "operator"),
        "--person",
        person,
        "--date",
        world.today.isoformat(),
        "--out",
        str(out),
        "--qr",
        str(qr),
        "--log-verifier",
        f"@{key_file}",
    )
    assert code == 0
    assert "(verified)" in capsys.readouterr().out
    assert qr.read_bytes().startswith(b"\x89PNG")
    bundle = load_bundle(out.read_bytes())
    assert bundle.checkpoint is not None and bundle.entry is not None

    assert (
        _cli("certificate", "verify", "--certificate", str(out), "--log-verifier", f"@{key_file}")
        == 0
    )
    printed = capsys.readouterr().out
    assert printed.startswith("policy-ledger coverage certificate v2\n")
    assert "policy POL-00000001\n" in printed
    assert printed.endswith("verified: signature, inclusion proof, checkpoint, entry\n")

    # The bare note (what the QR code holds) verifies too.
    note = tmp_path / "card.note"
    note.write_bytes(bundle.certificate)
    assert (
        _cli(
            "certificate",
            "verify",
            "--certificate",
            str(note),
            "--log-verifier",
            key_file.read_text(),
        )
        == 0
    )
    assert capsys.readouterr().out.endswith("verified: signature, inclusion proof\n")

    # Refusals: exit 1, with the check that failed.
    stranger = format_verifier_key(Ed25519Signer.generate("test.policy-ledger/log"))
    assert _cli("certificate", "verify", "--certificate", str(out), "--log-verifier", stranger) == 1
    assert "not signed by the log key" in capsys.readouterr().err
    document = json.loads(out.read_text(encoding="utf-8"))
    document["certificate"] = document["certificate"].replace("POL-00000001", "POL-00000002")
    out.write_text(json.dumps(document), encoding="utf-8")
    assert _cli("certificate", "verify", "--certificate", str(out), "--log-verifier", stranger) == 1
    assert (
        _cli("certificate", "verify", "--certificate", str(out), "--log-verifier", f"@{key_file}")
        == 1
    )
    assert "signature by test.policy-ledger/log+" in capsys.readouterr().err
    late = (world.today + dt.timedelta(days=400)).isoformat()
    assert (
        _cli(
            "certificate",
            "verify",
            "--certificate",
            str(note),
            "--log-verifier",
            f"@{key_file}",
            "--on",
            late,
        )
        == 1
    )
    assert f"does not cover {late}" in capsys.readouterr().err


def test_help_has_examples(capsys: pytest.CaptureFixture[str]) -> None:
    for command in ("get", "verify"):
        with pytest.raises(SystemExit):
            _cli("certificate", command, "--help")
        assert "Example:\n  policy-ledger certificate " + command in capsys.readouterr().out


def test_a_suspended_insurers_policy_gets_no_certificate(
    issued_policy: Issued, operator_signer: Ed25519Signer
) -> None:
    from tests.builders import suspended

    world = issued_policy
    client = CertificateClient(world.channel)
    assert client.get(world.sponsor, world.today)  # certified while the insurer is licensed
    operator = InsurerClient(
        world.channel,
        signer=operator_signer,
        log=TrustedLog.from_verifier_key(world.server.log_verifier_key),
    )
    operator.submit(suspended(GULF, world.today))
    with pytest.raises(NotFoundError) as raised:
        client.get(world.sponsor, world.today)
    assert raised.value.reason == "COVERAGE_NOT_FOUND"
