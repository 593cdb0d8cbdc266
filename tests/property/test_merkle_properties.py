"""Properties over random trees: every proof verifies, every mutation of it is rejected."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from ledger.errors import VerificationError
from ledger.merkle import MemoryTree, leaf_hash, verify_consistency, verify_inclusion
from tests import merkle_reference as reference

sizes = st.integers(min_value=1, max_value=300)


def _tree(size: int) -> MemoryTree:
    tree = MemoryTree()
    for number in range(size):
        tree.append(number.to_bytes(4, "big"))
    return tree


def _flip(proof: list[bytes], position: int, bit: int) -> list[bytes]:
    mutated = bytearray(proof[position])
    mutated[bit // 8] ^= 1 << (bit % 8)
    return [*proof[:position], bytes(mutated), *proof[position + 1 :]]


def _rejects(call: object) -> bool:
    try:
        call()  # type: ignore[operator]
    except VerificationError:
        return True
    return False


@settings(max_examples=120, deadline=None)
@given(size=sizes, data=st.data())
def test_inclusion_proofs_verify_and_every_mutation_fails(size: int, data: st.DataObject) -> None:
    tree = _tree(size)
    index = data.draw(st.integers(0, size - 1))
    leaf, root = leaf_hash(index.to_bytes(4, "big")), tree.root()
    proof = tree.inclusion_proof(index, size)
    verify_inclusion(index, size, leaf, proof, root)
    leaves = [n.to_bytes(4, "big") for n in range(size)]
    assert proof == reference.path(index, leaves)
    if proof:
        position = data.draw(st.integers(0, len(proof) - 1))
        bit = data.draw(st.integers(0, 255))
        assert _rejects(
            lambda: verify_inclusion(index, size, leaf, _flip(proof, position, bit), root)
        )
        assert _rejects(lambda: verify_inclusion(index, size, leaf, proof[:-1], root))
    assert _rejects(lambda: verify_inclusion(index, size, leaf, [*proof, root], root))
    other_index = data.draw(st.integers(0, size + 3).filter(lambda n: n != index))
    assert _rejects(lambda: verify_inclusion(other_index, size, leaf, proof, root))
    other_size = data.draw(st.integers(index + 1, 2 * size + 2).filter(lambda n: n != size))
    # The size is bound by the signed checkpoint, not by the proof: two sizes whose proofs have
    # the same shape accept the same proof. Where the shapes differ, the proof must be refused.
    other_leaves = [n.to_bytes(4, "big") for n in range(other_size)]
    if len(reference.path(index, other_leaves)) != len(proof):
        assert _rejects(lambda: verify_inclusion(index, other_size, leaf, proof, root))
    assert _rejects(lambda: verify_inclusion(index, size, leaf, proof, leaf_hash(root)))


@settings(max_examples=120, deadline=None)
@given(size2=sizes, data=st.data())
def test_consistency_proofs_verify_and_every_mutation_fails(
    size2: int, data: st.DataObject
) -> None:
    tree = _tree(size2)
    size1 = data.draw(st.integers(1, size2))
    root1, root2 = tree.root(size1), tree.root(size2)
    proof = tree.consistency_proof(size1, size2)
    verify_consistency(size1, size2, proof, root1, root2)
    if proof:
        position = data.draw(st.integers(0, len(proof) - 1))
        bit = data.draw(st.integers(0, 255))
        assert _rejects(
            lambda: verify_consistency(size1, size2, _flip(proof, position, bit), root1, root2)
        )
        assert _rejects(lambda: verify_consistency(size1, size2, proof[1:], root1, root2))
    assert _rejects(lambda: verify_consistency(size1, size2, [*proof, root1], root1, root2))
    assert _rejects(lambda: verify_consistency(size1, size2, proof, leaf_hash(root1), root2))
    assert _rejects(lambda: verify_consistency(size1, size2, proof, root1, leaf_hash(root2)))
    if size1 > 1:
        assert _rejects(lambda: verify_consistency(size1 - 1, size2, proof, root1, root2))
    if size1 + 1 < size2:
        assert _rejects(lambda: verify_consistency(size1 + 1, size2, proof, root1, root2))
    if size1 < size2:
        assert _rejects(lambda: verify_consistency(size2, size1, proof, root1, root2))
    # As for inclusion, a size change is only detectable where the proof's shape changes.
    bigger = [n.to_bytes(4, "big") for n in range(size2 + 1)]
    if len(reference.proof(size1, bigger)) != len(proof):
        assert _rejects(lambda: verify_consistency(size1, size2 + 1, proof, root1, root2))
