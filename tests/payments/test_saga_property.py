"""A hypothesis state machine over the renewal saga with the simulated gateway's faults
(timeouts applied or not, declines), crashes at saga steps, and permanent refusals arriving
between the charge and the record (the household covered by another renewal, the authority
suspended), and the ledger not answering while a fee is recorded (the entry appended anyway,
not appended, or appended late, after the saga stopped waiting). After every step: money the
gateway holds belongs to a payment that is recorded (once), being recorded (its record in
flight), being returned, returned, or still in flight at the gateway (unknown, or captured only
after a crash); after reconciliation with the faults stopped, only recorded or returned."""

from __future__ import annotations

import contextlib
import datetime as dt
import shutil
import tempfile
from dataclasses import replace
from pathlib import Path

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import Bundle, RuleBasedStateMachine, invariant, rule
from sqlalchemy import func, select

from ledger.errors import AlreadyExists, FailedPrecondition, Unavailable
from ledger.storage.tables import fee_refunds, premiums
from payments.gateway import PaymentStatus
from payments.gateways.simulated import FaultPlan
from payments.renewal import Crash
from payments.tables import payments
from tests.payments.support import AUTHORITY, Stack, family_request

RECORD_TIMEOUTS = ("record_applied", "record_lost", "record_late")
"""The ledger not answering while a fee is recorded (LedgerRecorder timing out)."""
HOUSEHOLDS = 3
"""A small pool, so that renewals of the same household meet."""
CRASH_POINTS = (
    "after_start_saved",
    "after_gateway_charge",
    "after_captured_saved",
    "before_record",
    "before_return",
    "after_gateway_return",
    "after_gateway_refund",
)


class RenewalSaga(RuleBasedStateMachine):
    quotes = Bundle("quotes")

    def __init__(self) -> None:
        super().__init__()
        self.folder = Path(tempfile.mkdtemp(prefix="saga-"))
        self.stack = Stack(self.folder, plan=FaultPlan(decline_rate=0.1), seed=1)
        self.keys = 0
        self.crashed = False
        self.settled = False

    def teardown(self) -> None:
        self.stack.engine.dispose()
        shutil.rmtree(self.folder, ignore_errors=True)

    def _key(self) -> str:
        self.keys += 1
        return f"saga-key-{self.keys:04d}"

    def _fault(self, fault: str) -> None:
        self.settled = False
        if fault in CRASH_POINTS:
            self.crashed = True

            def crash(point: str = fault) -> None:
                raise Crash(point)

            self.stack.at_point[fault] = crash
        elif fault == "timeout_applied":
            self.stack.gateway.inject_outcome_unknown(applied=True)
        elif fault == "timeout_lost":
            self.stack.gateway.inject_outcome_unknown(applied=False)
        elif fault in RECORD_TIMEOUTS:
            self.stack.recorder.next = fault.removeprefix("record_")

    def _quote(self, household: int, size: int = 2) -> str:
        try:
            return self.stack.renewals.quote(family_request(household, size)).quote_id
        except FailedPrecondition:
            return ""  # covered already, or the authority suspended: refused, nothing written

    @rule(
        target=quotes,
        household=st.integers(0, HOUSEHOLDS - 1),
        fault=st.sampled_from(
            ["none", "timeout_applied", "timeout_lost", *CRASH_POINTS, *RECORD_TIMEOUTS]
        ),
        meanwhile=st.sampled_from(["nothing", "other_portal", "suspend"]),
        other=st.integers(0, HOUSEHOLDS - 1),
    )
    def renew(self, household: int, fault: str, meanwhile: str, other: int) -> str:
        """A portal quotes and pays a renewal, with a fault, and a permanent refusal that may
        arrive between the charge and the record (another portal renewing a household first,
        or the authority suspended)."""
        quote_id = self._quote(household)
        if quote_id:
            self._start(quote_id, fault, meanwhile, self._quote(other, 1))
        return quote_id

    @rule(quote_id=quotes)
    def pay_again(self, quote_id: str) -> None:
        """A quote paid again with another key: refused (it has a payment), nothing charged."""
        if quote_id:
            self._start(quote_id, "none", "nothing", "")

    def _start(self, quote_id: str, fault: str, meanwhile: str, other: str) -> None:
        self._fault(fault)
        if meanwhile == "suspend":
            self.stack.at_point.setdefault("after_gateway_charge", self.stack.suspend_authority)
        elif meanwhile == "other_portal" and other and other != quote_id:

            def other_portal() -> None:
                with contextlib.suppress(Crash, Unavailable, FailedPrecondition, AlreadyExists):
                    self.stack.renewals.start_payment(other, self._key(), "simulated")

            self.stack.at_point.setdefault("after_gateway_charge", other_portal)
        # AlreadyExists: the quote already has a payment (started by an earlier step).
        with contextlib.suppress(Crash, Unavailable, FailedPrecondition, AlreadyExists):
            self.stack.renewals.start_payment(quote_id, self._key(), "simulated")
        self.stack.at_point.clear()
        self.stack.recorder.next = None
        self.stack.gateway.inject_outcome_unknown(applied=None)
        if self.stack.suspended:
            self.stack.relicense_authority()

    @rule(fault=st.sampled_from(["none", "timeout_lost", *CRASH_POINTS, *RECORD_TIMEOUTS]))
    def complete_all(self, fault: str) -> None:
        self._fault(fault)
        for payment_id in self._payment_ids():
            with contextlib.suppress(Crash, Unavailable):
                self.stack.renewals.complete_payment(payment_id)
        self.stack.at_point.clear()
        self.stack.recorder.next = None
        self.stack.gateway.inject_outcome_unknown(applied=None)

    @rule(third=st.integers(1, 3), fault=st.sampled_from(["none", "after_gateway_refund"]))
    def refund_first_recorded(self, third: int, fault: str) -> None:
        self._fault(fault)
        for payment_id in self._payment_ids():
            payment = self.stack.renewals.get_payment(payment_id)
            if payment.state == "recorded":
                with contextlib.suppress(Crash, Unavailable, FailedPrecondition):
                    self.stack.renewals.refund(
                        payment_id, payment.amount_minor * third // 3, self._key()
                    )
                break
        self.stack.at_point.clear()

    @rule()
    def late_records_land(self) -> None:
        """Submissions whose caller stopped waiting reach the sequencer: appended if their
        payment is still being recorded, refused if it was returned meanwhile."""
        self.stack.recorder.land_late()

    @rule()
    def settle(self) -> None:
        """The faults stop; reconciliation repairs what they left (late submissions may land
        in between, and change nothing)."""
        self.stack.gateway.plan = replace(self.stack.gateway.plan, decline_rate=0.0)
        self.stack.renewals.reconcile(stale_after=dt.timedelta(0))
        self.stack.recorder.land_late()
        self.stack.renewals.reconcile(stale_after=dt.timedelta(0))
        self.stack.gateway.plan = replace(self.stack.gateway.plan, decline_rate=0.1)
        self.crashed = False
        self.settled = True

    def _payment_ids(self) -> list[str]:
        with self.stack.engine.connect() as connection:
            return list(connection.execute(select(payments.c.payment_id)).scalars())

    @invariant()
    def money_is_recorded_returned_or_in_flight(self) -> None:
        gateway = self.stack.gateway.snapshot()
        with self.stack.engine.connect() as connection:
            fees = dict(
                connection.execute(
                    select(premiums.c.policy_id, func.count())
                    .where(premiums.c.insurer_id == AUTHORITY)
                    .group_by(premiums.c.policy_id)
                ).all()
            )
            refunded = dict(
                connection.execute(
                    select(fee_refunds.c.policy_id, func.sum(fee_refunds.c.amount_minor)).group_by(
                        fee_refunds.c.policy_id
                    )
                ).all()
            )
        # "recording": the record is in flight (submitted, its outcome not known yet).
        allowed = {"recorded", "recording", "returning", "returned", "unknown"}
        if self.crashed:
            allowed |= {"captured", "started"}
        if self.settled:
            allowed = {"recorded", "returned"}
        for payment_id in self._payment_ids():
            ours = self.stack.renewals.get_payment(payment_id)
            theirs = gateway.get(payment_id)
            assert (ours.state == "recorded") == (fees.get(ours.quote_id) == 1)
            assert fees.get(ours.quote_id, 0) <= 1
            if theirs is None or theirs.status is not PaymentStatus.CAPTURED:
                assert ours.quote_id not in fees
                continue
            assert ours.state in allowed, (ours, theirs)
            assert theirs.refunded_minor <= theirs.captured_minor
            if ours.state == "returned":
                assert theirs.refunded_minor == theirs.captured_minor
            if ours.state == "recorded":
                assert refunded.get(ours.quote_id, 0) <= theirs.refunded_minor


RenewalSaga.TestCase.settings = settings(
    max_examples=40,
    stateful_step_count=12,
    derandomize=True,
    database=None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
test_the_saga_never_holds_money_without_a_record_or_a_return = RenewalSaga.TestCase
