"""Appending a batch: one transaction writes entries, tree nodes and one signed checkpoint.

Only the sequencer calls :meth:`Appender.append_batch`, from one thread. The transaction takes the
database write lock first (SQLite ``BEGIN IMMEDIATE``; PostgreSQL a transaction-scoped advisory
lock), so several replicas sharing one database append one at a time and history never forks.

Steps of one batch (numbered in the code):
  (1) lock; read the latest checkpoint and the stored right edge of the tree (one statement
      when the tree is the one this appender left);
  (2) check the stored nodes give the signed root (the database agrees with its signature);
  (3) (reserved: the signer checks moved into (5), entry by entry);
  (4) idempotency: an event id seen before gets its first receipt, or a conflict naming the field;
  (5) in log order, check each new event against the policy rules and update the projections
      (:class:`ledger.coverage.projector.Projector`; a refused event writes nothing): first its
      signing key again, at commit time (a key revoked meanwhile, even earlier in this batch, is
      refused), at the event's own time, and the signer role table; then encode the entry once,
      hash it, append it to the tree. An entry's append hook runs just before its rules; what a
      refused entry's hook wrote is undone (see :meth:`Appender.append_batch`), and what it
      logged is dropped (:func:`ledger.storage.append_hooks.held_log_lines`);
  (6) insert entries and nodes, sign and insert the checkpoint, commit; then emit the log lines
      held during the batch, which now describe what committed;
  (7) after the commit, build each receipt's inclusion proof from the nodes (1) read and (5)
      made, in memory (no query: see :class:`_Written`); a duplicate's from stored nodes.
Nothing is acknowledged before (6) returns. A storage fault answers UNAVAILABLE saying whether
nothing was written, the commit's outcome is unknown, or only the receipt is missing
(:mod:`ledger.storage.faults`).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from sqlalchemy import Connection, Engine, bindparam, select, text

from ledger.checkpoint import Checkpoint, sign_checkpoint
from ledger.clock import to_micros
from ledger.coverage.projector import Projector, SignedBy
from ledger.dsse import Envelope
from ledger.entry import decode_entry, encode_entry
from ledger.errors import AlreadyExists, FailedPrecondition, FieldViolation, LedgerError, check
from ledger.events import decode_event, first_difference
from ledger.genesis import GENESIS_EVENT_ID, genesis_envelope, genesis_event
from ledger.identity.erasure import ErasureHooks
from ledger.keys import InsurerKey, insurer_key_id
from ledger.merkle import CompactRange, NodeID, inclusion, leaf_hash, right_edge_ids
from ledger.signers import OPERATOR_ID, SignerRole
from ledger.signing import Signer
from ledger.storage.append_hooks import batch_time, emit_held, held_log_lines
from ledger.storage.db import WRITE_LOCK_OPTION, is_sqlite
from ledger.storage.faults import (
    commit_outcome_unknown,
    is_storage_fault,
    receipt_unavailable,
    storage_unavailable,
)
from ledger.storage.key_store import keys_by_id
from ledger.storage.log_store import (
    StoredCheckpoint,
    checkpoint_covering,
    latest_checkpoint,
    latest_checkpoint_entry_count_and_nodes,
    read_nodes,
)
from ledger.storage.nodes import node_key
from ledger.storage.rows import insert_rows
from ledger.storage.tables import checkpoints, log_entries, tree_nodes
from ledger.v1 import events_pb2

__all__ = ["Appender", "PendingEntry", "Receipt", "read_head"]

# Built once: SQLAlchemy then compiles it once (building it per batch cost more than running it).
_SELECT_STORED_EVENTS = select(
    log_entries.c.insurer_id,
    log_entries.c.event_id,
    log_entries.c.leaf_index,
    log_entries.c.payload_sha256,
).where(
    # One insurer's ids at a time: SQLite answers `insurer_id = ? AND event_id IN (...)` with
    # one search of the unique index an id, but a row-value `(insurer_id, event_id) IN (...)`
    # by scanning the whole log (EXPLAIN QUERY PLAN: SCAN log_entries), every batch.
    log_entries.c.insurer_id == bindparam("insurer_id"),
    log_entries.c.event_id.in_(bindparam("event_ids", expanding=True)),
)

# Any constant works: it names "the ledger's write lock" among this database's advisory locks.
_POSTGRES_WRITE_LOCK = 0x706F6C6963796C67


@dataclass(frozen=True)
class PendingEntry:
    """A verified submission waiting to be sequenced."""

    envelope: Envelope
    insurer_id: str
    event_id: str
    key_id: str
    event: events_pb2.Event | None = None
    """The decoded payload, when admission already decoded it (else the appender decodes it)."""
    on_append: Callable[[Connection, int], None] | None = None
    """Runs in the batch transaction once the entry has its leaf index, before the rules: state
    that must change together with the entry (a payment moving to "recorded"). A LedgerError
    it raises refuses the entry, and what it wrote is rolled back (a savepoint)."""
    trace_context: str = ""

    def decoded(self) -> events_pb2.Event:
        """The event the envelope carries."""
        return self.event if self.event is not None else decode_event(self.envelope.payload)

    @property
    def payload_sha256(self) -> bytes:
        """SHA-256 of the signed payload: equal digests mean the same event bytes."""
        return hashlib.sha256(self.envelope.payload).digest()


@dataclass(frozen=True)
class Receipt:
    """Proof that an event is durable and in the log."""

    event_id: str
    leaf_index: int
    leaf_hash: bytes
    entry: bytes
    checkpoint: bytes
    tree_size: int
    inclusion_proof: tuple[bytes, ...]
    duplicate: bool


@dataclass
class _Sequenced:
    """A new entry of this batch, before its receipt exists."""

    position: int
    leaf_index: int
    leaf_hash: bytes
    entry: bytes


@dataclass
class _Duplicate:
    """A submission whose event id is already in the log (or earlier in this batch)."""

    position: int


@dataclass(frozen=True)
class _Written:
    """What a committed batch wrote: its checkpoint, new entries and duplicates, and the hashes
    its receipts' proofs take: the right edge of the tree it started from, and its new nodes.

    Those are every node an inclusion proof of a new entry at the batch's tree size names: a
    proof node left of the batch's first leaf is a perfect subtree ending where the path's
    other child, which holds the new leaf, begins, so at or before the old size; its level is a
    set bit of the old size, and it is the old tree's right-edge node of that level. A proof
    node holding a new leaf is complete at the new size, so this batch made it. The proofs are
    thus built with no query; a node missing from these would be read from storage instead.
    """

    head: StoredCheckpoint
    sequenced: list[_Sequenced]
    duplicates: list[_Duplicate]
    known: dict[NodeID, bytes]
    keys: dict[str, InsurerKey | None]
    """The signing keys the batch's rules read, as they stand at ``head`` (see _KeysAtHead)."""


@dataclass(frozen=True)
class _KeysAtHead:
    """Signing keys as they stood when the log's head was ``tree_size``/``root_hash``.

    The key registry is a projection that only the projector writes, from log entries, so while
    the head is the same no key changed: a batch finding that head under the lock knows these
    keys without reading them (one statement a batch fewer). Any other head (an entry appended
    by another appender sharing the database) and they are read again.
    """

    tree_size: int
    root_hash: bytes
    keys: dict[str, InsurerKey | None]

    def at(self, head: StoredCheckpoint) -> dict[str, InsurerKey | None]:
        """A copy of the keys if ``head`` is the one they stood at, else none."""
        if head.tree_size == self.tree_size and head.root_hash == self.root_hash:
            return dict(self.keys)
        return {}


Outcome = Receipt | LedgerError


class Appender:
    """Writes batches to the log. One instance per sequencer; not for concurrent use."""

    def __init__(
        self,
        engine: Engine,
        signer: Signer,
        origin: str,
        operator_public_key: bytes | None = None,
        erasure_hooks: ErasureHooks | None = None,
    ) -> None:
        """``erasure_hooks``: what the server's extensions redact when a person is erased, run
        in the transaction that appends the ``PersonErased`` entry
        (:mod:`ledger.identity.erasure`)."""
        self._engine = engine
        self._signer = signer
        self._origin = origin
        self._operator_public_key = operator_public_key
        self._erasure_hooks = erasure_hooks
        self._keys = _KeysAtHead(0, b"", {})
        """The keys the last committed batch's rules knew, at the head it committed (whose
        tree's right edge the next batch reads with its head)."""

    def initialize(self, now: dt.datetime) -> StoredCheckpoint:
        """Sign and store the empty tree's checkpoint unless the log already has one; then, when
        this appender was given the operator's key, anchor it (:mod:`ledger.genesis`): on an
        empty log, append the genesis entry; on a log that has one, refuse a key that is not a
        registered, unrevoked operator key (FAILED_PRECONDITION, saying what to pass)."""
        with self._write_transaction() as connection:
            found = connection.execute(select(checkpoints.c.tree_size).limit(1)).first()
            if found is None:
                self._insert_checkpoint(connection, CompactRange.empty(), now)
        if self._operator_public_key is not None:
            return self.anchor_operator(self._operator_public_key, now)
        with self._engine.connect() as connection:
            return latest_checkpoint(connection)

    def anchor_operator(self, operator_public_key: bytes, now: dt.datetime) -> StoredCheckpoint:
        """Append the genesis entry naming ``operator_public_key`` to an empty (initialized)
        log; on a log that has one, check the key is a registered, unrevoked operator key."""
        with self._write_transaction() as connection:
            head, tree = read_head(connection)
            if head.tree_size == 0:
                self._append_genesis(connection, tree, operator_public_key, now)
            else:
                _check_operator_key(connection, operator_public_key)
            return latest_checkpoint(connection)

    def _append_genesis(
        self, connection: Connection, tree: CompactRange, operator_key: bytes, now: dt.datetime
    ) -> None:
        envelope = genesis_envelope(operator_key, now, self._signer)
        projector = Projector(connection)
        log_key_id = insurer_key_id(self._signer.public_key)
        projector.apply(genesis_event(operator_key, now), 0, SignedBy(log_key_id, now, True))
        projector.flush()
        data = encode_entry(0, now, envelope)
        digest = leaf_hash(data)
        nodes = tree.append(digest)
        connection.execute(
            log_entries.insert().values(
                leaf_index=0,
                insurer_id=OPERATOR_ID,
                event_id=GENESIS_EVENT_ID,
                leaf_hash=digest,
                payload_sha256=hashlib.sha256(envelope.payload).digest(),
                entry_bytes=data,
            )
        )
        connection.execute(
            tree_nodes.insert(),
            [{"node_key": node_key(node), "hash": value} for node, value in nodes],
        )
        self._insert_checkpoint(connection, tree, now)

    def append_batch(self, items: Sequence[PendingEntry], now: dt.datetime) -> list[Outcome]:
        """Append ``items`` in one transaction; one outcome per item, in order (see module doc).

        A storage fault raises UNAVAILABLE saying what it means for the batch (see
        :mod:`ledger.storage.faults`): nothing written, outcome unknown, or committed.
        """
        # An append hook's writes must be undone when its entry is refused. A savepoint around
        # each hooked entry does it, at two statements an entry (SAVEPOINT, RELEASE) while
        # holding the write lock; hooked entries are almost never refused (a payment being
        # returned meanwhile), so the batch first runs without them, and should a hooked entry
        # be refused, that transaction is rolled back whole and the batch runs again under a
        # new lock, from its first step, with a savepoint around each hooked entry. The log
        # lines of an attempt are held until it commits, so that none tells of a change that
        # was rolled back (a hook's "recorded" logged twice, or once for nothing).
        hooked = any(item.on_append is not None for item in items)
        for savepoints in (False, True) if hooked else (True,):
            outcomes: list[Outcome | None] = [None] * len(items)
            transaction = self._write_transaction()
            try:
                # batch_time: what append hooks see as "now" (append_hooks.batch_now).
                with batch_time(now), held_log_lines() as held:
                    written = self._write_batch(
                        transaction, items, now, outcomes, held, savepoints=savepoints
                    )
                break
            except _HookedEntryRefused:
                continue  # rolled back: nothing of this attempt was written, nor is it logged
            except Exception as error:
                if not is_storage_fault(error):
                    raise
                if transaction.committed:
                    raise receipt_unavailable() from error
                raise storage_unavailable() from error
        emit_held(held)
        self._keys = _KeysAtHead(written.head.tree_size, written.head.root_hash, written.keys)
        try:
            self._fill_receipts(items, written, outcomes)
        except Exception as error:
            if is_storage_fault(error):
                raise receipt_unavailable() from error
            raise
        check(all(outcome is not None for outcome in outcomes), "a batch item has no outcome")
        return [outcome for outcome in outcomes if outcome is not None]

    def _write_batch(
        self,
        transaction: _WriteTransaction,
        items: Sequence[PendingEntry],
        now: dt.datetime,
        outcomes: list[Outcome | None],
        held: list[logging.LogRecord],
        *,
        savepoints: bool,
    ) -> _Written:
        with transaction as connection:
            # (1), (2)
            head, tree = read_head(connection, self._keys.tree_size)
            events = [item.decoded() for item in items]
            # (4)
            duplicates = _find_duplicates(connection, items, outcomes)
            # (5)
            skipped = {duplicate.position for duplicate in duplicates}
            projector = Projector(
                connection, erasure_hooks=self._erasure_hooks, keys=self._keys.at(head)
            )
            projector.prefetch(
                [
                    event
                    for position, event in enumerate(events)
                    if outcomes[position] is None and position not in skipped
                ]
            )
            known = _edge_nodes(tree)
            sequenced, rows, nodes = _sequence(
                projector, items, events, outcomes, skipped, tree, now, held, savepoints=savepoints
            )
            projector.flush()
            # (6)
            if sequenced:
                insert_rows(connection, log_entries, rows)
                insert_rows(
                    connection,
                    tree_nodes,
                    [
                        {"node_key": node_key(node), "hash": digest}
                        for node, digest in nodes.items()
                    ],
                )
                head = self._insert_checkpoint(connection, tree, now)
                known.update(nodes)
        return _Written(head, sequenced, duplicates, known, projector.keys)

    def _fill_receipts(
        self,
        items: Sequence[PendingEntry],
        written: _Written,
        outcomes: list[Outcome | None],
    ) -> None:
        """(7): the committed batch's receipts, and the first receipts of its duplicates."""
        if written.sequenced:
            # Every proof of the batch is at the same tree size, and its nodes are in memory
            # (see _Written): no connection, one lookup a node.
            plans = [
                inclusion(entry.leaf_index, written.head.tree_size) for entry in written.sequenced
            ]
            known = written.known
            missing = list({node for plan in plans for node in plan.ids if node not in known})
            if missing:  # not expected (see _Written); the stored nodes answer then
                with self._engine.connect() as connection:
                    known = {
                        **known,
                        **dict(zip(missing, read_nodes(connection, missing), strict=True)),
                    }
            for entry, plan in zip(written.sequenced, plans, strict=True):
                proof = plan.rehash([known[node] for node in plan.ids])
                outcomes[entry.position] = _new_receipt(
                    items[entry.position], entry, written.head, proof
                )
        if written.duplicates:
            with self._engine.connect() as connection:
                for duplicate in written.duplicates:
                    outcomes[duplicate.position] = _duplicate_receipt(
                        connection, items[duplicate.position]
                    )

    def _write_transaction(self) -> _WriteTransaction:
        return _WriteTransaction(self._engine)

    def _insert_checkpoint(
        self, connection: Connection, tree: CompactRange, now: dt.datetime
    ) -> StoredCheckpoint:
        root = tree.root()
        note = sign_checkpoint(Checkpoint(self._origin, tree.size, root), self._signer)
        # One prepared INSERT (ledger.storage.rows): `insert().values(...)` is a new statement
        # that SQLAlchemy keys and compiles again every batch.
        insert_rows(
            connection,
            checkpoints,
            [
                {
                    "tree_size": tree.size,
                    "root_hash": root,
                    "note_bytes": note,
                    "created_at_us": to_micros(now),
                }
            ],
        )
        return StoredCheckpoint(tree_size=tree.size, root_hash=root, note_bytes=note)


class _WriteTransaction:
    """A transaction holding the ledger's write lock; it rolls back unless it ends cleanly.

    A failure during COMMIT raises COMMIT_OUTCOME_UNKNOWN: the database may have made the batch
    durable before it failed (with ``storage_corrupt=true`` when the failure was a confirmed
    corruption). ``committed`` says whether COMMIT returned.
    """

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self.committed = False

    def __enter__(self) -> Connection:
        self._connection = self._engine.connect().execution_options(**{WRITE_LOCK_OPTION: True})
        try:
            self._transaction = self._connection.begin()
            if not is_sqlite(self._connection):
                self._connection.execute(
                    text("SELECT pg_advisory_xact_lock(:key)"), {"key": _POSTGRES_WRITE_LOCK}
                )
        except BaseException:
            # __exit__ will not run: give the connection back here (rolling back what began),
            # or it would stay checked out, and on SQLite hold the write gate, until collected.
            self._connection.close()
            raise
        return self._connection

    def __exit__(self, kind: object, value: object, traceback: object) -> None:
        try:
            if kind is None:
                try:
                    self._transaction.commit()
                except Exception as error:
                    # The connection's state is unknown too (SQLite may still be inside the
                    # transaction): discard it rather than hand it to the next batch.
                    self._connection.invalidate()
                    # A corruption the watch confirmed here (ledger.storage.integrity) is
                    # still an unknown outcome: the answer says both.
                    raise commit_outcome_unknown(error) from error
                self.committed = True
            else:
                self._transaction.rollback()
        finally:
            self._connection.close()


def read_head(
    connection: Connection, expected_size: int = 0
) -> tuple[StoredCheckpoint, CompactRange]:
    """(1), (2): the latest checkpoint, checked against the entry count and the stored right
    edge of its tree. The edge of a tree of ``expected_size`` (the size this appender last
    committed) is read with the checkpoint, in one statement; should the log have another size
    (another appender appended), the rest of its edge is read next.

    Public for code that reads or extends the tree outside an :class:`Appender` (bench/bulk.py's
    loader, tests that damage or forge a log): the same checks, raised the same way
    (:class:`ledger.errors.InvariantViolation`) when the entries, the nodes and the signed root
    disagree."""
    head, stored, nodes = latest_checkpoint_entry_count_and_nodes(
        connection, right_edge_ids(expected_size)
    )
    check(
        stored == head.tree_size,
        f"entries and checkpoint disagree: {stored} entries, checkpoint of size {head.tree_size}",
    )
    edge = right_edge_ids(head.tree_size)
    tree = CompactRange(head.tree_size, read_nodes(connection, edge, nodes))
    check(tree.root() == head.root_hash, "stored tree nodes do not give the signed root")
    return head, tree


def _edge_nodes(tree: CompactRange) -> dict[NodeID, bytes]:
    """The right-edge nodes of ``tree`` (as :func:`read_head` read and checked them), by id."""
    return dict(zip(right_edge_ids(tree.size), tree.hashes, strict=True))


def _check_operator_key(connection: Connection, operator_key: bytes) -> None:
    """Refuse to serve a log whose registered operator keys do not include ``operator_key``."""
    key_id = insurer_key_id(operator_key)
    key = keys_by_id(connection, [key_id]).get(key_id)
    if key is None or key.role != SignerRole.OPERATOR or key.revoked_at is not None:
        state = "is not registered" if key is None else "is not a usable operator key"
        raise FailedPrecondition(
            f"the operator key {key_id} given at start {state} in this log, which already has "
            "its genesis entry: pass one of the log's operator keys (see `policy-ledger admin "
            "insurer list`), or none",
            reason="OPERATOR_KEY_MISMATCH",
            metadata={"key_id": key_id},
        )


def _stored_events(
    connection: Connection, items: Sequence[PendingEntry]
) -> dict[tuple[str, str], tuple[int, bytes]]:
    """(leaf index, payload digest) of each of the items' (insurer, event id) already stored."""
    wanted: dict[str, set[str]] = {}
    for item in items:
        wanted.setdefault(item.insurer_id, set()).add(item.event_id)
    stored: dict[tuple[str, str], tuple[int, bytes]] = {}
    for insurer_id, event_ids in sorted(wanted.items()):
        ids = sorted(event_ids)
        for start in range(0, len(ids), 500):
            rows = connection.execute(
                _SELECT_STORED_EVENTS,
                {"insurer_id": insurer_id, "event_ids": ids[start : start + 500]},
            )
            for row in rows:
                stored[(row.insurer_id, row.event_id)] = (
                    int(row.leaf_index),
                    bytes(row.payload_sha256),
                )
    return stored


def _find_duplicates(
    connection: Connection, items: Sequence[PendingEntry], outcomes: list[Outcome | None]
) -> list[_Duplicate]:
    """Resolve resubmitted event ids; the first new occurrence in the batch stays pending."""
    stored = _stored_events(connection, items)
    duplicates: list[_Duplicate] = []
    first_in_batch: dict[tuple[str, str], int] = {}
    for position, item in enumerate(items):
        if outcomes[position] is not None:
            continue
        key = (item.insurer_id, item.event_id)
        if key in stored:
            leaf_index, digest = stored[key]
            if digest == item.payload_sha256:
                duplicates.append(_Duplicate(position))
            else:
                outcomes[position] = _conflict(item, _stored_payload(connection, leaf_index))
        elif key in first_in_batch:
            earlier = items[first_in_batch[key]]
            if earlier.payload_sha256 != item.payload_sha256:
                outcomes[position] = _conflict(item, earlier.envelope.payload)
            else:
                # Its receipt is the earlier item's, looked up once the batch is committed.
                duplicates.append(_Duplicate(position))
        else:
            first_in_batch[key] = position
    return duplicates


def _stored_payload(connection: Connection, leaf_index: int) -> bytes:
    data = connection.execute(
        select(log_entries.c.entry_bytes).where(log_entries.c.leaf_index == leaf_index)
    ).scalar_one()
    return decode_entry(bytes(data)).envelope.payload


def _conflict(item: PendingEntry, first_payload: bytes) -> AlreadyExists:
    field = first_difference(decode_event(first_payload), decode_event(item.envelope.payload))
    named = field or "envelope.payload"
    description = (
        "differs from the first submission" if field else ("same fields, different encoding")
    )
    return AlreadyExists(
        f"event {item.event_id!r} was already submitted with different content: {named} differs",
        reason="EVENT_ID_REUSED",
        field_violations=[FieldViolation(named, description)],
        metadata={"event_id": item.event_id, "insurer_id": item.insurer_id},
    )


class _HookedEntryRefused(Exception):
    """An entry with an append hook was refused in a batch run without savepoints: what its
    hook wrote is in the transaction, which must be rolled back (see ``append_batch``)."""


def _sequence(  # noqa: PLR0917 (one private step of append_batch)
    projector: Projector,
    items: Sequence[PendingEntry],
    events: Sequence[events_pb2.Event],
    outcomes: list[Outcome | None],
    skipped: set[int],
    tree: CompactRange,
    now: dt.datetime,
    held: list[logging.LogRecord],
    *,
    savepoints: bool,
) -> tuple[list[_Sequenced], list[dict[str, object]], dict[NodeID, bytes]]:
    """Check each new item against the rules and give it the next leaf index; return
    receipts-to-be, entry rows and new nodes. Without ``savepoints``, a refused entry with an
    append hook raises :class:`_HookedEntryRefused` (the transaction must be rolled back).
    ``held``: the batch's log lines so far; a refused entry's are dropped (nothing it did
    stays in the transaction)."""
    sequenced: list[_Sequenced] = []
    rows: list[dict[str, object]] = []
    nodes: dict[NodeID, bytes] = {}
    for position, item in enumerate(items):
        if outcomes[position] is not None or position in skipped:
            continue
        leaf_index = tree.size
        signed = SignedBy(item.key_id, now)
        lines = len(held)
        try:
            if item.on_append is None:
                projector.apply(events[position], leaf_index, signed)
            elif not savepoints:
                item.on_append(projector.connection, leaf_index)
                projector.apply(events[position], leaf_index, signed)
            else:
                with projector.connection.begin_nested():
                    item.on_append(projector.connection, leaf_index)
                    projector.apply(events[position], leaf_index, signed)
        except LedgerError as error:
            if item.on_append is not None and not savepoints:
                raise _HookedEntryRefused from error
            del held[lines:]
            outcomes[position] = error
            continue
        data = encode_entry(leaf_index, now, item.envelope)
        digest = leaf_hash(data)
        nodes.update(tree.append(digest))
        sequenced.append(_Sequenced(position, leaf_index, digest, data))
        rows.append(
            {
                "leaf_index": leaf_index,
                "insurer_id": item.insurer_id,
                "event_id": item.event_id,
                "leaf_hash": digest,
                "payload_sha256": item.payload_sha256,
                "entry_bytes": data,
            }
        )
    return sequenced, rows, nodes


def _receipt(
    connection: Connection,
    item: PendingEntry,
    entry: _Sequenced,
    head: StoredCheckpoint,
    *,
    duplicate: bool,
    known: dict[NodeID, bytes] | None = None,
) -> Receipt:
    plan = inclusion(entry.leaf_index, head.tree_size)
    proof = plan.rehash(read_nodes(connection, plan.ids, known))
    return _new_receipt(item, entry, head, proof, duplicate=duplicate)


def _new_receipt(
    item: PendingEntry,
    entry: _Sequenced,
    head: StoredCheckpoint,
    proof: list[bytes],
    *,
    duplicate: bool = False,
) -> Receipt:
    return Receipt(
        event_id=item.event_id,
        leaf_index=entry.leaf_index,
        leaf_hash=entry.leaf_hash,
        entry=entry.entry,
        checkpoint=head.note_bytes,
        tree_size=head.tree_size,
        inclusion_proof=tuple(proof),
        duplicate=duplicate,
    )


def _duplicate_receipt(connection: Connection, item: PendingEntry) -> Receipt:
    """The first receipt of an event again: its batch's checkpoint and the proof at that size."""
    row = connection.execute(
        select(log_entries.c.leaf_index, log_entries.c.leaf_hash, log_entries.c.entry_bytes).where(
            log_entries.c.insurer_id == item.insurer_id, log_entries.c.event_id == item.event_id
        )
    ).one()
    leaf_index = int(row.leaf_index)
    entry = _Sequenced(-1, leaf_index, bytes(row.leaf_hash), bytes(row.entry_bytes))
    return _receipt(
        connection, item, entry, checkpoint_covering(connection, leaf_index), duplicate=True
    )
