"""The pure change detector of CoverageService.WatchCoverage (ledger/coverage/watch.py): which
changes each entry causes for a person, a household and an establishment, and that a watch
resumed from any tree size reports exactly the changes of the entries from there."""

from __future__ import annotations

import datetime as dt

from hypothesis import given, settings
from hypothesis import strategies as st

from ledger import limits
from ledger.coverage.watch import (
    Change,
    ChangeKind,
    LoggedPermits,
    NoPermits,
    SubjectKind,
    WatchedEvent,
    WatchState,
    WatchSubject,
    permit_last_days,
)
from ledger.v1 import events_pb2
from tests.builders import (
    added,
    cancelled,
    issued,
    paid,
    permit_ended,
    permit_issued,
    permit_renewed,
    removed,
    sar,
    suspended,
)

GULF, NAJM = "gulf-health", "najm-care"
DAY = dt.date(2026, 3, 1)
SPONSOR, WIFE, SON, OTHER = "pt_sponsor", "pt_wife", "pt_son", "pt_other"
SELF, SPOUSE, CHILD = (
    events_pb2.RELATIONSHIP_SELF,
    events_pb2.RELATIONSHIP_SPOUSE,
    events_pb2.RELATIONSHIP_CHILD,
)
FINAL_EXIT = events_pb2.CANCELLATION_REASON_FINAL_EXIT


def _log() -> list[WatchedEvent]:
    """A small log: two households' policies, a late member, a payment, a suspension, a
    cancellation, and an instalment that falls overdue as ledger time passes."""
    year = DAY + dt.timedelta(days=364)
    due = DAY + dt.timedelta(days=60)
    events = [
        issued(GULF, "P-1", SPONSOR, [(SPONSOR, SELF), (WIFE, SPOUSE)], DAY, year),
        issued(NAJM, "P-2", OTHER, [(OTHER, SELF)], DAY, year),
        issued(
            NAJM,
            "P-3",
            SPONSOR,
            [(SPONSOR, SELF)],
            DAY,
            year,
            instalments=[(DAY, sar(100)), (due, sar(100))],
        ),
        paid(NAJM, "P-3", sar(100), DAY, year),
        added(NAJM, "P-2", SON, CHILD, DAY + dt.timedelta(days=10)),
        suspended(NAJM, DAY + dt.timedelta(days=20)),
        cancelled(GULF, "P-1", DAY + dt.timedelta(days=40), FINAL_EXIT),
        added(NAJM, "P-2", SPONSOR, SELF, DAY + dt.timedelta(days=45)),
    ]
    days = [0, 0, 0, 1, 10, 20, 40, 95]  # the last entry's ledger date is past the grace
    return [
        WatchedEvent(leaf, DAY + dt.timedelta(days=offset), event)
        for leaf, (offset, event) in enumerate(zip(days, events, strict=True), start=1)
    ]


def _history(log: list[WatchedEvent]):  # type: ignore[no-untyped-def]
    def history(insurer_id: str, policy_id: str, before: int) -> list[WatchedEvent]:
        found = []
        for entry in log:
            kind = entry.event.WhichOneof("body")
            body = getattr(entry.event, kind)
            if (
                entry.leaf_index < before
                and entry.event.insurer_id == insurer_id
                and getattr(body, "policy_id", None) == policy_id
            ):
                found.append(entry)
        return found

    return history


def _changes(
    subject: WatchSubject, start: int = 0, log: list[WatchedEvent] | None = None
) -> list[tuple[int, Change]]:
    log = log if log is not None else _log()
    state = WatchState(subject, _history(log))
    state.replay(entry for entry in log if entry.leaf_index < start)
    before = [entry for entry in log if entry.leaf_index < start]
    state.last_ledger_date = before[-1].ledger_date if before else None
    return [
        (entry.leaf_index, change)
        for entry in log
        if entry.leaf_index >= start
        for change in state.apply(entry)
    ]


def _kinds(changes: list[tuple[int, Change]]) -> list[tuple[int, ChangeKind, str]]:
    return [(leaf, change.kind, change.policy_id) for leaf, change in changes]


def test_a_person_sees_the_cancellation_suspension_and_overdue_instalment_of_their_policies() -> (
    None
):
    changes = _changes(WatchSubject(SubjectKind.PERSON, SPONSOR))
    assert _kinds(changes) == [
        (6, ChangeKind.INSURER_SUSPENDED, "P-3"),
        (7, ChangeKind.POLICY_CANCELLED, "P-1"),
        # The sponsor joined P-2 (of the suspended insurer) at leaf 8, whose ledger date is
        # also past the grace of P-3's second instalment (due day 60, grace 30 days).
        (8, ChangeKind.PREMIUM_OVERDUE, "P-3"),
    ]
    overdue = changes[-1][1]
    assert overdue.effective == DAY + dt.timedelta(days=60)
    assert overdue.person_tokens == (SPONSOR,)
    assert changes[1][1].effective == DAY + dt.timedelta(days=40)
    assert "FINAL_EXIT" in changes[1][1].detail


def test_a_person_watch_names_only_that_person() -> None:
    changes = _changes(WatchSubject(SubjectKind.PERSON, WIFE))
    assert _kinds(changes) == [(7, ChangeKind.POLICY_CANCELLED, "P-1")]
    assert changes[0][1].person_tokens == (WIFE,)


def test_a_household_sees_its_hold_lifted_when_its_last_uncovered_member_is_covered() -> None:
    # OTHER's household: P-2 covers OTHER; SON joins it at day 10. Nobody is uncovered, so no
    # hold. The sponsor's household: after P-1 is cancelled from day 40, WIFE is uncovered
    # from then; nothing covers her again, so no hold is lifted.
    assert _kinds(_changes(WatchSubject(SubjectKind.HOUSEHOLD, OTHER))) == [
        (6, ChangeKind.INSURER_SUSPENDED, "P-2")
    ]
    household = _kinds(_changes(WatchSubject(SubjectKind.HOUSEHOLD, SPONSOR)))
    assert ChangeKind.HOLD_LIFTED not in {kind for _, kind, _ in household}


def test_the_hold_is_lifted_by_the_entry_that_covers_the_last_blocking_member() -> None:
    year = DAY + dt.timedelta(days=364)
    log = [
        WatchedEvent(
            1, DAY, issued(GULF, "P-1", SPONSOR, [(SPONSOR, SELF), (WIFE, SPOUSE)], DAY, year)
        ),
        WatchedEvent(2, DAY, cancelled(GULF, "P-1", DAY, FINAL_EXIT)),
        WatchedEvent(3, DAY, issued(NAJM, "P-9", SPONSOR, [(SPONSOR, SELF)], DAY, year)),
        WatchedEvent(4, DAY, added(NAJM, "P-9", WIFE, SPOUSE, DAY)),
    ]
    state = WatchState(WatchSubject(SubjectKind.HOUSEHOLD, SPONSOR), _history(log))
    found = [(entry.leaf_index, change) for entry in log for change in state.apply(entry)]
    assert [(leaf, change.kind) for leaf, change in found] == [
        (2, ChangeKind.POLICY_CANCELLED),
        (4, ChangeKind.HOLD_LIFTED),
    ]
    assert found[1][1].person_tokens == (WIFE,)
    assert found[1][1].policy_id == "P-9"


def test_an_establishment_sees_the_policies_it_holds() -> None:
    year = DAY + dt.timedelta(days=364)
    policy = issued(GULF, "P-E", SPONSOR, [(SPONSOR, SELF)], DAY, year)
    policy.policy_issued.holder.organization.country_code = "SA"
    policy.policy_issued.holder.organization.registration_number = "7001234567"
    log = [
        WatchedEvent(1, DAY, policy),
        WatchedEvent(2, DAY, issued(GULF, "P-X", OTHER, [(OTHER, SELF)], DAY, year)),
        WatchedEvent(3, DAY, cancelled(GULF, "P-X", DAY, FINAL_EXIT)),
        WatchedEvent(4, DAY, cancelled(GULF, "P-E", DAY, FINAL_EXIT)),
    ]
    state = WatchState(WatchSubject(SubjectKind.ESTABLISHMENT, "org:SA:7001234567"), _history(log))
    found = [(entry.leaf_index, change.policy_id) for entry in log for change in state.apply(entry)]
    assert found == [(4, "P-E")]


def test_a_subject_without_a_token_sees_nothing() -> None:
    assert _changes(WatchSubject(SubjectKind.PERSON, "")) == []


def test_there_are_no_permit_changes_without_a_permit_reader() -> None:
    assert NoPermits().permit_end(SPONSOR, 10) is None
    assert limits.watch_permit_notice_days > 0
    every = [
        change
        for kind in SubjectKind
        for _, change in _changes(WatchSubject(kind, SPONSOR))
        if change.kind is ChangeKind.ENDS_BEFORE_PERMIT
    ]
    assert every == []


@settings(max_examples=60, deadline=None)
@given(
    start=st.integers(0, 9),
    subject=st.sampled_from(
        [
            WatchSubject(SubjectKind.PERSON, SPONSOR),
            WatchSubject(SubjectKind.PERSON, SON),
            WatchSubject(SubjectKind.HOUSEHOLD, SPONSOR),
            WatchSubject(SubjectKind.HOUSEHOLD, OTHER),
        ]
    ),
)
def test_a_watch_resumed_from_any_tree_size_reports_exactly_the_changes_from_there(
    start: int, subject: WatchSubject
) -> None:
    whole = _changes(subject)
    assert _changes(subject, start) == [(leaf, change) for leaf, change in whole if leaf >= start]


def test_a_person_added_to_an_earlier_policy_follows_it_from_then() -> None:
    changes = _changes(WatchSubject(SubjectKind.PERSON, SON))
    assert _kinds(changes) == [(6, ChangeKind.INSURER_SUSPENDED, "P-2")]
    assert changes[0][1].person_tokens == (SON,)


def test_a_commit_between_reading_the_log_and_waiting_still_wakes_the_watch() -> None:
    import asyncio

    from ledger.coverage.watching import CommitSignal

    async def scenario() -> None:
        signal = CommitSignal()
        taken = signal.current()  # a watch takes the event, then reads the log ...
        signal.notify()  # ... a batch commits before it waits ...
        await asyncio.wait_for(taken.wait(), 60)  # ... and the wait returns at once
        assert not signal.current().is_set()  # the next commit has an event of its own

    asyncio.run(scenario())


def test_a_new_policy_covering_the_last_blocking_members_lifts_the_hold() -> None:
    year = DAY + dt.timedelta(days=364)
    members = [(SPONSOR, SELF), (WIFE, SPOUSE)]
    log = [
        WatchedEvent(1, DAY, issued(GULF, "P-1", SPONSOR, members, DAY, year)),
        WatchedEvent(2, DAY, cancelled(GULF, "P-1", DAY, FINAL_EXIT)),
        WatchedEvent(3, DAY, issued(GULF, "P-2", OTHER, [(OTHER, SELF)], DAY, year)),
        WatchedEvent(4, DAY, issued(NAJM, "P-9", SPONSOR, members, DAY, year)),
    ]
    state = WatchState(WatchSubject(SubjectKind.HOUSEHOLD, SPONSOR), _history(log))
    found = [(entry.leaf_index, change) for entry in log for change in state.apply(entry)]
    assert [(leaf, change.kind) for leaf, change in found] == [
        (2, ChangeKind.POLICY_CANCELLED),
        (4, ChangeKind.HOLD_LIFTED),
    ]
    assert found[1][1].person_tokens == (SPONSOR, WIFE)


def _lifted_log() -> list[WatchedEvent]:
    """A hold set by a cancellation and lifted by a new policy, a day later."""
    year = DAY + dt.timedelta(days=364)
    members = [(SPONSOR, SELF), (WIFE, SPOUSE)]
    events = [
        issued(GULF, "P-1", SPONSOR, members, DAY, year),
        cancelled(GULF, "P-1", DAY + dt.timedelta(days=1), FINAL_EXIT),
        issued(NAJM, "P-9", SPONSOR, members, DAY + dt.timedelta(days=2), year),
        suspended(NAJM, DAY + dt.timedelta(days=5)),
    ]
    return [
        WatchedEvent(leaf, DAY + dt.timedelta(days=leaf), event)
        for leaf, event in enumerate(events, start=1)
    ]


@settings(max_examples=20, deadline=None)
@given(start=st.integers(0, 5))
def test_a_household_watch_resumed_anywhere_sees_the_same_hold_lifted(start: int) -> None:
    subject = WatchSubject(SubjectKind.HOUSEHOLD, SPONSOR)
    whole = _changes(subject, log=_lifted_log())
    assert [(leaf, change.kind) for leaf, change in whole] == [
        (2, ChangeKind.POLICY_CANCELLED),
        (3, ChangeKind.HOLD_LIFTED),
        (4, ChangeKind.INSURER_SUSPENDED),
    ]
    resumed = _changes(subject, start, log=_lifted_log())
    assert resumed == [(leaf, change) for leaf, change in whole if leaf >= start]


# ENDS_BEFORE_PERMIT (residence permits, issue 10 item 9).

AUTHORITY = "jawazat"
NOTICE = limits.watch_permit_notice_days
PERMIT_END = DAY + dt.timedelta(days=364 + 30)


def _permits(log: list[WatchedEvent]) -> LoggedPermits:
    """Permits as the log below a leaf says (what WatchStore reads from the database)."""

    def named(entry: WatchedEvent, token: str) -> bool:
        return token in permit_last_days(
            [other for other in log if other.leaf_index <= entry.leaf_index]
        ) and entry.event.WhichOneof("body") in {
            "permit_issued",
            "permit_renewed",
            "permit_ended",
        }

    def of_person(token: str, before: int) -> list[WatchedEvent]:
        permits = {
            (
                entry.event.insurer_id,
                getattr(entry.event, str(entry.event.WhichOneof("body"))).permit_id,
            )
            for entry in log
            if named(entry, token)
        }
        return [
            entry
            for entry in log
            if entry.leaf_index < before
            and entry.event.WhichOneof("body")
            in {"permit_issued", "permit_renewed", "permit_ended"}
            and (
                entry.event.insurer_id,
                getattr(entry.event, str(entry.event.WhichOneof("body"))).permit_id,
            )
            in permits
        ]

    def of_permit(authority_id: str, permit_id: str, before: int) -> list[WatchedEvent]:
        return [
            entry
            for entry in log
            if entry.leaf_index < before
            and entry.event.WhichOneof("body")
            in {"permit_issued", "permit_renewed", "permit_ended"}
            and entry.event.insurer_id == authority_id
            and getattr(entry.event, str(entry.event.WhichOneof("body"))).permit_id == permit_id
        ]

    return LoggedPermits(of_person, of_permit)


def _permit_log() -> list[WatchedEvent]:
    """A household whose permit outlives its policy by 30 days, then is renewed, the policy
    cancelled early, a new policy issued, a member removed, and the permit ended."""
    year = DAY + dt.timedelta(days=364)
    members = [(SPONSOR, SELF), (WIFE, SPOUSE)]
    since = DAY - dt.timedelta(days=400)
    events = [
        # 1: no permit yet: nothing to compare with.
        issued(GULF, "P-1", SPONSOR, members, DAY, year),
        # 2: the permit ends 30 days after the coverage: both people, D = 30.
        permit_issued(
            AUTHORITY, "R-1", SPONSOR, SPONSOR, [(WIFE, SPOUSE, since)], since, DAY, PERMIT_END
        ),
        # 3: renewed by a year: D = 395 > the notice window, nothing.
        permit_renewed(AUTHORITY, "R-1", PERMIT_END + dt.timedelta(days=365)),
        # 4: a policy to the permit's end less 10 days: D = 10 for both.
        issued(
            NAJM,
            "P-2",
            SPONSOR,
            members,
            year + dt.timedelta(days=1),
            PERMIT_END + dt.timedelta(days=355),
        ),
        # 5: the wife leaves P-2 early: her coverage ends 200 days before, outside the window.
        removed(NAJM, "P-2", WIFE, PERMIT_END + dt.timedelta(days=166), FINAL_EXIT),
        # 6: the sponsor's P-2 cancelled 60 days before the permit's end: D = 60.
        cancelled(NAJM, "P-2", PERMIT_END + dt.timedelta(days=306), FINAL_EXIT),
        # 7: an unrelated permit of someone else.
        permit_issued(AUTHORITY, "R-2", OTHER, OTHER, [], since, DAY, PERMIT_END),
        # 8: the permit ends early (no report: only issuance and renewal are reported).
        permit_ended(
            AUTHORITY,
            "R-1",
            PERMIT_END + dt.timedelta(days=200),
            events_pb2.PERMIT_END_REASON_FINAL_EXIT,
        ),
        # 9: a member added back to P-1: coverage end unchanged for the wife? no: P-1 ended
        # already, so her coverage end stays the latest (P-2's removal): nothing.
        added(GULF, "P-1", SON, CHILD, DAY + dt.timedelta(days=5)),
    ]
    return [
        WatchedEvent(leaf, DAY + dt.timedelta(days=leaf), event)
        for leaf, event in enumerate(events, start=1)
    ]


def _permit_changes(subject: WatchSubject, start: int = 0) -> list[tuple[int, str, int, dt.date]]:
    log = _permit_log()
    state = WatchState(subject, _history(log), _permits(log))
    state.replay(entry for entry in log if entry.leaf_index < start)
    return [
        (entry.leaf_index, change.person_tokens[0], _days(change), change.effective)
        for entry in log
        if entry.leaf_index >= start
        for change in state.apply(entry)
        if change.kind is ChangeKind.ENDS_BEFORE_PERMIT
    ]


def _days(change: Change) -> int:
    return int(change.detail.split(" days before")[0].rsplit(" ", 1)[1])


def test_permit_last_days_follow_issuance_renewal_and_early_end() -> None:
    log = _permit_log()
    assert permit_last_days(log[:2]) == {SPONSOR: PERMIT_END, WIFE: PERMIT_END}
    renewed = PERMIT_END + dt.timedelta(days=365)
    assert permit_last_days(log[:3])[WIFE] == renewed
    ended = PERMIT_END + dt.timedelta(days=199)
    assert permit_last_days(log) == {SPONSOR: ended, WIFE: ended, OTHER: PERMIT_END}
    # A renewal whose issuance is not given is skipped.
    assert permit_last_days(log[2:3]) == {}


def test_coverage_ending_within_the_notice_window_before_the_permit_is_reported() -> None:
    year = DAY + dt.timedelta(days=364)
    renewed = PERMIT_END + dt.timedelta(days=365)
    assert 60 <= NOTICE < 200
    assert _permit_changes(WatchSubject(SubjectKind.HOUSEHOLD, SPONSOR)) == [
        (2, SPONSOR, 30, year + dt.timedelta(days=1)),
        (2, WIFE, 30, year + dt.timedelta(days=1)),
        (4, SPONSOR, 10, renewed - dt.timedelta(days=9)),
        (4, WIFE, 10, renewed - dt.timedelta(days=9)),
        (6, SPONSOR, 60, renewed - dt.timedelta(days=59)),
    ]
    # A person's watch names only that person; someone else's permit is not theirs.
    assert [leaf for leaf, *_ in _permit_changes(WatchSubject(SubjectKind.PERSON, WIFE))] == [2, 4]
    assert _permit_changes(WatchSubject(SubjectKind.PERSON, OTHER)) == []


def test_the_change_names_the_policy_that_ends_the_coverage_and_the_permit_day() -> None:
    log = _permit_log()
    state = WatchState(WatchSubject(SubjectKind.PERSON, SPONSOR), _history(log), _permits(log))
    changes = [change for entry in log[:4] for change in state.apply(entry)]
    assert [(c.kind, c.policy_id, c.insurer_id) for c in changes] == [
        (ChangeKind.ENDS_BEFORE_PERMIT, "P-1", GULF),
        (ChangeKind.ENDS_BEFORE_PERMIT, "P-2", NAJM),
    ]
    assert PERMIT_END.isoformat() in changes[0].detail


def test_a_permit_read_below_the_leaf_ignores_later_permit_entries() -> None:
    log = _permit_log()
    permits = _permits(log)
    assert permits.permit_end(SPONSOR, 2) is None
    assert permits.permit_end(SPONSOR, 3) == PERMIT_END
    assert permits.permit_people(AUTHORITY, "R-1", 3) == (SPONSOR, WIFE)
    assert permits.permit_people(AUTHORITY, "R-1", 2) == ()


@settings(max_examples=40, deadline=None)
@given(
    start=st.integers(0, 10),
    subject=st.sampled_from(
        [
            WatchSubject(SubjectKind.PERSON, SPONSOR),
            WatchSubject(SubjectKind.PERSON, WIFE),
            WatchSubject(SubjectKind.HOUSEHOLD, SPONSOR),
        ]
    ),
)
def test_permit_changes_resume_exactly_from_any_tree_size(
    start: int, subject: WatchSubject
) -> None:
    whole = _permit_changes(subject)
    assert _permit_changes(subject, start) == [item for item in whole if item[0] >= start]


ESTABLISHMENT_NUMBER = "7001234567"
WORKER = "pt_worker"


def _person_policies(log: list[WatchedEvent]):  # type: ignore[no-untyped-def]
    """The entries below a leaf of every policy that named a person (WatchStore's read)."""

    def policies(token: str, before: int) -> list[WatchedEvent]:
        keys = set()
        for entry in log:
            kind = entry.event.WhichOneof("body")
            if entry.leaf_index >= before:
                continue
            if kind == "policy_issued" and token in {
                m.person_token for m in entry.event.policy_issued.members
            }:
                keys.add((entry.event.insurer_id, entry.event.policy_issued.policy_id))
            if kind == "member_added" and entry.event.member_added.member.person_token == token:
                keys.add((entry.event.insurer_id, entry.event.member_added.policy_id))
        return [
            entry
            for entry in log
            if entry.leaf_index < before
            and (
                entry.event.insurer_id,
                getattr(getattr(entry.event, str(entry.event.WhichOneof("body"))), "policy_id", ""),
            )
            in keys
        ]

    return policies


def _worker_log() -> list[WatchedEvent]:
    """A worker insured on his own policy before an establishment sponsors his permit."""
    year = DAY + dt.timedelta(days=364)
    since = DAY - dt.timedelta(days=10)
    events = [
        # 1: the worker's own policy, and someone else's: the establishment holds neither.
        issued(GULF, "P-W", WORKER, [(WORKER, SELF)], DAY, year),
        issued(GULF, "P-O", OTHER, [(OTHER, SELF)], DAY, year),
        # 3: the establishment sponsors the worker's permit, 30 days past his coverage.
        permit_issued(
            AUTHORITY,
            "R-W",
            WORKER,
            ESTABLISHMENT_NUMBER,
            [],
            since,
            since,
            year + dt.timedelta(days=30),
        ),
        # 4, 5: from then on his policy's changes are the establishment's; OTHER's are not.
        cancelled(GULF, "P-O", DAY + dt.timedelta(days=3), FINAL_EXIT),
        cancelled(GULF, "P-W", year - dt.timedelta(days=9), FINAL_EXIT),
        # 6: a newborn joins the permit, then his policy: followed too.
        permit_renewed(AUTHORITY, "R-W", year + dt.timedelta(days=30), [(SON, CHILD, DAY)]),
        added(GULF, "P-W", SON, CHILD, DAY + dt.timedelta(days=7)),
    ]
    return [
        WatchedEvent(leaf, DAY + dt.timedelta(days=leaf), event)
        for leaf, event in enumerate(events, start=1)
    ]


def _establishment_changes(start: int = 0) -> list[tuple[int, ChangeKind, tuple[str, ...]]]:
    log = _worker_log()
    state = WatchState(
        WatchSubject(SubjectKind.ESTABLISHMENT, f"org:SA:{ESTABLISHMENT_NUMBER}"),
        _history(log),
        _permits(log),
        _person_policies(log),
    )
    state.replay(entry for entry in log if entry.leaf_index < start)
    return [
        (entry.leaf_index, change.kind, change.person_tokens)
        for entry in log
        if entry.leaf_index >= start
        for change in state.apply(entry)
    ]


def test_an_establishment_follows_the_workers_its_permits_name() -> None:
    assert _establishment_changes() == [
        (3, ChangeKind.ENDS_BEFORE_PERMIT, (WORKER,)),
        (5, ChangeKind.POLICY_CANCELLED, (WORKER,)),
        # The cancellation moved his coverage end 10 days further from the permit's: D = 40.
        (5, ChangeKind.ENDS_BEFORE_PERMIT, (WORKER,)),
        # SON's coverage (P-W cancelled) ends 40 days before the permit: reported when he joins.
        (7, ChangeKind.ENDS_BEFORE_PERMIT, (SON,)),
    ]


@settings(max_examples=20, deadline=None)
@given(start=st.integers(0, 8))
def test_an_establishment_watch_resumed_anywhere_follows_the_same_workers(start: int) -> None:
    whole = _establishment_changes()
    assert _establishment_changes(start) == [item for item in whole if item[0] >= start]


# Random logs of policies and permits: the changes a watch sends do not depend on where it
# started, and every ENDS_BEFORE_PERMIT's D is within the window by the permits below it.

_PEOPLE = (SPONSOR, WIFE, SON)
_ORG_KEY = f"org:SA:{ESTABLISHMENT_NUMBER}"


def _build_log(ops: list[tuple[int, int, int, int]]) -> list[WatchedEvent]:
    """Each op (kind, a, b, days) becomes one event; references to policies and permits pick
    among those issued so far (none yet: the op is an issuance instead)."""
    policies: list[str] = []
    permits: list[str] = []
    events: list[events_pb2.Event] = []
    for position, (kind, a, b, days) in enumerate(ops):
        day = DAY + dt.timedelta(days=days)
        people = [_PEOPLE[a % 3], *([_PEOPLE[b % 3]] if b % 3 != a % 3 else [])]
        if kind == 0 or (kind in {1, 2, 3} and not policies):
            policies.append(f"P-{position}")
            members = [(token, SELF if token == people[0] else SPOUSE) for token in people]
            events.append(
                issued(GULF, policies[-1], people[0], members, DAY, day + dt.timedelta(days=30))
            )
        elif kind == 1:
            events.append(cancelled(GULF, policies[a % len(policies)], day, FINAL_EXIT))
        elif kind == 2:
            events.append(removed(GULF, policies[a % len(policies)], people[-1], day, FINAL_EXIT))
        elif kind == 3:
            events.append(added(GULF, policies[a % len(policies)], people[-1], CHILD, DAY))
        elif kind == 4 or not permits:
            permits.append(f"R-{position}")
            sponsor = ESTABLISHMENT_NUMBER if b % 2 else people[0]
            members = [(token, SPOUSE, DAY) for token in people[1:]]
            events.append(
                permit_issued(AUTHORITY, permits[-1], people[0], sponsor, members, DAY, DAY, day)
            )
        elif kind == 5:
            events.append(
                permit_renewed(
                    AUTHORITY, permits[a % len(permits)], day, [(people[-1], CHILD, DAY)]
                )
            )
        else:
            events.append(
                permit_ended(
                    AUTHORITY, permits[a % len(permits)], day, events_pb2.PERMIT_END_REASON_DEATH
                )
            )
    return [WatchedEvent(leaf, DAY, event) for leaf, event in enumerate(events, start=1)]


def _random_changes(
    log: list[WatchedEvent], subject: WatchSubject, start: int
) -> list[tuple[int, Change]]:
    state = WatchState(subject, _history(log), _permits(log), _person_policies(log))
    state.replay(entry for entry in log if entry.leaf_index < start)
    state.last_ledger_date = DAY if start > 1 else None
    return [
        (entry.leaf_index, change)
        for entry in log
        if entry.leaf_index >= start
        for change in state.apply(entry)
    ]


@settings(max_examples=60, deadline=None)
@given(
    ops=st.lists(
        st.tuples(st.integers(0, 6), st.integers(0, 5), st.integers(0, 5), st.integers(0, 400)),
        min_size=1,
        max_size=12,
    ),
    start=st.integers(0, 13),
    subject=st.sampled_from(
        [
            WatchSubject(SubjectKind.PERSON, WIFE),
            WatchSubject(SubjectKind.HOUSEHOLD, SPONSOR),
            WatchSubject(SubjectKind.ESTABLISHMENT, _ORG_KEY),
        ]
    ),
)
def test_random_logs_send_the_same_changes_from_any_start_and_ds_within_the_window(
    ops: list[tuple[int, int, int, int]], start: int, subject: WatchSubject
) -> None:
    log = _build_log(ops)
    whole = _random_changes(log, subject, 0)
    assert _random_changes(log, subject, start) == [item for item in whole if item[0] >= start]
    for leaf, change in whole:
        if change.kind is not ChangeKind.ENDS_BEFORE_PERMIT:
            continue
        (token,) = change.person_tokens
        permit_end = permit_last_days(log[:leaf])[token]
        days = (permit_end - (change.effective - dt.timedelta(days=1))).days
        assert 1 <= days <= NOTICE
        assert f"{days} days before" in change.detail
