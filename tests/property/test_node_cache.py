"""Proofs read through the node cache are the proofs read without it (issue 13 item 9).

One database per engine grows across the examples (the log is append-only, so it only grows):
each example appends a random number of leaves, then asks for proofs at random sizes up to the
new one, from stores whose caches were filled at the earlier, smaller trees. Every proof must
equal the uncached store's, the in-memory tree's, and verify against the root. Also: the cache's
bound, one cache per engine, and a storage fault in a proof read (on the DB-API cursor).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable

import psycopg
import pytest
from google.rpc import code_pb2, error_details_pb2
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine, insert

from ledger.merkle import (
    CompactRange,
    MemoryTree,
    NodeID,
    leaf_hash,
    verify_consistency,
    verify_inclusion,
)
from ledger.rpc.status import status_of
from ledger.storage import log_store
from ledger.storage.log_store import LogStore
from ledger.storage.node_cache import NodeCache
from ledger.storage.nodes import node_key
from ledger.storage.tables import checkpoints, tree_nodes


def node_key_of(level: int, index: int) -> int:
    return node_key(NodeID(level, index))


class GrowingTree:
    """A tree stored in ``tree_nodes`` (with a checkpoint per growth) and its in-memory twin."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.memory = MemoryTree()
        self.compact = CompactRange.empty()

    def grow(self, leaves: int) -> None:
        """Append ``leaves`` leaves and commit them with a checkpoint at the new size."""
        if leaves == 0:
            return
        nodes: list[dict[str, object]] = []
        for _ in range(leaves):
            digest = leaf_hash(self.compact.size.to_bytes(8, "big"))
            self.memory.append_leaf_hash(digest)
            nodes.extend(
                {"node_key": node_key(node), "hash": value}
                for node, value in self.compact.append(digest)
            )
        with self.engine.begin() as connection:
            connection.execute(insert(tree_nodes), nodes)
            connection.execute(
                insert(checkpoints).values(
                    tree_size=self.compact.size,
                    root_hash=self.compact.root(),
                    note_bytes=b"not signed: only the size is read",
                    created_at_us=self.compact.size,
                )
            )


@pytest.fixture
def tree(engine: Engine) -> GrowingTree:
    tree = GrowingTree(engine)
    tree.grow(1)
    return tree


class Uncached(NodeCache):
    """A cache that keeps nothing: every proof reads all its nodes from the database."""

    def keep(self, tree_size: int, nodes: Iterable[tuple[int, bytes]]) -> None:
        del tree_size, nodes


@pytest.fixture
def stores(engine: Engine) -> list[LogStore]:
    """Stores with caches of every shape: the engine's own (the default limits), one that keeps
    few levels, one so small it trims on nearly every proof, one that keeps only right edges,
    and one that keeps nothing."""
    return [
        LogStore(engine),
        LogStore(engine, NodeCache(levels=3, entries_max=64)),
        LogStore(engine, NodeCache(levels=20, entries_max=5)),
        LogStore(engine, NodeCache(levels=0)),
        LogStore(engine, Uncached()),
    ]


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data())
def test_cached_proofs_equal_uncached_proofs_as_the_tree_grows(
    tree: GrowingTree, stores: list[LogStore], data: st.DataObject
) -> None:
    tree.grow(data.draw(st.sampled_from([0, 1, 2, 7, 31, 64, 200]), label="leaves appended"))
    latest = tree.compact.size
    # Draws are fixed-range numbers taken modulo the current size: the tree outlives the
    # examples, and hypothesis wants each example's draws not to depend on it.
    for _ in range(8):
        size = 1 + data.draw(st.integers(0, 2**20), label="proof tree size") % latest
        if data.draw(st.booleans(), label="at the latest size"):
            size = latest
        index = data.draw(st.integers(0, 2**20), label="leaf index") % size
        older = 1 + data.draw(st.integers(0, 2**20), label="consistency from size") % size
        expected = tree.memory.inclusion_proof(index, size)
        verify_inclusion(
            index, size, tree.memory.get_leaf_hash(index), expected, tree.memory.root(size)
        )
        for store in stores:
            assert store.inclusion_proof(index, size) == (size, expected)
        expected = tree.memory.consistency_proof(older, size)
        if older < size:
            root1, root2 = tree.memory.root(older), tree.memory.root(size)
            verify_consistency(older, size, expected, root1, root2)
        for store in stores:
            assert store.consistency_proof(older, size) == (size, expected)
        latest_proof = tree.memory.inclusion_proof(index, latest)
        assert stores[0].inclusion_proof(index, 0) == (latest, latest_proof)
        for store in stores:
            assert len(store._node_cache) <= store._node_cache._entries_max


def test_the_cache_keeps_the_top_levels_and_the_right_edge_only_and_stays_bounded() -> None:
    cache = NodeCache(levels=3, entries_max=8)
    assert cache.lowest_level(100) == 4  # 100 has 7 bits: levels 4, 5 and 6 are kept
    cache.keep(100, [(node_key_of(level, 0), bytes([level]) * 32) for level in range(7)])
    assert len(cache) == 3
    assert cache.split([node_key_of(6, 0), node_key_of(3, 0), node_key_of(4, 0)]) == (
        {node_key_of(6, 0): b"\x06" * 32, node_key_of(4, 0): b"\x04" * 32},
        [node_key_of(3, 0)],
    )
    # 100 = 64 + 32 + 4: node (2, 24) covers leaves 96..99, the right edge at 100, not at 101.
    cache.keep(101, [(node_key_of(2, 24), b"\x02" * 32)])
    assert len(cache) == 3
    cache.keep(100, [(node_key_of(2, 24), b"\x02" * 32), (node_key_of(2, 23), b"\x02" * 32)])
    assert cache.split([node_key_of(2, 24), node_key_of(2, 23)])[1] == [node_key_of(2, 23)]
    cache.keep(100, [(node_key_of(4, index), b"\x04" * 32) for index in range(1, 20)])
    assert len(cache) <= 8
    assert NodeCache(levels=0).lowest_level(10**9) == 30  # above the root: no top levels


def test_each_engine_has_its_own_cache(engine: Engine) -> None:
    assert NodeCache.of(engine) is NodeCache.of(engine)
    assert LogStore(engine)._node_cache is NodeCache.of(engine)


def test_a_storage_fault_in_a_proof_read_answers_unavailable(
    tree: GrowingTree, engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The proof's statements run on the DB-API cursor, so a fault arrives as the driver's own
    error, not SQLAlchemy's: it must still answer UNAVAILABLE, and keep nothing in the cache."""
    tree.grow(40)
    store = LogStore(engine, NodeCache())

    def fail(*_: object) -> list[tuple[int, bytes]]:
        if engine.dialect.name == "sqlite":
            raise sqlite3.OperationalError("disk I/O error")
        raise psycopg.OperationalError("server closed the connection unexpectedly")

    monkeypatch.setattr(log_store, "_select_hashes", fail)
    with pytest.raises((sqlite3.OperationalError, psycopg.OperationalError)) as raised:
        store.inclusion_proof(5, 41)
    status = status_of(raised.value)
    info = error_details_pb2.ErrorInfo()
    assert status.code == code_pb2.UNAVAILABLE and status.details[0].Unpack(info)
    assert info.reason == "STORAGE_UNAVAILABLE"
    assert len(store._node_cache) == 0
    monkeypatch.undo()
    assert store.inclusion_proof(5, 41) == (41, tree.memory.inclusion_proof(5, 41))
