"""Issue 14: no personal identifier in the log, the log open to any authenticated reader, every
refused event about people writing nothing, and erasure (on SQLite and PostgreSQL).

The scans look for every identifier the vault ever held, in every form a careless encoder could
leave: its digits as text, the number as big- and little-endian integers, and the unsalted
SHA-256 (raw and hex) of the value and of the ``COUNTRY:TYPE:VALUE`` key.
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Iterator
from dataclasses import dataclass

import grpc
import pytest
from sqlalchemy import select

from clients.auditor import AuditorClient
from clients.errors import ClientError
from clients.insurer import InsurerClient, sign_event
from clients.portal import PortalClient
from clients.samples import iqama, sample_events
from clients.verify import TrustedLog
from ledger.coverage.model import PersonRef
from ledger.coverage.rebuild import rebuild_and_compare
from ledger.dsse import sign_envelope
from ledger.entry import envelope_to_proto
from ledger.events import civil_date
from ledger.keys import insurer_key_id
from ledger.signers import SignerRole
from ledger.signing import Ed25519Signer
from ledger.storage.tables import checkpoints, log_entries
from ledger.storage.vault_store import person_identities
from ledger.v1 import ledger_service_pb2 as pb
from ledger.v1 import ledger_service_pb2_grpc as pb_grpc
from tests import clock as test_clock
from tests.builders import R, added, erased, fee_collected, person, removed, token
from tests.conftest import ServerHandle, onboard
from tests.stack import row_counts

INSURER = "gulf-health"
AUTHORITY = "kw-gov-health"
TODAY = dt.date(2026, 6, 1)
BIRTHS = {4243: dt.date(2011, 7, 13), 4244: dt.date(1988, 11, 30)}
"""Members added with a birth date (far from every date the sample events carry)."""


@dataclass
class World:
    server: ServerHandle
    database_url: str
    insurer: InsurerClient
    operator: InsurerClient
    authority: InsurerClient
    log: TrustedLog


@pytest.fixture
def world(
    server: ServerHandle,
    database_url: str,
    operator_signer: Ed25519Signer,
    insurer_signer: Ed25519Signer,
) -> Iterator[World]:
    authority_signer = Ed25519Signer.generate(AUTHORITY)
    onboard(server, operator_signer, INSURER, insurer_signer)
    onboard(server, operator_signer, AUTHORITY, authority_signer, role=SignerRole.AUTHORITY)
    log = TrustedLog.from_verifier_key(server.log_verifier_key)
    with (
        server.channel("insurer", INSURER) as insurer_channel,
        server.channel("operator", "operator") as operator_channel,
        server.channel("authority", AUTHORITY) as authority_channel,
    ):
        yield World(
            server,
            database_url,
            InsurerClient(insurer_channel, signer=insurer_signer, log=log),
            InsurerClient(operator_channel, signer=operator_signer, log=log),
            InsurerClient(authority_channel, signer=authority_signer, log=log),
            log,
        )


def _populate(world: World) -> None:
    """Policies, premiums, cancellations, a member added and removed, a collected fee."""
    now = test_clock.now()
    for event in sample_events(12, INSURER, now, tokens=world.insurer.tokens.tokens):
        world.insurer.submit(event)
    day = now.date()
    world.insurer.submit(added(INSURER, "POL-00000001", person(4242), R.RELATIONSHIP_CHILD, day))
    # Members whose birth dates the vault keeps (given with GetPersonTokens, never signed).
    for serial, born in BIRTHS.items():
        [member] = world.insurer.tokens.tokens([person(serial)], [born])
        world.insurer.submit(added(INSURER, "POL-00000002", member, R.RELATIONSHIP_CHILD, day))
    world.insurer.submit(
        removed(INSURER, "POL-00000001", person(4242), day, R.CANCELLATION_REASON_DEATH)
    )
    world.authority.submit(fee_collected(AUTHORITY, "R-PRIVACY-1"))


def _identifiers(world: World) -> list[PersonRef]:
    engine = world.server.running.engine
    with engine.connect() as connection:
        rows = connection.execute(select(person_identities)).all()
    return [PersonRef(id_type=r.id_type, value=r.value, country=r.country) for r in rows]


def _forms(person: PersonRef) -> list[bytes]:
    """Every encoding of an identifier the scans look for."""
    value = person.value.encode("ascii")
    forms = [value, person.key.encode("ascii")]
    if person.value.isdigit():
        number = int(person.value)
        forms += [number.to_bytes(8, "big"), number.to_bytes(8, "little")]
    for text in (value, person.key.encode("ascii")):
        digest = hashlib.sha256(text).digest()
        forms += [digest, digest.hex().encode("ascii"), digest.hex().upper().encode("ascii")]
    return forms


def _found_in(blobs: list[bytes], people: list[PersonRef]) -> list[str]:
    return [
        f"{person.key} as {form!r}"
        for person in people
        for form in _forms(person)
        if any(form in blob for blob in blobs)
    ]


def _birth_dates(world: World) -> list[dt.date]:
    with world.server.running.engine.connect() as connection:
        return list(
            connection.execute(
                select(person_identities.c.birth_date).where(
                    person_identities.c.birth_date.is_not(None)
                )
            ).scalars()
        )


def _date_forms(day: dt.date) -> list[bytes]:
    """A birth date as ISO text, as digits, and as an encoded CivilDate (bare, and as the
    reserved ``Member.birth_date`` field 3 would have carried it)."""
    encoded = civil_date(day).SerializeToString()
    return [
        day.isoformat().encode("ascii"),
        day.strftime("%Y%m%d").encode("ascii"),
        encoded,
        bytes([0x1A, len(encoded)]) + encoded,
    ]


def test_no_leaf_and_no_checkpoint_holds_an_identifier(world: World) -> None:
    _populate(world)
    people = _identifiers(world)
    assert len(people) >= 12 * 3 // 2 + 2  # the households, the child, the Kuwaiti sponsor
    births = _birth_dates(world)
    assert sorted(births) == sorted(BIRTHS.values())  # the vault has them, to be looked for
    with world.server.running.engine.connect() as connection:
        leaves = [bytes(b) for b in connection.execute(select(log_entries.c.entry_bytes)).scalars()]
        notes = [bytes(b) for b in connection.execute(select(checkpoints.c.note_bytes)).scalars()]
    assert leaves and notes
    assert _found_in(leaves + notes, people) == []
    dates_found = [
        f"{day} as {form!r}"
        for day in births
        for form in _date_forms(day)
        if any(form in blob for blob in leaves + notes)
    ]
    assert dates_found == []
    # The same bytes as any authenticated reader gets them: a portal reads the whole log.
    with world.server.channel("portal", "KW") as channel:
        auditor = AuditorClient(channel, log=world.log)
        size = len(leaves)
        served = [entry for _, entry in auditor.entries(0, size)]
    assert len(served) == size and _found_in(served, people) == []


def test_an_insurer_and_a_portal_may_read_the_log(world: World) -> None:
    _populate(world)
    for role, name in (("insurer", INSURER), ("portal", "SA")):
        with world.server.channel(role, name) as channel:
            stub = pb_grpc.LedgerServiceStub(channel)
            proof = stub.GetInclusionProof(pb.GetInclusionProofRequest(leaf_index=3, tree_size=5))
            assert (proof.leaf_index, proof.tree_size) == (3, 5)


def _refused(world: World, submit: object) -> ClientError:
    before = row_counts(world.database_url)
    with pytest.raises(ClientError) as refused:
        submit()  # type: ignore[operator]
    assert row_counts(world.database_url) == before, "a refused event wrote something"
    return refused.value


def test_an_event_naming_a_token_the_vault_never_issued_is_refused(world: World) -> None:
    _populate(world)
    event = added(INSURER, "POL-00000002", "pt_" + "q" * 26, R.RELATIONSHIP_CHILD, TODAY)
    error = _refused(world, lambda: world.insurer.submit(event))
    assert (error.code, error.reason) == (grpc.StatusCode.NOT_FOUND, "PERSON_TOKEN_UNKNOWN")
    assert [v.field for v in error.field_violations] == ["event.member_added.member.person_token"]


def test_a_v1_payload_is_refused_naming_the_supported_type(world: World) -> None:
    event = next(sample_events(1, INSURER, test_clock.now(), tokens=world.insurer.tokens.tokens))
    payload = event.SerializeToString(deterministic=True)
    signer = world.insurer._signer
    envelope = envelope_to_proto(
        sign_envelope(
            "application/vnd.policy-ledger.event.v1+protobuf",
            payload,
            signer,
            insurer_key_id(signer.public_key),
        )
    )
    error = _refused(world, lambda: world.insurer.submit_envelope(envelope))
    assert (error.code, error.reason) == (
        grpc.StatusCode.INVALID_ARGUMENT,
        "PAYLOAD_TYPE_UNSUPPORTED",
    )
    assert error.metadata["supported"] == "application/vnd.policy-ledger.event.v2+protobuf"
    assert sign_event(event, signer).payload_type.endswith("event.v2+protobuf")


def _erase(world: World, who: object) -> None:
    world.operator.submit(erased(who, "PDPL art. 18: retention period ended"))  # type: ignore[arg-type]


def test_after_erasure_the_person_is_found_nowhere_and_the_log_still_verifies(
    world: World,
) -> None:
    _populate(world)
    wife = iqama(16 * 3 + 1)  # household 3's spouse
    wife_token = token(wife)
    with world.server.channel("operator", "operator") as channel:
        portal = PortalClient(channel, log=world.log)
        assert portal.get_coverage(wife, test_clock.today()).response.coverages
    _erase(world, wife_token)
    with world.server.channel("operator", "operator") as channel:
        portal = PortalClient(channel, log=world.log)
        assert list(portal.get_coverage(wife, test_clock.today()).response.coverages) == []
        household = portal.check_household(
            iqama(16 * 3), [], through=test_clock.today(), jurisdiction="SA"
        ).response
        assert all(member.person.value != wife.value for member in household.members)
    assert all(p.value != wife.value for p in _identifiers(world))
    assert rebuild_and_compare(world.server.running.engine).consistent
    # Events naming the erased person are refused, writing nothing; so is a second erasure.
    event = removed(INSURER, "POL-00000003", wife_token, TODAY, R.CANCELLATION_REASON_DEATH)
    error = _refused(world, lambda: world.insurer.submit(event))
    assert (error.code, error.reason) == (grpc.StatusCode.FAILED_PRECONDITION, "PERSON_ERASED")
    error = _refused(world, lambda: _erase(world, wife_token))
    assert (error.code, error.reason) == (grpc.StatusCode.FAILED_PRECONDITION, "PERSON_ERASED")


def test_only_the_operator_may_sign_an_erasure(world: World) -> None:
    _populate(world)
    event = erased(iqama(16), "no basis")
    event.insurer_id = INSURER
    error = _refused(world, lambda: world.insurer.submit(event))
    assert error.code == grpc.StatusCode.PERMISSION_DENIED


def test_an_erasure_of_a_token_the_vault_never_issued_is_refused(world: World) -> None:
    error = _refused(world, lambda: _erase(world, "pt_" + "z" * 26))
    assert (error.code, error.reason) == (grpc.StatusCode.NOT_FOUND, "PERSON_TOKEN_UNKNOWN")


def test_a_requested_token_is_the_one_events_must_name(world: World) -> None:
    assert world.insurer.tokens.token(iqama(5)) == token(iqama(5))
