"""The verifiable log in the database: checkpoints, entries and proofs built from stored nodes.

Reads only. Every proof is planned by :mod:`ledger.merkle.proof` and then read in one indexed
query from ``tree_nodes`` (O(log n) rows), never by rehashing the tree; the nodes near the root
come from a per-database :class:`~ledger.storage.node_cache.NodeCache` instead. Appends are the
sequencer's job (:mod:`ledger.storage.append`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from contextlib import closing
from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    ARRAY,
    BigInteger,
    Connection,
    Engine,
    any_,
    bindparam,
    func,
    literal_column,
    null,
    select,
    union_all,
)

from ledger import limits
from ledger.errors import FieldViolation, InvalidArgument, NotFound, OutOfRange, check
from ledger.merkle import NodeID, ProofPlan, consistency, inclusion
from ledger.storage.cosignature_store import CosignatureStore
from ledger.storage.node_cache import NodeCache
from ledger.storage.nodes import INDEX_BITS, node_id, node_key
from ledger.storage.tables import checkpoints, log_entries, tree_nodes

__all__ = ["LogStore", "StoredCheckpoint", "read_nodes"]


@dataclass(frozen=True)
class StoredCheckpoint:
    """A signed checkpoint as stored: ``note_bytes`` is the C2SP note exactly as signed."""

    tree_size: int
    root_hash: bytes
    note_bytes: bytes


_SELECT_NODES = select(tree_nodes.c.node_key, tree_nodes.c.hash).where(
    tree_nodes.c.node_key.in_(bindparam("keys", expanding=True))
)


def read_nodes(
    connection: Connection, ids: Sequence[NodeID], known: Mapping[NodeID, bytes] | None = None
) -> list[bytes]:
    """The hashes of ``ids`` (in order), from ``known`` first, then one query for the rest.

    Every id must be stored: a missing node means the tree and the database disagree (a bug or
    tampering), so it raises InvariantViolation rather than returning a partial proof.
    """
    found: dict[NodeID, bytes] = {}
    missing: list[int] = []
    for node in ids:
        if known is not None and node in known:
            found[node] = known[node]
        else:
            missing.append(node_key(node))
    if missing:
        rows = connection.execute(_SELECT_NODES, {"keys": sorted(set(missing))})
        found.update((node_id(row.node_key), bytes(row.hash)) for row in rows)
    absent = [node for node in ids if node not in found]
    check(not absent, f"tree nodes missing from storage: {absent[:4]}")
    return [found[node] for node in ids]


def _checkpoint_from_row(row: object) -> StoredCheckpoint:
    return StoredCheckpoint(
        tree_size=int(row.tree_size),  # type: ignore[attr-defined]
        root_hash=bytes(row.root_hash),  # type: ignore[attr-defined]
        note_bytes=bytes(row.note_bytes),  # type: ignore[attr-defined]
    )


_ENTRY_AT = select(log_entries.c.entry_bytes).where(
    log_entries.c.leaf_index == bindparam("leaf_index")
)
"""One entry's bytes (built once: its cache key generated once)."""


class LogStore:
    """Read access to the log: safe from many threads and many replicas at once."""

    def __init__(self, engine: Engine, node_cache: NodeCache | None = None) -> None:
        """Read ``engine``'s log; proofs share ``node_cache`` (default: the engine's own)."""
        self._engine = engine
        self._node_cache = NodeCache.of(engine) if node_cache is None else node_cache

    def latest_checkpoint(self) -> StoredCheckpoint:
        """The newest checkpoint; NOT_FOUND before the log was initialized."""
        with self._engine.connect() as connection:
            return latest_checkpoint(connection)

    def served_note(self, checkpoint: StoredCheckpoint) -> bytes:
        """The checkpoint as served: the signed note verbatim, then the witness cosignature
        lines stored for it (C2SP verifiers ignore lines of keys they do not trust)."""
        return checkpoint.note_bytes + CosignatureStore(self._engine).lines_at(checkpoint.tree_size)

    def checkpoint_at(self, tree_size: int) -> StoredCheckpoint | None:
        """The checkpoint made at exactly ``tree_size``, if one was."""
        with self._engine.connect() as connection:
            row = connection.execute(
                select(checkpoints).where(checkpoints.c.tree_size == tree_size)
            ).first()
        return None if row is None else _checkpoint_from_row(row)

    def checkpoint_covering(self, leaf_index: int) -> StoredCheckpoint:
        """The first checkpoint whose tree contains ``leaf_index`` (the one of its batch)."""
        with self._engine.connect() as connection:
            return checkpoint_covering(connection, leaf_index)

    def entries(self, start_index: int, end_index: int) -> tuple[int, list[bytes]]:
        """Entry bytes of ``[start_index, end_index)`` clipped to the log and the page limit.

        Returns ``(start_index, entries)``. Requires start_index < the latest tree size.
        """
        start, data, _ = self.entries_at_size(start_index, end_index)
        return start, data

    def entries_at_size(self, start_index: int, end_index: int) -> tuple[int, list[bytes], int]:
        """As :meth:`entries`, with the tree size the range was clipped to (the newest
        checkpoint's size when read): ``(start_index, entries, tree_size)``."""
        with self._engine.connect() as connection:
            tree_size = latest_checkpoint(connection).tree_size
            if start_index >= tree_size:
                raise OutOfRange(
                    f"start_index is beyond the tree size: {start_index} >= {tree_size}",
                    reason="INDEX_BEYOND_SIZE",
                    field_violations=[FieldViolation("start_index", "beyond the tree size")],
                )
            if end_index <= start_index:
                raise InvalidArgument(
                    f"end_index must be after start_index: {end_index} <= {start_index}",
                    reason="RANGE_EMPTY",
                    field_violations=[FieldViolation("end_index", "not after start_index")],
                )
            end = min(end_index, tree_size, start_index + limits.entries_page_max)
            rows = connection.execute(
                select(log_entries.c.entry_bytes)
                .where(log_entries.c.leaf_index >= start_index, log_entries.c.leaf_index < end)
                .order_by(log_entries.c.leaf_index)
            )
            data = [bytes(row.entry_bytes) for row in rows]
        check(len(data) == end - start_index, "log_entries has a gap below the tree size")
        return start_index, data, tree_size

    def leaf_index_of(self, leaf_hash: bytes) -> int:
        """The index of the leaf with ``leaf_hash``; NOT_FOUND when there is none."""
        with self._engine.connect() as connection:
            index = connection.execute(
                select(log_entries.c.leaf_index).where(log_entries.c.leaf_hash == leaf_hash)
            ).scalar()
        if index is None:
            raise NotFound("no leaf with that hash", reason="LEAF_UNKNOWN")
        return int(index)

    def inclusion_proof(self, leaf_index: int, tree_size: int) -> tuple[int, list[bytes]]:
        """Inclusion proof of ``leaf_index`` in the tree of ``tree_size`` (0: latest checkpoint).

        Returns ``(tree_size, proof)``. Requires leaf_index < tree_size <= latest tree size.
        """
        with (
            self._engine.connect() as connection,
            closing(connection.connection.cursor()) as cursor,
        ):
            tree_size = _resolve_size(_latest_size(cursor), tree_size, "tree_size")
            if leaf_index >= tree_size:
                raise OutOfRange(
                    f"leaf_index is beyond tree_size: {leaf_index} >= {tree_size}",
                    reason="INDEX_BEYOND_SIZE",
                    field_violations=[FieldViolation("leaf_index", "beyond tree_size")],
                )
            plan = inclusion(leaf_index, tree_size)
            return tree_size, self._prove(connection, cursor, plan, tree_size)

    def entry_with_proof(self, leaf_index: int) -> tuple[StoredCheckpoint, bytes, list[bytes]]:
        """The newest checkpoint, the entry at ``leaf_index`` and its inclusion proof in that
        checkpoint's tree: what :meth:`latest_checkpoint`, :meth:`entries` and
        :meth:`inclusion_proof` would answer, read on one connection (a receipt's parts: one
        checkout and one head read instead of three of each). NOT_FOUND before the log was
        initialized; OUT_OF_RANGE when the leaf is beyond the newest checkpoint."""
        with (
            self._engine.connect() as connection,
            closing(connection.connection.cursor()) as cursor,
        ):
            head = latest_checkpoint(connection)
            if not 0 <= leaf_index < head.tree_size:
                raise OutOfRange(
                    f"leaf_index is beyond the tree size: {leaf_index} >= {head.tree_size}",
                    reason="INDEX_BEYOND_SIZE",
                    field_violations=[FieldViolation("leaf_index", "beyond the tree size")],
                )
            entry = connection.execute(_ENTRY_AT, {"leaf_index": leaf_index}).scalar_one()
            plan = inclusion(leaf_index, head.tree_size)
            proof = self._prove(connection, cursor, plan, head.tree_size)
        return head, bytes(entry), proof

    def consistency_proof(self, from_size: int, to_size: int) -> tuple[int, list[bytes]]:
        """Consistency proof from ``from_size`` to ``to_size`` (0: latest checkpoint).

        Returns ``(to_size, proof)``. Requires 1 <= from_size <= to_size <= latest tree size.
        """
        with (
            self._engine.connect() as connection,
            closing(connection.connection.cursor()) as cursor,
        ):
            to_size = _resolve_size(_latest_size(cursor), to_size, "to_tree_size")
            if not 1 <= from_size <= to_size:
                raise OutOfRange(
                    f"from_tree_size must be in 1..{to_size}, got {from_size}",
                    reason="SIZE_OUT_OF_RANGE",
                    field_violations=[FieldViolation("from_tree_size", f"not in 1..{to_size}")],
                )
            plan = consistency(from_size, to_size)
            return to_size, self._prove(connection, cursor, plan, to_size)

    def _prove(
        self, connection: Connection, cursor: Any, plan: ProofPlan, size: int
    ) -> list[bytes]:
        """The proof of ``plan`` at ``size``: kept hashes from the cache, the rest in one query
        on the DB-API cursor (the SQL layer's per-row work was most of a proof's CPU time)."""
        # Every node of a plan at size <= 2**56 has level <= 56 and index < 2**56, so its key
        # is level << 56 | index without node_key()'s per-node checks.
        check(size <= 1 << INDEX_BITS, f"tree size is beyond 2**{INDEX_BITS}: {size}")
        keys = [node.level << INDEX_BITS | node.index for node in plan.ids]
        found, missing = self._node_cache.split(keys)
        if missing:
            rows = _select_hashes(connection, cursor, missing)
            found.update(rows)
            self._node_cache.keep(size, rows)
        absent = [node_id(key) for key in keys if key not in found]
        check(not absent, f"tree nodes missing from storage: {absent[:4]}")
        return plan.rehash([found[key] for key in keys])

    def tree_size(self) -> int:
        """Number of entries stored (equals the latest checkpoint's size between batches)."""
        with self._engine.connect() as connection:
            return entry_count(connection)


def entry_count(connection: Connection) -> int:
    """Entries stored: max(leaf_index) + 1, read from the primary key."""
    highest = connection.execute(select(func.max(log_entries.c.leaf_index))).scalar()
    return 0 if highest is None else int(highest) + 1


_SELECT_LATEST_CHECKPOINT = select(checkpoints).order_by(checkpoints.c.tree_size.desc()).limit(1)


def latest_checkpoint(connection: Connection) -> StoredCheckpoint:
    """The newest checkpoint on ``connection``; NOT_FOUND before initialization."""
    row = connection.execute(_SELECT_LATEST_CHECKPOINT).first()
    if row is None:
        raise NotFound("the log has no checkpoint yet", reason="LOG_NOT_INITIALIZED")
    return _checkpoint_from_row(row)


_HEAD = select(
    literal_column("0").label("part"),
    checkpoints.c.tree_size.label("number"),
    checkpoints.c.root_hash.label("digest"),
    checkpoints.c.note_bytes.label("note"),
    select(func.max(log_entries.c.leaf_index)).scalar_subquery().label("highest"),
).where(checkpoints.c.tree_size == select(func.max(checkpoints.c.tree_size)).scalar_subquery())
_NODES = select(literal_column("1"), tree_nodes.c.node_key, tree_nodes.c.hash, null(), null())
_SELECT_HEAD_AND_NODES = union_all(
    _HEAD, _NODES.where(tree_nodes.c.node_key.in_(bindparam("keys", expanding=True)))
)
"""The newest checkpoint and the highest leaf index stored in the row of part 0, and the wanted
nodes in rows of part 1 (one statement: the sequencer reads them at the start of every batch)."""
_SELECT_HEAD_AND_NODES_POSTGRES = union_all(
    _HEAD, _NODES.where(tree_nodes.c.node_key == any_(bindparam("keys", type_=ARRAY(BigInteger))))
)
"""The same on PostgreSQL, the keys bound as one array: an expanding IN is a new text for each
number of keys (the right edge's length changes with the tree size), so psycopg prepares each
length apart, on each connection, after five uses; one text is prepared once a connection."""


def latest_checkpoint_entry_count_and_nodes(
    connection: Connection, ids: Sequence[NodeID]
) -> tuple[StoredCheckpoint, int, dict[NodeID, bytes]]:
    """The newest checkpoint, the number of entries stored, and the stored nodes among
    ``ids``, in one statement: the sequencer reads the right edge of the tree it expects to
    find with its head (a node absent from the answer is not stored); NOT_FOUND before
    initialization."""
    head: Any = None
    nodes: dict[NodeID, bytes] = {}
    statement = (
        _SELECT_HEAD_AND_NODES
        if connection.dialect.name == "sqlite"
        else _SELECT_HEAD_AND_NODES_POSTGRES
    )
    rows = connection.execute(statement, {"keys": sorted({node_key(i) for i in ids})})
    for row in rows:
        if row.part == 0:
            head = row
        else:
            nodes[node_id(row.number)] = bytes(row.digest)
    if head is None:
        raise NotFound("the log has no checkpoint yet", reason="LOG_NOT_INITIALIZED")
    checkpoint = StoredCheckpoint(int(head.number), bytes(head.digest), bytes(head.note))
    return checkpoint, 0 if head.highest is None else int(head.highest) + 1, nodes


def checkpoint_covering(connection: Connection, leaf_index: int) -> StoredCheckpoint:
    """The smallest checkpoint whose tree contains ``leaf_index``."""
    row = connection.execute(
        select(checkpoints)
        .where(checkpoints.c.tree_size > leaf_index)
        .order_by(checkpoints.c.tree_size)
        .limit(1)
    ).first()
    check(row is not None, f"no checkpoint covers leaf {leaf_index}")
    return _checkpoint_from_row(row)


_SELECT_LATEST_SIZE = "SELECT tree_size FROM checkpoints ORDER BY tree_size DESC LIMIT 1"


def _latest_size(cursor: Any) -> int:
    """The newest checkpoint's tree size; NOT_FOUND before initialization."""
    cursor.execute(_SELECT_LATEST_SIZE)
    row = cursor.fetchone()
    if row is None:
        raise NotFound("the log has no checkpoint yet", reason="LOG_NOT_INITIALIZED")
    return int(row[0])


# Proof reads need no common snapshot: the nodes of a tree no larger than a committed checkpoint
# were committed with (or before) it and never change, so the two statements of a proof run on
# the DB-API cursor outside a transaction (SQLite) or in the driver's implicit one (PostgreSQL,
# rolled back when the pool takes the connection back).


def _select_hashes(connection: Connection, cursor: Any, keys: list[int]) -> list[tuple[int, bytes]]:
    """``(node_key, hash)`` of the stored nodes among ``keys``: one query on the primary key."""
    marker = "?" if connection.dialect.paramstyle == "qmark" else "%s"
    markers = ", ".join([marker] * len(keys))
    cursor.execute(f"SELECT node_key, hash FROM tree_nodes WHERE node_key IN ({markers})", keys)
    return [(int(key), bytes(digest)) for key, digest in cursor.fetchall()]


def _resolve_size(latest: int, tree_size: int, field: str) -> int:
    if tree_size == 0:
        if latest == 0:
            raise OutOfRange("the log is empty", reason="LOG_EMPTY")
        return latest
    if tree_size > latest:
        raise OutOfRange(
            f"{field} is beyond the latest checkpoint: {tree_size} > {latest}",
            reason="SIZE_BEYOND_CHECKPOINT",
            field_violations=[FieldViolation(field, "beyond the latest checkpoint")],
        )
    return tree_size
