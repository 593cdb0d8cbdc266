"""``policy-ledger erase`` (issue 14 item 4), on SQLite and PostgreSQL: after it the log still
verifies end to end (``audit verify`` over gRPC as an auditor), ``rebuild`` matches, queries by
the person's ID find nothing, and the database's files hold the identifier nowhere: the ledger's
tables and the payments extension's (a Kuwaiti erased after a paid renewal: the quote is redacted
by the extension's erasure hook, the payment and its FeeCollected entry stay).

SQLite: the server runs ``PRAGMA secure_delete`` (deleted cells are zeroed); the test checkpoints
the WAL into the file and truncates it, then reads every byte of the file. PostgreSQL: a deleted
row's bytes stay in its heap and index pages until the relation is rewritten, so the test runs
``VACUUM FULL`` on the vault's tables and the payments' quotes (docs/privacy.md tells the
operator to), then reads every relation file of the database with ``pg_read_binary_file``. It
runs on a PostgreSQL cluster of its own (initdb in a temp dir): on the machine's shared one,
other sessions' snapshots may keep the deleted row's version alive through the VACUUM, so the
scan would not be reliable.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import io
import sqlite3
import uuid
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from sqlalchemy import create_engine, make_url, text

from clients.errors import ClientError
from clients.insurer import InsurerClient
from clients.operator import AdminClient
from clients.portal import PortalClient
from clients.renewal import RenewalClient
from clients.samples import iqama, sample_events
from clients.verify import TrustedLog
from ledger.coverage.rebuild import rebuild_and_compare
from ledger.events import civil_date
from ledger.signers import SignerRole
from ledger.signing import Ed25519Signer, format_signer_key
from ledger.storage.db import sqlite_url
from ledger.v1 import events_pb2, types_pb2
from ledger.v1 import identity_service_pb2 as ipb
from ledger.v1 import identity_service_pb2_grpc as ipb_grpc
from payments.v1 import renewal_service_pb2 as pb
from policy_ledger.cli import main
from tests import clock as test_clock
from tests.conftest import ServerHandle, onboard, start_server_thread
from tests.durability.processes import postgres_binaries, postgres_instance
from tests.payments.support import civil_id
from tests.stack import row_counts

INSURER = "gulf-health"
SPONSOR, WIFE = iqama(16), iqama(17)  # sample household 1
AUTHORITY = "kw-gov-health"
AUTHORITY_SIGNER = Ed25519Signer.generate(AUTHORITY)
KW_SPONSOR, KW_SPOUSE, KW_CHILD = (civil_id(7, position) for position in range(3))
KW_CHILD_BIRTH = dt.date(2015, 5, 5)
R = events_pb2
WIFE_GRANT_REASON = "grant reason 7f3c9: her chronic illness"
SPONSOR_GRANT_REASON = "grant reason 41d2e: slots spent on typos"
"""The operator's reasons for grants of more people to resolve (docs/privacy.md): the wife's
goes with her erasure, the sponsor's stays."""


def _cli(*arguments: str) -> tuple[int, str]:
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(out):
        code = main(list(arguments))
    return code, out.getvalue()


@pytest.fixture(params=["sqlite", pytest.param("own postgres", marks=pytest.mark.postgres)])
def scanned_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A database whose files the test may read whole: a SQLite file, or a PostgreSQL cluster
    of the test's own (see the module doc)."""
    if request.param == "sqlite":
        yield sqlite_url(tmp_path / "ledger.db")
        return
    if postgres_binaries() is None:
        pytest.skip("no initdb on the PATH or under /usr/lib/postgresql/*/bin")
    with postgres_instance() as instance:
        yield instance.url


@pytest.fixture
def scanned_server(
    scanned_url: str,
    log_signer: Ed25519Signer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[ServerHandle]:
    """A server with the payments extension (Kuwait's authority ``AUTHORITY``)."""
    key_file = tmp_path / "authority.key"
    key_file.write_text(format_signer_key(AUTHORITY_SIGNER) + "\n", encoding="utf-8")
    monkeypatch.setenv("POLICY_LEDGER_PAYMENTS_AUTHORITY_KEY", str(key_file))
    monkeypatch.setenv("POLICY_LEDGER_PAYMENTS_AUTHORITY_ID", AUTHORITY)
    handle = start_server_thread(scanned_url, log_signer, tmp_path)
    yield handle
    handle.stop()


def _kuwait_quote(year: int) -> pb.QuoteRenewalRequest:
    """A renewal for ``year`` of the household of ``KW_SPONSOR`` (with ``KW_SPOUSE`` and a
    child born on ``KW_CHILD_BIRTH``)."""
    request = pb.QuoteRenewalRequest(
        jurisdiction="KW",
        sponsor=KW_SPONSOR,
        period_start=civil_date(dt.date(year, 1, 1)),
        period_end=civil_date(dt.date(year, 12, 31)),
    )
    family = [
        (KW_SPONSOR, R.RELATIONSHIP_SELF, pb.RESIDENCE_CATEGORY_PRIVATE_SECTOR_WORKER, None),
        (KW_SPOUSE, R.RELATIONSHIP_SPOUSE, pb.RESIDENCE_CATEGORY_DEPENDENT, None),
        (KW_CHILD, R.RELATIONSHIP_CHILD, pb.RESIDENCE_CATEGORY_DEPENDENT, KW_CHILD_BIRTH),
    ]
    for person, relationship, category, birth in family:
        member = request.members.add(
            person=person, relationship=relationship, residence_category=category
        )
        if birth is not None:
            member.birth_date.CopyFrom(civil_date(birth))
    return request


def _renewals(server: ServerHandle, channel: grpc.Channel) -> RenewalClient:
    return RenewalClient(channel, log=TrustedLog.from_verifier_key(server.log_verifier_key))


def _kuwait_renewal(server: ServerHandle, operator_signer: Ed25519Signer) -> tuple[pb.Payment, str]:
    """Kuwait's portal quotes and pays the household's 2027 renewal (a quote, a payment, a
    FeeCollected), and quotes 2028 without paying; returns the payment and the unpaid quote."""
    onboard(server, operator_signer, AUTHORITY, AUTHORITY_SIGNER, SignerRole.AUTHORITY)
    with server.channel("portal", "KW") as channel:
        renewals = _renewals(server, channel)
        quote = renewals.quote(_kuwait_quote(2027)).quote
        payment = renewals.start_payment(quote.quote_id, "erasure-kw-1", gateway="simulated")
        unpaid = renewals.quote(_kuwait_quote(2028)).quote.quote_id
    assert payment.state == pb.PAYMENT_STATE_RECORDED
    return payment, unpaid


def _quote_json(database_url: str) -> str:
    engine = create_engine(database_url)
    try:
        with engine.connect() as connection:
            return "".join(connection.execute(text("SELECT quote_json FROM quotes")).scalars())
    finally:
        engine.dispose()


def _money_records(database_url: str) -> list[tuple[object, ...]]:
    """What payments keeps of money: the quotes' and payments' amounts and references."""
    engine = create_engine(database_url)
    try:
        with engine.connect() as connection:
            return [
                tuple(row)
                for row in connection.execute(
                    text(
                        "SELECT q.quote_id, q.total_minor, q.currency_code, p.payment_id, "
                        "p.amount_minor, p.captured_minor, p.state, p.leaf_index "
                        "FROM quotes q JOIN payments p ON p.quote_id = q.quote_id "
                        "ORDER BY q.quote_id"
                    )
                )
            ]
    finally:
        engine.dispose()


def _populate(
    server: ServerHandle, operator_signer: Ed25519Signer, insurer_signer: Ed25519Signer
) -> ServerHandle:
    onboard(server, operator_signer, INSURER, insurer_signer)
    log = TrustedLog.from_verifier_key(server.log_verifier_key)
    with server.channel("insurer", INSURER) as channel:
        insurer = InsurerClient(channel, signer=insurer_signer, log=log)
        now = test_clock.now()
        for event in sample_events(6, INSURER, now, tokens=insurer.tokens.tokens):
            insurer.submit(event)
    return server


def _erase(server: ServerHandle, tmp_path: Path, person: str) -> tuple[int, str]:
    key = tmp_path / "operator.key"
    from tests.conftest import OPERATOR_SIGNER

    key.write_text(format_signer_key(OPERATOR_SIGNER) + "\n", encoding="utf-8")
    return _cli(
        "erase", "--person", person, "--basis", "PDPL art. 18: retention period ended",
        *server.cli_arguments("operator", "operator"),
        "--operator-key", str(key), "--log-verifier", server.log_verifier_key,
    )  # fmt: skip


def _grant_with_reason(server: ServerHandle, who: types_pb2.PersonId, reason: str) -> None:
    """The operator grants ``who`` one more person to resolve, for ``reason`` (the request id,
    kept after erasure, names no one: a fresh one)."""
    with server.channel("operator", "operator") as channel:
        admin = AdminClient(channel)
        admin.grant_beneficiary_resolutions(
            admin.person_token(who), 1, reason=reason, request_id=str(uuid.uuid4())
        )


def _database_bytes(database_url: str) -> bytes:
    """Every byte the database keeps (see the module doc for how each engine is read)."""
    url = make_url(database_url)
    if url.get_backend_name() == "sqlite":
        path = str(url.database)
        with sqlite3.connect(path) as connection:
            connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        chunks = []
        for suffix in ("", "-wal", "-journal"):
            with contextlib.suppress(FileNotFoundError), open(path + suffix, "rb") as file:
                chunks.append(file.read())
        return b"".join(chunks)
    engine = create_engine(database_url, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as connection:
            connection.execute(text("VACUUM FULL person_identities"))
            connection.execute(text("VACUUM FULL person_tokens"))
            connection.execute(text("VACUUM FULL quotes"))  # redacted by the payments' hook
            connection.execute(text("VACUUM FULL beneficiary_resolution_grants"))  # reasons
            connection.execute(text("CHECKPOINT"))
            files = connection.execute(
                text(
                    "SELECT pg_relation_filepath(c.oid) FROM pg_class c "
                    "JOIN pg_namespace n ON n.oid = c.relnamespace "
                    "WHERE c.relkind IN ('r', 'i', 't', 'm') AND n.nspname = 'public' "
                    "AND pg_relation_filepath(c.oid) IS NOT NULL"
                )
            ).scalars()
            chunks = []
            for path in list(files):
                size = connection.execute(
                    text("SELECT (pg_stat_file(:p, true)).size"), {"p": path}
                ).scalar()
                if size:
                    chunks.append(
                        connection.execute(
                            text("SELECT pg_read_binary_file(:p)"), {"p": path}
                        ).scalar_one()
                    )
            return b"".join(bytes(chunk) for chunk in chunks)
    finally:
        engine.dispose()


@pytest.fixture
def populated(
    server: ServerHandle, operator_signer: Ed25519Signer, insurer_signer: Ed25519Signer
) -> ServerHandle:
    return _populate(server, operator_signer, insurer_signer)


def test_an_erased_person_is_found_nowhere_and_the_log_still_verifies(
    scanned_server: ServerHandle,
    scanned_url: str,
    tmp_path: Path,
    operator_signer: Ed25519Signer,
    insurer_signer: Ed25519Signer,
) -> None:
    server = _populate(scanned_server, operator_signer, insurer_signer)
    database_url = scanned_url
    payment, unpaid = _kuwait_renewal(server, operator_signer)
    money = _money_records(database_url)
    assert [row[3] for row in money] == [payment.payment_id]
    assert KW_SPOUSE.value in _quote_json(database_url)
    wife = f"SA:RESIDENCE_ID:{WIFE.value}"
    _grant_with_reason(server, WIFE, WIFE_GRANT_REASON)
    _grant_with_reason(server, SPONSOR, SPONSOR_GRANT_REASON)
    stored = _database_bytes(database_url)
    assert WIFE.value.encode() in stored  # the scan can find it
    assert WIFE_GRANT_REASON.encode() in stored  # the operator's reason about her, too
    assert KW_SPOUSE.value.encode() in stored  # in the vault and the payments' quote
    code, output = _erase(server, tmp_path, wife)
    assert code == 0, output
    assert "erased pt_" in output and WIFE.value not in output
    code, output = _erase(server, tmp_path, f"KW:CIVIL_ID:{KW_SPOUSE.value}")
    assert code == 0, output
    assert _money_records(database_url) == money  # the money records stay, amounts and all
    quotes_now = _quote_json(database_url)
    assert KW_SPOUSE.value not in quotes_now and KW_SPONSOR.value in quotes_now
    # A quote naming the erased person can no longer be paid; refusing it writes nothing.
    before = row_counts(database_url)
    with server.channel("portal", "KW") as channel, pytest.raises(ClientError) as refused:
        _renewals(server, channel).start_payment(unpaid, "erasure-kw-2", gateway="simulated")
    assert (refused.value.code, refused.value.reason) == (
        grpc.StatusCode.FAILED_PRECONDITION,
        "PERSON_ERASED",
    )
    assert row_counts(database_url) == before
    log = TrustedLog.from_verifier_key(server.log_verifier_key)
    with server.channel("operator", "operator") as channel:
        portal = PortalClient(channel, log=log)
        assert list(portal.get_coverage(WIFE, test_clock.today()).response.coverages) == []
        household = portal.check_household(
            SPONSOR, [], through=test_clock.today(), jurisdiction="SA"
        )
        members = {m.person.value for m in household.response.members}
        assert members == {SPONSOR.value, iqama(18).value}  # the wife is no longer on record
        with pytest.raises(grpc.RpcError) as unknown:
            ipb_grpc.IdentityServiceStub(channel).LookUpPersonToken(
                ipb.LookUpPersonTokenRequest(person=WIFE)
            )
        assert unknown.value.code() == grpc.StatusCode.NOT_FOUND
    assert rebuild_and_compare(server.running.engine).consistent
    code, output = _cli(
        "audit", "verify", *server.cli_arguments("auditor", "auditor"),
        "--log-verifier", server.log_verifier_key, "--workers", "1",
    )  # fmt: skip
    assert code == 0, output
    stored = _database_bytes(database_url)
    assert WIFE.value.encode() not in stored
    assert WIFE_GRANT_REASON.encode() not in stored  # the erasure cleared it
    assert KW_SPOUSE.value.encode() not in stored
    assert SPONSOR.value.encode() in stored  # the others stay
    assert SPONSOR_GRANT_REASON.encode() in stored
    assert KW_SPONSOR.value.encode() in stored


def test_erasing_a_person_the_vault_does_not_know_writes_nothing(
    populated: ServerHandle, database_url: str, tmp_path: Path
) -> None:
    before = row_counts(database_url)
    code, output = _erase(populated, tmp_path, "SA:RESIDENCE_ID:2000099990")
    assert code == 3 and "PERSON_NOT_IN_VAULT" in output, output
    assert row_counts(database_url) == before


def test_only_the_operator_may_look_a_token_up(populated: ServerHandle, database_url: str) -> None:
    before = row_counts(database_url)
    for role, name in (("insurer", INSURER), ("portal", "SA"), ("auditor", "auditor")):
        with populated.channel(role, name) as channel, pytest.raises(grpc.RpcError) as refused:
            ipb_grpc.IdentityServiceStub(channel).LookUpPersonToken(
                ipb.LookUpPersonTokenRequest(person=SPONSOR)
            )
        assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert row_counts(database_url) == before
