"""Verifying RFC 9162 inclusion and consistency proofs: compute a root, then compare.

A port of transparency-dev/merkle ``proof/verify.go``, keeping its ``index < size`` check and
adding hash-length checks for every hash that is used. Verifiers return None or raise:
:class:`ProofError` for malformed input, :class:`RootMismatchError` for a proof that leads to
another root.
"""

from __future__ import annotations

from collections.abc import Sequence

from ledger.errors import VerificationError
from ledger.merkle.hasher import HASH_SIZE, node_hash

__all__ = [
    "ProofError",
    "RootMismatchError",
    "root_from_inclusion_proof",
    "verify_consistency",
    "verify_inclusion",
]


class ProofError(VerificationError):
    """The proof or its parameters are malformed."""


class RootMismatchError(VerificationError):
    """The proof leads to a root other than the expected one."""

    def __init__(self, expected: bytes, computed: bytes) -> None:
        super().__init__(
            f"calculated root {computed.hex()} does not match expected root {expected.hex()}",
            reason="ROOT_MISMATCH",
        )
        self.expected = expected
        self.computed = computed


def _check_hash(name: str, digest: bytes) -> None:
    if len(digest) != HASH_SIZE:
        raise ProofError(f"{name} has unexpected size {len(digest)}, want {HASH_SIZE}")


def _check_proof(proof: Sequence[bytes], want: int) -> None:
    if len(proof) != want:
        raise ProofError(f"wrong proof size {len(proof)}, want {want}")
    for position, digest in enumerate(proof):
        _check_hash(f"proof[{position}]", digest)


def _decompose_inclusion(index: int, size: int) -> tuple[int, int]:
    """Proof lengths below the fork (inner) and along the right border (border)."""
    inner = (index ^ (size - 1)).bit_length()
    border = bin(index >> inner).count("1")
    return inner, border


def _chain_inner(seed: bytes, proof: Sequence[bytes], index: int) -> bytes:
    for level, digest in enumerate(proof):
        seed = node_hash(seed, digest) if (index >> level) & 1 == 0 else node_hash(digest, seed)
    return seed


def _chain_inner_right(seed: bytes, proof: Sequence[bytes], index: int) -> bytes:
    for level, digest in enumerate(proof):
        if (index >> level) & 1 == 1:
            seed = node_hash(digest, seed)
    return seed


def _chain_border_right(seed: bytes, proof: Sequence[bytes]) -> bytes:
    for digest in proof:
        seed = node_hash(digest, seed)
    return seed


def _verify_match(computed: bytes, expected: bytes) -> None:
    if computed != expected:
        raise RootMismatchError(expected=expected, computed=computed)


def root_from_inclusion_proof(
    index: int, size: int, leaf_hash: bytes, proof: Sequence[bytes]
) -> bytes:
    """The root that ``proof`` gives for ``leaf_hash`` at ``index``. Requires 0 <= index < size."""
    if index < 0 or size < 0:
        raise ProofError(f"index and size must not be negative: {index}, {size}")
    if index >= size:
        raise ProofError(f"index is beyond size: {index} >= {size}")
    _check_hash("leaf hash", leaf_hash)
    inner, border = _decompose_inclusion(index, size)
    _check_proof(proof, inner + border)
    root = _chain_inner(leaf_hash, proof[:inner], index)
    return _chain_border_right(root, proof[inner:])


def verify_inclusion(
    index: int, size: int, leaf_hash: bytes, proof: Sequence[bytes], root: bytes
) -> None:
    """Check that ``proof`` proves ``leaf_hash`` at ``index`` in the tree of ``size`` and ``root``.

    Requires 0 <= index < size. Raises :class:`ProofError` for malformed input and
    :class:`RootMismatchError` if the proof leads to another root.
    """
    _check_hash("root", root)
    _verify_match(root_from_inclusion_proof(index, size, leaf_hash, proof), root)


def verify_consistency(
    size1: int, size2: int, proof: Sequence[bytes], root1: bytes, root2: bytes
) -> None:
    """Check that the tree of ``size2`` and ``root2`` extends the one of ``size1`` and ``root1``.

    Requires 0 < size1 <= size2. A proof from the empty tree proves nothing, so size1 == 0 is
    refused whatever the proof, as the vectors in ``consistency/additional`` require. When
    size1 == size2 the proof must be empty and the roots are compared as opaque bytes, without a
    length check, as Go's verifier does (vector ``sizes-are-equal-one-and-proof-is-empty``).
    """
    if size1 < 0 or size2 < 0:
        raise ProofError(f"sizes must not be negative: {size1}, {size2}")
    if size2 < size1:
        raise ProofError(f"size2 ({size2}) < size1 ({size1})")
    if size1 == 0:
        raise ProofError("consistency from size 0 proves nothing: size1 must be positive")
    if size1 == size2:
        if proof:
            raise ProofError("size1 = size2, but the proof is not empty")
        _verify_match(root1, root2)
        return
    if not proof:
        raise ProofError("empty proof")
    _check_hash("root1", root1)
    _check_hash("root2", root2)
    inner, border = _decompose_inclusion(size1 - 1, size2)
    shift = (size1 & -size1).bit_length() - 1
    inner -= shift
    # The proof starts with the root of the subtree of size 2**shift ending at size1, unless
    # size1 is that very power of two, whose root the verifier already has: root1.
    seed, start = proof[0], 1
    if size1 == 1 << shift:
        seed, start = root1, 0
    _check_proof(proof, start + inner + border)
    rest = proof[start:]
    mask = (size1 - 1) >> shift
    hash1 = _chain_border_right(_chain_inner_right(seed, rest[:inner], mask), rest[inner:])
    _verify_match(hash1, root1)
    hash2 = _chain_border_right(_chain_inner(seed, rest[:inner], mask), rest[inner:])
    _verify_match(hash2, root2)
