"""Morocco's contribution schedule (payments/schedules/ma-2005-08-18.json) and a Moroccan
household quoted, paid through the CMI adapter against its sandbox, and recorded."""

from __future__ import annotations

import datetime as dt
import urllib.request
from datetime import date
from pathlib import Path

import pytest
from sqlalchemy import func, select

from ledger.errors import InvalidArgument, Unavailable
from ledger.storage.tables import log_entries
from ledger.v1 import events_pb2, types_pb2
from payments import fees
from payments.fees import FeeScheduleError, MemberFacts, Relationship, quote_fees
from payments.gateway import GatewayRefused, GatewayResult, Money
from payments.gateways.cmi import CmiGateway
from payments.gateways.cmi import from_settings as cmi_from_settings
from payments.notifications import NotificationReceiver
from payments.renewal import MemberInput, QuoteRequest
from payments.sandbox.cmi import CmiSandbox
from payments.service import parse_quote_request
from payments.tables import gateway_notifications, payment_history
from payments.v1 import renewal_service_pb2 as pb
from tests.payments.support import PERIOD, Stack

R = Relationship
OTHER = fees.ResidenceCategory.OTHER
YEAR = (date(2026, 1, 1), date(2026, 12, 31))


def _facts(key: str, relationship: Relationship, birth: date | None = None) -> MemberFacts:
    return MemberFacts(key, relationship, OTHER, birth, sponsor_is_kuwaiti=False)


def test_the_moroccan_schedule_is_packaged_in_mad_with_two_decimals() -> None:
    (schedule,) = fees.load_packaged_schedules().schedules("MA")
    assert schedule.version == "ma-2005-08-18"
    assert (schedule.currency, schedule.minor_units) == ("MAD", 2)
    assert schedule.effective_from == date(2005, 8, 18)
    assert schedule.effective_until is None


def test_an_insured_pays_the_monthly_floor_and_declared_beneficiaries_nothing() -> None:
    household = [
        _facts("insured", R.SELF),
        _facts("spouse", R.SPOUSE),
        _facts("child", R.CHILD, date(2018, 4, 1)),
    ]
    q = quote_fees("MA", date(2026, 1, 10), *YEAR, household)
    assert [(line.person_key, line.rule_id, line.amount_minor) for line in q.lines] == [
        ("insured", "MA05-CNOPS-INSURED-FLOOR", 84_000),
        ("spouse", "MA05-CNOPS-BENEFICIARY", 0),
        ("child", "MA05-CNOPS-BENEFICIARY", 0),
    ]
    assert (q.currency, q.total_minor) == ("MAD", 84_000)  # 12 x MAD 70.00
    assert fees.format_minor(q.total_minor, 2) == "840.00"
    three_months = quote_fees(
        "MA", date(2026, 1, 10), date(2026, 1, 1), date(2026, 3, 31), household[:1]
    )
    assert three_months.total_minor == 21_000


def test_what_the_moroccan_schedule_does_not_price_is_refused() -> None:
    with pytest.raises(fees.UnpricedMemberError):
        quote_fees("MA", date(2026, 1, 10), *YEAR, [_facts("parent", R.PARENT)])
    with pytest.raises(FeeScheduleError, match="no MA fee schedule is effective on 2005-08-17"):
        quote_fees("MA", date(2005, 8, 17), *YEAR, [_facts("insured", R.SELF)])


def test_sudan_has_no_renewal_fee_schedule() -> None:
    """Sudan's contributions are paid by a funder for a cohort (docs/fees.md), not quoted."""
    with pytest.raises(FeeScheduleError) as raised:
        quote_fees("SD", date(2026, 1, 10), *YEAR, [_facts("member", R.SELF)])
    assert raised.value.reason == "FEE_SCHEDULE_NOT_FOUND"


def _cin(value: str) -> types_pb2.PersonId:
    return types_pb2.PersonId(
        type=types_pb2.PERSON_ID_TYPE_NATIONAL_ID, value=value, country_code="MA"
    )


def _moroccan_household() -> QuoteRequest:
    insured = _cin("BE123456")
    return QuoteRequest(
        jurisdiction="MA",
        sponsor=insured,
        sponsor_is_kuwaiti=False,
        members=(
            MemberInput(insured, R.SELF, OTHER, date(1980, 2, 1), None),
            MemberInput(_cin("BK765432"), R.SPOUSE, OTHER, date(1984, 7, 9), None),
        ),
        period_start=PERIOD[0],
        period_end=PERIOD[1],
    )


def test_a_moroccan_household_is_quoted_paid_through_cmi_and_recorded(tmp_path: Path) -> None:
    with CmiSandbox() as sandbox:
        cmi = cmi_from_settings(sandbox.settings(return_url="https://portal.example/receipt"))
        stack = Stack(tmp_path, gateways={"cmi": cmi})
        receiver = NotificationReceiver(stack.renewals, stack.engine, {"cmi": cmi}, stack.clock)
        receiver.start()
        stack.renewals.notification_base_url = receiver.base_url
        try:
            quote = stack.renewals.quote(_moroccan_household())
            assert quote.payable
            assert (quote.currency, quote.total_minor) == ("MAD", 84_000)
            payment = stack.renewals.start_payment(quote.quote_id, "ma-key-0001", "cmi")
            assert payment.state == "pending" and "/fim/est3Dgate" in payment.redirect_url
            with urllib.request.urlopen(payment.redirect_url, timeout=60) as page:
                assert page.status == 200
            delivery = sandbox.pay(payment.payment_id)
            assert delivery.answer == "ACTION=POSTAUTH"  # stored, verified, then acknowledged
            with stack.engine.connect() as connection:
                stored = connection.execute(select(gateway_notifications)).all()
            assert [(row.payment_id, row.verified) for row in stored] == [
                (payment.payment_id, "true")
            ]
            receiver.settle(timeout_seconds=60)
            recorded = stack.renewals.get_payment(payment.payment_id)
            assert recorded.state == "recorded", recorded
            assert recorded.captured_minor == 84_000 and recorded.leaf_index is not None
            assert sandbox.orders[payment.payment_id].captured_centimes == 84_000
        finally:
            receiver.stop()


class _CapturedMeanwhile:
    """The CMI adapter, except that CMI captures each pre-authorization just before the saga's
    own PostAuth reaches it (the one the saga sends is then refused), as when CMI reads our
    ``ACTION=POSTAUTH`` answer to its callback while the confirmation that answer started is
    between its inquiry and its capture; with ``refuse=True`` CMI refuses the capture and
    captures nothing, once."""

    def __init__(self, inner: CmiGateway, *, refuse: bool = False) -> None:
        self._inner = inner
        self._refuse = refuse
        self.refusals = 0

    def __getattr__(self, name: str) -> object:
        return getattr(self._inner, name)

    def capture(self, merchant_reference: str, amount: Money) -> GatewayResult:
        if self._refuse:
            self._refuse = False
            self.refusals += 1
            raise GatewayRefused(f"CMI refused the capture of {merchant_reference}: test")
        self._inner.capture(merchant_reference, amount)  # CMI, reading ACTION=POSTAUTH
        try:
            return self._inner.capture(merchant_reference, amount)  # the saga's PostAuth
        except GatewayRefused:
            self.refusals += 1
            raise


def _authorized_moroccan_payment(
    tmp_path: Path, sandbox: CmiSandbox, gateway: _CapturedMeanwhile
) -> tuple[Stack, str]:
    """A Moroccan household's payment pre-authorized at CMI, whose callback was lost."""
    stack = Stack(tmp_path, gateways={"cmi": gateway})  # type: ignore[dict-item]
    stack.renewals.notification_base_url = "http://127.0.0.1:9"  # never called: it is dropped
    quote = stack.renewals.quote(_moroccan_household())
    payment = stack.renewals.start_payment(quote.quote_id, "ma-key-0002", "cmi")
    with urllib.request.urlopen(payment.redirect_url, timeout=60) as page:
        assert page.status == 200
    sandbox.drop_next_callback()
    assert sandbox.pay(payment.payment_id).dropped
    assert sandbox.orders[payment.payment_id].trans_stat == "A"  # authorized, not captured
    return stack, payment.payment_id


def test_a_capture_refused_because_cmi_captured_it_meanwhile_is_recorded(tmp_path: Path) -> None:
    """The race CI met in the test above: the confirmation reads AUTHORIZED, CMI then applies
    our ACTION=POSTAUTH answer, and the confirmation's own PostAuth is refused. The saga asks
    again and records what CMI captured, once."""
    with CmiSandbox() as sandbox:
        cmi = cmi_from_settings(sandbox.settings(return_url="https://portal.example/receipt"))
        raced = _CapturedMeanwhile(cmi)
        stack, payment_id = _authorized_moroccan_payment(tmp_path, sandbox, raced)
        before = _entries(stack)
        recorded = stack.renewals.complete_payment(payment_id)
        assert raced.refusals == 1
        assert recorded.state == "recorded", recorded
        assert recorded.captured_minor == 84_000 and recorded.leaf_index is not None
        assert _entries(stack) == before + 1
        assert sandbox.orders[payment_id].captured_centimes == 84_000
        again = stack.renewals.complete_payment(payment_id)
        assert (again.state, again.leaf_index) == ("recorded", recorded.leaf_index)
        assert _entries(stack) == before + 1


def test_a_capture_refused_for_an_open_authorization_writes_nothing_and_can_be_retried(
    tmp_path: Path,
) -> None:
    with CmiSandbox() as sandbox:
        cmi = cmi_from_settings(sandbox.settings(return_url="https://portal.example/receipt"))
        refusing = _CapturedMeanwhile(cmi, refuse=True)
        stack, payment_id = _authorized_moroccan_payment(tmp_path, sandbox, refusing)
        before = _entries(stack)
        history = _history(stack, payment_id)
        with pytest.raises(Unavailable) as raised:
            stack.renewals.complete_payment(payment_id)
        assert raised.value.details.reason == "GATEWAY_CAPTURE_REFUSED"
        assert raised.value.details.metadata == {
            "payment_id": payment_id,
            "gateway_status": "authorized",
        }
        assert "stays as it is" in raised.value.message
        assert stack.renewals.get_payment(payment_id).state == "pending"
        assert _history(stack, payment_id) == history
        assert _entries(stack) == before
        assert sandbox.orders[payment_id].captured_centimes == 0
        retried = stack.renewals.complete_payment(payment_id)  # CMI captures this time
        assert retried.state == "recorded" and retried.captured_minor == 84_000
        assert _entries(stack) == before + 1


def test_reconcile_leaves_a_refused_capture_as_it_is_then_records_it(tmp_path: Path) -> None:
    with CmiSandbox() as sandbox:
        cmi = cmi_from_settings(sandbox.settings(return_url="https://portal.example/receipt"))
        refusing = _CapturedMeanwhile(cmi, refuse=True)
        stack, payment_id = _authorized_moroccan_payment(tmp_path, sandbox, refusing)
        before = _entries(stack)
        [item] = stack.renewals.reconcile(stale_after=dt.timedelta(0))
        assert (item.id, item.before, item.after, item.needs_person) == (
            payment_id,
            "pending",
            "pending",
            False,
        )
        assert item.gateway_said == "authorized" and "GATEWAY_CAPTURE_REFUSED" not in item.action
        assert "refused to capture" in item.action, item
        assert _entries(stack) == before and sandbox.orders[payment_id].captured_centimes == 0
        [item] = stack.renewals.reconcile(stale_after=dt.timedelta(0))
        assert (item.after, item.action) == ("recorded", "recorded in the ledger")
        assert _entries(stack) == before + 1


def _entries(stack: Stack) -> int:
    with stack.engine.connect() as connection:
        return int(connection.execute(select(func.count()).select_from(log_entries)).scalar_one())


def _history(stack: Stack, payment_id: str) -> list[tuple[str, str]]:
    with stack.engine.connect() as connection:
        rows = connection.execute(
            select(payment_history.c.from_state, payment_history.c.to_state)
            .where(payment_history.c.payment_id == payment_id)
            .order_by(payment_history.c.history_id)
        )
        return [(row.from_state, row.to_state) for row in rows]


def _wire_request(jurisdiction: str) -> pb.QuoteRenewalRequest:
    insured = _cin("BE123456")
    return pb.QuoteRenewalRequest(
        jurisdiction=jurisdiction,
        sponsor=insured,
        members=[pb.RenewalMember(person=insured, relationship=events_pb2.RELATIONSHIP_SELF)],
        period_start=types_pb2.CivilDate(year=2027, month=1, day=1),
        period_end=types_pb2.CivilDate(year=2027, month=12, day=31),
    )


def test_the_quote_request_accepts_morocco_without_a_residence_category() -> None:
    parsed = parse_quote_request(_wire_request("MA"))
    assert parsed.jurisdiction == "MA"
    assert [m.residence_category for m in parsed.members] == [OTHER]


def test_the_quote_request_refuses_a_jurisdiction_without_schedule_naming_the_supported() -> None:
    with pytest.raises(InvalidArgument) as raised:
        parse_quote_request(_wire_request("SD"))
    [violation] = raised.value.details.field_violations
    assert violation.field == "jurisdiction"
    assert "MA (fee)" in violation.description and "KW (fee)" in violation.description
