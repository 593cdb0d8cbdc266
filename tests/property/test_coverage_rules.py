"""The pure coverage rules (ledger/coverage/rules.py), against a plain restatement of each rule
over generated policies, cancellations and notices."""

from __future__ import annotations

import datetime as dt
import itertools

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


# Transfers and newborns.


@given(policies(), days)
def test_a_transfer_gap_is_exactly_the_days_between_the_old_cover_and_the_new(
    replaced: rules.PolicyState, new_start: dt.date
) -> None:
    last = rules.last_covered_day(replaced)
    gap = rules.transfer_gap(replaced, new_start)
    uncovered = [
        last + dt.timedelta(days=n) for n in range(1, (new_start - last).days)
    ]  # every day after the old cover, before the new
    if not uncovered:
        assert gap is None
    else:
        assert gap == (uncovered[0], uncovered[-1])


@given(days, st.integers(0, 400), st.integers(-400, 400))
def test_a_newborn_is_backdated_to_birth_only_within_the_window(
    birth: dt.date, age_when_added: int, effective_offset: int
) -> None:
    ledger = birth + dt.timedelta(days=age_when_added)
    effective = ledger + dt.timedelta(days=effective_offset)
    try:
        rules.check_newborn_start(birth, effective, ledger)
    except FailedPrecondition as error:
        assert error.reason == "NEWBORN_WINDOW_PASSED"
        assert effective < ledger and age_when_added > limits.newborn_backdating_days_max
    else:
        assert effective >= ledger or age_when_added <= limits.newborn_backdating_days_max


# Premiums.

HORIZON = BASE + dt.timedelta(days=2000)


@st.composite
def schedules(draw: st.DrawFn) -> tuple[rules.Instalment, ...]:
    offsets = draw(st.lists(st.integers(0, 700), min_size=1, max_size=6, unique=True))
    return tuple(
        rules.Instalment(BASE + dt.timedelta(days=offset), draw(st.integers(1, 10_000)))
        for offset in sorted(offsets)
    )


payments = st.lists(
    st.builds(
        rules.Payment,
        st.integers(-30, 900).map(lambda n: BASE + dt.timedelta(days=n)),
        st.integers(1, 20_000),
    ),
    max_size=8,
).map(tuple)
as_of_days = st.integers(0, 1000).map(lambda n: BASE + dt.timedelta(days=n))


def reference_unpaid_days(
    schedule: tuple[rules.Instalment, ...], paid: tuple[rules.Payment, ...], as_of: dt.date
) -> set[dt.date]:
    """Day by day: an instalment is settled on the first day the payments known on ``as_of``
    reach everything due up to it; settled after the grace (or not at all once the grace has
    passed), it leaves its due date up to the day before settlement uncovered."""
    grace = limits.premium_grace_days
    known = [payment for payment in paid if payment.paid_on <= as_of]
    days: set[dt.date] = set()
    owed = 0
    for instalment in sorted(schedule, key=lambda item: item.due):
        owed += instalment.amount_minor
        settled = next(
            (
                day
                for day in sorted({payment.paid_on for payment in known})
                if sum(p.amount_minor for p in known if p.paid_on <= day) >= owed
            ),
            None,
        )
        late = instalment.due + dt.timedelta(days=grace)
        if settled is None and as_of > late:
            last = HORIZON
        elif settled is not None and settled > late:
            last = settled - dt.timedelta(days=1)
        else:
            continue
        days |= {
            instalment.due + dt.timedelta(days=n) for n in range((last - instalment.due).days + 1)
        }
    return days


def expand(periods: tuple[tuple[dt.date, dt.date | None], ...]) -> set[dt.date]:
    days: set[dt.date] = set()
    for first, last in periods:
        end = HORIZON if last is None else last
        days |= {first + dt.timedelta(days=n) for n in range((end - first).days + 1)}
    return days


@given(schedules(), payments, as_of_days)
def test_non_payment_periods_are_the_days_an_instalment_was_overdue_past_grace(
    schedule: tuple[rules.Instalment, ...], paid: tuple[rules.Payment, ...], as_of: dt.date
) -> None:
    periods = rules.non_payment_periods(schedule, paid, as_of)
    assert expand(periods) == reference_unpaid_days(schedule, paid, as_of)
    for (_, last), (first, _) in itertools.pairwise(periods):
        assert last is not None and first > last + dt.timedelta(days=1)  # merged, ordered


@given(schedules(), payments, as_of_days, st.integers(1, 20_000))
def test_a_payment_never_takes_coverage_away(
    schedule: tuple[rules.Instalment, ...],
    paid: tuple[rules.Payment, ...],
    as_of: dt.date,
    amount: int,
) -> None:
    before = expand(rules.non_payment_periods(schedule, paid, as_of))
    more = (*paid, rules.Payment(as_of, amount))
    assert expand(rules.non_payment_periods(schedule, more, as_of)) <= before


def test_an_unpaid_annual_premium_stops_coverage_from_its_due_date_until_paid() -> None:
    start = dt.date(2026, 1, 1)
    schedule = rules.premium_schedule(450_000, start, ())
    assert schedule == (rules.Instalment(start, 450_000),)
    grace_end = start + dt.timedelta(days=limits.premium_grace_days)
    assert rules.non_payment_periods(schedule, (), grace_end) == ()
    assert rules.non_payment_periods(schedule, (), grace_end + dt.timedelta(days=1)) == (
        (start, None),
    )
    paid = (rules.Payment(dt.date(2026, 3, 1), 450_000),)
    assert rules.non_payment_periods(schedule, paid, dt.date(2026, 6, 1)) == (
        (start, dt.date(2026, 2, 28)),
    )


def test_the_grace_period_boundary() -> None:
    due = dt.date(2026, 4, 1)
    schedule = (rules.Instalment(due, 100),)
    last_grace_day = due + dt.timedelta(days=limits.premium_grace_days)
    on_time = (rules.Payment(last_grace_day, 100),)
    assert rules.non_payment_periods(schedule, on_time, dt.date(2027, 1, 1)) == ()
    late = (rules.Payment(last_grace_day + dt.timedelta(days=1), 100),)
    assert rules.non_payment_periods(schedule, late, dt.date(2027, 1, 1)) == (
        (due, last_grace_day),
    )
    partly = (rules.Payment(due, 99),)
    assert rules.non_payment_periods(schedule, partly, last_grace_day) == ()
    assert rules.non_payment_periods(schedule, partly, last_grace_day + dt.timedelta(days=1)) == (
        (due, None),
    )
