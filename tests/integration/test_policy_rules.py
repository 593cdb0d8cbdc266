"""The policy rules enforced at append time, on both engines: each refusal names the rule and
writes nothing (no entry, no checkpoint, no projection row); each has an accepted twin."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from sqlalchemy import Connection, Engine, func, select

from clients.operator import key_registered
from ledger import limits
from ledger.coverage.model import BlockReason
from ledger.coverage.projector import person_ref
from ledger.coverage.reader import CoverageReader
from ledger.errors import FailedPrecondition, LedgerError
from ledger.identity.erasure import ErasedPerson, ErasureHooks
from ledger.signers import SignerRole
from ledger.signing import Ed25519Signer
from ledger.storage.append import Appender, Receipt
from ledger.storage.tables import PROJECTION_TABLES, checkpoints, log_entries, transfer_gaps
from ledger.storage.vault_store import person_identities
from ledger.v1 import events_pb2
from tests.builders import (
    R,
    added,
    cancelled,
    change_notified,
    copy_vault,
    erased,
    issued,
    paid,
    person,
    removed,
    sar,
    suspended,
    token,
    use_vault,
)
from tests.conftest import key_event, onboard_directly, pending

NOW = dt.datetime(2026, 11, 22, 12, 0, tzinfo=dt.UTC)
GULF, NAJM = "gulf-health", "najm-care"
JAN1, DEC31 = dt.date(2026, 1, 1), dt.date(2026, 12, 31)
SPONSOR, WIFE, SON = person(100), person(101), person(102)
FAMILY = [(SPONSOR, R.RELATIONSHIP_SELF), (WIFE, R.RELATIONSHIP_SPOUSE)]


class Log:
    """An appender with two licensed insurers, and a way to see everything it wrote."""

    def __init__(self, engine: Engine, appender: Appender, signers: dict[str, Any]) -> None:
        self.engine = engine
        self.appender = appender
        self.signers = signers

    def append(
        self, *events: events_pb2.Event, at: dt.datetime = NOW
    ) -> list[Receipt | LedgerError]:
        """Append ``events`` as one batch integrated at ``at`` (their ledger time)."""
        items = [pending(self.signers[event.insurer_id], event) for event in events]
        return self.appender.append_batch(items, at)

    def accept(self, *events: events_pb2.Event, at: dt.datetime = NOW) -> list[Receipt]:
        outcomes = self.append(*events, at=at)
        for outcome in outcomes:
            assert isinstance(outcome, Receipt), outcome
        return outcomes  # type: ignore[return-value]

    def snapshot(self) -> dict[str, Any]:
        with self.engine.connect() as connection:
            state: dict[str, Any] = {
                table.name: sorted(
                    (tuple(row) for row in connection.execute(select(table))), key=repr
                )
                for table in PROJECTION_TABLES
            }
            for table in (log_entries, checkpoints):
                state[table.name] = connection.execute(
                    select(func.count()).select_from(table)
                ).scalar_one()
        return state

    def refuse(
        self, event: events_pb2.Event, code: str, reason: str, *, at: dt.datetime = NOW
    ) -> LedgerError:
        before = self.snapshot()
        [outcome] = self.append(event, at=at)
        assert isinstance(outcome, LedgerError), f"accepted, expected {code} {reason}"
        assert (outcome.code, outcome.reason) == (code, reason), outcome.message
        assert outcome.message and outcome.details.field_violations
        assert self.snapshot() == before, "a refused event wrote something"
        return outcome


@pytest.fixture
def log(engine: Engine, log_signer: Ed25519Signer, operator_signer: Ed25519Signer) -> Log:
    appender = Appender(engine, log_signer, log_signer.name)
    appender.initialize(NOW)
    signers = {"operator": operator_signer, "unlicensed-co": Ed25519Signer.generate("u")}
    for insurer in (GULF, NAJM):
        signers[insurer] = Ed25519Signer.generate(insurer)
        onboard_directly(engine, appender, operator_signer, insurer, signers[insurer], NOW)
    log = Log(engine, appender, signers)
    log.accept(key_event("unlicensed-co", signers["unlicensed-co"], SignerRole.INSURER))
    return log


def _policy(policy_id: str = "P1", insurer: str = GULF, **kwargs: Any) -> events_pb2.Event:
    return issued(insurer, policy_id, SPONSOR, FAMILY, JAN1, DEC31, **kwargs)


# Who may sign what.


def test_an_unlicensed_insurer_may_not_issue(log: Log) -> None:
    log.refuse(_policy(insurer="unlicensed-co"), "PERMISSION_DENIED", "INSURER_NOT_LICENSED")
    log.accept(_policy())


def test_a_suspended_insurer_may_not_issue(log: Log) -> None:
    log.accept(suspended(NAJM, dt.date(2026, 3, 1)))
    log.refuse(_policy(insurer=NAJM), "PERMISSION_DENIED", "INSURER_SUSPENDED")
    log.accept(_policy(insurer=GULF))


def test_only_the_operator_licenses_and_it_writes_no_policies(log: Log) -> None:
    by_insurer = suspended(NAJM, JAN1)
    by_insurer.insurer_id = GULF
    error = log.refuse(by_insurer, "PERMISSION_DENIED", "SIGNER_ROLE_NOT_ALLOWED")
    assert "InsurerSuspended" in error.message and GULF in error.message
    by_operator = _policy()
    by_operator.insurer_id = "operator"
    error = log.refuse(by_operator, "PERMISSION_DENIED", "SIGNER_ROLE_NOT_ALLOWED")
    assert "PolicyIssued" in error.message and "'operator'" in error.message
    log.accept(suspended(NAJM, JAN1))
    log.refuse(suspended(NAJM, JAN1), "FAILED_PRECONDITION", "ALREADY_SUSPENDED")


def test_an_insurer_touches_only_its_own_policies(log: Log) -> None:
    log.accept(_policy("P1", GULF))
    log.refuse(
        cancelled(NAJM, "P1", dt.date(2026, 5, 1), R.CANCELLATION_REASON_FINAL_EXIT),
        "NOT_FOUND",
        "POLICY_NOT_FOUND",
    )
    log.accept(cancelled(GULF, "P1", dt.date(2026, 5, 1), R.CANCELLATION_REASON_FINAL_EXIT))


# Policies and coverage.


def test_a_policy_id_is_issued_once(log: Log) -> None:
    log.accept(_policy("P1"))
    other = issued(GULF, "P1", person(300), [(person(300), R.RELATIONSHIP_SELF)], JAN1, DEC31)
    log.refuse(other, "ALREADY_EXISTS", "POLICY_EXISTS")
    log.accept(issued(GULF, "P2", person(300), [(person(300), R.RELATIONSHIP_SELF)], JAN1, DEC31))


def test_one_insurer_may_not_cover_a_person_twice_on_a_day(log: Log) -> None:
    log.accept(_policy("P1"))
    overlapping = issued(
        GULF, "P2", WIFE, [(WIFE, R.RELATIONSHIP_SELF)], dt.date(2026, 12, 31), dt.date(2027, 6, 1)
    )
    error = log.refuse(overlapping, "FAILED_PRECONDITION", "DOUBLE_COVERAGE")
    assert error.details.field_violations[0].field == "event.policy_issued.members[0].person_token"
    # The day after the first ends is fine, and so is another insurer on the same days.
    log.accept(
        issued(
            GULF,
            "P2",
            WIFE,
            [(WIFE, R.RELATIONSHIP_SELF)],
            dt.date(2027, 1, 1),
            dt.date(2027, 6, 1),
        )
    )
    log.accept(issued(NAJM, "N1", WIFE, [(WIFE, R.RELATIONSHIP_SELF)], JAN1, DEC31))


def test_a_cancellation_is_effective_within_the_period_and_once(log: Log) -> None:
    log.accept(_policy("P1"))
    final_exit = R.CANCELLATION_REASON_FINAL_EXIT
    log.refuse(
        cancelled(GULF, "P1", dt.date(2025, 12, 31), final_exit, notice=dt.date(2025, 12, 1)),
        "FAILED_PRECONDITION",
        "DATE_OUTSIDE_POLICY",
    )
    log.refuse(
        cancelled(GULF, "P1", dt.date(2027, 1, 2), final_exit, notice=dt.date(2026, 6, 1)),
        "FAILED_PRECONDITION",
        "DATE_OUTSIDE_POLICY",
    )
    log.accept(cancelled(GULF, "P1", JAN1, final_exit))  # on the start: no coverage at all
    log.refuse(
        cancelled(GULF, "P1", dt.date(2026, 2, 1), final_exit),
        "FAILED_PRECONDITION",
        "ALREADY_CANCELLED",
    )


def test_an_insurer_change_needs_a_notice_entry_thirty_days_before(log: Log) -> None:
    """The 30 days count from the InsurerChangeNotified entry's ledger time (not its occurred_at,
    OCCURRED, months earlier); the notice_date the cancellation states does not count."""
    log.accept(_policy("P1"))
    change = R.CANCELLATION_REASON_INSURER_CHANGE
    next_day = NOW + dt.timedelta(days=1)
    effective = next_day.date() + dt.timedelta(days=29)
    stated = NOW.date() - dt.timedelta(days=90)
    error = log.refuse(
        cancelled(GULF, "P1", effective, change, notice=stated),
        "FAILED_PRECONDITION",
        "NOTICE_MISSING",
    )
    assert error.details.metadata["notice_days_min"] == "30"
    [notice] = log.accept(change_notified(GULF, "P1", new_insurer=NAJM), at=next_day)
    error = log.refuse(
        cancelled(GULF, "P1", effective, change, notice=stated),
        "FAILED_PRECONDITION",
        "NOTICE_TOO_SHORT",
        at=next_day,
    )
    assert error.details.field_violations[0].field == "event.policy_cancelled.effective_date"
    assert error.details.metadata["notice_days"] == "29"
    assert error.details.metadata["notice_leaf_index"] == str(notice.leaf_index)
    log.accept(cancelled(GULF, "P1", effective + dt.timedelta(days=1), change), at=next_day)


def test_a_notice_is_only_for_the_insurer_s_own_active_policy(log: Log) -> None:
    log.accept(_policy("P1"))
    log.refuse(change_notified(NAJM, "P1"), "NOT_FOUND", "POLICY_NOT_FOUND")
    log.refuse(change_notified("unlicensed-co", "P1"), "PERMISSION_DENIED", "INSURER_NOT_LICENSED")
    log.accept(cancelled(GULF, "P1", NOW.date(), R.CANCELLATION_REASON_END_OF_EMPLOYMENT))
    log.refuse(change_notified(GULF, "P1"), "FAILED_PRECONDITION", "POLICY_CANCELLED")


@pytest.mark.parametrize(
    ("reason", "window"),
    [
        (R.CANCELLATION_REASON_TRANSFER, 0),
        (R.CANCELLATION_REASON_END_OF_EMPLOYMENT, 0),
        (R.CANCELLATION_REASON_NON_PAYMENT, 0),
        (R.CANCELLATION_REASON_DEATH, limits.cancellation_backdating_days_max["DEATH"]),
        (R.CANCELLATION_REASON_FINAL_EXIT, limits.cancellation_backdating_days_max["FINAL_EXIT"]),
        (
            R.CANCELLATION_REASON_DEPENDENT_LOST_STATUS,
            limits.cancellation_backdating_days_max["DEPENDENT_LOST_STATUS"],
        ),
    ],
)
def test_a_cancellation_reaches_back_only_for_facts_of_the_past(
    log: Log, reason: int, window: int
) -> None:
    """Not before the entry's ledger date, except death, final exit and a dependent's lost
    status, each within its window (ledger.limits)."""
    start = NOW.date() - dt.timedelta(days=400)
    log.accept(issued(GULF, "P1", SPONSOR, FAMILY, start, start + dt.timedelta(days=700)))
    earliest = NOW.date() - dt.timedelta(days=window)
    error = log.refuse(
        cancelled(GULF, "P1", earliest - dt.timedelta(days=1), reason),
        "FAILED_PRECONDITION",
        "BACKDATED_CANCELLATION",
    )
    assert error.details.metadata["earliest"] == earliest.isoformat()
    assert error.details.field_violations[0].field == "event.policy_cancelled.effective_date"
    log.accept(cancelled(GULF, "P1", earliest, reason))


def _gaps(log: Log) -> list[tuple[Any, ...]]:
    with log.engine.connect() as connection:
        return [tuple(row) for row in connection.execute(select(transfer_gaps))]


def test_a_replacement_that_starts_late_is_accepted_with_its_gap_recorded(log: Log) -> None:
    log.accept(issued(GULF, "OLD", SPONSOR, FAMILY, JAN1, dt.date(2026, 6, 30)))
    log.accept(
        issued(NAJM, "CONT", SPONSOR, FAMILY, dt.date(2026, 7, 1), DEC31, replaces=(GULF, "OLD"))
    )
    assert _gaps(log) == []  # the day after: continuous
    [late] = log.accept(
        issued(GULF, "LATE", WIFE, [(WIFE, R.RELATIONSHIP_SELF)], dt.date(2026, 8, 5), DEC31,
               replaces=(GULF, "OLD"))
    )  # fmt: skip
    assert _gaps(log) == [
        (late.leaf_index, GULF, "LATE", GULF, "OLD", dt.date(2026, 7, 1), dt.date(2026, 8, 4))
    ]


def test_a_household_verdict_over_a_transfer_gap_names_the_transfer(log: Log) -> None:
    log.accept(issued(GULF, "OLD", SPONSOR, FAMILY, JAN1, dt.date(2026, 6, 30)))
    log.accept(
        issued(NAJM, "LATE", SPONSOR, FAMILY, dt.date(2026, 8, 5), DEC31, replaces=(GULF, "OLD"))
    )
    reader = CoverageReader(log.engine)
    sponsor = person_ref(SPONSOR)
    # Asked from before the gap: covered until it, then the transfer's gap.
    answer = reader.check_household(sponsor, [], dt.date(2026, 6, 1), DEC31)
    assert not answer.renewable
    assert {m.reason for m in answer.members} == {BlockReason.TRANSFER_GAP}
    member = answer.members[0]
    assert member.covered_until == dt.date(2026, 6, 30)
    assert all(
        word in member.detail for word in ("2026-07-01", "2026-08-04", "'LATE'", "'OLD'", GULF)
    )
    assert {"OLD", "LATE"} <= {c.policy_id for c in member.coverages}
    # Asked from inside the gap: the same reason, from that day.
    inside = reader.check_household(sponsor, [(sponsor, None)], dt.date(2026, 7, 20), DEC31)
    assert [m.reason for m in inside.members] == [BlockReason.TRANSFER_GAP]
    assert "2026-07-20" in inside.members[0].detail
    # A later policy that replaces nothing leaves an ordinary gap.
    log.accept(issued(GULF, "SON", SON, [(SON, R.RELATIONSHIP_SELF)], JAN1, dt.date(2026, 6, 30)))
    log.accept(issued(NAJM, "SON2", SON, [(SON, R.RELATIONSHIP_SELF)], dt.date(2026, 8, 5), DEC31))
    plain = reader.check_household(person_ref(SON), [], dt.date(2026, 6, 1), DEC31)
    assert [m.reason for m in plain.members] == [BlockReason.GAP]


def test_a_replacement_counts_from_the_old_policy_s_cancellation(log: Log) -> None:
    log.accept(_policy("OLD"))
    log.accept(cancelled(GULF, "OLD", dt.date(2026, 11, 1), R.CANCELLATION_REASON_FINAL_EXIT))
    [new] = log.accept(
        issued(NAJM, "NEW", SPONSOR, FAMILY, dt.date(2026, 11, 11), DEC31, replaces=(GULF, "OLD"))
    )
    assert _gaps(log) == [
        (new.leaf_index, NAJM, "NEW", GULF, "OLD", dt.date(2026, 11, 1), dt.date(2026, 11, 10))
    ]


def test_a_replacement_of_an_unknown_policy_is_refused(log: Log) -> None:
    log.refuse(
        issued(NAJM, "NEW", SPONSOR, FAMILY, JAN1, DEC31, replaces=(GULF, "NEVER")),
        "NOT_FOUND",
        "REPLACED_POLICY_NOT_FOUND",
    )


def test_a_newborn_is_backdated_to_birth_only_within_the_window(log: Log) -> None:
    log.accept(_policy("P1"))
    window = limits.newborn_backdating_days_max
    born = NOW.date() - dt.timedelta(days=window + 1)
    error = log.refuse(
        added(GULF, "P1", SON, R.RELATIONSHIP_CHILD, born, birth=born),
        "FAILED_PRECONDITION",
        "NEWBORN_WINDOW_PASSED",
    )
    assert error.details.metadata["earliest"] == NOW.date().isoformat()
    log.accept(added(GULF, "P1", SON, R.RELATIONSHIP_CHILD, NOW.date(), birth=born))
    baby, birth = person(103), NOW.date() - dt.timedelta(days=window)
    log.accept(added(GULF, "P1", baby, R.RELATIONSHIP_CHILD, birth, birth=birth))


def test_a_member_is_not_covered_before_the_birth_date_the_vault_holds(log: Log) -> None:
    """The birth date is the vault's (given with the token), not the event's: admission reads
    it by token and refuses coverage before it, writing nothing."""
    log.accept(_policy("P1"))
    baby, born = person(104), NOW.date() - dt.timedelta(days=3)
    early = added(GULF, "P1", baby, R.RELATIONSHIP_CHILD, born - dt.timedelta(days=1), birth=born)
    log.refuse(early, "FAILED_PRECONDITION", "BEFORE_BIRTH")
    log.accept(added(GULF, "P1", baby, R.RELATIONSHIP_CHILD, born))


def test_a_premium_is_in_the_policy_currency_and_period(log: Log) -> None:
    log.accept(_policy("P1"))
    kwd = paid(GULF, "P1", sar(1), JAN1, DEC31)
    kwd.premium_paid.amount.currency_code = "KWD"
    log.refuse(kwd, "FAILED_PRECONDITION", "CURRENCY_MISMATCH")
    log.refuse(
        paid(GULF, "P1", sar(450_000), JAN1, dt.date(2027, 1, 31)),
        "FAILED_PRECONDITION",
        "PERIOD_OUTSIDE_POLICY",
    )
    log.refuse(paid(GULF, "P9", sar(450_000), JAN1, DEC31), "NOT_FOUND", "POLICY_NOT_FOUND")
    log.accept(paid(GULF, "P1", sar(450_000), JAN1, DEC31))


# Members.


def test_members_change_only_on_an_active_policy_within_its_period(log: Log) -> None:
    log.accept(_policy("P1"))
    log.refuse(
        added(GULF, "P1", SON, R.RELATIONSHIP_CHILD, dt.date(2027, 1, 1)),
        "FAILED_PRECONDITION",
        "DATE_OUTSIDE_POLICY",
    )
    log.refuse(
        added(GULF, "P1", WIFE, R.RELATIONSHIP_SPOUSE, dt.date(2026, 3, 1)),
        "ALREADY_EXISTS",
        "MEMBER_EXISTS",
    )
    log.refuse(
        removed(GULF, "P1", SON, dt.date(2026, 3, 1), R.CANCELLATION_REASON_DEATH),
        "NOT_FOUND",
        "MEMBER_NOT_FOUND",
    )
    log.accept(added(GULF, "P1", SON, R.RELATIONSHIP_CHILD, dt.date(2026, 3, 1)))
    log.accept(removed(GULF, "P1", SON, dt.date(2026, 4, 1), R.CANCELLATION_REASON_DEATH))
    log.accept(cancelled(GULF, "P1", dt.date(2026, 5, 1), R.CANCELLATION_REASON_FINAL_EXIT))
    log.refuse(
        added(GULF, "P1", person(103), R.RELATIONSHIP_CHILD, dt.date(2026, 5, 2)),
        "FAILED_PRECONDITION",
        "POLICY_CANCELLED",
    )


def test_events_of_one_batch_see_each_other_in_order(log: Log) -> None:
    outcomes = log.append(
        _policy("P1"),
        cancelled(GULF, "P1", dt.date(2026, 5, 1), R.CANCELLATION_REASON_FINAL_EXIT),
        cancelled(GULF, "P1", dt.date(2026, 6, 1), R.CANCELLATION_REASON_DEATH),
        paid(GULF, "P1", sar(100), JAN1, dt.date(2026, 4, 30)),
    )
    assert [type(o).__name__ for o in outcomes] == [
        "Receipt",
        "Receipt",
        "FailedPrecondition",
        "Receipt",
    ]
    receipts = [o for o in outcomes if isinstance(o, Receipt)]
    # Leaf 0: genesis; 1-4: two insurers' keys and licences; 5: the unlicensed-co key.
    assert [r.leaf_index for r in receipts] == [6, 7, 8]


def test_a_key_signs_only_what_happened_while_it_was_valid(log: Log) -> None:
    late = Ed25519Signer.generate("late")
    log.accept(
        key_registered(
            GULF,
            late.public_key,
            role=SignerRole.INSURER,
            valid_from=dt.datetime(2026, 7, 1, tzinfo=dt.UTC),  # after tests.builders.OCCURRED
            occurred_at=NOW,
        )
    )
    log.signers[GULF] = late
    error = log.refuse(_policy(), "PERMISSION_DENIED", "KEY_NOT_YET_VALID")
    assert "at the event's time" in error.message


def test_one_batch_and_one_batch_per_event_project_the_same(
    engine: Engine, log_signer: Ed25519Signer, operator_signer: Ed25519Signer, tmp_path: Any
) -> None:
    """Rules read this batch's own new policies and coverages before they are written: the
    projections must not depend on how events were grouped into batches."""
    from ledger.coverage.rebuild import rebuild_and_compare
    from ledger.storage.db import create_ledger_engine, sqlite_url
    from ledger.storage.migrate import upgrade

    engines = {
        grouping: create_ledger_engine(sqlite_url(tmp_path / f"{grouping}.db"))
        for grouping in ("one batch", "one each")
    }
    for other in engines.values():
        upgrade(other)
    use_vault(engines["one batch"])  # the events name the same tokens in both ledgers
    events = [
        _policy("B1"),
        added(GULF, "B1", SON, R.RELATIONSHIP_CHILD, dt.date(2026, 2, 1)),
        removed(GULF, "B1", SON, dt.date(2026, 3, 1), R.CANCELLATION_REASON_DEATH),
        added(GULF, "B1", person(104), R.RELATIONSHIP_DOMESTIC_WORKER, dt.date(2026, 2, 1)),
        paid(GULF, "B1", sar(450_000), JAN1, DEC31),
        cancelled(GULF, "B1", dt.date(2026, 9, 1), R.CANCELLATION_REASON_FINAL_EXIT),
        issued(GULF, "B2", SON, [(SON, R.RELATIONSHIP_SELF)], dt.date(2026, 3, 1), DEC31),
        issued(GULF, "B3", SON, [(SON, R.RELATIONSHIP_SELF)], dt.date(2026, 2, 15), DEC31),
        # A notice read by the cancellation after it, and a replacement with a transfer gap.
        issued(GULF, "B4", person(105), [(person(105), R.RELATIONSHIP_SELF)], JAN1, DEC31),
        change_notified(GULF, "B4", new_insurer=NAJM),
        cancelled(GULF, "B4", dt.date(2026, 12, 22), R.CANCELLATION_REASON_INSURER_CHANGE),
        issued(GULF, "B5", SPONSOR, FAMILY, dt.date(2026, 9, 10), DEC31, replaces=(GULF, "B1")),
    ]
    snapshots = []
    signer = Ed25519Signer.generate(GULF)
    copy_vault(engines["one batch"], engines["one each"])
    for grouping, other in engines.items():
        appender = Appender(other, log_signer, log_signer.name)
        appender.initialize(NOW)
        onboard_directly(other, appender, operator_signer, GULF, signer, NOW)
        log = Log(other, appender, {GULF: signer})
        if grouping == "one batch":
            outcomes = log.append(*events)
        else:
            outcomes = [outcome for event in events for outcome in log.append(event)]
        # B3 overlaps the son's own B2 (same insurer): refused either way.
        assert [type(o).__name__ for o in outcomes] == (
            ["Receipt"] * 7 + ["FailedPrecondition"] + ["Receipt"] * 4
        )
        state = log.snapshot()
        state.pop("checkpoints")
        assert [row[5:] for row in state["transfer_gaps"]] == [
            (dt.date(2026, 9, 1), dt.date(2026, 9, 9))
        ]
        assert len(state["insurer_change_notices"]) == 1
        snapshots.append(state)
        assert rebuild_and_compare(other).consistent
        other.dispose()
    assert snapshots[0] == snapshots[1]


# Erasure hooks (a server extension's redaction runs in the PersonErased transaction).


def test_erasure_hooks_run_in_the_erasure_transaction(
    engine: Engine, log_signer: Ed25519Signer, operator_signer: Ed25519Signer
) -> None:
    """Every hook sees the token and the identifier before the vault forgets it; a hook that
    raises refuses the erasure, and what any hook wrote is rolled back with it."""
    use_vault(engine)
    wife_token, sponsor_token = token(WIFE), token(SPONSOR)
    seen: list[ErasedPerson] = []

    def record(connection: Connection, erased_person: ErasedPerson) -> None:
        seen.append(erased_person)
        connection.execute(
            person_identities.update()
            .where(person_identities.c.token == wife_token)
            .values(birth_date=dt.date(1990, 1, 1))
        )

    def refuse_the_sponsor(connection: Connection, erased_person: ErasedPerson) -> None:
        if erased_person.person.value == SPONSOR.value:
            raise FailedPrecondition("the extension cannot forget this one", reason="HELD")

    hooks = ErasureHooks()
    hooks.add(record)
    hooks.add(refuse_the_sponsor)
    appender = Appender(
        engine, log_signer, log_signer.name, operator_signer.public_key, erasure_hooks=hooks
    )
    appender.initialize(NOW)
    log = Log(engine, appender, {"operator": operator_signer})
    snapshot = log.snapshot()
    [outcome] = log.append(erased(SPONSOR))
    assert isinstance(outcome, LedgerError) and outcome.reason == "HELD"
    assert log.snapshot() == snapshot
    with engine.connect() as connection:
        vault = {r.token: r.birth_date for r in connection.execute(select(person_identities))}
    assert vault[wife_token] is None and sponsor_token in vault  # the hook's write undone
    log.accept(erased(WIFE))
    assert [(e.token, e.person.value) for e in seen] == [
        (sponsor_token, SPONSOR.value),
        (wife_token, WIFE.value),
    ]
    with engine.connect() as connection:
        left = set(connection.execute(select(person_identities.c.token)).scalars())
    assert wife_token not in left and sponsor_token in left
