"""Insurance cards end to end (task E, docs/cards.md), on SQLite and PostgreSQL: an insurer
issues, replaces and revokes a card over gRPC; GetCardStatus and GetDocumentStatus answer with
the entry that decided; the signed card verifies offline (a tampered one does not, an expired
one says so); every refused card event writes nothing, beside an accepted twin."""

from __future__ import annotations

import argparse
import datetime as dt
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from sqlalchemy import create_engine, func, select

from clients import samples
from clients.cards import CardClient
from clients.certificate import CertificateClient
from clients.cli_cards import register
from clients.cli_certificate import register as register_certificate
from clients.errors import (
    AlreadyExistsError,
    ClientError,
    FailedPreconditionError,
    InvalidArgumentError,
    NotFoundError,
)
from clients.insurer import InsurerClient
from clients.offline.certificate import CertificateError, load_bundle
from clients.offline.document import verify_document
from clients.verify import TrustedLog
from ledger.cards.number import format_card_number
from ledger.cards.reader import CardReader
from ledger.coverage.rebuild import rebuild_and_compare
from ledger.merkle import leaf_hash
from ledger.signing import Ed25519Signer, format_signer_key
from ledger.storage.tables import cards, log_entries, subject_entries
from ledger.v1 import events_pb2, types_pb2
from tests import clock as test_clock
from tests.builders import (
    R,
    cancelled,
    card_issued,
    card_number,
    card_replaced,
    card_revoked,
    tokens,
)
from tests.conftest import ServerHandle, onboard

GULF, NAJM = "gulf-health", "najm-care"


@dataclass
class World:
    """A server where gulf-health covers sample policy 1 (sponsor iqama 16, wife 17) from today
    and najm-care is licensed but covers nobody."""

    server: ServerHandle
    gulf: InsurerClient
    najm: InsurerClient
    reader: grpc.Channel
    today: dt.date
    sponsor: types_pb2.PersonId
    wife: types_pb2.PersonId

    def cards(self) -> CardClient:
        return CardClient(self.reader, log_key=self.server.log_verifier_key)

    def counts(self) -> tuple[int, int, int]:
        """Entries, card rows and index rows, read on a fresh engine (the server's pooled
        connections may hold an older snapshot)."""
        engine = create_engine(self.server.running.engine.url)
        try:
            with engine.connect() as connection:
                return tuple(  # type: ignore[return-value]
                    int(connection.execute(select(func.count()).select_from(table)).scalar_one())
                    for table in (log_entries, cards, subject_entries)
                )
        finally:
            engine.dispose()


@pytest.fixture
def world(
    server: ServerHandle, operator_signer: Ed25519Signer, insurer_signer: Ed25519Signer
) -> Iterator[World]:
    onboard(server, operator_signer, GULF, insurer_signer)
    najm_signer = Ed25519Signer.generate(NAJM)
    onboard(server, operator_signer, NAJM, najm_signer)
    now = test_clock.now()
    log = TrustedLog.from_verifier_key(server.log_verifier_key)
    with (
        server.channel("insurer", GULF) as gulf_channel,
        server.channel("insurer", NAJM) as najm_channel,
        server.channel("operator", "operator") as reader,
    ):
        gulf = InsurerClient(gulf_channel, signer=insurer_signer, log=log)
        gulf.submit(samples.policy_issued(1, GULF, now, tokens=tokens))
        najm = InsurerClient(najm_channel, signer=najm_signer, log=log)
        yield World(server, gulf, najm, reader, now.date(), samples.iqama(16), samples.iqama(17))


def _refused(
    world: World, client: InsurerClient, event: events_pb2.Event, error: type[ClientError]
) -> ClientError:
    before = world.counts()
    with pytest.raises(error) as caught:
        client.submit(event)
    assert world.counts() == before, "a refused card event wrote something"
    return caught.value


def test_issue_replace_revoke_and_the_status_of_each_number(world: World) -> None:
    until = world.today + dt.timedelta(days=365)
    first, second = card_number(), card_number()
    issued = world.gulf.submit(card_issued(GULF, first, world.sponsor, until))
    status = world.cards().status(first)
    assert (status.status, status.leaf_index, status.valid_until) == (
        "CURRENT",
        issued.leaf_index,
        until,
    )
    assert status.as_of == world.today and status.tree_size >= issued.leaf_index + 1

    card = world.cards().get(first)
    statement = card.statement
    assert statement is not None and statement.kind == "insurance card"
    assert statement.card_number == first and statement.insurer == GULF
    assert statement.person == f"SA:RESIDENCE_ID:{world.sponsor.value}"
    assert (statement.valid_until, statement.issued) == (until, world.today)
    assert statement.leaf_index == issued.leaf_index
    assert card.bundle.entry is not None and statement.leaf_hash == leaf_hash(card.bundle.entry)
    assert format_card_number(first) in card.human_text and "status online" in card.human_text
    arabic = world.cards().get(first, accept_language="ar").human_text
    french = world.cards().get(first, accept_language="fr").human_text
    assert "بطاقة التأمين" in arabic and "Carte d'assurance" in french
    hijri = world.cards().get(first, accept_language="ar-SA-u-ca-islamic-umalqura").human_text
    assert "هـ" in hijri and "هـ" not in arabic  # Hijri dates only where asked
    assert world.cards().document_status(card.document).status == "CURRENT"

    replaced = world.gulf.submit(card_replaced(GULF, first, second, until))
    old = world.cards().status(first)
    assert (old.status, old.leaf_index, old.replaced_by) == (
        "REPLACED",
        replaced.leaf_index,
        second,
    )
    assert world.cards().status(second).status == "CURRENT"
    # The old card still verifies offline (a snapshot at its checkpoint) but is not current.
    assert verify_document(card.document, world.server.log_verifier_key).card_number == first
    answer = world.cards().document_status(card.document)
    assert (answer.status, answer.leaf_index, answer.kind) == (
        "REPLACED",
        replaced.leaf_index,
        "insurance card",
    )
    with pytest.raises(FailedPreconditionError) as caught:
        world.cards().get(first)
    assert caught.value.reason == "CARD_REPLACED"

    revoked = world.gulf.submit(card_revoked(GULF, second))
    assert (world.cards().status(second).status, world.cards().status(second).leaf_index) == (
        "REVOKED",
        revoked.leaf_index,
    )
    # The cards projection is rebuilt from the log alone, row for row.
    report = rebuild_and_compare(world.server.running.engine)
    assert report.consistent, report


def test_a_card_expires_after_its_valid_until(world: World) -> None:
    until = world.today + dt.timedelta(days=30)
    number = card_number()
    issued = world.gulf.submit(card_issued(GULF, number, world.sponsor, until))
    reader = CardReader(world.server.running.engine)
    later = until + dt.timedelta(days=1)
    state, _ = reader.card_status(number, later)
    assert (state.status, state.leaf_index) == ("EXPIRED", issued.leaf_index)
    state, _ = reader.card_status(number, until)
    assert state.status == "CURRENT"


def test_refused_card_events_write_nothing(world: World) -> None:
    until = world.today + dt.timedelta(days=365)
    never = card_number()
    # Unknown card: replacing or revoking a number never issued.
    error = _refused(
        world, world.gulf, card_replaced(GULF, never, card_number(), until), NotFoundError
    )
    assert error.reason == "CARD_NOT_FOUND"
    _refused(world, world.gulf, card_revoked(GULF, never), NotFoundError)
    # Wrong insurer: najm-care does not cover the sponsor.
    error = _refused(
        world,
        world.najm,
        card_issued(NAJM, card_number(), world.sponsor, until),
        FailedPreconditionError,
    )
    assert error.reason == "CARD_PERSON_NOT_COVERED"
    # Check digit wrong: refused at admission.
    good = card_number()
    bad = good[:-1] + str((int(good[-1]) + 1) % 10)
    error = _refused(
        world, world.gulf, card_issued(GULF, bad, world.sponsor, until), InvalidArgumentError
    )
    assert "Luhn" in str(error)
    # valid_until in the past or too far ahead.
    for wrong in (world.today - dt.timedelta(days=1), world.today + dt.timedelta(days=2000)):
        error = _refused(
            world,
            world.gulf,
            card_issued(GULF, card_number(), world.sponsor, wrong),
            FailedPreconditionError,
        )
        assert error.reason == "CARD_VALIDITY_INVALID"

    # The accepted twin.
    before = world.counts()
    issued = world.gulf.submit(card_issued(GULF, good, world.sponsor, until))
    assert world.counts()[:2] == (before[0] + 1, before[1] + 1)

    # The same number again, and a second current card for the same person.
    error = _refused(
        world, world.gulf, card_issued(GULF, good, world.wife, until), AlreadyExistsError
    )
    assert error.reason == "CARD_NUMBER_USED"
    error = _refused(
        world,
        world.gulf,
        card_issued(GULF, card_number(), world.sponsor, until),
        FailedPreconditionError,
    )
    assert error.reason == "CARD_ALREADY_HELD"
    # Another insurer may not revoke or replace it.
    error = _refused(world, world.najm, card_revoked(NAJM, good), FailedPreconditionError)
    assert error.reason == "CARD_OF_ANOTHER_INSURER"

    # Replacing a revoked card.
    world.gulf.submit(card_revoked(GULF, good))
    error = _refused(
        world,
        world.gulf,
        card_replaced(GULF, good, card_number(), until),
        FailedPreconditionError,
    )
    assert error.reason == "CARD_REVOKED"
    assert world.cards().status(good).leaf_index > issued.leaf_index


def test_status_requests_are_checked(world: World) -> None:
    with pytest.raises(NotFoundError) as caught:
        world.cards().status(card_number())
    assert caught.value.reason == "CARD_NOT_FOUND"
    number = card_number()
    for wrong in ("", number[:-1], number[:-1] + str((int(number[-1]) + 1) % 10), "x" * 16):
        with pytest.raises(InvalidArgumentError):
            world.cards().status(wrong)
    with pytest.raises(InvalidArgumentError) as refused:
        world.cards().document_status(b"policy-ledger insurance card v1\n")
    assert refused.value.reason == "DOCUMENT_INVALID"


def test_offline_verification_of_a_real_a_tampered_and_an_expired_card(
    world: World, tmp_path: Path
) -> None:
    until = world.today + dt.timedelta(days=10)
    number = card_number()
    world.gulf.submit(card_issued(GULF, number, world.sponsor, until))
    card = world.cards().get(number)
    key = world.server.log_verifier_key

    # Real: bundle and bare note.
    bundle_file, note_file = tmp_path / "card.json", tmp_path / "card.note"
    bundle_file.write_text(card.bundle.to_json(), encoding="utf-8")
    note_file.write_bytes(card.document)
    assert load_bundle(note_file.read_bytes()).certificate == card.document
    for path in (bundle_file, note_file):
        assert _cli("verify", "--card", str(path), "--log-verifier", key) == 0
    # Tampered: one digit of the valid-until date.
    tampered = card.document.replace(
        f"valid-until {until.isoformat()}".encode(),
        f"valid-until {(until + dt.timedelta(days=365)).isoformat()}".encode(),
    )
    assert tampered != card.document
    with pytest.raises(CertificateError, match="signature"):
        verify_document(tampered, key)
    (tmp_path / "tampered.note").write_bytes(tampered)
    assert _cli("verify", "--card", str(tmp_path / "tampered.note"), "--log-verifier", key) == 1
    # Expired: verified, but past its valid-until on the verifier's date.
    statement = verify_document(card.document, key)
    assert not statement.expired(until) and statement.expired(until + dt.timedelta(days=1))
    after = (until + dt.timedelta(days=1)).isoformat()
    assert _cli("verify", "--card", str(note_file), "--log-verifier", key, "--today", after) == 1


def test_registration_certificate_and_certificate_status_after_a_cancellation(
    world: World,
) -> None:
    [registration] = world.cards().registration(world.sponsor, world.today)
    statement = registration.statement
    assert statement is not None and statement.kind == "registration certificate"
    assert (statement.policy, statement.registered) == ("POL-00000001", world.today)
    assert statement.valid_until == world.today + dt.timedelta(days=90)
    assert world.cards().document_status(registration.document).status == "CURRENT"
    [coverage] = CertificateClient(world.reader).get(world.sponsor, world.today)
    covered = world.cards().document_status(coverage.bundle.certificate)
    assert (covered.status, covered.kind) == ("CURRENT", "coverage certificate")
    assert covered.valid_until == world.today + dt.timedelta(days=364)

    cancel = cancelled(
        GULF,
        "POL-00000001",
        world.today + dt.timedelta(days=30),
        R.CANCELLATION_REASON_FINAL_EXIT,
    )
    cancel.occurred_at.FromDatetime(test_clock.now())
    receipt = world.gulf.submit(cancel)
    answer = world.cards().document_status(registration.document)
    assert (answer.status, answer.leaf_index, answer.kind) == (
        "CANCELLED",
        receipt.leaf_index,
        "registration certificate",
    )
    # The coverage certificate stated coverage to the period's end: cancelled too.
    answer = world.cards().document_status(coverage.bundle.certificate)
    assert (answer.status, answer.leaf_index) == ("CANCELLED", receipt.leaf_index)


def _cli(*argv: str) -> int:
    parser = argparse.ArgumentParser()
    register(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["card", *argv])
    return int(args.handler(args))


def test_documents_of_nothing_are_not_found(world: World) -> None:
    with pytest.raises(NotFoundError) as caught:
        world.cards().get(card_number())
    assert caught.value.reason == "CARD_NOT_FOUND"
    with pytest.raises(NotFoundError) as caught:
        world.cards().registration(samples.iqama(99), world.today)
    assert caught.value.reason == "REGISTRATION_NOT_FOUND"
    # Before the policy starts there is no registration holding on that day.
    with pytest.raises(NotFoundError):
        world.cards().registration(world.sponsor, world.today - dt.timedelta(days=1))


def test_the_card_and_certificate_commands(
    world: World, insurer_signer: Ed25519Signer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    server = world.server
    key = tmp_path / "gulf.key"
    key.write_text(format_signer_key(insurer_signer) + "\n", encoding="utf-8")
    as_gulf = [*server.cli_arguments("insurer", GULF), "--log-verifier", server.log_verifier_key]
    signing = [*as_gulf, "--key", str(key), "--insurer", GULF]
    first, second = card_number(), card_number()
    until = (world.today + dt.timedelta(days=100)).isoformat()
    person = f"SA:RESIDENCE_ID:{world.sponsor.value}"
    issue = ["issue", *signing, "--card-number", first, "--person", person]
    assert _cli(*issue, "--valid-until", until) == 0
    assert "receipt verified" in capsys.readouterr().out
    # Refused (a second current card): exit 3, nothing written.
    before = world.counts()
    assert _cli("issue", *signing, "--card-number", second, "--person", person,
                "--valid-until", until) == 3  # fmt: skip
    assert "CARD_ALREADY_HELD" in capsys.readouterr().out and world.counts() == before

    status = ["status", *server.cli_arguments("insurer", GULF), "--card-number", first]
    assert _cli(*status) == 0
    assert f"card {first}: CURRENT" in capsys.readouterr().out
    out, qr = tmp_path / "card.json", tmp_path / "card.png"
    reader = [*server.cli_arguments("operator", "operator"), "--card-number", first]
    get = ["get", *reader, "--out", str(out), "--qr", str(qr), "--lang", "fr"]
    assert _cli(*get, "--log-verifier", server.log_verifier_key) == 0
    assert "(verified)" in capsys.readouterr().out and qr.read_bytes().startswith(b"\x89PNG")
    assert _cli("verify", "--card", str(out), "--log-verifier", server.log_verifier_key) == 0
    printed = capsys.readouterr().out
    assert f"card {first}\n" in printed and "check its status online" in printed

    replace = ["replace", *signing, "--card-number", first, "--new-card-number", second]
    assert _cli(*replace, "--valid-until", until, "--reason", "lost") == 0
    capsys.readouterr()
    assert _cli(*status) == 1
    assert "REPLACED (entry" in capsys.readouterr().out
    assert _cli("revoke", *signing, "--card-number", second, "--reason", "fraud") == 0
    capsys.readouterr()

    # The certificate commands: the old card's status from its file, a registration certificate.
    parser = argparse.ArgumentParser()
    register_certificate(parser.add_subparsers(dest="command"))

    def certificate(*argv: str) -> int:
        args = parser.parse_args(["certificate", *argv])
        return int(args.handler(args))

    as_clinic = server.cli_arguments("insurer", NAJM)
    assert certificate("status", *as_clinic, "--certificate", str(out)) == 1
    assert "insurance card: REPLACED" in capsys.readouterr().out
    registration = tmp_path / "reg.json"
    assert certificate("registration", *server.cli_arguments("operator", "operator"),
                       "--person", person, "--date", world.today.isoformat(),
                       "--out", str(registration), "--log-verifier",
                       server.log_verifier_key) == 0  # fmt: skip
    capsys.readouterr()
    key_args = ["--log-verifier", server.log_verifier_key]
    assert certificate("verify", "--certificate", str(registration), *key_args) == 0
    assert "policy-ledger registration certificate v1\n" in capsys.readouterr().out
    assert certificate("status", *as_clinic, "--certificate", str(registration)) == 0
    assert "registration certificate: CURRENT" in capsys.readouterr().out
