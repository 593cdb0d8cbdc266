"""Proof planning: which stored nodes an RFC 9162 proof needs, and how to assemble it.

A port of transparency-dev/merkle ``proof/proof.go``. Storage holds only complete subtrees, so a
proof that reaches the incomplete right edge of the tree needs an *ephemeral* node: the hash of
the incomplete subtree, folded from the complete subtrees that cover the same leaves. A
:class:`ProofPlan` lists every stored node to read (O(log n) of them) and :meth:`ProofPlan.rehash`
folds the ephemeral range into one hash, giving the proof exactly as RFC 9162 §2.1.3 and §2.1.4
define it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ledger.errors import InvalidArgument, OutOfRange, check
from ledger.merkle.hasher import HASH_SIZE, node_hash
from ledger.merkle.nodes import NodeID, range_nodes

__all__ = ["ProofPlan", "consistency", "inclusion"]


@dataclass(frozen=True)
class ProofPlan:
    """The stored nodes of a proof, leaf to root, and where the ephemeral range lies.

    ``ids[begin:end]`` cover the ephemeral node (empty when there is none) and fold into one hash.
    """

    ids: list[NodeID]
    begin: int = 0
    end: int = 0

    def rehash(self, hashes: Sequence[bytes]) -> list[bytes]:
        """The proof from the hashes of ``ids`` (same order). Requires one 32-byte hash per id."""
        if len(hashes) != len(self.ids):
            raise InvalidArgument(f"got {len(hashes)} hashes for {len(self.ids)} proof nodes")
        for position, digest in enumerate(hashes):
            if len(digest) != HASH_SIZE:
                raise InvalidArgument(f"hash {position} has {len(digest)} bytes, want {HASH_SIZE}")
        if self.end - self.begin < 2:
            return list(hashes)
        folded = hashes[self.end - 1]
        for position in range(self.end - 2, self.begin - 1, -1):
            folded = node_hash(hashes[position], folded)
        return [*hashes[: self.begin], folded, *hashes[self.end :]]

    def skip_first(self) -> ProofPlan:
        """The same plan without its first node (the starting node itself)."""
        if self.begin < self.end:
            return ProofPlan(self.ids[1:], self.begin - 1, self.end - 1)
        return ProofPlan(self.ids[1:], 0, 0)


def inclusion(index: int, size: int) -> ProofPlan:
    """Plan the inclusion proof of leaf ``index`` in the tree of ``size`` leaves.

    Requires 0 <= index < size.
    """
    if index < 0 or size < 0:
        raise InvalidArgument(f"index and size must not be negative: {index}, {size}")
    if index >= size:
        raise OutOfRange(f"index is beyond size: {index} >= {size}")
    return _nodes(index, 0, size).skip_first()


def consistency(size1: int, size2: int) -> ProofPlan:
    """Plan the consistency proof between trees of ``size1`` and ``size2`` leaves.

    Requires 0 <= size1 <= size2. RFC 9162 §2.1.4.1 defines PROOF(m, D_n) for 0 < m < n, and
    SUBPROOF(m, D_m, true) = {}: equal sizes need no proof. The RFC defines nothing for m == 0
    (every tree extends the empty one), so that plan is empty too; note that
    :func:`~ledger.merkle.verify.verify_consistency` refuses size1 == 0 (see its docstring).
    """
    if size1 < 0 or size2 < 0:
        raise InvalidArgument(f"sizes must not be negative: {size1}, {size2}")
    if size1 > size2:
        raise OutOfRange(f"size1 is beyond size2: {size1} > {size2}")
    if size1 in (0, size2):
        return ProofPlan([])
    # The largest perfect subtree that ends at size1: the proof starts from it.
    level = (size1 & -size1).bit_length() - 1
    index = (size1 - 1) >> level
    plan = _nodes(index, level, size2)
    # When size1 is a power of two the verifier already knows that node: it is the old root.
    return plan.skip_first() if index == 0 else plan


def _nodes(index: int, level: int, size: int) -> ProofPlan:
    """The nodes proving node (level, index) in the tree of ``size``, the node itself first."""
    # The fork is where the path to (level, index) leaves the path to the right edge; its sibling
    # is the (possibly ephemeral) subtree covering [end, size).
    inner = (index ^ (size >> level)).bit_length() - 1
    fork = NodeID(level + inner, index >> inner)
    begin, end = fork.coverage()
    node = NodeID(level, index)
    ids = [node]
    while node.level < fork.level:
        ids.append(node.sibling())
        node = node.parent()
    ephemeral_begin = len(ids)
    ids.extend(range_nodes(end, size))
    ephemeral_end = len(ids)
    ids.extend(reversed(range_nodes(0, begin)))
    # The message is built only for a failure: formatting every node cost more than the check.
    incomplete = next((found for found in ids if found.coverage()[1] > size), None)
    check(incomplete is None, f"proof node {incomplete} is not complete at size {size}")
    return ProofPlan(ids, ephemeral_begin, ephemeral_end)
