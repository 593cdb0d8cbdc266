"""The insured acts for themselves (issue 11, item 4), on SQLite and PostgreSQL: a person
declares their spouse and child, the fund decides, acceptance adds them to the policy; a person
reads only their own record and their accepted beneficiaries'. Every refusal (a declaration for
someone else, a decision by another insurer, a second decision, reading another person) writes
nothing: no entry, no projection row, no access record; each has an accepted twin."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from google.protobuf import json_format
from sqlalchemy import func, select

from clients.beneficiary import (
    BeneficiaryClient,
    Declared,
    beneficiaries_declared,
    declaration_decided,
    issue_enrolment_code,
)
from clients.errors import ClientError
from clients.insurer import InsurerClient
from clients.person_tokens import PersonTokens, tokenize_event
from clients.verify import TrustedLog
from ledger.coverage.rebuild import rebuild_and_compare
from ledger.signers import SignerRole
from ledger.signing import Ed25519Signer
from ledger.storage.access_log import access_record_people, access_records
from ledger.storage.enrolment_store import EnrolmentStore, enrolment_codes
from ledger.storage.tables import PROJECTION_TABLES, log_entries
from ledger.v1 import beneficiary_service_pb2 as bpb
from ledger.v1 import events_pb2, types_pb2
from tests import clock
from tests.builders import issued, tokens
from tests.conftest import OPERATOR_SIGNER, ServerHandle, onboard

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"

R = events_pb2
FUND, RIVAL = "cnops", "rival-fund"
JAN1, DEC31, JUL1 = dt.date(2026, 1, 1), dt.date(2026, 12, 31), dt.date(2026, 7, 1)
NOW = dt.datetime(2026, 6, 1, 9, 0, tzinfo=dt.UTC)
MARRIAGE = ((R.DOCUMENT_KIND_MARRIAGE_CERTIFICATE, "CNOPS-DOC-0001"),)
BIRTH = ((R.DOCUMENT_KIND_BIRTH_CERTIFICATE, "CNOPS-DOC-0002"),)


def cin(value: str) -> types_pb2.PersonId:
    """A Moroccan CIN."""
    return types_pb2.PersonId(
        type=types_pb2.PERSON_ID_TYPE_NATIONAL_ID, value=value, country_code="MA"
    )


@dataclass
class Family:
    server: ServerHandle
    fund: Ed25519Signer
    rival: Ed25519Signer
    insured: str
    other: str
    spouse: str
    child: str
    insured_signer: Ed25519Signer
    other_signer: Ed25519Signer

    def log(self) -> TrustedLog:
        return TrustedLog.from_verifier_key(self.server.log_verifier_key)

    def submit(self, signer: Ed25519Signer, role: str, event: events_pb2.Event) -> Any:
        with self.server.channel(role, event.insurer_id) as channel:
            return InsurerClient(channel, signer=signer, log=self.log()).submit(event)

    def declare(self, declaration_id: str, **changes: Any) -> events_pb2.Event:
        return beneficiaries_declared(
            changes.get("insured", self.insured),
            declaration_id,
            (FUND, "CNOPS-0001"),
            changes.get(
                "people",
                [
                    Declared(self.spouse, R.RELATIONSHIP_SPOUSE, MARRIAGE),
                    Declared(self.child, R.RELATIONSHIP_CHILD, BIRTH),
                ],
            ),
            effective=JUL1,
            occurred_at=NOW,
        )

    def record(self, caller: str, person: str) -> bpb.GetPersonRecordResponse:
        with self.server.channel("beneficiary", caller) as channel:
            client = BeneficiaryClient(
                channel, person_token=caller, signer=self.insured_signer, log=self.log()
            )
            return client.record(person)

    def snapshot(self) -> dict[str, int]:
        tables = [*PROJECTION_TABLES, log_entries, access_records, access_record_people]
        with self.server.running.engine.connect() as connection:
            return {
                table.name: connection.execute(select(func.count()).select_from(table)).scalar_one()
                for table in tables
            }


@pytest.fixture
def family(server: ServerHandle) -> Iterator[Family]:
    fund, rival = Ed25519Signer.generate(FUND), Ed25519Signer.generate(RIVAL)
    onboard(server, OPERATOR_SIGNER, FUND, fund)
    onboard(server, OPERATOR_SIGNER, RIVAL, rival)
    insured, other, spouse, child = tokens(
        [cin("BE123456"), cin("BH345678"), cin("BK765432"), cin("BJ234567")]
    )
    insured_signer = Ed25519Signer.generate(insured)
    other_signer = Ed25519Signer.generate(other)
    onboard(server, OPERATOR_SIGNER, insured, insured_signer, SignerRole.BENEFICIARY)
    onboard(server, OPERATOR_SIGNER, other, other_signer, SignerRole.BENEFICIARY)
    world = Family(server, fund, rival, insured, other, spouse, child, insured_signer, other_signer)
    mad = types_pb2.Money(currency_code="MAD", amount_minor=84_000)
    for policy_id, person in (("CNOPS-0001", insured), ("CNOPS-0002", other)):
        event = issued(FUND, policy_id, person, [(person, R.RELATIONSHIP_SELF)], JAN1, DEC31)
        event.policy_issued.annual_premium.CopyFrom(mad)
        world.submit(fund, "insurer", event)
    yield world


def _refused(world: Family, call: Any) -> ClientError:
    before = world.snapshot()
    with pytest.raises(ClientError) as raised:
        call()
    assert world.snapshot() == before, "a refusal wrote something"
    return raised.value


def test_a_declaration_accepted_by_the_fund_covers_the_spouse_and_child(family: Family) -> None:
    family.submit(family.insured_signer, "beneficiary", family.declare("decl-1"))
    [pending] = family.record(family.insured, family.insured).declarations
    assert pending.status == bpb.DECLARATION_STATUS_PENDING
    assert [b.documents[0].reference for b in pending.beneficiaries] == [
        "CNOPS-DOC-0001",
        "CNOPS-DOC-0002",
    ]
    decision = declaration_decided(FUND, family.insured, "decl-1", accepted=True, occurred_at=NOW)
    family.submit(family.fund, "insurer", decision)
    record = family.record(family.insured, family.insured)
    assert record.declarations[0].status == bpb.DECLARATION_STATUS_ACCEPTED
    spouse = family.record(family.insured, family.spouse)  # an accepted beneficiary's record
    assert [(c.policy_id, c.relationship, c.start_date.month) for c in spouse.coverages] == [
        ("CNOPS-0001", R.RELATIONSHIP_SPOUSE, 7)
    ]
    child = family.record(family.insured, family.child)
    assert [(c.sponsor_token, c.relationship) for c in child.coverages] == [
        (family.insured, R.RELATIONSHIP_CHILD)
    ]
    # The projections (declarations, members) are what the log implies: a rebuild agrees.
    report = rebuild_and_compare(family.server.running.engine)
    assert report.consistent, report


def test_a_declaration_for_someone_else_is_refused_and_writes_nothing(family: Family) -> None:
    forged = family.declare("decl-forged", insured=family.insured)
    forged.insurer_id = family.other  # signed by another person, naming the insured
    error = _refused(family, lambda: family.submit(family.other_signer, "beneficiary", forged))
    assert error.code == grpc.StatusCode.PERMISSION_DENIED
    assert error.reason == "DECLARATION_FOR_ANOTHER"
    # The twin: the same person declares for themselves on their own policy.
    own = family.declare("decl-own", insured=family.other)
    own.beneficiaries_declared.policy.policy_id = "CNOPS-0002"
    family.submit(family.other_signer, "beneficiary", own)


def test_a_declaration_on_a_policy_not_the_insureds_is_refused(family: Family) -> None:
    other_policy = family.declare("decl-2")
    other_policy.beneficiaries_declared.policy.policy_id = "CNOPS-0002"
    error = _refused(
        family, lambda: family.submit(family.insured_signer, "beneficiary", other_policy)
    )
    assert (error.code, error.reason) == (
        grpc.StatusCode.FAILED_PRECONDITION,
        "NOT_INSURED_ON_POLICY",
    )


def test_a_decision_by_another_insurer_is_refused_and_writes_nothing(family: Family) -> None:
    family.submit(family.insured_signer, "beneficiary", family.declare("decl-1"))
    by_rival = declaration_decided(RIVAL, family.insured, "decl-1", accepted=True, occurred_at=NOW)
    error = _refused(family, lambda: family.submit(family.rival, "insurer", by_rival))
    assert (error.code, error.reason) == (
        grpc.StatusCode.PERMISSION_DENIED,
        "DECLARATION_OF_ANOTHER_INSURER",
    )
    rejected = declaration_decided(
        FUND,
        family.insured,
        "decl-1",
        accepted=False,
        reason="document unreadable",
        occurred_at=NOW,
    )
    family.submit(family.fund, "insurer", rejected)  # the twin: the fund decides
    [declaration] = family.record(family.insured, family.insured).declarations
    assert declaration.status == bpb.DECLARATION_STATUS_REJECTED
    assert declaration.reason == "document unreadable"


def test_a_second_decision_is_refused_and_writes_nothing(family: Family) -> None:
    family.submit(family.insured_signer, "beneficiary", family.declare("decl-1"))
    first = declaration_decided(FUND, family.insured, "decl-1", accepted=True, occurred_at=NOW)
    family.submit(family.fund, "insurer", first)
    again = declaration_decided(
        FUND, family.insured, "decl-1", accepted=False, reason="changed mind", occurred_at=NOW
    )
    again.event_id = "decide-again"
    error = _refused(family, lambda: family.submit(family.fund, "insurer", again))
    assert (error.code, error.reason) == (
        grpc.StatusCode.FAILED_PRECONDITION,
        "DECLARATION_DECIDED",
    )


def test_reading_another_person_is_refused_and_records_nothing(family: Family) -> None:
    family.submit(family.insured_signer, "beneficiary", family.declare("decl-1"))
    for someone in (family.other, family.spouse):  # the spouse: declared, not accepted yet
        error = _refused(family, lambda who=someone: family.record(family.insured, who))
        assert (error.code, error.reason) == (
            grpc.StatusCode.PERMISSION_DENIED,
            "PERSON_NOT_CALLER",
        )
    before = family.snapshot()
    own = family.record(family.insured, family.insured)  # the twin: one's own record
    assert [c.policy_id for c in own.coverages] == ["CNOPS-0001"]
    after = family.snapshot()
    assert after["access_records"] == before["access_records"] + 1


def _example(world: Family, name: str) -> events_pb2.Event:
    event = events_pb2.Event()
    json_format.Parse((EXAMPLES / name).read_text(encoding="utf-8"), event)
    event.occurred_at.FromDatetime(NOW)
    with world.server.channel("operator", "operator") as channel:
        tokenize_event(event, PersonTokens(channel))
    return event


def test_the_example_files_are_accepted_in_order(family: Family) -> None:
    declared = _example(family, "beneficiaries-declared.json")
    assert declared.insurer_id == family.insured  # the signer's identifier became their token
    decided = _example(family, "declaration-decided.json")
    family.submit(family.insured_signer, "beneficiary", declared)
    family.submit(family.fund, "insurer", decided)
    spouse = family.record(family.insured, family.spouse)
    assert [c.policy_id for c in spouse.coverages] == ["CNOPS-0001"]


def _bad_declarations(world: Family) -> dict[str, tuple[events_pb2.Event, grpc.StatusCode, str]]:
    parent = world.declare(
        "decl-parent", people=[Declared(world.spouse, R.RELATIONSHIP_PARENT, MARRIAGE)]
    )
    no_documents = world.declare(
        "decl-bare", people=[Declared(world.spouse, R.RELATIONSHIP_SPOUSE, ())]
    )
    oneself = world.declare(
        "decl-self", people=[Declared(world.insured, R.RELATIONSHIP_SPOUSE, MARRIAGE)]
    )
    outside = world.declare("decl-late")
    outside.beneficiaries_declared.effective_date.year = 2027
    invalid = grpc.StatusCode.INVALID_ARGUMENT
    return {
        "parent": (parent, invalid, "EVENT_INVALID"),
        "no documents": (no_documents, invalid, "EVENT_INVALID"),
        "oneself": (oneself, grpc.StatusCode.FAILED_PRECONDITION, "SELF_DECLARED"),
        "outside the policy": (outside, grpc.StatusCode.FAILED_PRECONDITION, "DATE_OUTSIDE_POLICY"),
    }


def test_malformed_or_impossible_declarations_are_refused_and_write_nothing(
    family: Family,
) -> None:
    for case, (event, code, reason) in _bad_declarations(family).items():
        error = _refused(
            family, lambda event=event: family.submit(family.insured_signer, "beneficiary", event)
        )
        assert (error.code, error.reason) == (code, reason), case
    family.submit(family.insured_signer, "beneficiary", family.declare("decl-1"))  # the twin
    again = family.declare("decl-1", people=[Declared(family.child, R.RELATIONSHIP_CHILD, BIRTH)])
    again.event_id = "declare-decl-1-again"
    error = _refused(family, lambda: family.submit(family.insured_signer, "beneficiary", again))
    assert (error.code, error.reason) == (grpc.StatusCode.ALREADY_EXISTS, "DECLARATION_EXISTS")


def test_bad_decisions_are_refused_and_write_nothing(family: Family) -> None:
    unknown = declaration_decided(FUND, family.insured, "decl-none", accepted=True, occurred_at=NOW)
    error = _refused(family, lambda: family.submit(family.fund, "insurer", unknown))
    assert (error.code, error.reason) == (grpc.StatusCode.NOT_FOUND, "DECLARATION_NOT_FOUND")
    family.submit(family.insured_signer, "beneficiary", family.declare("decl-1"))
    silent = declaration_decided(FUND, family.insured, "decl-1", accepted=False, occurred_at=NOW)
    error = _refused(family, lambda: family.submit(family.fund, "insurer", silent))
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT  # a rejection states its reason
    assert [v.field for v in error.field_violations] == ["event.declaration_decided.reason"]
    by_person = declaration_decided(
        family.insured, family.insured, "decl-1", accepted=True, occurred_at=NOW
    )
    by_person.event_id = "self-decided"
    error = _refused(family, lambda: family.submit(family.insured_signer, "beneficiary", by_person))
    assert (error.code, error.reason) == (
        grpc.StatusCode.PERMISSION_DENIED,
        "SIGNER_ROLE_NOT_ALLOWED",
    )


def _codes(world: Family) -> int:
    with world.server.running.engine.connect() as connection:
        return int(
            connection.execute(select(func.count()).select_from(enrolment_codes)).scalar_one()
        )


def test_a_fund_issues_enrolment_codes_only_for_the_people_it_insures(family: Family) -> None:
    for caller, person in ((RIVAL, family.insured), (FUND, family.spouse)):
        before = _codes(family)
        with (
            family.server.channel("insurer", caller) as channel,
            pytest.raises(ClientError) as raised,
        ):
            issue_enrolment_code(channel, person)
        assert (raised.value.code, raised.value.reason) == (
            grpc.StatusCode.PERMISSION_DENIED,
            "PERSON_NOT_INSURED_BY_CALLER",
        )
        assert _codes(family) == before  # nothing stored
    with family.server.channel("insurer", FUND) as channel:
        issued = issue_enrolment_code(channel, family.insured, "7d")
        with pytest.raises(ClientError) as raised:
            issue_enrolment_code(channel, family.insured, "90d")  # over the 30 days allowed
        assert raised.value.code == grpc.StatusCode.INVALID_ARGUMENT
    store = EnrolmentStore(family.server.running.engine)
    assert store.check("beneficiary", family.insured, issued.code, clock.now())
    with family.server.channel("operator", "operator") as channel:  # the operator: anyone
        issue_enrolment_code(channel, family.spouse)


def test_a_child_over_the_legal_age_is_refused_unless_a_document_extends_it(
    family: Family,
) -> None:
    # Born 2003-03-01: 23 on 2026-07-01, over 21 (law 65-00, article 5).
    [grown] = tokens([cin("BJ999999")], [dt.date(2003, 3, 1)])
    over = family.declare("decl-grown", people=[Declared(grown, R.RELATIONSHIP_CHILD, BIRTH)])
    error = _refused(family, lambda: family.submit(family.insured_signer, "beneficiary", over))
    assert (error.code, error.reason) == (grpc.StatusCode.FAILED_PRECONDITION, "CHILD_OVER_AGE")
    studying = (*BIRTH, (R.DOCUMENT_KIND_SCHOOL_CERTIFICATE, "CNOPS-DOC-0009"))
    twin = family.declare("decl-student", people=[Declared(grown, R.RELATIONSHIP_CHILD, studying)])
    family.submit(family.insured_signer, "beneficiary", twin)  # up to 26 in higher education
