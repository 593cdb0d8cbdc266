"""RFC 6962 / RFC 9162 §2.1.1 hashing: SHA-256 with domain separation of leaves and nodes."""

from __future__ import annotations

import hashlib
from typing import Final

__all__ = ["EMPTY_ROOT", "HASH_SIZE", "leaf_hash", "node_hash"]

HASH_SIZE: Final = 32
"""Bytes in every hash of the tree."""

EMPTY_ROOT: Final = hashlib.sha256(b"").digest()
"""Root of the empty tree: SHA-256 of the empty string."""


def leaf_hash(data: bytes) -> bytes:
    """SHA-256(0x00 || data): the hash of a leaf."""
    return hashlib.sha256(b"\x00" + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """SHA-256(0x01 || left || right): the hash of an interior node."""
    return hashlib.sha256(b"\x01" + left + right).digest()
