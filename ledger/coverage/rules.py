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
    "InsurerChangeNotice",
    "PolicyState",
    "check_cancellation",
    "check_insurer_change_notice",
    "ledger_date",
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
