"""Proof plans against the RFC 6962 oracle, compact ranges, and the extra rejections."""

from __future__ import annotations

import math
from collections.abc import Callable

import pytest

from ledger.errors import InvalidArgument, InvariantViolation, NotFound, OutOfRange
from ledger.merkle import (
    EMPTY_ROOT,
    CompactRange,
    MemoryTree,
    NodeID,
    ProofError,
    RootMismatchError,
    consistency,
    inclusion,
    leaf_hash,
    right_edge_ids,
    verify_consistency,
    verify_inclusion,
)
from tests import merkle_reference as reference

SIZE_MAX = 130


def _leaves(count: int) -> list[bytes]:
    return [f"leaf {number}".encode() for number in range(count)]


def _tree(count: int) -> MemoryTree:
    tree = MemoryTree()
    for data in _leaves(count):
        tree.append(data)
    return tree


# Built once: every size up to SIZE_MAX is a prefix of this tree, proved from its stored nodes.
TREE = _tree(SIZE_MAX)


def _reads_max(size: int) -> int:
    """The O(log n) bound on stored nodes one proof may read."""
    return 2 * math.ceil(math.log2(size)) + 1


def _assert_complete(ids: list[NodeID], size: int) -> None:
    for node in ids:
        assert node.level >= 0 and node.index >= 0
        assert (node.index + 1) << node.level <= size, f"{node} is not complete at size {size}"


@pytest.mark.parametrize("size", range(1, SIZE_MAX + 1))
def test_inclusion_proofs_equal_the_rfc_reference(size: int) -> None:
    leaves = _leaves(size)
    for index in range(size):
        plan = inclusion(index, size)
        assert len(plan.ids) <= _reads_max(size)
        _assert_complete(plan.ids, size)
        assert TREE.inclusion_proof(index, size) == reference.path(index, leaves)


@pytest.mark.parametrize("size", range(1, SIZE_MAX + 1))
def test_consistency_proofs_equal_the_rfc_reference(size: int) -> None:
    leaves = _leaves(size)
    for size1 in range(1, size + 1):
        plan = consistency(size1, size)
        assert len(plan.ids) <= _reads_max(size)
        _assert_complete(plan.ids, size)
        assert TREE.consistency_proof(size1, size) == reference.proof(size1, leaves)


def test_trivial_consistency_plans_are_empty() -> None:
    # RFC 9162 §2.1.4.1: SUBPROOF(m, D_m, true) = {}; nothing is defined from the empty tree.
    assert consistency(0, 0).ids == []
    assert consistency(0, 7).ids == []
    assert consistency(7, 7).ids == []
    assert TREE.consistency_proof(0, 9) == []


def test_right_edge_ids() -> None:
    assert right_edge_ids(0) == []
    assert right_edge_ids(1) == [NodeID(0, 0)]
    assert right_edge_ids(6) == [NodeID(2, 0), NodeID(1, 2)]
    assert right_edge_ids(7) == [NodeID(2, 0), NodeID(1, 2), NodeID(0, 6)]
    assert right_edge_ids(8) == [NodeID(3, 0)]


def test_append_returns_every_completed_node_in_creation_order() -> None:
    compact = CompactRange.empty()
    for number in range(3):
        compact.append(leaf_hash(bytes([number])))
    created = compact.append(leaf_hash(b"\x03"))
    assert [node for node, _ in created] == [NodeID(0, 3), NodeID(1, 1), NodeID(2, 0)]
    assert compact.size == 4 and compact.hashes == [created[-1][1]]


@pytest.mark.parametrize("split", [0, 1, 2, 13, 64, 76, 77])
def test_compact_range_rebuilt_from_stored_nodes_continues_identically(split: int) -> None:
    tree = _tree(77)
    whole = CompactRange.empty()
    created_whole = [whole.append(tree.get_leaf_hash(index)) for index in range(77)]
    rebuilt = CompactRange(split, tree.get_nodes(right_edge_ids(split)))
    assert rebuilt.root() == tree.root(split)
    for index in range(split, 77):
        assert rebuilt.append(tree.get_leaf_hash(index)) == created_whole[index]
    assert rebuilt.root() == whole.root() == tree.root()
    assert rebuilt.hashes == whole.hashes


def test_appending_n_leaves_creates_2n_minus_popcount_nodes() -> None:
    # Each node is created (hashed) once: O(n) amortised work for n appends.
    compact = CompactRange.empty()
    created = sum(len(compact.append(leaf_hash(data))) for data in _leaves(1000))
    assert created == 2 * 1000 - (1000).bit_count()


def test_compact_range_refuses_bad_input() -> None:
    with pytest.raises(InvalidArgument, match="right-edge hashes"):
        CompactRange(6, [bytes(32)])
    with pytest.raises(InvalidArgument, match="right-edge hashes"):
        CompactRange(0, [bytes(32)])
    with pytest.raises(InvalidArgument, match="bytes"):
        CompactRange(1, [bytes(31)])
    with pytest.raises(InvalidArgument, match="negative"):
        CompactRange(-1, [])
    with pytest.raises(InvalidArgument, match="leaf hash"):
        CompactRange.empty().append(b"short")


def test_plans_refuse_out_of_range() -> None:
    with pytest.raises(OutOfRange, match=r"index is beyond size: 5 >= 4"):
        inclusion(5, 4)
    with pytest.raises(OutOfRange, match=r"index is beyond size: 4 >= 4"):
        inclusion(4, 4)
    with pytest.raises(OutOfRange, match=r"size1 is beyond size2: 5 > 4"):
        consistency(5, 4)
    with pytest.raises(InvalidArgument):
        inclusion(-1, 4)
    with pytest.raises(InvalidArgument):
        consistency(-1, 4)


def test_rehash_refuses_hashes_that_do_not_match_the_plan() -> None:
    plan = inclusion(5, 7)
    with pytest.raises(InvalidArgument, match="hashes for"):
        plan.rehash([bytes(32)] * (len(plan.ids) - 1))
    with pytest.raises(InvalidArgument, match="31 bytes"):
        plan.rehash([bytes(31)] * len(plan.ids))


def test_memory_tree_refuses_sizes_beyond_the_tree() -> None:
    tree = _tree(5)
    with pytest.raises(OutOfRange):
        tree.root(6)
    with pytest.raises(OutOfRange):
        tree.inclusion_proof(0, 6)
    with pytest.raises(OutOfRange):
        tree.consistency_proof(2, 6)
    with pytest.raises(NotFound):
        tree.get_nodes([NodeID(3, 0)])


def test_memory_tree_never_rewrites_a_node() -> None:
    tree = _tree(3)
    # Corrupting the tree's compact range would make it recreate a stored node: a bug, refused.
    tree._range = CompactRange.empty()
    with pytest.raises(InvariantViolation):
        tree.append(b"again")


def _malformed_calls() -> dict[str, Callable[[], None]]:
    tree = TREE
    root, proof, leaf = tree.root(10), tree.inclusion_proof(3, 10), leaf_hash(b"leaf 3")
    proof1, root1 = tree.consistency_proof(3, 10), tree.root(3)
    return {
        "index >= size": lambda: verify_inclusion(10, 10, leaf, proof, root),
        "negative index": lambda: verify_inclusion(-1, 10, leaf, proof, root),
        "negative size": lambda: verify_inclusion(0, -1, leaf, proof, root),
        "short leaf hash": lambda: verify_inclusion(3, 10, leaf[:31], proof, root),
        "long leaf hash": lambda: verify_inclusion(3, 10, leaf + b"\x00", proof, root),
        "short root": lambda: verify_inclusion(3, 10, leaf, proof, root[:31]),
        "short element": lambda: verify_inclusion(3, 10, leaf, [proof[0][:31], *proof[1:]], root),
        "long proof": lambda: verify_inclusion(3, 10, leaf, [*proof, proof[0]], root),
        "short proof": lambda: verify_inclusion(3, 10, leaf, proof[:-1], root),
        "size1 > size2": lambda: verify_consistency(5, 4, [], root, root),
        "negative size1": lambda: verify_consistency(-1, 10, proof1, root1, root),
        "size1 zero with proof": lambda: verify_consistency(0, 10, [root], EMPTY_ROOT, root),
        "size1 zero, empty proof": lambda: verify_consistency(0, 10, [], EMPTY_ROOT, root),
        "equal sizes with proof": lambda: verify_consistency(10, 10, [root], root, root),
        "empty consistency proof": lambda: verify_consistency(3, 10, [], root1, root),
        "short root1": lambda: verify_consistency(3, 10, proof1, root1[:5], root),
        "short root2": lambda: verify_consistency(3, 10, proof1, root1, root[:5]),
        "short consistency element": lambda: verify_consistency(
            3, 10, [proof1[0][:31], *proof1[1:]], root1, root
        ),
    }


@pytest.mark.parametrize("name", sorted(_malformed_calls()))
def test_verifiers_refuse_malformed_input(name: str) -> None:
    with pytest.raises(ProofError):
        _malformed_calls()[name]()


def test_root_mismatch_carries_both_roots() -> None:
    root, proof = TREE.root(10), TREE.inclusion_proof(3, 10)
    with pytest.raises(RootMismatchError) as raised:
        verify_inclusion(3, 10, leaf_hash(b"other"), proof, root)
    assert raised.value.expected == root
    assert raised.value.computed not in (root, b"")
