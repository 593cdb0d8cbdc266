"""How a Merkle node id is stored: one integer key, so a proof's nodes are one indexed IN query.

``node_key = level << 56 | index``. Levels are at most 56 and indexes below 2**56, which bounds the
tree at 2**56 leaves (far beyond any ledger) and keeps every key a positive signed 64-bit integer
on both SQLite and PostgreSQL. (SQLite scans the whole table for a row-value ``(level, index) IN``,
which is why the pair is not the key.)
"""

from __future__ import annotations

from ledger.errors import check
from ledger.merkle import NodeID

__all__ = ["INDEX_BITS", "node_id", "node_key"]

INDEX_BITS = 56


def node_key(node: NodeID) -> int:
    """The stored key of ``node``. Requires 0 <= level <= 56 and 0 <= index < 2**56."""
    check(0 <= node.level <= INDEX_BITS, f"node level out of range: {node.level}")
    check(0 <= node.index < 1 << INDEX_BITS, f"node index out of range: {node.index}")
    return node.level << INDEX_BITS | node.index


def node_id(key: int) -> NodeID:
    """The node id of a stored key (inverse of :func:`node_key`)."""
    return NodeID(key >> INDEX_BITS, key & ((1 << INDEX_BITS) - 1))
