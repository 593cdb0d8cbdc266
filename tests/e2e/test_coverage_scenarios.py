"""Scenarios written from the regulations, end to end: insurers submit signed events over gRPC,
a portal asks the CoverageService, and every answer's checkpoint is verified. Each scenario has
its accepted and its refused variant."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from dataclasses import dataclass

import grpc
import pytest
from sqlalchemy import text

from clients.errors import ClientError
from clients.insurer import InsurerClient
from clients.portal import PortalClient
from clients.verify import TrustedLog
from ledger import limits
from ledger.coverage.rebuild import rebuild_and_compare
from ledger.signing import Ed25519Signer
from ledger.storage.db import create_ledger_engine
from ledger.v1 import coverage_service_pb2 as cpb
from ledger.v1 import events_pb2, types_pb2
from tests import clock as test_clock
from tests.builders import (
    R,
    added,
    cancelled,
    change_notified,
    issued,
    paid,
    person,
    removed,
    sar,
    suspended,
)
from tests.conftest import ServerHandle, onboard

GULF, NAJM = "gulf-health", "najm-care"
JAN1, DEC31 = dt.date(2026, 1, 1), dt.date(2026, 12, 31)
V = cpb


@dataclass
class World:
    """Two licensed insurers, the operator, and a portal, on one running server."""

    gulf: InsurerClient
    najm: InsurerClient
    operator: InsurerClient
    portal: PortalClient
    channel: grpc.Channel
    server: ServerHandle
    database_url: str

    def household(
        self,
        sponsor: types_pb2.PersonId,
        members: list[tuple[types_pb2.PersonId, int]],
        as_of: dt.date,
        through: dt.date,
    ) -> cpb.CheckHouseholdResponse:
        return self.portal.check_household(
            sponsor,
            members,  # type: ignore[arg-type]
            as_of=as_of,
            through=through,
        ).response

    def entries(self) -> int:
        engine = create_ledger_engine(self.database_url)
        try:
            with engine.connect() as connection:
                return int(connection.execute(text("SELECT count(*) FROM log_entries")).scalar())
        finally:
            engine.dispose()


@pytest.fixture
def world(
    server: ServerHandle, operator_signer: Ed25519Signer, database_url: str
) -> Iterator[World]:
    signers = {name: Ed25519Signer.generate(name) for name in (GULF, NAJM)}
    for name, signer in signers.items():
        onboard(server, operator_signer, name, signer)
    trusted = TrustedLog.from_verifier_key(server.log_verifier_key)
    with (
        server.channel("insurer", GULF) as gulf,
        server.channel("insurer", NAJM) as najm,
        server.channel("operator", "operator") as channel,
    ):
        yield World(
            gulf=InsurerClient(gulf, signer=signers[GULF], log=trusted),
            najm=InsurerClient(najm, signer=signers[NAJM], log=trusted),
            operator=InsurerClient(channel, signer=operator_signer, log=trusted),
            portal=PortalClient(channel, log=trusted),
            channel=channel,
            server=server,
            database_url=database_url,
        )


def _refused(world: World, client: InsurerClient, event: events_pb2.Event) -> ClientError:
    before = world.entries()
    with pytest.raises(ClientError) as raised:
        client.submit(event)
    assert world.entries() == before, "a refused event was written"
    return raised.value


SPONSOR, WIFE, SON, MAID = person(500), person(501), person(502), person(503)


def test_a_newborn_is_covered_from_birth_when_added_later(world: World) -> None:
    """Back-dated to birth when added within the newborn window (ledger time: today); added
    later, coverage starts no earlier than the entry and the days since birth stay uninsured."""
    today = test_clock.now().date()
    start, end = today - dt.timedelta(days=200), today + dt.timedelta(days=160)
    world.gulf.submit(issued(GULF, "P-NB", SPONSOR, [(SPONSOR, R.RELATIONSHIP_SELF)], start, end))
    baby, birth = person(510), today - dt.timedelta(days=limits.newborn_backdating_days_max - 2)
    early = added(
        GULF, "P-NB", baby, R.RELATIONSHIP_CHILD, birth - dt.timedelta(days=9), birth=birth
    )
    error = _refused(world, world.gulf, early)  # the vault holds the birth date, not the event
    assert (error.code, error.reason) == (grpc.StatusCode.FAILED_PRECONDITION, "BEFORE_BIRTH")
    assert [v.field for v in error.field_violations] == ["event.member_added.effective_date"]
    receipt = world.gulf.submit(added(GULF, "P-NB", baby, R.RELATIONSHIP_CHILD, birth, birth=birth))
    answer = world.household(SPONSOR, [(baby, R.RELATIONSHIP_CHILD)], birth, end)
    assert answer.renewable and answer.members[0].verdict == V.COVERAGE_VERDICT_COVERED
    assert receipt.leaf_index in answer.basis.leaf_indexes
    before_birth = world.household(
        SPONSOR, [(baby, R.RELATIONSHIP_CHILD)], birth - dt.timedelta(days=1), end
    )
    assert before_birth.members[0].verdict == V.COVERAGE_VERDICT_NO_POLICY
    # Born before the window: not back-dated to birth (refused, nothing written); from today.
    older, born = person(511), today - dt.timedelta(days=limits.newborn_backdating_days_max + 30)
    error = _refused(
        world, world.gulf, added(GULF, "P-NB", older, R.RELATIONSHIP_CHILD, born, birth=born)
    )
    assert (error.code, error.reason) == (
        grpc.StatusCode.FAILED_PRECONDITION,
        "NEWBORN_WINDOW_PASSED",
    )
    world.gulf.submit(
        added(GULF, "P-NB", older, R.RELATIONSHIP_CHILD, today + dt.timedelta(days=1), birth=born)
    )
    since_birth = world.household(SPONSOR, [(older, R.RELATIONSHIP_CHILD)], born, end)
    assert not since_birth.renewable


def test_final_exit_ends_coverage_from_the_exit_date(world: World) -> None:
    """A final exit is a fact of the past: recorded after it happened, it is back-dated to it
    (within its window, relative to today's ledger time)."""
    today = test_clock.now().date()
    start, end = today - dt.timedelta(days=200), today + dt.timedelta(days=160)
    world.gulf.submit(issued(GULF, "P-FE", SPONSOR, [(SPONSOR, R.RELATIONSHIP_SELF)], start, end))
    exit_day = today - dt.timedelta(days=80)
    world.gulf.submit(cancelled(GULF, "P-FE", exit_day, R.CANCELLATION_REASON_FINAL_EXIT))
    asked = exit_day - dt.timedelta(days=14)
    after = world.household(SPONSOR, [(SPONSOR, R.RELATIONSHIP_SELF)], asked, end)
    member = after.members[0]
    assert not after.renewable and member.verdict == V.COVERAGE_VERDICT_CANCELLED
    assert "FINAL_EXIT" in member.detail
    last = exit_day - dt.timedelta(days=1)
    assert (member.covered_until.year, member.covered_until.month, member.covered_until.day) == (
        last.year,
        last.month,
        last.day,
    )
    before = world.household(SPONSOR, [(SPONSOR, R.RELATIONSHIP_SELF)], asked, last)
    assert before.renewable
    # Cancelled once: a second cancellation is refused and writes nothing.
    error = _refused(
        world, world.gulf, cancelled(GULF, "P-FE", exit_day, R.CANCELLATION_REASON_DEATH)
    )
    assert error.reason == "ALREADY_CANCELLED"


def test_an_insurer_change_with_notice_is_continuous_and_without_is_refused(world: World) -> None:
    """The 30 days count from the InsurerChangeNotified entry's ledger time (the server's clock
    when it sequenced it), never from a date the insurer states; dates are relative to today so
    the ledger time is what it would be in production."""
    today = test_clock.now().date()
    start, end = today - dt.timedelta(days=100), today + dt.timedelta(days=265)
    world.gulf.submit(issued(GULF, "P-OLD", SPONSOR, [(SPONSOR, R.RELATIONSHIP_SELF)], start, end))
    switch = today + dt.timedelta(days=35)
    change = R.CANCELLATION_REASON_INSURER_CHANGE
    long_ago = today - dt.timedelta(days=90)
    error = _refused(world, world.gulf, cancelled(GULF, "P-OLD", switch, change, notice=long_ago))
    assert (error.code, error.reason) == (grpc.StatusCode.FAILED_PRECONDITION, "NOTICE_MISSING")
    # A change of insurer (or a transfer) never takes effect before its entry's ledger date.
    for reason in (change, R.CANCELLATION_REASON_TRANSFER):
        error = _refused(
            world,
            world.gulf,
            cancelled(GULF, "P-OLD", today - dt.timedelta(days=40), reason, notice=long_ago),
        )
        assert (error.code, error.reason) == (
            grpc.StatusCode.FAILED_PRECONDITION,
            "BACKDATED_CANCELLATION",
        )
    # Only the insurer owning the policy gives its notice (another's policy is not found).
    error = _refused(world, world.najm, change_notified(NAJM, "P-OLD", new_insurer=NAJM))
    assert (error.code, error.reason) == (grpc.StatusCode.NOT_FOUND, "POLICY_NOT_FOUND")
    world.gulf.submit(change_notified(GULF, "P-OLD", new_insurer=NAJM))
    error = _refused(
        world,
        world.gulf,
        cancelled(GULF, "P-OLD", today + dt.timedelta(days=10), change, notice=long_ago),
    )
    assert (error.code, error.reason) == (grpc.StatusCode.FAILED_PRECONDITION, "NOTICE_TOO_SHORT")
    world.gulf.submit(cancelled(GULF, "P-OLD", switch, change))
    world.najm.submit(issued(NAJM, "N-NEW", SPONSOR, [(SPONSOR, R.RELATIONSHIP_SELF)], switch, end))
    answer = world.household(SPONSOR, [(SPONSOR, R.RELATIONSHIP_SELF)], start, end)
    assert answer.renewable
    assert {c.insurer_id for c in answer.members[0].coverages} == {GULF, NAJM}


def test_a_gap_between_insurers_blocks_the_renewal(world: World) -> None:
    world.gulf.submit(
        issued(GULF, "P-G1", SPONSOR, [(SPONSOR, R.RELATIONSHIP_SELF)], JAN1, dt.date(2026, 6, 30))
    )
    world.najm.submit(
        issued(NAJM, "N-G2", SPONSOR, [(SPONSOR, R.RELATIONSHIP_SELF)], dt.date(2026, 7, 5), DEC31)
    )
    answer = world.household(SPONSOR, [(SPONSOR, R.RELATIONSHIP_SELF)], JAN1, DEC31)
    assert not answer.renewable
    assert answer.members[0].verdict == V.COVERAGE_VERDICT_GAP
    assert "2026-07-01" in answer.members[0].detail


def test_a_son_aging_out_of_dependent_status(world: World) -> None:
    family = [(SPONSOR, R.RELATIONSHIP_SELF), (SON, R.RELATIONSHIP_CHILD)]
    world.gulf.submit(issued(GULF, "P-AO", SPONSOR, family, JAN1, DEC31))
    aged_out = dt.date(2026, 10, 1)
    world.gulf.submit(
        removed(GULF, "P-AO", SON, aged_out, R.CANCELLATION_REASON_DEPENDENT_LOST_STATUS)
    )
    answer = world.household(SPONSOR, family, dt.date(2026, 9, 1), DEC31)
    assert not answer.renewable
    son = answer.members[1]
    assert son.verdict == V.COVERAGE_VERDICT_CANCELLED and "DEPENDENT_LOST_STATUS" in son.detail
    # He takes his own policy from the day he left: the household is whole again.
    world.gulf.submit(
        issued(GULF, "P-SON", SON, [(SON, R.RELATIONSHIP_SELF)], aged_out, dt.date(2027, 9, 30))
    )
    assert world.household(SPONSOR, family, dt.date(2026, 9, 1), DEC31).renewable
    # Removing a member who is no longer on the policy is refused.
    error = _refused(
        world,
        world.gulf,
        removed(GULF, "P-AO", SON, aged_out, R.CANCELLATION_REASON_DEPENDENT_LOST_STATUS),
    )
    assert error.reason == "MEMBER_NOT_FOUND"


def test_one_uninsured_domestic_worker_blocks_the_household(world: World) -> None:
    family = [(SPONSOR, R.RELATIONSHIP_SELF), (WIFE, R.RELATIONSHIP_SPOUSE)]
    world.gulf.submit(issued(GULF, "P-DW", SPONSOR, family, JAN1, DEC31))
    household = [*family, (MAID, R.RELATIONSHIP_DOMESTIC_WORKER)]
    answer = world.household(SPONSOR, household, dt.date(2026, 2, 1), DEC31)
    assert not answer.renewable
    assert [m.covered for m in answer.members] == [True, True, False]
    assert answer.members[2].verdict == V.COVERAGE_VERDICT_NO_POLICY
    assert answer.members[2].relationship == R.RELATIONSHIP_DOMESTIC_WORKER
    world.gulf.submit(
        added(GULF, "P-DW", MAID, R.RELATIONSHIP_DOMESTIC_WORKER, dt.date(2026, 2, 1))
    )
    assert world.household(SPONSOR, household, dt.date(2026, 2, 1), DEC31).renewable
    # Without a member list, the members on record are checked.
    on_record = world.portal.check_household(
        SPONSOR, [], as_of=dt.date(2026, 2, 1), through=DEC31
    ).response
    assert on_record.renewable and len(on_record.members) == 3


def test_a_subsidised_beneficiary_whose_premium_a_fund_paid(world: World) -> None:
    beneficiary = person(520)
    world.gulf.submit(
        issued(GULF, "P-ZK", beneficiary, [(beneficiary, R.RELATIONSHIP_SELF)], JAN1, DEC31)
    )
    fund = R.PartyRef(
        organization=types_pb2.Organization(
            registration_number="ZAKAT-FUND-1", country_code="SD", name="Zakat Fund"
        )
    )
    wrong = paid(
        GULF, "P-ZK", sar(300_000), JAN1, DEC31, payer_type=R.PAYER_TYPE_THIRD_PARTY, payer=fund
    )
    wrong.premium_paid.amount.currency_code = "SDG"
    error = _refused(world, world.gulf, wrong)
    assert (error.code, error.reason) == (
        grpc.StatusCode.FAILED_PRECONDITION,
        "CURRENCY_MISMATCH",  # the fund pays in the policy's currency, SAR
    )
    receipt = world.gulf.submit(
        paid(
            GULF, "P-ZK", sar(300_000), JAN1, DEC31, payer_type=R.PAYER_TYPE_THIRD_PARTY, payer=fund
        )
    )
    coverage = world.portal.get_coverage(beneficiary, dt.date(2026, 5, 1)).response
    assert [c.policy_id for c in coverage.coverages] == ["P-ZK"]
    history = world.portal.policy_history(GULF, "P-ZK").response
    assert [e.leaf_index for e in history.entries][-1] == receipt.leaf_index


def test_a_suspended_insurers_policies_stop_counting(world: World) -> None:
    world.najm.submit(issued(NAJM, "N-SU", SPONSOR, [(SPONSOR, R.RELATIONSHIP_SELF)], JAN1, DEC31))
    world.operator.submit(suspended(NAJM, dt.date(2026, 8, 1)))
    answer = world.household(SPONSOR, [(SPONSOR, R.RELATIONSHIP_SELF)], dt.date(2026, 7, 1), DEC31)
    assert answer.members[0].verdict == V.COVERAGE_VERDICT_INSURER_SUSPENDED
    error = _refused(
        world,
        world.najm,
        issued(NAJM, "N-SU2", WIFE, [(WIFE, R.RELATIONSHIP_SELF)], JAN1, DEC31),
    )
    assert error.reason == "INSURER_SUSPENDED"


def test_answers_carry_fhir_and_find_entries_by_person(world: World) -> None:
    from fhir.resources.coverageeligibilityresponse import CoverageEligibilityResponse

    family = [(SPONSOR, R.RELATIONSHIP_SELF), (WIFE, R.RELATIONSHIP_SPOUSE)]
    first = world.gulf.submit(issued(GULF, "P-FH", SPONSOR, family, JAN1, DEC31))
    answer = world.portal.check_household(
        SPONSOR,
        [*family, (MAID, R.RELATIONSHIP_DOMESTIC_WORKER)],  # type: ignore[list-item]
        as_of=JAN1,
        through=DEC31,
        include_fhir=True,
    ).response
    resource = CoverageEligibilityResponse.parse_obj(json.loads(answer.fhir_eligibility_response))
    assert [item.inforce for item in resource.insurance] == [True, True, False]
    found = world.portal.find_entries(person=WIFE).response
    assert [e.leaf_index for e in found.entries] == [first.leaf_index]
    by_policy = world.portal.find_entries(policy_id="P-FH").response
    assert [e.leaf_index for e in by_policy.entries] == [first.leaf_index]


@pytest.mark.parametrize(
    ("request_message", "field"),
    [
        (cpb.CheckHouseholdRequest(sponsor=person(500)), "through_date"),
        (
            cpb.CheckHouseholdRequest(
                sponsor=types_pb2.PersonId(
                    type=types_pb2.PERSON_ID_TYPE_RESIDENCE_ID,
                    value="2000000000",
                    country_code="SA",
                ),
                through_date=types_pb2.CivilDate(year=2026, month=12, day=31),
            ),
            "sponsor.value",
        ),
        (
            cpb.CheckHouseholdRequest(
                sponsor=person(500),
                as_of_date=types_pb2.CivilDate(year=2026, month=12, day=31),
                through_date=types_pb2.CivilDate(year=2026, month=1, day=1),
            ),
            "through_date",
        ),
        (
            cpb.CheckHouseholdRequest(
                sponsor=person(500),
                members=[cpb.HouseholdMember(person=person(1 + n)) for n in range(65)],
                through_date=types_pb2.CivilDate(year=2026, month=12, day=31),
            ),
            "members",
        ),
        (cpb.GetCoverageRequest(person=person(500)), "date"),
        (cpb.FindEntriesRequest(), "subject"),
        (cpb.FindEntriesRequest(policy_id="P1", page_size=5000), "page_size"),
        (cpb.ListPolicyHistoryRequest(insurer_id="", policy_id="P1"), "insurer_id"),
    ],
)
def test_bad_coverage_requests_are_invalid_argument(
    world: World, request_message: object, field: str
) -> None:
    from clients.errors import from_rpc_error
    from ledger.v1 import coverage_service_pb2_grpc

    stub = coverage_service_pb2_grpc.CoverageServiceStub(world.channel)
    method = type(request_message).__name__.removesuffix("Request")
    request = type(request_message)()
    request.CopyFrom(request_message)  # type: ignore[attr-defined]
    request.purpose = types_pb2.ACCESS_PURPOSE_AUDIT  # type: ignore[attr-defined]
    with pytest.raises(grpc.RpcError) as raised:
        getattr(stub, method)(request)
    error = from_rpc_error(raised.value)
    assert error.code == grpc.StatusCode.INVALID_ARGUMENT, str(error)
    assert field in [v.field for v in error.field_violations], str(error)


def test_rebuild_agrees_with_the_log_and_reports_the_first_tampered_entry(world: World) -> None:
    # Dated from the server's day (a final exit may be back-dated at most a year before it).
    today = test_clock.now().date()
    start, end = today - dt.timedelta(days=150), today + dt.timedelta(days=214)
    exit_day = today - dt.timedelta(days=30)
    family = [(SPONSOR, R.RELATIONSHIP_SELF), (WIFE, R.RELATIONSHIP_SPOUSE)]
    world.gulf.submit(issued(GULF, "P-RB", SPONSOR, family, start, end))
    cancel = world.gulf.submit(cancelled(GULF, "P-RB", exit_day, R.CANCELLATION_REASON_FINAL_EXIT))
    world.gulf.submit(paid(GULF, "P-RB", sar(100_000), start, exit_day - dt.timedelta(days=1)))
    engine = create_ledger_engine(world.database_url)
    try:
        report = rebuild_and_compare(engine)
        assert report.consistent and report.entries_replayed == report.tree_size
        with engine.begin() as connection:  # someone extends the wife's coverage in place
            connection.execute(
                text("UPDATE coverages SET end_date = :day WHERE policy_id = 'P-RB'"),
                {"day": end},
            )
        tampered = rebuild_and_compare(engine)
    finally:
        engine.dispose()
    assert not tampered.consistent
    assert {d.table for d in tampered.divergences} == {"coverages"}
    assert tampered.first_diverging_leaf_index is not None
    assert tampered.first_diverging_leaf_index < cancel.leaf_index


def test_an_empty_household_is_not_renewable_and_the_sponsor_is_always_checked(
    world: World,
) -> None:
    # A sponsor the ledger has no record of: no members on record, yet never RENEWABLE.
    stranger = person(560)
    empty = world.household(stranger, [], JAN1, DEC31)
    assert not empty.renewable
    assert [(m.person.value, m.verdict) for m in empty.members] == [
        (stranger.value, V.COVERAGE_VERDICT_NO_POLICY)
    ]
    # Members asked by name: the sponsor is checked with them, and blocks the renewal.
    world.gulf.submit(
        issued(GULF, "P-SP", person(561), [(WIFE, R.RELATIONSHIP_SPOUSE)], JAN1, DEC31)
    )
    answer = world.household(person(561), [(WIFE, R.RELATIONSHIP_SPOUSE)], JAN1, DEC31)
    assert not answer.renewable
    verdicts = {m.person.value: m.verdict for m in answer.members}
    assert verdicts == {
        WIFE.value: V.COVERAGE_VERDICT_COVERED,
        person(561).value: V.COVERAGE_VERDICT_NO_POLICY,
    }


def test_an_unpaid_instalment_stops_coverage_in_every_answer_until_paid(world: World) -> None:
    """Ledger time is today: the first instalment, due 100 days ago, is past its grace."""
    from clients.certificate import CertificateClient
    from clients.errors import NotFoundError

    today = test_clock.now().date()
    start, end = today - dt.timedelta(days=100), today + dt.timedelta(days=200)
    schedule = [(start, sar(100_000)), (today - dt.timedelta(days=5), sar(100_000))]
    world.gulf.submit(
        issued(GULF, "P-NP", SON, [(SON, R.RELATIONSHIP_SELF)], start, end,
               premium=sar(200_000), instalments=schedule)
    )  # fmt: skip
    answer = world.household(SON, [], today, today + dt.timedelta(days=30))
    assert not answer.renewable
    assert answer.members[0].verdict == V.COVERAGE_VERDICT_NON_PAYMENT
    assert start.isoformat() in answer.members[0].detail
    coverage = world.portal.get_coverage(SON, today, include_fhir=True).response
    assert [c.not_counting for c in coverage.coverages] == ["NON_PAYMENT"]
    [fhir] = [json.loads(resource) for resource in coverage.fhir_coverages]
    assert fhir["status"] == "cancelled"
    assert {"NON_PAYMENT"} <= {ext.get("valueCode") for ext in fhir["extension"]}
    certificates = CertificateClient(world.channel)
    with pytest.raises(NotFoundError) as raised:
        certificates.get(SON, today)
    assert raised.value.reason == "COVERAGE_NOT_FOUND"
    # Both instalments paid today: coverage counts again from today, not before.
    world.gulf.submit(paid(GULF, "P-NP", sar(200_000), start, end))
    answer = world.household(SON, [], today, end)
    assert answer.renewable, answer.members[0].detail
    coverage = world.portal.get_coverage(SON, today, include_fhir=True).response
    assert [c.not_counting for c in coverage.coverages] == [""]
    assert json.loads(coverage.fhir_coverages[0])["status"] == "active"
    assert len(certificates.get(SON, today)) == 1
    earlier = world.household(SON, [], today - dt.timedelta(days=50), end)
    assert earlier.members[0].verdict == V.COVERAGE_VERDICT_NON_PAYMENT


def test_a_late_replacement_shows_as_a_transfer_gap(world: World) -> None:
    self_only = [(MAID, R.RELATIONSHIP_SELF)]
    world.gulf.submit(issued(GULF, "P-TG1", MAID, self_only, JAN1, dt.date(2026, 6, 30)))
    world.najm.submit(
        issued(NAJM, "P-TG2", MAID, self_only, dt.date(2026, 7, 11), DEC31,
               replaces=(GULF, "P-TG1"))
    )  # fmt: skip
    answer = world.household(MAID, [], dt.date(2026, 6, 1), DEC31)
    assert [m.verdict for m in answer.members] == [V.COVERAGE_VERDICT_TRANSFER_GAP]
    assert "'P-TG1'" in answer.members[0].detail and "2026-07-10" in answer.members[0].detail
