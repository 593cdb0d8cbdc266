"""The RFC 6962 / RFC 9162 Merkle tree (https://www.rfc-editor.org/rfc/rfc9162#section-2.1).

Pure: hashing, compact ranges (appending), proof planning from stored complete nodes, and
verification. Modelled on transparency-dev/merkle: the hasher is four small definitions, building
proofs (``proof``) and verifying them (``verify``) live apart.
"""

from ledger.merkle.compact import CompactRange
from ledger.merkle.hasher import EMPTY_ROOT, HASH_SIZE, leaf_hash, node_hash
from ledger.merkle.memory import MemoryTree
from ledger.merkle.nodes import NodeID, range_nodes, right_edge_ids
from ledger.merkle.proof import ProofPlan, consistency, inclusion
from ledger.merkle.verify import (
    ProofError,
    RootMismatchError,
    root_from_inclusion_proof,
    verify_consistency,
    verify_inclusion,
)

__all__ = [
    "EMPTY_ROOT",
    "HASH_SIZE",
    "CompactRange",
    "MemoryTree",
    "NodeID",
    "ProofError",
    "ProofPlan",
    "RootMismatchError",
    "consistency",
    "inclusion",
    "leaf_hash",
    "node_hash",
    "range_nodes",
    "right_edge_ids",
    "root_from_inclusion_proof",
    "verify_consistency",
    "verify_inclusion",
]
