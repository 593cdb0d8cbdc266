"""Known answers for the RFC 6962 hasher and for roots of the RFC 6962 reference leaves."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest

from ledger.merkle import EMPTY_ROOT, HASH_SIZE, MemoryTree, leaf_hash, node_hash
from tests import merkle_reference as reference

# The leaves behind the transparency-dev/merkle vectors (tests/vectors/README.md).
REFERENCE_LEAVES = [
    bytes.fromhex(text)
    for text in (
        "",
        "00",
        "10",
        "2021",
        "3031",
        "40414243",
        "5051525354555657",
        "606162636465666768696a6b6c6d6e6f",
    )
]
HAPPY_PATH = Path(__file__).parent.parent / "vectors/rfc6962/testdata/inclusion/1/happy-path.json"


def test_empty_root() -> None:
    # printf '' | sha256sum
    assert EMPTY_ROOT.hex() == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    assert MemoryTree().root() == EMPTY_ROOT


def test_leaf_hash_of_the_empty_leaf() -> None:
    # printf '\x00' | sha256sum
    expected = "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d"
    assert leaf_hash(b"").hex() == expected


def test_node_hash() -> None:
    # printf '\x01' > node; head -c 64 /dev/zero >> node; sha256sum node
    expected = "ae0798d0ecaed2b778eddebf18f071a561c53658c05e76cedecc27cafbdbc577"
    assert node_hash(bytes(HASH_SIZE), bytes(HASH_SIZE)).hex() == expected
    # The root of the first two reference leaves, as listed in transparency-dev/merkle's
    # proof/verify_test.go (roots[1]).
    expected = "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"
    assert node_hash(leaf_hash(b""), leaf_hash(b"\x00")).hex() == expected


def test_leaves_and_nodes_are_domain_separated() -> None:
    left, right = leaf_hash(b"a"), leaf_hash(b"b")
    # A node must never collide with a leaf whose data is the two child hashes.
    assert node_hash(left, right) != leaf_hash(left + right)
    assert node_hash(left, right) != node_hash(right, left)


def test_root_of_the_eight_reference_leaves_is_the_vectors_root() -> None:
    tree = MemoryTree()
    for data in REFERENCE_LEAVES:
        tree.append(data)
    assert tree.root() == base64.b64decode(json.loads(HAPPY_PATH.read_text())["root"])


@pytest.mark.parametrize("size", range(1, 9))
def test_roots_of_reference_prefixes_match_the_rfc(size: int) -> None:
    tree = MemoryTree()
    for data in REFERENCE_LEAVES[:size]:
        tree.append(data)
    assert tree.root() == reference.mth(REFERENCE_LEAVES[:size])
