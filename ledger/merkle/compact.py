"""The compact range of a tree: its right edge, enough to append leaves and compute the root."""

from __future__ import annotations

from collections.abc import Sequence

from ledger.errors import InvalidArgument
from ledger.merkle.hasher import EMPTY_ROOT, HASH_SIZE, node_hash
from ledger.merkle.nodes import NodeID, right_edge_ids

__all__ = ["CompactRange"]


class CompactRange:
    """The right edge of a tree of ``size`` leaves: one hash per set bit of ``size``.

    Appending a leaf returns every node it completes, so the caller can store each complete node
    exactly once; appending n leaves costs O(n) hashing in total.
    """

    def __init__(self, size: int, hashes: Sequence[bytes]) -> None:
        """Requires ``hashes`` to be the hashes of ``right_edge_ids(size)``, in that order."""
        if size < 0:
            raise InvalidArgument(f"tree size is negative: {size}")
        expected = len(right_edge_ids(size))
        if len(hashes) != expected:
            raise InvalidArgument(
                f"a tree of size {size} has {expected} right-edge hashes, got {len(hashes)}"
            )
        for position, digest in enumerate(hashes):
            if len(digest) != HASH_SIZE:
                raise InvalidArgument(
                    f"right-edge hash {position} has {len(digest)} bytes, want {HASH_SIZE}"
                )
        self._size = size
        self._hashes = list(hashes)

    @classmethod
    def empty(cls) -> CompactRange:
        """The compact range of the empty tree."""
        return cls(0, [])

    @property
    def size(self) -> int:
        """Leaves in the tree."""
        return self._size

    @property
    def hashes(self) -> list[bytes]:
        """A copy of the right-edge hashes, largest subtree first."""
        return list(self._hashes)

    def append(self, leaf_hash: bytes) -> list[tuple[NodeID, bytes]]:
        """Append one leaf; return the nodes it completes (the leaf first), bottom up."""
        if len(leaf_hash) != HASH_SIZE:
            raise InvalidArgument(f"leaf hash has {len(leaf_hash)} bytes, want {HASH_SIZE}")
        node, digest = NodeID(0, self._size), leaf_hash
        created = [(node, digest)]
        # While the new node is a right child, its left sibling is the last right-edge hash:
        # merge them, exactly like carrying in a binary counter.
        while node.index & 1:
            digest = node_hash(self._hashes.pop(), digest)
            node = node.parent()
            created.append((node, digest))
        self._hashes.append(digest)
        self._size += 1
        return created

    def root(self) -> bytes:
        """The RFC 6962 root of the tree (EMPTY_ROOT for size 0)."""
        if not self._hashes:
            return EMPTY_ROOT
        root = self._hashes[-1]
        for digest in reversed(self._hashes[:-1]):
            root = node_hash(digest, root)
        return root
