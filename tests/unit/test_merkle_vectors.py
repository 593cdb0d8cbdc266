"""The 196 transparency-dev/merkle vectors: each verifier (the server's ``ledger.merkle`` and the
offline ``clients.offline.merkle``) gives exactly ``wantErr``."""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path
from typing import Any

import pytest

from clients.offline import merkle as offline_merkle
from ledger import merkle as server_merkle
from ledger.errors import VerificationError

TESTDATA = Path(__file__).parent.parent / "vectors" / "rfc6962" / "testdata"
FILES = sorted(TESTDATA.rglob("*.json"))


def _b64(value: str | None) -> bytes:
    return base64.b64decode(value or "")


def _proof(case: dict[str, Any]) -> list[bytes]:
    return [_b64(item) for item in case.get("proof") or []]


def test_all_vectors_are_present() -> None:
    assert len(FILES) == 196


VERIFIERS = {
    "server": (server_merkle.verify_inclusion, server_merkle.verify_consistency, VerificationError),
    "offline": (
        offline_merkle.verify_inclusion,
        offline_merkle.verify_consistency,
        offline_merkle.VerificationFailure,
    ),
}


@pytest.mark.parametrize("verifier", sorted(VERIFIERS))
@pytest.mark.parametrize("path", FILES, ids=[str(p.relative_to(TESTDATA)) for p in FILES])
def test_vector(path: Path, verifier: str) -> None:
    verify_inclusion, verify_consistency, failure = VERIFIERS[verifier]
    case = json.loads(path.read_text())
    if path.relative_to(TESTDATA).parts[0] == "inclusion":

        def run() -> None:
            verify_inclusion(
                case["leafIdx"],
                case["treeSize"],
                _b64(case["leafHash"]),
                _proof(case),
                _b64(case["root"]),
            )
    else:

        def run() -> None:
            verify_consistency(
                case["size1"], case["size2"], _proof(case), _b64(case["root1"]), _b64(case["root2"])
            )

    if case["wantErr"]:
        with pytest.raises(failure):
            run()
    else:
        run()


def _mth(leaves: list[bytes]) -> bytes:
    """RFC 6962 section 2.1's MTH over leaf hashes, by its definition."""
    if not leaves:
        return hashlib.sha256(b"").digest()
    if len(leaves) == 1:
        return leaves[0]
    split = 1 << ((len(leaves) - 1).bit_length() - 1)
    return offline_merkle.node_hash(_mth(leaves[:split]), _mth(leaves[split:]))


def test_the_offline_root_builder_adds_leaves_one_by_one_or_in_bulk_alike() -> None:
    """The full audit adds a worker range's leaf hashes in bulk (RootBuilder.extend), cut at
    each size with a signed root: the roots are RFC 6962's at every size and every cut."""
    leaves = [offline_merkle.leaf_hash(b"%d" % number) for number in range(70)]
    one_by_one = offline_merkle.RootBuilder()
    for size, leaf in enumerate(leaves, 1):
        one_by_one.append(leaf)
        assert one_by_one.root() == _mth(leaves[:size])
        for cut in range(size + 1):
            bulk = offline_merkle.RootBuilder()
            bulk.extend(b"".join(leaves[:cut]))
            bulk.extend(b"".join(leaves[cut:size]))
            assert (bulk.size, bulk.root()) == (size, one_by_one.root())
