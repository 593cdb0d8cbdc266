"""RFC 6962 / RFC 9162 Merkle tree hashing and proof verification, self-contained.

Part of the offline verifier: imports nothing from the server's ``ledger`` package, only the
standard library, so an auditor can read and run it on its own.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Sequence

__all__ = [
    "HASH_BYTES",
    "RootBuilder",
    "VerificationFailure",
    "leaf_hash",
    "node_hash",
    "verify_consistency",
    "verify_inclusion",
]

HASH_BYTES = 32


class VerificationFailure(ValueError):
    """A proof, a signature or a hash does not verify."""


def leaf_hash(data: bytes) -> bytes:
    """SHA-256(0x00 || data)."""
    return hashlib.sha256(b"\x00" + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """SHA-256(0x01 || left || right)."""
    return hashlib.sha256(b"\x01" + left + right).digest()


class RootBuilder:
    """Appends leaf hashes and gives the root of the tree so far (a compact range: O(log n))."""

    def __init__(self) -> None:
        self.size = 0
        self._stack: list[bytes] = []  # roots of complete subtrees, largest first

    def append(self, leaf: bytes) -> None:
        """Add the next leaf hash."""
        self._stack.append(leaf)
        size = self.size
        while size & 1:
            right = self._stack.pop()
            left = self._stack.pop()
            self._stack.append(node_hash(left, right))
            size >>= 1
        self.size += 1

    def extend(self, hashes: bytes) -> None:
        """Add each 32-byte leaf hash of ``hashes`` in turn, as :meth:`append` would."""
        stack, size, sha256 = self._stack, self.size, hashlib.sha256
        for start in range(0, len(hashes), HASH_BYTES):
            stack.append(hashes[start : start + HASH_BYTES])
            at = size
            while at & 1:
                right = stack.pop()
                stack[-1] = sha256(b"\x01" + stack[-1] + right).digest()
                at >>= 1
            size += 1
        self.size = size

    def root(self) -> bytes:
        """The root of the tree of ``size`` leaves (SHA-256 of nothing when empty)."""
        if not self._stack:
            return hashlib.sha256(b"").digest()
        root = self._stack[-1]
        for left in reversed(self._stack[:-1]):
            root = node_hash(left, root)
        return root


def _check(hashes: Sequence[bytes], what: str) -> None:
    for position, value in enumerate(hashes):
        if len(value) != HASH_BYTES:
            raise VerificationFailure(f"{what}[{position}] is {len(value)} bytes, not 32")


def verify_inclusion(
    index: int, size: int, leaf: bytes, proof: Sequence[bytes], root: bytes
) -> None:
    """RFC 9162 section 2.1.3.2; raise VerificationFailure unless ``leaf`` is at ``index``."""
    _check([leaf, root], "hash")
    _check(proof, "proof")
    if not 0 <= index < size:
        raise VerificationFailure(f"leaf index {index} is not in the tree of size {size}")
    fn, sn, computed = index, size - 1, leaf
    for value in proof:
        if sn == 0:
            raise VerificationFailure(
                f"inclusion proof has {len(proof)} hashes, too many for leaf {index} "
                f"in a tree of size {size}"
            )
        if fn & 1 or fn == sn:
            computed = node_hash(value, computed)
            while fn & 1 == 0 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            computed = node_hash(computed, value)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise VerificationFailure(
            f"inclusion proof has {len(proof)} hashes, too few for leaf {index} "
            f"in a tree of size {size}"
        )
    if computed != root:
        raise VerificationFailure(
            f"inclusion proof of leaf {index} does not lead to the checkpoint's root hash "
            f"(computed {base64.b64encode(computed).decode('ascii')})"
        )


def verify_consistency(  # noqa: PLR0912 (RFC 9162's algorithm, step by step)
    size1: int, size2: int, proof: Sequence[bytes], root1: bytes, root2: bytes
) -> None:
    """RFC 9162 section 2.1.4.2; raise VerificationFailure unless tree 1 is a prefix of tree 2."""
    if not 0 < size1 <= size2:
        raise VerificationFailure(f"sizes {size1} -> {size2}: the first must be in 1..{size2}")
    # Equal sizes come first, as in transparency-dev/merkle: the proof must be empty and the
    # roots equal, whatever their length (vector sizes-are-equal-one-and-proof-is-empty).
    if size1 == size2:
        if proof:
            raise VerificationFailure("a proof between equal sizes must be empty")
        if root1 != root2:
            raise VerificationFailure("same size, different roots: the log forked")
        return
    _check([root1, root2], "root")
    _check(proof, "proof")
    path = list(proof)
    if size1 & (size1 - 1) == 0:  # a power of two: root1 is the first node
        path.insert(0, root1)
    if not path:
        raise VerificationFailure("consistency proof is empty")
    fn, sn = size1 - 1, size2 - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for value in path[1:]:
        if sn == 0:
            raise VerificationFailure("consistency proof is too long")
        if fn & 1 or fn == sn:
            fr = node_hash(value, fr)
            sr = node_hash(value, sr)
            while fn & 1 == 0 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            sr = node_hash(sr, value)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise VerificationFailure("consistency proof is too short")
    if fr != root1:
        raise VerificationFailure("consistency proof does not lead to the older root")
    if sr != root2:
        raise VerificationFailure("consistency proof does not lead to the newer root")
