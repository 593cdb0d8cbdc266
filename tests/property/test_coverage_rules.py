"""The pure coverage rules (ledger/coverage/rules.py), against a plain restatement of each rule
over generated policies, cancellations and notices."""

from __future__ import annotations

import datetime as dt

from hypothesis import given
from hypothesis import strategies as st

from ledger import limits
from ledger.coverage import rules
from ledger.errors import FailedPrecondition

REASONS = (
    "FINAL_EXIT",
    "DEATH",
    "TRANSFER",
    "END_OF_EMPLOYMENT",
    "INSURER_CHANGE",
    "DEPENDENT_LOST_STATUS",
    "NON_PAYMENT",
)
BASE = dt.date(2026, 1, 1)
days = st.integers(min_value=-800, max_value=800).map(lambda n: BASE + dt.timedelta(days=n))


@st.composite
def policies(draw: st.DrawFn) -> rules.PolicyState:
    start = draw(days)
    end = start + dt.timedelta(days=draw(st.integers(min_value=0, max_value=731)))
    cancelled = draw(st.none() | st.just(start))
    return rules.PolicyState(
        "P1", start, end, cancelled, None if cancelled is None else draw(st.integers(1, 99))
    )


notices = st.none() | st.builds(rules.InsurerChangeNotice, st.integers(1, 10**6), days)


def expected_reason(
    policy: rules.PolicyState,
    cancellation: rules.Cancellation,
    notice: rules.InsurerChangeNotice | None,
) -> str | None:
    """Each rule restated directly, in the order the docs list them."""
    if policy.cancelled_from is not None:
        return "ALREADY_CANCELLED"
    if not policy.start <= cancellation.effective <= policy.end + dt.timedelta(days=1):
        return "DATE_OUTSIDE_POLICY"
    back = (cancellation.ledger_date - cancellation.effective).days
    if back > limits.cancellation_backdating_days_max.get(cancellation.reason, 0):
        return "BACKDATED_CANCELLATION"
    if cancellation.reason == "INSURER_CHANGE":
        if notice is None:
            return "NOTICE_MISSING"
        if (
            cancellation.effective - notice.notified_on
        ).days < limits.insurer_change_notice_days_min:
            return "NOTICE_TOO_SHORT"
    return None


@given(policies(), days, st.sampled_from(REASONS), days, notices)
def test_check_cancellation_refuses_exactly_what_the_rules_say(
    policy: rules.PolicyState,
    effective: dt.date,
    reason: str,
    ledger_date: dt.date,
    notice: rules.InsurerChangeNotice | None,
) -> None:
    cancellation = rules.Cancellation(effective, reason, ledger_date)
    wanted = expected_reason(policy, cancellation, notice)
    try:
        rules.check_cancellation(policy, cancellation, notice)
    except FailedPrecondition as error:
        assert error.reason == wanted, error.message
        assert error.details.field_violations
    else:
        assert wanted is None


@given(st.sampled_from(REASONS), days, st.integers(min_value=0, max_value=400))
def test_only_facts_of_the_past_reach_back_and_only_within_their_window(
    reason: str, ledger_date: dt.date, back: int
) -> None:
    effective = ledger_date - dt.timedelta(days=back)
    policy = rules.PolicyState(
        "P1", effective - dt.timedelta(days=10), effective + dt.timedelta(days=10)
    )
    notice = rules.InsurerChangeNotice(1, effective - dt.timedelta(days=30))
    window = limits.cancellation_backdating_days_max.get(reason, 0)
    try:
        rules.check_cancellation(policy, rules.Cancellation(effective, reason, ledger_date), notice)
    except FailedPrecondition as error:
        assert error.reason == "BACKDATED_CANCELLATION"
        assert back > window
        assert (
            error.details.metadata["earliest"]
            == (ledger_date - dt.timedelta(days=window)).isoformat()
        )
    else:
        assert back <= window
        assert back == 0 or reason in rules.BACKDATABLE_REASONS


@given(days, st.integers(min_value=-60, max_value=120))
def test_the_insurer_change_notice_counts_from_the_notice_s_ledger_date(
    notified_on: dt.date, gap: int
) -> None:
    effective = notified_on + dt.timedelta(days=gap)
    notice = rules.InsurerChangeNotice(7, notified_on)
    try:
        rules.check_insurer_change_notice("P1", effective, notice)
    except FailedPrecondition as error:
        assert error.reason == "NOTICE_TOO_SHORT"
        assert error.details.metadata["notice_days"] == str(gap)
        assert gap < limits.insurer_change_notice_days_min
    else:
        assert gap >= limits.insurer_change_notice_days_min


def test_ledger_date_is_the_utc_date_of_the_integration_time() -> None:
    riyadh = dt.timezone(dt.timedelta(hours=3))
    assert rules.ledger_date(dt.datetime(2026, 3, 1, 1, 30, tzinfo=riyadh)) == dt.date(2026, 2, 28)
    assert rules.ledger_date(dt.datetime(2026, 3, 1, 23, 59, tzinfo=dt.UTC)) == dt.date(2026, 3, 1)
