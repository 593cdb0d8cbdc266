"""The coverage changes one log entry causes for a watched subject (CoverageService.WatchCoverage).

Pure: :class:`WatchState` is fed the entries of the log in order (each with its leaf index and
ledger date) and returns, per entry, the :class:`Change` values it caused for one subject (a
person, a household, an establishment). It reads nothing but the entries it is given and, for a
policy that comes into the subject's scope late (a member added to a policy issued earlier), the
history of that policy below the entry, which the caller supplies (:data:`PolicyHistory`). The
state after entry ``L`` is therefore a function of the log's first ``L + 1`` entries alone: a
watch resumed from a tree size computes exactly the changes a watch that never stopped would
have sent from there (docs/coverage.md "Watching coverage").

The changes (issue 10 item 9):
* POLICY_CANCELLED: a PolicyCancelled of a policy in scope;
* INSURER_SUSPENDED: an InsurerSuspended of the insurer of a policy in scope, in force then;
* PREMIUM_OVERDUE: the first entry whose ledger date is past the grace of an unpaid instalment
  of a policy in scope (:func:`ledger.coverage.rules.non_payment_periods`);
* HOLD_LIFTED (households): the entry that covers, on its ledger date, the last member of the
  household who was not covered by any policy period then;
* ENDS_BEFORE_PERMIT: the entry that moves a person's coverage end (a policy issued, renewed,
  cancelled, a member added or removed) or their residence permit's end (PermitIssued,
  PermitRenewed) so that the coverage now ends ``D`` days before the permit does, with
  ``1 <= D <= limits.watch_permit_notice_days``; permits are read from their own entries below
  the entry (:class:`PermitEnds`, :class:`LoggedPermits`), never from the current projection.
"""

from __future__ import annotations

import datetime as dt
import enum
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Protocol

from ledger import limits
from ledger.coverage import rules
from ledger.v1 import events_pb2

__all__ = [
    "Change",
    "ChangeKind",
    "LoggedPermits",
    "NoPermits",
    "PermitEnds",
    "PermitEntries",
    "PermitHistory",
    "PolicyHistory",
    "SubjectKind",
    "WatchState",
    "WatchSubject",
    "WatchedEvent",
    "permit_last_days",
]

_ONE_DAY = dt.timedelta(days=1)
_CANCELLATION_PREFIX = "CANCELLATION_REASON_"


class SubjectKind(enum.Enum):
    """What a watch follows."""

    PERSON = "person"
    """The policies that cover one person (``key``: the person token)."""
    HOUSEHOLD = "household"
    """The policies whose sponsor is a person (``key``: the sponsor's token)."""
    ESTABLISHMENT = "establishment"
    """The policies an organisation holds (``key``: ``org:<country>:<registration number>``)."""


@dataclass(frozen=True)
class WatchSubject:
    """One watched subject; ``key`` is empty while the person has no token (then nothing in
    the log can name them yet)."""

    kind: SubjectKind
    key: str


class ChangeKind(enum.Enum):
    """What changed (the wire enum CoverageChangeKind, without its prefix)."""

    POLICY_CANCELLED = "POLICY_CANCELLED"
    INSURER_SUSPENDED = "INSURER_SUSPENDED"
    PREMIUM_OVERDUE = "PREMIUM_OVERDUE"
    HOLD_LIFTED = "HOLD_LIFTED"
    ENDS_BEFORE_PERMIT = "ENDS_BEFORE_PERMIT"


@dataclass(frozen=True)
class Change:
    """One change: the people it concerns are person tokens (the servicer resolves them)."""

    kind: ChangeKind
    insurer_id: str
    policy_id: str
    person_tokens: tuple[str, ...]
    effective: dt.date
    detail: str


@dataclass(frozen=True)
class WatchedEvent:
    """An entry as the watch reads it: its position, its ledger date and its event."""

    leaf_index: int
    ledger_date: dt.date
    event: events_pb2.Event


PersonPolicies = Callable[[str, int], list[WatchedEvent]]
"""``(person_token, before_leaf)`` -> the entries, below the leaf, of every policy that named the
person (log order): what an establishment's watch replays for a worker its permit names."""

PolicyHistory = Callable[[str, str, int], list[WatchedEvent]]
"""``(insurer_id, policy_id, before_leaf)`` -> the entries of that policy below the leaf, in log
order (its issuance first)."""


class PermitEnds(Protocol):
    """Where a person's residence permit ends, for ENDS_BEFORE_PERMIT, as the log stood below a
    leaf (so the answer for an entry never changes: a resumed watch agrees)."""

    def permit_end(self, person_token: str, leaf_index: int) -> dt.date | None:
        """The last day of the person's permit as the log knows it below ``leaf_index``."""
        ...

    def permit_people(self, authority_id: str, permit_id: str, leaf_index: int) -> tuple[str, ...]:
        """The holder and members of one permit as the log knows them below ``leaf_index``."""
        ...


class NoPermits:
    """No residence permits: ENDS_BEFORE_PERMIT is never sent (a state without a permit
    reader, as in tests of the other changes)."""

    def permit_end(self, person_token: str, leaf_index: int) -> dt.date | None:
        """Always None."""
        del person_token, leaf_index
        return None

    def permit_people(self, authority_id: str, permit_id: str, leaf_index: int) -> tuple[str, ...]:
        """Always empty."""
        del authority_id, permit_id, leaf_index
        return ()


_PERMIT_EVENTS = frozenset({"permit_issued", "permit_renewed", "permit_ended"})


def permit_last_days(entries: Iterable[WatchedEvent]) -> dict[str, dt.date]:
    """Person token -> the last day of their residence permit, from permit entries in log order.

    A permit's last day is its ``end_date`` (moved by each PermitRenewed), or the day before a
    PermitEnded's ``effective_date`` (the same rule as :func:`ledger.compliance.obligations.
    obligation_until`); its people are the holder, the members it was issued with and those a
    renewal added. A person on several permits (a transfer ends one, a new one follows) has the
    latest last day of them. Entries of other types are skipped.
    """
    people: dict[tuple[str, str], set[str]] = {}
    last: dict[tuple[str, str], dt.date] = {}
    for entry in entries:
        event = entry.event
        kind = event.WhichOneof("body")
        if kind not in _PERMIT_EVENTS:
            continue
        body = getattr(event, kind)
        key = (event.insurer_id, body.permit_id)
        if kind == "permit_issued":
            people[key] = {body.holder_token, *(m.person_token for m in body.members)}
            last[key] = _date(body.end_date)
        elif key not in last:
            continue  # the issuance is not among the entries given: nothing to follow
        elif kind == "permit_renewed":
            people[key].update(m.person_token for m in body.added_members)
            last[key] = _date(body.end_date)
        else:
            last[key] = min(last[key], _date(body.effective_date) - _ONE_DAY)
    found: dict[str, dt.date] = {}
    for key, tokens in people.items():
        for token in tokens:
            found[token] = max(found.get(token, last[key]), last[key])
    return found


PermitHistory = Callable[[str, int], list[WatchedEvent]]
"""``(person_token, before_leaf)`` -> the entries, below the leaf, of every permit naming the
person (log order)."""
PermitEntries = Callable[[str, str, int], list[WatchedEvent]]
"""``(authority_id, permit_id, before_leaf)`` -> that permit's entries below the leaf."""


class LoggedPermits:
    """:class:`PermitEnds` from the permits' own entries below the leaf asked about (never the
    current projection, so the answer for a leaf is fixed once the leaf is sequenced)."""

    def __init__(self, of_person: PermitHistory, of_permit: PermitEntries) -> None:
        self._of_person = of_person
        self._of_permit = of_permit

    def permit_end(self, person_token: str, leaf_index: int) -> dt.date | None:
        """See :class:`PermitEnds`."""
        return permit_last_days(self._of_person(person_token, leaf_index)).get(person_token)

    def permit_people(self, authority_id: str, permit_id: str, leaf_index: int) -> tuple[str, ...]:
        """See :class:`PermitEnds`."""
        return tuple(sorted(permit_last_days(self._of_permit(authority_id, permit_id, leaf_index))))


@dataclass
class _Policy:
    """One policy in the subject's scope, as the entries so far made it."""

    insurer_id: str
    policy_id: str
    sponsor_token: str
    start: dt.date
    end: dt.date
    members: dict[str, tuple[dt.date, dt.date]] = field(default_factory=dict)
    """Person token -> first and last covered day (after any removal)."""
    cancelled_from: dt.date | None = None
    schedule: tuple[rules.Instalment, ...] = ()
    payments: list[rules.Payment] = field(default_factory=list)
    whole: bool = True
    """Every member is followed (False: an establishment follows only its permit workers on
    a policy it does not hold)."""

    def last_day(self) -> dt.date:
        return self.end if self.cancelled_from is None else self.cancelled_from - _ONE_DAY

    def covers(self, token: str, day: dt.date) -> bool:
        span = self.members.get(token)
        return span is not None and span[0] <= day <= min(span[1], self.last_day())

    def open_unpaid(self, as_of: dt.date) -> set[dt.date]:
        """First days of the non-payment periods still open on ``as_of``."""
        if not self.schedule:
            return set()
        periods = rules.non_payment_periods(self.schedule, tuple(self.payments), as_of)
        return {first for first, last in periods if last is None}


def _date(civil: object) -> dt.date:
    return dt.date(civil.year, civil.month, civil.day)  # type: ignore[attr-defined]


def _party_key(party: events_pb2.PartyRef) -> str:
    if party.WhichOneof("kind") == "person_token":
        return f"person:{party.person_token}"
    organization = party.organization
    return f"org:{organization.country_code}:{organization.registration_number}"


_POLICY_EVENTS = frozenset(
    {
        "policy_issued",
        "policy_cancelled",
        "premium_paid",
        "member_added",
        "member_removed",
        "insurer_change_notified",
    }
)


def _policy_key(event: events_pb2.Event) -> tuple[str, str] | None:
    """The (insurer, policy) an entry is about, if any."""
    kind = event.WhichOneof("body")
    if kind in _POLICY_EVENTS:
        return event.insurer_id, getattr(event, kind).policy_id
    if kind == "fee_collected":
        return event.insurer_id, event.fee_collected.renewal_id
    return None


class WatchState:
    """The subject's policies as the entries fed so far made them; see the module doc."""

    def __init__(
        self,
        subject: WatchSubject,
        history: PolicyHistory,
        permits: PermitEnds | None = None,
        person_policies: PersonPolicies | None = None,
    ) -> None:
        self.subject = subject
        self._history = history
        self._permits = permits or NoPermits()
        self._person_policies = person_policies
        self._policies: dict[tuple[str, str], _Policy] = {}
        self._sponsored: set[tuple[str, str]] = set()
        """Establishments: the permits naming the subject as sponsor."""
        self.workers: set[str] = set()
        """Establishments: the people of those permits, whose policies are followed too."""
        self.last_ledger_date: dt.date | None = None
        """The ledger date of the entry before the next one (PREMIUM_OVERDUE compares it)."""

    @property
    def policy_keys(self) -> list[tuple[str, str]]:
        """The (insurer, policy) pairs in scope, sorted."""
        return sorted(self._policies)

    def set_subject_key(self, key: str) -> None:
        """The person's token, once the vault has one (before, nothing names them)."""
        self.subject = WatchSubject(self.subject.kind, key)

    def replay(self, entries: Iterable[WatchedEvent]) -> None:
        """Feed entries below the watch's start: the state follows, no change is reported."""
        for entry in entries:
            self._apply(entry)

    def apply(self, entry: WatchedEvent) -> list[Change]:
        """Feed the next entry of the log; return the changes it caused.

        Only what can change is recomputed: every policy's unpaid instalments when the ledger
        date moves, else only those of the policy the entry is about; the household's hold only
        when the entry is about a policy (it is judged on the entry's own date).
        """
        previous = self.last_ledger_date or entry.ledger_date
        key = _policy_key(entry.event)
        date_moved = entry.ledger_date != previous
        # An entry about any policy may bring it into scope: a new policy can lift a hold.
        blocked_before = self._blocked(entry.ledger_date) if key is not None else set()
        unpaid_before = {
            policy_key: policy.open_unpaid(previous)
            for policy_key, policy in self._policies.items()
            if date_moved or policy_key == key
        }
        candidates = self._candidates(entry.event)
        ends_before = {token: self._coverage_end(token) for token in candidates}
        changes = self._apply(entry)
        changes.extend(self._permit_changes(entry, ends_before))
        for policy_key, policy in sorted(self._policies.items()):
            if date_moved or policy_key == key:
                changes.extend(self._overdue(policy, entry, unpaid_before.get(policy_key, set())))
        if blocked_before and not self._blocked(entry.ledger_date):
            changes.extend(self._hold_lifted(entry, blocked_before))
        self.last_ledger_date = entry.ledger_date
        return changes

    def _overdue(self, policy: _Policy, entry: WatchedEvent, before: set[dt.date]) -> list[Change]:
        return [
            self._change(
                ChangeKind.PREMIUM_OVERDUE,
                policy,
                first,
                f"policy {policy.policy_id!r} of {policy.insurer_id!r}: the instalment due "
                f"{first.isoformat()} is unpaid past the grace period; the policy does not "
                f"count as coverage from {first.isoformat()} until paid",
            )
            for first in sorted(policy.open_unpaid(entry.ledger_date) - before)
        ]

    def _apply(self, entry: WatchedEvent) -> list[Change]:
        event = entry.event
        kind = event.WhichOneof("body")
        if kind == "policy_issued":
            self._issued(entry)
        elif kind == "fee_collected":
            self._fee_collected(entry)
        elif kind == "member_added":
            self._member_added(entry)
        elif kind == "member_removed":
            self._member_removed(entry)
        elif kind == "premium_paid":
            self._premium_paid(entry)
        elif kind == "policy_cancelled":
            return self._cancelled(entry)
        elif kind == "insurer_suspended":
            return self._suspended(entry)
        elif kind in {"permit_issued", "permit_renewed"}:
            self._sponsored_permit(entry)
        return []

    # Scope: which policies the subject's watch follows.

    def _in_scope(self, sponsor: str, holder: str, members: Iterable[str]) -> bool:
        key = self.subject.key
        if not key:
            return False
        if self.subject.kind is SubjectKind.PERSON:
            return key in members
        if self.subject.kind is SubjectKind.HOUSEHOLD:
            return sponsor == key
        return holder == key or not self.workers.isdisjoint(members)

    def _tracked(self, members: Iterable[str], *, whole: bool = True) -> list[str]:
        """The members a policy in scope contributes (a person watch follows one person; an
        establishment, on a policy it does not hold, its permit workers)."""
        if self.subject.kind is SubjectKind.PERSON:
            return [token for token in members if token == self.subject.key]
        if not whole:
            return [token for token in members if token in self.workers]
        return list(members)

    def _add_policy(
        self,
        event: events_pb2.Event,
        *,
        policy_id: str,
        sponsor: str,
        start: dt.date,
        end: dt.date,
        members: list[str],
        holder: str,
    ) -> _Policy:
        whole = self.subject.kind is not SubjectKind.ESTABLISHMENT or holder == self.subject.key
        policy = _Policy(event.insurer_id, policy_id, sponsor, start, end, whole=whole)
        for token in self._tracked(members, whole=whole):
            policy.members[token] = (start, end)
        self._policies[(event.insurer_id, policy_id)] = policy
        return policy

    def _issued(self, entry: WatchedEvent) -> None:
        body = entry.event.policy_issued
        members = [member.person_token for member in body.members]
        if not self._in_scope(body.sponsor_token, _party_key(body.holder), members):
            return
        policy = self._add_policy(
            entry.event,
            policy_id=body.policy_id,
            sponsor=body.sponsor_token,
            start=_date(body.start_date),
            end=_date(body.end_date),
            members=members,
            holder=_party_key(body.holder),
        )
        policy.schedule = tuple(
            rules.Instalment(_date(item.due_date), item.amount.amount_minor)
            for item in body.instalments
        )

    def _fee_collected(self, entry: WatchedEvent) -> None:
        body = entry.event.fee_collected
        members = [line.person_token for line in body.lines]
        sponsor = body.sponsor_token
        if not self._in_scope(sponsor, f"person:{sponsor}", members):
            return
        self._add_policy(
            entry.event,
            policy_id=body.renewal_id,
            sponsor=sponsor,
            start=_date(body.period_start),
            end=_date(body.period_end),
            members=members,
            holder=f"person:{sponsor}",
        )

    def _member_added(self, entry: WatchedEvent) -> None:
        body = entry.event.member_added
        key = (entry.event.insurer_id, body.policy_id)
        token = body.member.person_token
        policy = self._policies.get(key)
        if policy is None:
            if not self._follows(token):
                return
            # The person joins a policy issued before: follow it from its history.
            policy = self._policy_from_history(key, entry.leaf_index)
            if policy is None:
                return
            policy.whole = self.subject.kind is not SubjectKind.ESTABLISHMENT
        if not policy.whole and not self._follows(token):
            return
        if self.subject.kind is SubjectKind.PERSON and token != self.subject.key:
            return
        policy.members[token] = (_date(body.effective_date), policy.end)

    def _follows(self, token: str) -> bool:
        """The subject follows this person on any policy (the person, a permit worker)."""
        if self.subject.kind is SubjectKind.PERSON:
            return token == self.subject.key
        return self.subject.kind is SubjectKind.ESTABLISHMENT and token in self.workers

    def _sponsored_permit(self, entry: WatchedEvent) -> None:
        """Establishments: a permit naming the subject as sponsor makes its people workers
        the watch follows, with the policies that named them below this entry."""
        if self.subject.kind is not SubjectKind.ESTABLISHMENT or not self.subject.key:
            return
        event = entry.event
        if event.WhichOneof("body") == "permit_issued":
            body = event.permit_issued
            if _party_key(body.sponsor) != self.subject.key:
                return
            self._sponsored.add((event.insurer_id, body.permit_id))
            people = [body.holder_token, *(m.person_token for m in body.members)]
        else:
            renewal = event.permit_renewed
            if (event.insurer_id, renewal.permit_id) not in self._sponsored:
                return
            people = [m.person_token for m in renewal.added_members]
        for token in sorted(set(people) - self.workers):
            self._follow_worker(token, entry.leaf_index)

    def _follow_worker(self, token: str, before: int) -> None:
        self.workers.add(token)
        if self._person_policies is None:
            return
        alone = WatchState(WatchSubject(SubjectKind.PERSON, token), self._history)
        alone.replay(self._person_policies(token, before))
        for key, policy in alone._policies.items():
            mine = self._policies.get(key)
            if mine is None:
                policy.whole = False
                self._policies[key] = policy
            else:
                mine.members.setdefault(token, policy.members[token])

    def _policy_from_history(self, key: tuple[str, str], before: int) -> _Policy | None:
        """The policy ``key`` as its entries below ``before`` made it (members not followed)."""
        insurer_id, policy_id = key
        policy: _Policy | None = None
        for past in self._history(insurer_id, policy_id, before):
            kind = past.event.WhichOneof("body")
            if kind == "policy_issued":
                body = past.event.policy_issued
                policy = _Policy(
                    insurer_id,
                    policy_id,
                    body.sponsor_token,
                    _date(body.start_date),
                    _date(body.end_date),
                    schedule=tuple(
                        rules.Instalment(_date(item.due_date), item.amount.amount_minor)
                        for item in body.instalments
                    ),
                )
            elif policy is not None and kind == "premium_paid":
                policy.payments.append(
                    rules.Payment(past.ledger_date, past.event.premium_paid.amount.amount_minor)
                )
            elif policy is not None and kind == "policy_cancelled":
                policy.cancelled_from = _date(past.event.policy_cancelled.effective_date)
        if policy is not None:
            self._policies[key] = policy
        return policy

    def _member_removed(self, entry: WatchedEvent) -> None:
        body = entry.event.member_removed
        policy = self._policies.get((entry.event.insurer_id, body.policy_id))
        if policy is None or body.person_token not in policy.members:
            return
        first, _ = policy.members[body.person_token]
        policy.members[body.person_token] = (first, _date(body.effective_date) - _ONE_DAY)

    def _premium_paid(self, entry: WatchedEvent) -> None:
        body = entry.event.premium_paid
        policy = self._policies.get((entry.event.insurer_id, body.policy_id))
        if policy is not None:
            policy.payments.append(rules.Payment(entry.ledger_date, body.amount.amount_minor))

    # Changes.

    def _change(self, kind: ChangeKind, policy: _Policy, effective: dt.date, detail: str) -> Change:
        return Change(
            kind=kind,
            insurer_id=policy.insurer_id,
            policy_id=policy.policy_id,
            person_tokens=tuple(sorted(policy.members)),
            effective=effective,
            detail=detail,
        )

    def _cancelled(self, entry: WatchedEvent) -> list[Change]:
        body = entry.event.policy_cancelled
        policy = self._policies.get((entry.event.insurer_id, body.policy_id))
        if policy is None:
            return []
        effective = _date(body.effective_date)
        policy.cancelled_from = effective
        reason = events_pb2.CancellationReason.Name(body.reason).removeprefix(_CANCELLATION_PREFIX)
        return [
            self._change(
                ChangeKind.POLICY_CANCELLED,
                policy,
                effective,
                f"policy {policy.policy_id!r} of {policy.insurer_id!r} cancelled from "
                f"{effective.isoformat()} ({reason})",
            )
        ]

    def _suspended(self, entry: WatchedEvent) -> list[Change]:
        body = entry.event.insurer_suspended
        effective = _date(body.effective_date)
        return [
            self._change(
                ChangeKind.INSURER_SUSPENDED,
                policy,
                effective,
                f"insurer {policy.insurer_id!r} suspended from {effective.isoformat()}: policy "
                f"{policy.policy_id!r} does not count as coverage from then",
            )
            for key, policy in sorted(self._policies.items())
            if key[0] == body.suspended_insurer_id and policy.last_day() >= effective
        ]

    # ENDS_BEFORE_PERMIT (docs/coverage.md "Watching coverage").

    def _candidates(self, event: events_pb2.Event) -> list[str]:
        """The people whose coverage end a policy entry may move (before it is applied): only
        of a policy in scope, or one the entry brings into scope."""
        kind = event.WhichOneof("body")
        if kind == "policy_issued":
            body = event.policy_issued
            members = [member.person_token for member in body.members]
            scoped = self._in_scope(body.sponsor_token, _party_key(body.holder), members)
            return members if scoped else []
        if kind == "fee_collected":
            sponsor = event.fee_collected.sponsor_token
            members = [line.person_token for line in event.fee_collected.lines]
            return members if self._in_scope(sponsor, f"person:{sponsor}", members) else []
        if kind not in {"member_added", "member_removed", "policy_cancelled"}:
            return []
        policy = self._policies.get((event.insurer_id, getattr(event, kind).policy_id))
        if kind == "member_added":
            token = event.member_added.member.person_token
            return [token] if policy is not None or self._follows(token) else []
        if policy is None:
            return []
        removed = [event.member_removed.person_token] if kind == "member_removed" else []
        return removed or sorted(policy.members)

    def _coverage_end(self, token: str) -> tuple[dt.date, _Policy] | None:
        """The last day any policy in scope covers ``token`` (by its dates, cancellation and
        member removals), with that policy; None when none covers them on any day."""
        best: tuple[dt.date, _Policy] | None = None
        for _, policy in sorted(self._policies.items()):
            span = policy.members.get(token)
            if span is None:
                continue
            last = min(span[1], policy.last_day())
            if last >= span[0] and (best is None or last > best[0]):
                best = (last, policy)
        return best

    def _permit_changes(
        self, entry: WatchedEvent, ends_before: dict[str, tuple[dt.date, _Policy] | None]
    ) -> list[Change]:
        """ENDS_BEFORE_PERMIT for the people of the subject whose coverage end (a policy entry)
        or permit end (a PermitIssued or PermitRenewed) this entry moved, when their coverage
        now ends ``D`` days before their permit does, ``1 <= D <= watch_permit_notice_days``.

        Permits are read as the log stood below the entry (its coverage side) and below the
        next one (the permit side), so the answer for an entry never changes."""
        event = entry.event
        kind = event.WhichOneof("body")
        leaf = entry.leaf_index
        if not ends_before and kind not in {"permit_issued", "permit_renewed"}:
            return []  # moves neither end: skip the work (most entries of the log)
        tracked = self._members()
        found: list[tuple[str, dt.date, tuple[dt.date, _Policy]]] = []
        if kind in {"permit_issued", "permit_renewed"}:
            if kind == "permit_issued":
                body = event.permit_issued
                people: Iterable[str] = [body.holder_token, *(m.person_token for m in body.members)]
            else:
                people = self._permits.permit_people(
                    event.insurer_id, event.permit_renewed.permit_id, leaf + 1
                )
            for token in sorted(set(people) & tracked):
                after = self._permits.permit_end(token, leaf + 1)
                coverage = self._coverage_end(token)
                if after is None or coverage is None:
                    continue
                if after != self._permits.permit_end(token, leaf):
                    found.append((token, after, coverage))
        else:
            for token in sorted(set(ends_before) & tracked):
                coverage = self._coverage_end(token)
                if coverage is None or coverage[0] == _end_day(ends_before[token]):
                    continue
                permit_end = self._permits.permit_end(token, leaf)
                if permit_end is not None:
                    found.append((token, permit_end, coverage))
        return [
            _ends_before_permit(token, permit_end, last, policy)
            for token, permit_end, (last, policy) in found
            if 1 <= (permit_end - last).days <= limits.watch_permit_notice_days
        ]

    def _members(self) -> set[str]:
        return {token for policy in self._policies.values() for token in policy.members}

    def _blocked(self, day: dt.date) -> set[str]:
        """Household watches: the members no policy in scope covers on ``day``."""
        if self.subject.kind is not SubjectKind.HOUSEHOLD:
            return set()
        return {
            token
            for token in self._members()
            if not any(policy.covers(token, day) for policy in self._policies.values())
        }

    def _hold_lifted(self, entry: WatchedEvent, blocked_before: set[str]) -> list[Change]:
        covering = [
            policy
            for _, policy in sorted(self._policies.items())
            if any(policy.covers(token, entry.ledger_date) for token in blocked_before)
        ]
        policy = covering[0]
        day = entry.ledger_date.isoformat()
        return [
            Change(
                kind=ChangeKind.HOLD_LIFTED,
                insurer_id=policy.insurer_id,
                policy_id=policy.policy_id,
                person_tokens=tuple(sorted(blocked_before)),
                effective=entry.ledger_date,
                detail=f"every member of the household is covered on {day}: the last "
                f"{len(blocked_before)} not covered are now covered by policy "
                f"{policy.policy_id!r} of {policy.insurer_id!r}",
            )
        ]


def _end_day(coverage: tuple[dt.date, _Policy] | None) -> dt.date | None:
    return None if coverage is None else coverage[0]


def _ends_before_permit(token: str, permit_end: dt.date, last: dt.date, policy: _Policy) -> Change:
    days = (permit_end - last).days
    return Change(
        kind=ChangeKind.ENDS_BEFORE_PERMIT,
        insurer_id=policy.insurer_id,
        policy_id=policy.policy_id,
        person_tokens=(token,),
        effective=last + _ONE_DAY,
        detail=f"coverage ends on {last.isoformat()} (last day, policy {policy.policy_id!r} of "
        f"{policy.insurer_id!r}), {days} days before the residence permit does "
        f"({permit_end.isoformat()}); notice window {limits.watch_permit_notice_days} days",
    )
