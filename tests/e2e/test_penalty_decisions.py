"""ComplianceService decisions through a real server, on both engines: a regulator submits its
decision and what followed over mTLS; GetPenaltyDecision and ListPenaltyDecisions answer with
the status, amounts, each deadline counted from the entries' ledger dates, and the leaves they
relied on (verified checkpoints); refused calls and events write nothing."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from dataclasses import dataclass

import grpc
import pytest
from sqlalchemy import func, select

from clients.compliance import ComplianceClient
from clients.errors import ClientError
from clients.insurer import InsurerClient
from clients.verify import TrustedLog
from ledger import limits
from ledger.signers import SignerRole
from ledger.signing import Ed25519Signer
from ledger.storage.tables import log_entries
from ledger.v1 import compliance_service_pb2 as pb
from ledger.v1 import compliance_service_pb2_grpc as pb_grpc
from ledger.v1 import events_pb2
from tests import clock as test_clock
from tests.builders import (
    objection_filed,
    objection_rejected,
    penalty_assessed,
    penalty_paid,
    person,
    sar,
)
from tests.conftest import ServerHandle, onboard

CCHI = "cchi"
SHOP = "7009990001"


@dataclass
class World:
    server: ServerHandle
    regulator: InsurerClient
    reader: ComplianceClient

    def entries(self) -> int:
        with self.server.running.engine.connect() as connection:
            return int(connection.execute(select(func.count()).select_from(log_entries)).scalar())


@pytest.fixture
def world(server: ServerHandle, operator_signer: Ed25519Signer) -> Iterator[World]:
    signer = Ed25519Signer.generate(CCHI)
    onboard(server, operator_signer, CCHI, signer, role=SignerRole.REGULATOR)
    trusted = TrustedLog.from_verifier_key(server.log_verifier_key)
    with (
        server.channel("regulator", CCHI) as regulating,
        server.channel("auditor", "auditor") as auditing,
    ):
        yield World(
            server,
            InsurerClient(regulating, signer=signer, log=trusted),
            ComplianceClient(auditing, log=trusted),
        )


def _decision(decision_id: str) -> events_pb2.Event:
    return penalty_assessed(
        CCHI, decision_id, SHOP, [(person(800), 90, 150_000, 50_000), (person(801), 9, 900, 100)]
    )


def test_a_decision_s_status_amounts_and_deadlines(world: World) -> None:
    assessed = world.regulator.submit(_decision("D-E2E-1"))
    paid = world.regulator.submit(penalty_paid(CCHI, "D-E2E-1", sar(1_000)))
    objected = world.regulator.submit(objection_filed(CCHI, "D-E2E-1"))
    answer = world.reader.get_decision("D-E2E-1")
    decision = answer.response.decision
    assert decision.status == pb.PENALTY_STATUS_OBJECTED
    assert (decision.total.amount_minor, decision.paid.amount_minor) == (201_000, 1_000)
    assert decision.due.amount_minor == 200_000 and decision.due.currency_code == "SAR"
    assert decision.pending_stage == events_pb2.OBJECTION_STAGE_OBJECTION
    assert list(decision.leaf_indexes) == [
        assessed.leaf_index,
        paid.leaf_index,
        objected.leaf_index,
    ]
    assert list(answer.response.basis.leaf_indexes) == list(decision.leaf_indexes)
    assert answer.checkpoint.size >= objected.leaf_index + 1
    # The windows count from the assessment entry's ledger date (the server's UTC date when
    # its batch was integrated), never from the event's occurred_at (2026-06-01).
    on = decision.assessed_on
    assessed_on = dt.date(on.year, on.month, on.day)
    assert assessed_on == test_clock.now().date() or assessed_on == (
        test_clock.now().date() - dt.timedelta(days=1)  # a batch just before midnight
    )
    windows = {d.kind: d for d in decision.deadlines}
    for kind, days in (
        (pb.PENALTY_DEADLINE_KIND_PAYMENT, limits.penalty_payment_days),
        (pb.PENALTY_DEADLINE_KIND_OBJECTION, limits.penalty_objection_days),
        (pb.PENALTY_DEADLINE_KIND_GRIEVANCE, limits.penalty_grievance_days),
    ):
        deadline = windows[kind]
        last = deadline.last_day
        assert dt.date(last.year, last.month, last.day) == assessed_on + dt.timedelta(days=days)
        assert deadline.counted_from_leaf_index == assessed.leaf_index
        assert deadline.days == days and not deadline.passed
    world.regulator.submit(objection_rejected(CCHI, "D-E2E-1"))
    again = world.reader.get_decision("D-E2E-1").response.decision
    assert again.status == pb.PENALTY_STATUS_ASSESSED
    grievance = {d.kind: d for d in again.deadlines}[pb.PENALTY_DEADLINE_KIND_GRIEVANCE]
    assert grievance.counted_from_leaf_index == again.leaf_indexes[-1]


def test_refused_decision_events_write_nothing(world: World) -> None:
    world.regulator.submit(_decision("D-E2E-2"))
    before = world.entries()
    for event, reason in (
        (penalty_paid(CCHI, "D-E2E-2", sar(201_001)), "OVERPAYMENT"),
        (penalty_paid(CCHI, "D-NONE", sar(1)), "DECISION_NOT_FOUND"),
        (objection_rejected(CCHI, "D-E2E-2"), "NOTHING_PENDING"),
        (_decision("D-E2E-2"), "DECISION_EXISTS"),
    ):
        with pytest.raises(ClientError) as refused:
            world.regulator.submit(event)
        assert refused.value.reason == reason
        assert world.entries() == before
    world.regulator.submit(penalty_paid(CCHI, "D-E2E-2", sar(201_000)))
    status = world.reader.get_decision("D-E2E-2").response.decision.status
    assert status == pb.PENALTY_STATUS_PAID


def test_an_establishment_s_decisions_page_by_page(world: World) -> None:
    for number in range(3):
        world.regulator.submit(_decision(f"D-PAGE-{number}"))
    seen: list[str] = []
    token = ""
    while True:
        page = world.reader.list_decisions(SHOP, page_size=2, page_token=token).response
        seen += [decision.decision_id for decision in page.decisions]
        token = page.next_page_token
        if not token:
            break
    assert seen == ["D-PAGE-0", "D-PAGE-1", "D-PAGE-2"]
    assert not world.reader.list_decisions("7000000000").response.decisions


def test_bad_requests_are_refused_with_a_clear_status(world: World) -> None:
    for call, code, reason in (
        (lambda: world.reader.get_decision("D-MISSING"), "NOT_FOUND", "DECISION_NOT_FOUND"),
        (lambda: world.reader.get_decision(""), "INVALID_ARGUMENT", ""),
        (
            lambda: world.reader.list_decisions(SHOP, page_token="x1"),
            "INVALID_ARGUMENT",
            "",
        ),
        (
            lambda: world.reader.list_decisions(
                SHOP, page_size=limits.penalty_decisions_page_max + 1
            ),
            "INVALID_ARGUMENT",
            "",
        ),
    ):
        with pytest.raises(ClientError) as refused:
            call()
        assert refused.value.code.name == code
        assert not reason or refused.value.reason == reason


def test_a_portal_may_not_read_decisions(world: World) -> None:
    with world.server.channel("portal", "SA") as channel:
        stub = pb_grpc.ComplianceServiceStub(channel)
        with pytest.raises(grpc.RpcError) as refused:
            stub.GetPenaltyDecision(pb.GetPenaltyDecisionRequest(decision_id="D1"), timeout=30)
    assert refused.value.code() == grpc.StatusCode.PERMISSION_DENIED
