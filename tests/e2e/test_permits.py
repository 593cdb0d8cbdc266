"""Residence permits, CheckEmployer and ComputeArrears end to end (issue 10, task A): the
residence authority signs permits, insurers cover (or fail to cover) the people they name, and
the regulator asks what an establishment is responsible for and what it owes. Every refused
permit event is refused with its reason and writes nothing (entries, permits, obligations), on
SQLite and PostgreSQL; each has an accepted twin."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from dataclasses import dataclass

import grpc
import pytest
from sqlalchemy import func, select

from clients.errors import ClientError
from clients.insurer import InsurerClient
from clients.verify import TrustedLog
from ledger.coverage.rebuild import rebuild_and_compare
from ledger.signers import SignerRole
from ledger.signing import Ed25519Signer
from ledger.storage.db import create_ledger_engine
from ledger.storage.tables import log_entries, obligations, permits
from ledger.v1 import compliance_service_pb2 as compliance_pb
from ledger.v1 import compliance_service_pb2_grpc as compliance_grpc
from ledger.v1 import coverage_service_pb2 as cpb
from ledger.v1 import coverage_service_pb2_grpc as coverage_grpc
from ledger.v1 import types_pb2
from tests.builders import (
    R,
    civil,
    issued,
    permit_ended,
    permit_issued,
    permit_renewed,
    person,
    sar,
    suspended,
    token,
)
from tests.conftest import ServerHandle, onboard

AUTHORITY, GULF, NAJM = "sa-residence", "gulf-health", "najm-care"
ESTABLISHMENT = "7000000001"
JAN1, DEC31 = dt.date(2026, 1, 1), dt.date(2026, 12, 31)
PURPOSE = types_pb2.ACCESS_PURPOSE_AUDIT


@dataclass
class World:
    """The residence authority, one licensed insurer, and the operator, on one server."""

    authority: InsurerClient
    gulf: InsurerClient
    najm: InsurerClient
    operator: InsurerClient
    server: ServerHandle
    database_url: str

    def counts(self) -> tuple[int, int, int]:
        """(entries, permits, obligations): what a refusal must leave unchanged."""
        engine = create_ledger_engine(self.database_url)
        try:
            with engine.connect() as connection:
                return tuple(  # type: ignore[return-value]
                    int(connection.execute(select(func.count()).select_from(table)).scalar_one())
                    for table in (log_entries, permits, obligations)
                )
        finally:
            engine.dispose()

    def refused(self, client: InsurerClient, event: object) -> ClientError:
        before = self.counts()
        with pytest.raises(ClientError) as raised:
            client.submit(event)  # type: ignore[arg-type]
        assert self.counts() == before, "a refused event wrote something"
        return raised.value

    def accepted(self, client: InsurerClient, event: object) -> None:
        before = self.counts()[0]
        client.submit(event)  # type: ignore[arg-type]
        assert self.counts()[0] == before + 1


@pytest.fixture
def world(
    server: ServerHandle, operator_signer: Ed25519Signer, database_url: str
) -> Iterator[World]:
    authority_signer = Ed25519Signer.generate(AUTHORITY)
    gulf_signer = Ed25519Signer.generate(GULF)
    najm_signer = Ed25519Signer.generate(NAJM)
    onboard(server, operator_signer, AUTHORITY, authority_signer, SignerRole.AUTHORITY)
    onboard(server, operator_signer, GULF, gulf_signer)
    onboard(server, operator_signer, NAJM, najm_signer)
    trusted = TrustedLog.from_verifier_key(server.log_verifier_key)
    with (
        server.channel("authority", AUTHORITY) as authority,
        server.channel("insurer", GULF) as gulf,
        server.channel("insurer", NAJM) as najm,
        server.channel("operator", "operator") as operator,
    ):
        yield World(
            authority=InsurerClient(authority, signer=authority_signer, log=trusted),
            gulf=InsurerClient(gulf, signer=gulf_signer, log=trusted),
            najm=InsurerClient(najm, signer=najm_signer, log=trusted),
            operator=InsurerClient(operator, signer=operator_signer, log=trusted),
            server=server,
            database_url=database_url,
        )


WORKER_A, WIFE_A, WORKER_B, CHILD = person(900), person(901), person(902), person(903)


def test_permit_refusals_write_nothing_and_their_twins_are_accepted(world: World) -> None:
    wife = (WIFE_A, R.RELATIONSHIP_SPOUSE, dt.date(2026, 3, 1))
    permit = permit_issued(AUTHORITY, "PRM-1", WORKER_A, ESTABLISHMENT, [wife], JAN1, JAN1, DEC31)
    # Only the authority role signs permits.
    as_insurer = permit_issued(GULF, "PRM-1", WORKER_A, ESTABLISHMENT, [wife], JAN1, JAN1, DEC31)
    error = world.refused(world.gulf, as_insurer)
    assert error.code == grpc.StatusCode.PERMISSION_DENIED
    assert error.reason == "SIGNER_ROLE_NOT_ALLOWED"
    # The holder is not a member of his own permit; the entry date lies before the start.
    holder_as_member = permit_issued(
        AUTHORITY, "PRM-1", WORKER_A, ESTABLISHMENT, [(WIFE_A, R.RELATIONSHIP_SELF, JAN1)],
        dt.date(2024, 1, 1), JAN1, DEC31,
    )  # fmt: skip
    error = world.refused(world.authority, holder_as_member)
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT
    fields = {violation.field for violation in error.field_violations}
    assert "event.permit_issued.members[0].relationship" in fields
    assert "event.permit_issued.entry_date" in fields
    world.accepted(world.authority, permit)
    # A permit number is issued once.
    again = permit_issued(AUTHORITY, "PRM-1", WORKER_B, ESTABLISHMENT, [], JAN1, JAN1, DEC31)
    error = world.refused(world.authority, again)
    assert error.code == grpc.StatusCode.ALREADY_EXISTS and error.reason == "PERMIT_EXISTS"
    # Renewals: of a permit that exists, never shorter, adding only new members.
    unknown = permit_renewed(AUTHORITY, "PRM-404", dt.date(2027, 12, 31))
    assert world.refused(world.authority, unknown).reason == "PERMIT_NOT_FOUND"
    shorter = permit_renewed(AUTHORITY, "PRM-1", dt.date(2026, 6, 30))
    assert world.refused(world.authority, shorter).reason == "PERMIT_RENEWAL_SHORTENS"
    twice = permit_renewed(AUTHORITY, "PRM-1", dt.date(2027, 12, 31), [wife])
    assert world.refused(world.authority, twice).reason == "PERMIT_MEMBER_EXISTS"
    newborn = (CHILD, R.RELATIONSHIP_CHILD, dt.date(2026, 9, 10))
    world.accepted(
        world.authority, permit_renewed(AUTHORITY, "PRM-1", dt.date(2027, 12, 31), [newborn])
    )
    # An end within the permit's period; after it, the permit changes no more.
    outside = permit_ended(AUTHORITY, "PRM-1", dt.date(2028, 3, 1), R.PERMIT_END_REASON_FINAL_EXIT)
    assert world.refused(world.authority, outside).reason == "DATE_OUTSIDE_PERMIT"
    world.accepted(
        world.authority,
        permit_ended(AUTHORITY, "PRM-1", dt.date(2027, 9, 1), R.PERMIT_END_REASON_FINAL_EXIT),
    )
    late = permit_renewed(AUTHORITY, "PRM-1", dt.date(2028, 12, 31))
    error = world.refused(world.authority, late)
    assert error.code == grpc.StatusCode.FAILED_PRECONDITION and error.reason == "PERMIT_ENDED"
    # The obligations: from entry, from becoming a dependent, from birth; to the day before
    # the end.
    engine = create_ledger_engine(world.database_url)
    try:
        with engine.connect() as connection:
            rows = {
                row.person_token: (row.relationship, row.obligated_from, row.obligated_until)
                for row in connection.execute(select(obligations))
            }
        report = rebuild_and_compare(engine)
    finally:
        engine.dispose()
    last = dt.date(2027, 8, 31)
    assert rows == {
        token(WORKER_A): ("self", JAN1, last),
        token(WIFE_A): ("spouse", dt.date(2026, 3, 1), last),
        token(CHILD): ("child", dt.date(2026, 9, 10), last),
    }
    assert report.consistent, report


def _employer_policy(policy_id: str, who: types_pb2.PersonId, start: dt.date, end: dt.date,
                     replaces: tuple[str, str] | None = None) -> object:  # fmt: skip
    event = issued(GULF, policy_id, who, [(who, R.RELATIONSHIP_SELF)], start, end,
                   replaces=replaces)  # fmt: skip
    event.policy_issued.holder.organization.registration_number = ESTABLISHMENT
    event.policy_issued.holder.organization.country_code = "SA"
    return event


def _employer_world(world: World) -> None:
    """Worker A insured all year, his wife (a dependent from March) never; worker B insured,
    with a fortnight's gap before his replacement policy."""
    wife = (WIFE_A, R.RELATIONSHIP_SPOUSE, dt.date(2026, 3, 1))
    world.accepted(
        world.authority,
        permit_issued(AUTHORITY, "PRM-A", WORKER_A, ESTABLISHMENT, [wife], JAN1, JAN1, DEC31),
    )
    feb1 = dt.date(2026, 2, 1)
    world.accepted(
        world.authority,
        permit_issued(AUTHORITY, "PRM-B", WORKER_B, ESTABLISHMENT, [], feb1, feb1, DEC31),
    )
    world.accepted(world.gulf, _employer_policy("GA-1", WORKER_A, JAN1, DEC31))
    world.accepted(world.gulf, _employer_policy("GB-1", WORKER_B, feb1, dt.date(2026, 6, 30)))
    world.accepted(
        world.gulf,
        _employer_policy("GB-2", WORKER_B, dt.date(2026, 7, 16), DEC31, replaces=(GULF, "GB-1")),
    )


def _intervals(answer: cpb.EmployerObligation) -> list[tuple[str, str, bool, str]]:
    def text(day: types_pb2.CivilDate) -> str:
        return f"{day.year:04d}-{day.month:02d}-{day.day:02d}"

    return [
        (text(item.first_day), text(item.last_day), item.covered, item.reason)
        for item in answer.intervals
    ]


def test_check_employer_names_each_worker_and_dependent_with_covered_and_uninsured_runs(
    world: World,
) -> None:
    _employer_world(world)
    request = cpb.CheckEmployerRequest(
        establishment_number=ESTABLISHMENT, jurisdiction="SA", from_date=civil(JAN1),
        through_date=civil(DEC31), purpose=PURPOSE,
    )  # fmt: skip
    with world.server.channel("auditor", "cchi") as channel:
        stub = coverage_grpc.CoverageServiceStub(channel)
        answer = stub.CheckEmployer(request, timeout=30)
        people = {item.person_token: item for item in answer.people}
        assert set(people) == {token(WORKER_A), token(WIFE_A), token(WORKER_B)}
        assert _intervals(people[token(WORKER_A)]) == [("2026-01-01", "2026-12-31", True, "")]
        assert _intervals(people[token(WIFE_A)]) == [
            ("2026-03-01", "2026-12-31", False, "NO_COVERAGE")
        ]
        assert people[token(WIFE_A)].uninsured_days == 306
        assert people[token(WIFE_A)].person == WIFE_A  # an auditor sees who it is
        assert _intervals(people[token(WORKER_B)]) == [
            ("2026-02-01", "2026-06-30", True, ""),
            ("2026-07-01", "2026-07-15", False, "TRANSFER_GAP"),
            ("2026-07-16", "2026-12-31", True, ""),
        ]
        assert answer.next_page_token == "" and answer.basis.tree_size > 0
        # Paged: one person a page, the same people in the same order.
        request.page_size = 1
        seen = []
        while True:
            page = stub.CheckEmployer(request, timeout=30)
            assert len(page.people) == 1
            seen.append(page.people[0].person_token)
            if not page.next_page_token:
                break
            request.page_token = page.next_page_token
        assert seen == [item.person_token for item in answer.people]
        # A page token that is not one is refused.
        request.page_token = "not-a-token"
        with pytest.raises(grpc.RpcError) as raised:
            stub.CheckEmployer(request, timeout=30)
        assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        # A range the wrong way round is refused.
        bad = cpb.CheckEmployerRequest(
            establishment_number=ESTABLISHMENT, jurisdiction="SA", from_date=civil(DEC31),
            through_date=civil(JAN1), purpose=PURPOSE,
        )  # fmt: skip
        with pytest.raises(grpc.RpcError) as raised:
            stub.CheckEmployer(bad, timeout=30)
        assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    request.page_size, request.page_token = 0, ""
    # A portal asks for its own jurisdiction only; an insurer not at all.
    with world.server.channel("portal", "SA") as channel:
        assert len(coverage_grpc.CoverageServiceStub(channel).CheckEmployer(request).people) == 3
    for role, name in (("portal", "KW"), ("insurer", GULF)):
        with world.server.channel(role, name) as channel:
            with pytest.raises(grpc.RpcError) as raised:
                coverage_grpc.CoverageServiceStub(channel).CheckEmployer(request, timeout=30)
            assert raised.value.code() == grpc.StatusCode.PERMISSION_DENIED


def test_compute_arrears_explains_every_figure(world: World) -> None:
    _employer_world(world)
    request = compliance_pb.ComputeArrearsRequest(
        establishment_number=ESTABLISHMENT, jurisdiction="SA", from_date=civil(JAN1),
        through_date=civil(DEC31), activity="CONSTRUCTION", region="RIYADH", purpose=PURPOSE,
    )  # fmt: skip
    with world.server.channel("operator", "operator") as channel:
        stub = compliance_grpc.ComplianceServiceStub(channel)
        answer = stub.ComputeArrears(request, timeout=30)
        # The employer's own three policies average SAR 4,500.00 a year; two workers: MICRO.
        assert answer.schedule_version == "sa-2025-illustrative"
        assert answer.average_basis == "EMPLOYER_POLICIES"
        assert answer.average_annual_premium.amount_minor == 450_000
        assert answer.workers == 2 and answer.size_band == "MICRO"
        lines = {line.person_token: line for line in answer.people}
        assert set(lines) == {token(WIFE_A), token(WORKER_B)}
        wife, worker = lines[token(WIFE_A)], lines[token(WORKER_B)]
        assert wife.uninsured_days == 306 and worker.uninsured_days == 15
        assert wife.arrears.amount_minor == 450_000 * 306 // 365 == 377_260
        assert worker.arrears.amount_minor == 450_000 * 15 // 365 == 18_493
        # base 500000 x MICRO 400/1000 x CONSTRUCTION 1000/1000 x RIYADH 1000/1000.
        assert wife.fine.amount_minor == worker.fine.amount_minor == 200_000
        assert not wife.capped and wife.arrears.currency_code == "SAR"
        assert any("450000 x 306 days / 365 = 377260" in text for text in wife.explanation)
        assert any("schedule sa-2025-illustrative" in text for text in wife.explanation)
        assert answer.total_arrears.amount_minor == 377_260 + 18_493
        assert answer.total_fines.amount_minor == 400_000
        assert any("3 policies in force" in text for text in answer.explanation)
        assert answer.basis.tree_size > 0
        # An activity the schedule does not name is refused, naming the field.
        request.activity = "MINING"
        with pytest.raises(grpc.RpcError) as raised:
            stub.ComputeArrears(request, timeout=30)
        assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    with world.server.channel("insurer", GULF) as channel:
        with pytest.raises(grpc.RpcError) as raised:
            compliance_grpc.ComplianceServiceStub(channel).ComputeArrears(request, timeout=30)
        assert raised.value.code() == grpc.StatusCode.PERMISSION_DENIED


def test_unpaid_premiums_and_a_suspended_insurer_show_as_uninsured_with_their_reason(
    world: World,
) -> None:
    """Scenario (CCHI policy: insured with a licensed insurer, premiums paid on time): worker C's
    policy has an instalment never paid (its grace long passed: the ledger's today is after
    2026-03-31), worker D's insurer is suspended from October."""
    worker_c, worker_d = person(904), person(905)
    for permit_id, worker in (("PRM-C", worker_c), ("PRM-D", worker_d)):
        world.accepted(
            world.authority,
            permit_issued(AUTHORITY, permit_id, worker, ESTABLISHMENT, [], JAN1, JAN1, DEC31),
        )
    unpaid = issued(
        GULF, "GC-1", worker_c, [(worker_c, R.RELATIONSHIP_SELF)], JAN1, DEC31,
        instalments=[(JAN1, sar(225_000)), (dt.date(2026, 3, 1), sar(225_000))],
    )  # fmt: skip
    world.accepted(world.gulf, unpaid)
    world.accepted(world.najm, issued(NAJM, "ND-1", worker_d, [(worker_d, 1)], JAN1, DEC31))
    world.accepted(world.operator, suspended(NAJM, dt.date(2026, 10, 1)))
    request = cpb.CheckEmployerRequest(
        establishment_number=ESTABLISHMENT, jurisdiction="SA", from_date=civil(JAN1),
        through_date=civil(DEC31), purpose=PURPOSE,
    )  # fmt: skip
    with world.server.channel("operator", "operator") as channel:
        answer = coverage_grpc.CoverageServiceStub(channel).CheckEmployer(request, timeout=30)
    people = {item.person_token: item for item in answer.people}
    # Nothing was ever paid: the first instalment's grace passed, so from its due date on.
    assert _intervals(people[token(worker_c)]) == [
        ("2026-01-01", "2026-12-31", False, "NON_PAYMENT")
    ]
    assert _intervals(people[token(worker_d)]) == [
        ("2026-01-01", "2026-09-30", True, ""),
        ("2026-10-01", "2026-12-31", False, "INSURER_SUSPENDED"),
    ]
    assert people[token(worker_d)].uninsured_days == 92


def test_the_cli_lists_the_uninsured_and_explains_the_arrears(world: World) -> None:
    """`policy-ledger coverage employer` exits 1 naming the uninsured; `compliance arrears`
    prints the totals and each figure's explanation."""
    import subprocess
    import sys

    _employer_world(world)
    common = [
        *world.server.cli_arguments("auditor", "cchi"),
        "--log-verifier", world.server.log_verifier_key, "--establishment", ESTABLISHMENT,
        "--jurisdiction", "SA", "--from", "2026-01-01", "--through", "2026-12-31",
    ]  # fmt: skip

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "policy_ledger.cli", *args],
            capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip

    employer = run("coverage", "employer", *common, "--page-size", "2")
    assert employer.returncode == 1, employer.stdout + employer.stderr
    assert f"{WIFE_A.value} ({token(WIFE_A)}, SPOUSE" in employer.stdout
    assert "2026-03-01..2026-12-31: NO_COVERAGE" in employer.stdout
    assert "2026-07-01..2026-07-15: TRANSFER_GAP" in employer.stdout
    assert "3 people, 2 with uninsured days" in employer.stdout
    arrears = run(
        "compliance", "arrears", *common, "--activity", "CONSTRUCTION", "--region", "RIYADH"
    )
    assert arrears.returncode == 0, arrears.stdout + arrears.stderr
    assert "arrears 395753, fines 400000 (SAR minor units" in arrears.stdout
    assert "450000 x 306 days / 365 = 377260" in arrears.stdout
