"""An in-memory tree storing every complete node, built exactly like the database-backed one."""

from __future__ import annotations

from collections.abc import Sequence

from ledger.errors import NotFound, OutOfRange, check
from ledger.merkle.compact import CompactRange
from ledger.merkle.hasher import leaf_hash
from ledger.merkle.nodes import NodeID, right_edge_ids
from ledger.merkle.proof import ProofPlan, consistency, inclusion

__all__ = ["MemoryTree"]


class MemoryTree:
    """A Merkle tree in a dict of complete nodes (tests, benchmarks, offline tools)."""

    def __init__(self) -> None:
        self._range = CompactRange.empty()
        self._nodes: dict[NodeID, bytes] = {}

    @property
    def size(self) -> int:
        """Leaves in the tree."""
        return self._range.size

    def append(self, data: bytes) -> int:
        """Append a leaf of ``data``; return its index."""
        return self.append_leaf_hash(leaf_hash(data))

    def append_leaf_hash(self, digest: bytes) -> int:
        """Append a leaf by its hash; return its index."""
        index = self._range.size
        for node, node_digest in self._range.append(digest):
            # Nodes are written once and never changed, as in the database's node table.
            check(node not in self._nodes, f"node {node} is already stored")
            self._nodes[node] = node_digest
        return index

    def get_nodes(self, ids: Sequence[NodeID]) -> list[bytes]:
        """The hashes of stored (complete) nodes, in the order of ``ids``."""
        missing = [node for node in ids if node not in self._nodes]
        if missing:
            raise NotFound(f"{len(missing)} nodes are not stored, first {missing[0]}")
        return [self._nodes[node] for node in ids]

    def get_leaf_hash(self, index: int) -> bytes:
        """The hash of leaf ``index``. Requires 0 <= index < size."""
        return self.get_nodes([NodeID(0, index)])[0]

    def root(self, size: int | None = None) -> bytes:
        """The root at ``size`` (default: now), from O(log n) stored nodes.

        Requires 0 <= size <= self.size.
        """
        size = self.size if size is None else size
        if not 0 <= size <= self.size:
            raise OutOfRange(f"size is outside the tree: {size} not in 0..{self.size}")
        return CompactRange(size, self.get_nodes(right_edge_ids(size))).root()

    def inclusion_proof(self, index: int, size: int) -> list[bytes]:
        """Inclusion proof of ``index`` at ``size``. Requires 0 <= index < size <= self.size."""
        return self._prove(inclusion(index, size), size)

    def consistency_proof(self, size1: int, size2: int) -> list[bytes]:
        """Consistency proof from ``size1`` to ``size2``.

        Requires 0 <= size1 <= size2 <= self.size.
        """
        return self._prove(consistency(size1, size2), size2)

    def _prove(self, plan: ProofPlan, size: int) -> list[bytes]:
        if size > self.size:
            raise OutOfRange(f"size is beyond the tree: {size} > {self.size}")
        return plan.rehash(self.get_nodes(plan.ids))
