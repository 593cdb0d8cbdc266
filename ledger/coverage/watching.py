"""The change feed behind CoverageService.WatchCoverage: read committed entries, report changes.

A watch (1) checks its start (``from_tree_size`` at most the log's size), (2) replays, quietly,
the entries about its subject below that size (:class:`WatchStore`; for an establishment also
its permits and their workers' policies), so its state is what a watch that never stopped would
hold (residence permits, for ENDS_BEFORE_PERMIT, are read from their own entries below the entry
judged, :meth:`WatchStore.permits`), then (3) reads the log from there in pages of
``limits.watch_entries_per_read_max`` up to the latest checkpoint, yielding the changes of each
entry (:mod:`ledger.coverage.watch`), (4) sends a heartbeat saying how far it has read, and (5)
waits for the next commit: the sequencer calls :meth:`CommitSignal.notify` after every committed
batch (as it wakes the witness submitter), so a watch never polls. When no commit comes within
the heartbeat interval it reads the log again anyway and sends a heartbeat: a client that
hears nothing for longer knows the stream is dead, and on PostgreSQL, where another replica may
be the one sequencing, that re-read is how this replica sees the other's commits.

:class:`WatchHub` bounds the watches of one caller (``limits.watches_per_caller_max``,
RESOURCE_EXHAUSTED beyond) and ends them all when the server stops (UNAVAILABLE, after a last
heartbeat with the tree size to resume from).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

from sqlalchemy import Engine, select

from ledger import limits
from ledger.compliance.obligations import responsible_key
from ledger.coverage import rules
from ledger.coverage.model import PersonRef
from ledger.coverage.watch import (
    Change,
    LoggedPermits,
    SubjectKind,
    WatchedEvent,
    WatchState,
    WatchSubject,
)
from ledger.entry import decode_entry
from ledger.errors import LedgerError, OutOfRange, ResourceExhausted, Unavailable
from ledger.events import decode_event
from ledger.storage.log_store import StoredCheckpoint, latest_checkpoint
from ledger.storage.tables import log_entries, obligations, policies, subject_entries
from ledger.storage.vault_store import VaultStore, identity_of

__all__ = [
    "CommitSignal",
    "EntryChanges",
    "Heartbeat",
    "WatchHub",
    "WatchRequest",
    "WatchStore",
    "watch_request",
]


@dataclass(frozen=True)
class WatchRequest:
    """A checked request: the subject (a person by identifier, or an establishment's key)."""

    kind: SubjectKind
    person: PersonRef | None
    establishment_key: str
    from_tree_size: int
    heartbeat_seconds: int


@dataclass(frozen=True)
class EntryChanges:
    """The changes one entry caused; ``tree_size`` (a checkpoint's) contains the entry."""

    leaf_index: int
    tree_size: int
    changes: tuple[tuple[Change, tuple[PersonRef, ...]], ...]


@dataclass(frozen=True)
class Heartbeat:
    """Every change below ``tree_size`` has been sent; ``checkpoint`` is that size's note."""

    tree_size: int
    checkpoint: bytes


def watch_request(
    kind: str,
    *,
    person: PersonRef | None,
    establishment: str,
    from_tree_size: int,
    heartbeat_seconds: int,
) -> WatchRequest:
    """A :class:`WatchRequest` from the wire's subject name (``person``, ``household_sponsor``
    or ``establishment``), already checked."""
    subject = {
        "person": SubjectKind.PERSON,
        "household_sponsor": SubjectKind.HOUSEHOLD,
        "establishment": SubjectKind.ESTABLISHMENT,
    }[kind]
    is_establishment = subject is SubjectKind.ESTABLISHMENT
    return WatchRequest(
        kind=subject,
        person=None if is_establishment else person,
        establishment_key=establishment if is_establishment else "",
        from_tree_size=from_tree_size,
        heartbeat_seconds=heartbeat_seconds,
    )


def _decoded(leaf_index: int, data: bytes) -> WatchedEvent | None:
    entry = decode_entry(data)
    try:
        event = decode_event(entry.envelope.payload)
    except LedgerError:
        return None  # not an event of this version: it changes no coverage
    return WatchedEvent(leaf_index, rules.ledger_date(entry.integrated_time), event)


class WatchStore:
    """The reads of a watch (each in its own short read transaction, from a worker thread)."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def head(self) -> StoredCheckpoint:
        """The latest checkpoint."""
        with self._engine.connect() as connection:
            return latest_checkpoint(connection)

    def token_of(self, person: PersonRef) -> str:
        """The person's token, or "" while the vault has none."""
        return VaultStore(self._engine).tokens_of([person]).get(person, "")

    def people_of(self, tokens: tuple[str, ...]) -> tuple[PersonRef, ...]:
        """The identifiers behind ``tokens`` (an erased person is left out)."""
        with self._engine.connect() as connection:
            found = [identity_of(connection, token) for token in tokens]
        return tuple(person for person in found if person is not None)

    def entries(self, start: int, end: int) -> Iterator[WatchedEvent]:
        """The events of ``[start, end)``, in log order."""
        with self._engine.connect() as connection:
            rows = connection.execute(
                select(log_entries.c.leaf_index, log_entries.c.entry_bytes)
                .where(log_entries.c.leaf_index >= start, log_entries.c.leaf_index < end)
                .order_by(log_entries.c.leaf_index)
            ).all()
        for row in rows:
            decoded = _decoded(int(row.leaf_index), bytes(row.entry_bytes))
            if decoded is not None:
                yield decoded

    def _leaves(self, subjects: list[str], before: int) -> list[int]:
        if not subjects:
            return []
        with self._engine.connect() as connection:
            rows = connection.execute(
                select(subject_entries.c.leaf_index)
                .where(
                    subject_entries.c.subject.in_(subjects),
                    subject_entries.c.leaf_index < before,
                )
                .distinct()
                .order_by(subject_entries.c.leaf_index)
                .limit(limits.watch_replay_entries_max + 1)
            ).all()
        leaves = [int(row.leaf_index) for row in rows]
        if len(leaves) > limits.watch_replay_entries_max:
            raise ResourceExhausted(
                f"more than {limits.watch_replay_entries_max} entries name this subject below "
                f"tree size {before}: watch it from a later tree size",
                reason="WATCH_HISTORY_TOO_LONG",
            )
        return leaves

    def _events(self, leaves: list[int]) -> list[WatchedEvent]:
        if not leaves:
            return []
        with self._engine.connect() as connection:
            rows = connection.execute(
                select(log_entries.c.leaf_index, log_entries.c.entry_bytes)
                .where(log_entries.c.leaf_index.in_(leaves))
                .order_by(log_entries.c.leaf_index)
            ).all()
        decoded = (_decoded(int(row.leaf_index), bytes(row.entry_bytes)) for row in rows)
        return [entry for entry in decoded if entry is not None]

    def policy_history(self, insurer_id: str, policy_id: str, before: int) -> list[WatchedEvent]:
        """The entries of one policy below ``before`` (the state's :data:`PolicyHistory`)."""
        return self._events(self._leaves([f"policy:{insurer_id}:{policy_id}"], before))

    def permit_history(self, person_token: str, before: int) -> list[WatchedEvent]:
        """The entries below ``before`` of every permit naming the person (the state's
        :data:`~ledger.coverage.watch.PermitHistory`). The ``obligations`` projection only says
        which permits name them; what the permits said is read from their entries below the
        leaf, so a permit issued or renewed later changes nothing here."""
        with self._engine.connect() as connection:
            rows = connection.execute(
                select(obligations.c.authority_id, obligations.c.permit_id)
                .where(obligations.c.person_token == person_token)
                .distinct()
            ).all()
        subjects = sorted(f"permit:{row.authority_id}:{row.permit_id}" for row in rows)
        return self._events(self._leaves(subjects, before))

    def permit_entries(self, authority_id: str, permit_id: str, before: int) -> list[WatchedEvent]:
        """One permit's entries below ``before`` (:data:`~ledger.coverage.watch.PermitEntries`)."""
        return self._events(self._leaves([f"permit:{authority_id}:{permit_id}"], before))

    def permits(self) -> LoggedPermits:
        """The permit reader a watch's state asks (ENDS_BEFORE_PERMIT)."""
        return LoggedPermits(self.permit_history, self.permit_entries)

    def history(self, subject: WatchSubject, before: int) -> list[WatchedEvent]:
        """The entries below ``before`` that a watch of ``subject`` must replay: every entry of
        every policy that named the subject (or that the establishment holds)."""
        if not subject.key:
            return []
        permit_entries: list[WatchedEvent] = []
        if subject.kind is SubjectKind.ESTABLISHMENT:
            with self._engine.connect() as connection:
                rows = connection.execute(
                    select(policies.c.insurer_id, policies.c.policy_id).where(
                        policies.c.holder_key == subject.key,
                        policies.c.issued_leaf_index < before,
                    )
                ).all()
            keys = {(str(row.insurer_id), str(row.policy_id)) for row in rows}
            # The permits naming it as sponsor, and every policy of the workers they name.
            permit_entries = self._sponsored_permits(subject.key, before)
            for token in sorted(_permit_people(permit_entries)):
                keys |= self._policy_keys_of(token, before)
        else:
            keys = self._policy_keys_of(subject.key, before)
        subjects = sorted(f"policy:{insurer}:{policy}" for insurer, policy in keys)
        # Suspensions change no state a watch keeps, so the insurers' own entries are not read.
        entries = {
            entry.leaf_index: entry for entry in self._events(self._leaves(subjects, before))
        }
        entries.update((entry.leaf_index, entry) for entry in permit_entries)
        return [entries[leaf] for leaf in sorted(entries)]

    def _policy_keys_of(self, token: str, before: int) -> set[tuple[str, str]]:
        """The (insurer, policy) pairs of the policies that named the person below ``before``."""
        keys: set[tuple[str, str]] = set()
        for entry in self._events(self._leaves([f"person:{token}"], before)):
            body = entry.event.WhichOneof("body")
            if body in {"policy_issued", "member_added"}:
                keys.add((entry.event.insurer_id, getattr(entry.event, body).policy_id))
            elif body == "fee_collected":
                keys.add((entry.event.insurer_id, entry.event.fee_collected.renewal_id))
        return keys

    def _sponsored_permits(self, key: str, before: int) -> list[WatchedEvent]:
        """The issuances and renewals, below ``before``, of the permits naming ``key`` (an
        establishment) as sponsor (the projector indexes permit entries by their sponsor)."""
        found: list[WatchedEvent] = []
        sponsored: set[tuple[str, str]] = set()
        for entry in self._events(self._leaves([key], before)):
            event = entry.event
            body = event.WhichOneof("body")
            if body == "permit_issued" and responsible_key(event.permit_issued.sponsor) == key:
                sponsored.add((event.insurer_id, event.permit_issued.permit_id))
                found.append(entry)
            elif body == "permit_renewed" and (
                (event.insurer_id, event.permit_renewed.permit_id) in sponsored
            ):
                found.append(entry)
        return found

    def person_policies(self, person_token: str, before: int) -> list[WatchedEvent]:
        """The entries below ``before`` of every policy that named the person (the state's
        :data:`~ledger.coverage.watch.PersonPolicies`)."""
        return self.history(WatchSubject(SubjectKind.PERSON, person_token), before)

    def ledger_date_before(self, tree_size: int) -> WatchedEvent | None:
        """The entry just below ``tree_size`` (its ledger date starts the overdue check)."""
        if tree_size == 0:
            return None
        return next(self.entries(tree_size - 1, tree_size), None)


def _permit_people(entries: list[WatchedEvent]) -> set[str]:
    people: set[str] = set()
    for entry in entries:
        event = entry.event
        if event.WhichOneof("body") == "permit_issued":
            body = event.permit_issued
            people.add(body.holder_token)
            people.update(member.person_token for member in body.members)
        else:
            people.update(member.person_token for member in event.permit_renewed.added_members)
    return people


class CommitSignal:
    """Wakes every watch after a committed batch (``Sequencer.commit_listeners``)."""

    def __init__(self) -> None:
        self._event = asyncio.Event()

    def notify(self) -> None:
        """A batch committed (call on the loop's thread)."""
        event, self._event = self._event, asyncio.Event()
        event.set()

    def current(self) -> asyncio.Event:
        """The event the next commit sets: take it *before* reading the log, so a commit
        between the read and the wait still wakes the watch."""
        return self._event


class WatchHub:
    """Counts each caller's open watches and ends them all at shutdown (see the module doc)."""

    def __init__(self, store: WatchStore, per_caller_max: int = limits.watches_per_caller_max):
        self.store = store
        self.signal = CommitSignal()
        self._per_caller_max = per_caller_max
        self._open: dict[str, int] = {}
        self._closing = asyncio.Event()

    @property
    def open_watches(self) -> int:
        """Watches open now (all callers)."""
        return sum(self._open.values())

    def close(self) -> None:
        """End every watch (the server is stopping): each sends a last heartbeat, then ends
        with UNAVAILABLE; new watches are refused the same way."""
        self._closing.set()
        self.signal.notify()

    @contextlib.contextmanager
    def _slot(self, caller: str) -> Iterator[None]:
        if self._closing.is_set():
            raise _shutting_down()
        count = self._open.get(caller, 0)
        if count >= self._per_caller_max:
            raise ResourceExhausted(
                f"{count} watches of this caller are open, the most allowed "
                f"({self._per_caller_max}): end one first",
                reason="WATCHES_TOO_MANY",
                metadata={"watches_max": str(self._per_caller_max)},
            )
        self._open[caller] = count + 1
        try:
            yield
        finally:
            self._open[caller] -= 1
            if not self._open[caller]:
                del self._open[caller]

    async def watch(
        self, caller: str, request: WatchRequest
    ) -> AsyncIterator[EntryChanges | Heartbeat]:
        """The feed of ``request``: steps (1)-(5) of the module doc, until the caller leaves
        or the server stops."""
        with self._slot(caller):
            async for item in self._feed(request):
                yield item

    async def _start(self, request: WatchRequest) -> tuple[WatchState, StoredCheckpoint]:
        store = self.store
        # (1)
        head = await asyncio.to_thread(store.head)
        if request.from_tree_size > head.tree_size:
            raise OutOfRange(
                f"from_tree_size is beyond the log: {request.from_tree_size} > {head.tree_size}",
                reason="TREE_SIZE_BEYOND_LOG",
                metadata={"tree_size": str(head.tree_size)},
            )
        key = request.establishment_key
        if request.person is not None:
            key = await asyncio.to_thread(store.token_of, request.person)
        state = WatchState(
            WatchSubject(request.kind, key),
            store.policy_history,
            store.permits(),
            store.person_policies,
        )
        # (2)
        await asyncio.to_thread(
            lambda: state.replay(store.history(state.subject, request.from_tree_size))
        )
        before = await asyncio.to_thread(store.ledger_date_before, request.from_tree_size)
        state.last_ledger_date = before.ledger_date if before is not None else None
        return state, head

    async def _feed(self, request: WatchRequest) -> AsyncIterator[EntryChanges | Heartbeat]:
        state, head = await self._start(request)
        cursor = request.from_tree_size
        while True:
            wake = self.signal.current()
            head = await asyncio.to_thread(self.store.head)
            if not state.subject.key and request.person is not None:
                # Nothing named the person when the watch began; once the vault knows them,
                # entries from the cursor on can.
                state.set_subject_key(await asyncio.to_thread(self.store.token_of, request.person))
            # (3)
            while cursor < head.tree_size:
                end = min(head.tree_size, cursor + limits.watch_entries_per_read_max)
                page = await asyncio.to_thread(self._read_page, state, cursor, end, head)
                for item in page:
                    yield item
                cursor = end
            # (4)
            yield Heartbeat(head.tree_size, head.note_bytes)
            if self._closing.is_set():
                raise _shutting_down(head.tree_size)
            # (5)
            with contextlib.suppress(TimeoutError):
                # asyncio.timeout, not wait_for: on Python 3.11 wait_for drops a cancellation
                # (the caller went away) that arrives as the wake fires (CPython gh-86296).
                async with asyncio.timeout(request.heartbeat_seconds):
                    await wake.wait()

    def _read_page(
        self, state: WatchState, start: int, end: int, head: StoredCheckpoint
    ) -> list[EntryChanges]:
        """Runs in a worker thread: apply the entries of ``[start, end)``, resolve the people."""
        page: list[EntryChanges] = []
        for entry in self.store.entries(start, end):
            changes = state.apply(entry)
            if changes:
                resolved = tuple(
                    (change, self.store.people_of(change.person_tokens)) for change in changes
                )
                page.append(EntryChanges(entry.leaf_index, head.tree_size, resolved))
        return page


def _shutting_down(tree_size: int | None = None) -> Unavailable:
    resume = "" if tree_size is None else f"; resume from tree size {tree_size}"
    return Unavailable(
        f"the server is stopping: watch again (another replica, or after the restart){resume}",
        reason="SHUTTING_DOWN",
        metadata={} if tree_size is None else {"tree_size": str(tree_size)},
    )
