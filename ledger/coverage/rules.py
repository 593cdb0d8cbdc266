"""The coverage rules as pure functions (ARCHITECTURE.md section 9, "Rules are pure").

Each function takes a small snapshot of state (plain values, no SQL, no protobuf, no gRPC) and
returns a decision or raises a :class:`~ledger.errors.LedgerError` naming the rule. The projector
reads the state, calls these, and writes what they decide. Every date a rule compares with "now"
is the entry's **ledger date**: the UTC date of the time the sequencer integrated its batch
(never a time the submitter states).

docs/coverage.md and docs/compliance.md state each rule with its source.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from ledger import limits
from ledger.errors import FailedPrecondition, FieldViolation

__all__ = [
    "BACKDATABLE_REASONS",
    "INSURER_CHANGE",
    "Cancellation",
    "Instalment",
    "InsurerChangeNotice",
    "Payment",
    "PolicyState",
    "check_cancellation",
    "check_insurer_change_notice",
    "check_newborn_start",
    "last_covered_day",
    "ledger_date",
    "non_payment_periods",
    "premium_schedule",
    "transfer_gap",
]

INSURER_CHANGE = "INSURER_CHANGE"
BACKDATABLE_REASONS = frozenset(limits.cancellation_backdating_days_max)
"""Cancellation reasons that are facts of the past (and so may take effect before the entry)."""

_ONE_DAY = dt.timedelta(days=1)
_CANCEL_FIELD = "event.policy_cancelled"


def ledger_date(integrated_at: dt.datetime) -> dt.date:
    """The ledger date of an entry: the UTC date of its batch's integration time."""
    return integrated_at.astimezone(dt.UTC).date()


@dataclass(frozen=True)
class PolicyState:
    """What the cancellation rules need to know about a policy."""

    policy_id: str
    start: dt.date
    end: dt.date
    cancelled_from: dt.date | None = None
    cancelled_leaf_index: int | None = None


@dataclass(frozen=True)
class InsurerChangeNotice:
    """An ``InsurerChangeNotified`` entry: when the ledger recorded it."""

    leaf_index: int
    notified_on: dt.date
    """Its ledger date: the 30 days' notice counts from here."""


@dataclass(frozen=True)
class Cancellation:
    """A ``PolicyCancelled`` event, with its ledger date."""

    effective: dt.date
    """The first day without coverage."""
    reason: str
    """The CancellationReason name without its prefix (``FINAL_EXIT``, ``INSURER_CHANGE``...)."""
    ledger_date: dt.date


def check_cancellation(
    policy: PolicyState,
    cancellation: Cancellation,
    notice: InsurerChangeNotice | None,
) -> None:
    """Refuse ``cancellation`` of ``policy`` unless every cancellation rule holds:

    * a policy is cancelled once (ALREADY_CANCELLED);
    * effective on or after the start and at most one day after the end (DATE_OUTSIDE_POLICY);
    * not before its own ledger date, except reasons that are facts of the past, each at most
      ``limits.cancellation_backdating_days_max[reason]`` days before it (BACKDATED_CANCELLATION);
    * reason INSURER_CHANGE: an earlier ``InsurerChangeNotified`` entry of the policy, recorded at
      least ``limits.insurer_change_notice_days_min`` days before the effective date
      (NOTICE_MISSING, NOTICE_TOO_SHORT). The event's stated ``notice_date`` does not count.
    """
    if policy.cancelled_from is not None:
        raise FailedPrecondition(
            f"policy {policy.policy_id!r} was already cancelled from {policy.cancelled_from} "
            f"(entry {policy.cancelled_leaf_index})",
            reason="ALREADY_CANCELLED",
            field_violations=[FieldViolation(f"{_CANCEL_FIELD}.policy_id", "already cancelled")],
            metadata={
                "policy_id": policy.policy_id,
                "leaf_index": str(policy.cancelled_leaf_index),
            },
        )
    effective = cancellation.effective
    if not policy.start <= effective <= policy.end + _ONE_DAY:
        raise FailedPrecondition(
            f"a cancellation's effective date {effective} must lie within policy "
            f"{policy.policy_id!r} ({policy.start}..{policy.end + _ONE_DAY})",
            reason="DATE_OUTSIDE_POLICY",
            field_violations=[
                FieldViolation(
                    f"{_CANCEL_FIELD}.effective_date",
                    f"must be within {policy.start}..{policy.end + _ONE_DAY}",
                )
            ],
            metadata={"policy_id": policy.policy_id},
        )
    _check_backdating(cancellation)
    if cancellation.reason == INSURER_CHANGE:
        check_insurer_change_notice(policy.policy_id, effective, notice)


def _check_backdating(cancellation: Cancellation) -> None:
    earliest = cancellation.ledger_date - dt.timedelta(
        days=limits.cancellation_backdating_days_max.get(cancellation.reason, 0)
    )
    if cancellation.effective >= earliest:
        return
    if cancellation.reason in BACKDATABLE_REASONS:
        why = (
            f"{cancellation.reason} may take effect at most "
            f"{limits.cancellation_backdating_days_max[cancellation.reason]} days before the "
            f"entry's ledger date {cancellation.ledger_date}"
        )
    else:
        why = (
            f"{cancellation.reason} is not a fact of the past: it may not take effect before "
            f"the entry's ledger date {cancellation.ledger_date}"
        )
    raise FailedPrecondition(
        f"cancellation effective {cancellation.effective}: {why}",
        reason="BACKDATED_CANCELLATION",
        field_violations=[
            FieldViolation(f"{_CANCEL_FIELD}.effective_date", f"must be on or after {earliest}")
        ],
        metadata={"earliest": earliest.isoformat(), "ledger_date": str(cancellation.ledger_date)},
    )


def check_insurer_change_notice(
    policy_id: str, effective: dt.date, notice: InsurerChangeNotice | None
) -> None:
    """Refuse a change of insurer effective on ``effective`` without a notice recorded at least
    ``limits.insurer_change_notice_days_min`` days before it."""
    days_min = limits.insurer_change_notice_days_min
    if notice is None:
        raise FailedPrecondition(
            f"a change of insurer needs an InsurerChangeNotified entry for policy {policy_id!r} "
            f"at least {days_min} days before the effective date {effective}; there is none",
            reason="NOTICE_MISSING",
            field_violations=[
                FieldViolation(f"{_CANCEL_FIELD}.reason", "no InsurerChangeNotified entry")
            ],
            metadata={"policy_id": policy_id, "notice_days_min": str(days_min)},
        )
    days = (effective - notice.notified_on).days
    if days < days_min:
        raise FailedPrecondition(
            f"a change of insurer needs {days_min} days' notice; the notice recorded on "
            f"{notice.notified_on} (entry {notice.leaf_index}) for {effective} gives {days}",
            reason="NOTICE_TOO_SHORT",
            field_violations=[
                FieldViolation(
                    f"{_CANCEL_FIELD}.effective_date",
                    f"at least {days_min} days after the notice entry's ledger date "
                    f"{notice.notified_on}",
                )
            ],
            metadata={
                "notice_days": str(days),
                "notice_leaf_index": str(notice.leaf_index),
                "earliest": (notice.notified_on + dt.timedelta(days=days_min)).isoformat(),
            },
        )


# Transfers and newborns (issue 10 item 4).


def last_covered_day(policy: PolicyState) -> dt.date:
    """The last day ``policy`` covers: the day before its cancellation, else its end date."""
    if policy.cancelled_from is not None:
        return min(policy.end, policy.cancelled_from - _ONE_DAY)
    return policy.end


def transfer_gap(replaced: PolicyState, new_start: dt.date) -> tuple[dt.date, dt.date] | None:
    """The days (first, last) between ``replaced``'s last covered day and a replacement starting
    on ``new_start``; None when it starts on the next day or earlier (overlap is allowed)."""
    first = last_covered_day(replaced) + _ONE_DAY
    if new_start <= first:
        return None
    return first, new_start - _ONE_DAY


def check_newborn_start(birth: dt.date, effective: dt.date, ledger_date: dt.date) -> None:
    """A member with a birth date may be covered from before the entry's ledger date only when
    the entry comes within ``limits.newborn_backdating_days_max`` days of the birth."""
    if effective >= ledger_date:
        return
    window = limits.newborn_backdating_days_max
    if (ledger_date - birth).days <= window:
        return
    raise FailedPrecondition(
        f"a member born on {birth} added on {ledger_date} (more than {window} days later) is "
        f"covered from the entry's ledger date at the earliest, not {effective}; the days "
        "since birth count as uninsured",
        reason="NEWBORN_WINDOW_PASSED",
        field_violations=[
            FieldViolation(
                "event.member_added.effective_date", f"must be on or after {ledger_date}"
            )
        ],
        metadata={"earliest": ledger_date.isoformat(), "window_days": str(window)},
    )


# Premiums (issue 10 item 5).


@dataclass(frozen=True)
class Instalment:
    """One instalment of a policy's premium schedule."""

    due: dt.date
    amount_minor: int


@dataclass(frozen=True)
class Payment:
    """A PremiumPaid entry of the policy: its amount, and its ledger date (when it counts)."""

    paid_on: dt.date
    amount_minor: int


def premium_schedule(
    annual_minor: int, start: dt.date, stated: tuple[Instalment, ...]
) -> tuple[Instalment, ...]:
    """The schedule a policy states, or one instalment of the annual premium due on its start."""
    return stated or (Instalment(start, annual_minor),)


def non_payment_periods(
    schedule: tuple[Instalment, ...],
    payments: tuple[Payment, ...],
    as_of: dt.date,
) -> tuple[tuple[dt.date, dt.date | None], ...]:
    """The periods (first day, last day or None while still unpaid) in which the policy does not
    count as coverage for non-payment, as the ledger knows it on ``as_of``.

    Payments settle instalments in due order (the oldest first), each counting from its ledger
    date. An instalment settled more than ``limits.premium_grace_days`` after its due date, or
    still unsettled on ``as_of`` when the grace has passed, stops coverage from its due date to
    the day before it was settled; overlapping periods are merged.
    """
    grace = dt.timedelta(days=limits.premium_grace_days)
    ordered = sorted(payments, key=lambda payment: payment.paid_on)
    periods: list[tuple[dt.date, dt.date | None]] = []
    paid_total, owed_total, next_payment = 0, 0, 0
    for instalment in sorted(schedule, key=lambda item: item.due):
        owed_total += instalment.amount_minor
        settled_on: dt.date | None = None
        while paid_total < owed_total and next_payment < len(ordered):
            if ordered[next_payment].paid_on > as_of:
                break
            paid_total += ordered[next_payment].amount_minor
            settled_on = ordered[next_payment].paid_on
            next_payment += 1
        if paid_total >= owed_total:
            settled_on = settled_on or _settled_before(ordered, next_payment, instalment.due)
            if settled_on > instalment.due + grace:
                periods.append((instalment.due, settled_on - _ONE_DAY))
        elif as_of > instalment.due + grace:
            periods.append((instalment.due, None))
    return _merged(periods)


def _settled_before(ordered: list[Payment], used: int, due: dt.date) -> dt.date:
    """When an instalment already covered by earlier payments was settled: the last payment
    used, or its due date when that payment came before it (paid in advance)."""
    return max(due, ordered[used - 1].paid_on) if used else due


def _merged(
    periods: list[tuple[dt.date, dt.date | None]],
) -> tuple[tuple[dt.date, dt.date | None], ...]:
    merged: list[tuple[dt.date, dt.date | None]] = []
    for first, last in sorted(periods, key=lambda period: period[0]):
        if merged:
            previous_first, previous_last = merged[-1]
            if previous_last is None:
                continue
            if first <= previous_last + _ONE_DAY:
                merged[-1] = (
                    previous_first,
                    None if last is None else max(previous_last, last),
                )
                continue
        merged.append((first, last))
    return tuple(merged)
