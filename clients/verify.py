"""Offline verification of what the server hands out: receipts, checkpoints, consistency.

Pure: uses only the wire contract and the ledger's pure core (Merkle verification, C2SP notes,
entry decoding), never the server's storage or services, and trusts nothing but the log's public
key. Every verifier returns the verified value or raises ``ledger.errors.VerificationError``.
"""

from __future__ import annotations

from dataclasses import dataclass

from ledger.checkpoint import Checkpoint, open_checkpoint
from ledger.entry import decode_entry
from ledger.errors import VerificationError
from ledger.merkle import leaf_hash, verify_consistency, verify_inclusion
from ledger.signing import Ed25519Verifier, parse_verifier_key
from ledger.v1 import ledger_service_pb2 as pb

__all__ = [
    "TrustedLog",
    "VerifiedReceipt",
    "verify_checkpoint",
    "verify_checkpoint_consistency",
    "verify_receipt",
]


@dataclass(frozen=True)
class TrustedLog:
    """What a client trusts: the log's origin and its checkpoint-signing public key."""

    origin: str
    verifier: Ed25519Verifier

    @classmethod
    def from_verifier_key(cls, verifier_key: str, origin: str = "") -> TrustedLog:
        """From a note verifier key string; the origin defaults to the key's name."""
        verifier = parse_verifier_key(verifier_key)
        return cls(origin=origin or verifier.name, verifier=verifier)


@dataclass(frozen=True)
class VerifiedReceipt:
    """A receipt whose every claim was checked."""

    event_id: str
    leaf_index: int
    leaf_hash: bytes
    checkpoint: Checkpoint
    duplicate: bool


def verify_checkpoint(note: bytes, log: TrustedLog) -> Checkpoint:
    """The checkpoint in ``note``, once its signature by the trusted log key is verified."""
    return open_checkpoint(note, log.origin, [log.verifier])


def verify_receipt(receipt: pb.Receipt, log: TrustedLog, payload: bytes) -> VerifiedReceipt:
    """Check a receipt for the event whose signed ``payload`` was submitted.

    (1) the checkpoint is signed by the trusted log key, with the expected origin;
    (2) the entry holds exactly ``payload``, at the receipt's index, and hashes to leaf_hash;
    (3) the inclusion proof leads from the leaf to the checkpoint's root.
    """
    # (1)
    checkpoint = verify_checkpoint(receipt.checkpoint, log)
    # (2)
    entry = decode_entry(receipt.entry)
    if entry.envelope.payload != payload:
        raise VerificationError("receipt entry does not hold the submitted payload")
    if entry.leaf_index != receipt.leaf_index:
        raise VerificationError(
            f"receipt entry index differs: entry says {entry.leaf_index}, "
            f"receipt says {receipt.leaf_index}"
        )
    if leaf_hash(receipt.entry) != receipt.leaf_hash:
        raise VerificationError("receipt leaf_hash is not SHA-256(0x00 || entry)")
    # (3)
    verify_inclusion(
        receipt.leaf_index,
        checkpoint.size,
        receipt.leaf_hash,
        list(receipt.inclusion_proof),
        checkpoint.root_hash,
    )
    return VerifiedReceipt(
        event_id=receipt.event_id,
        leaf_index=receipt.leaf_index,
        leaf_hash=receipt.leaf_hash,
        checkpoint=checkpoint,
        duplicate=receipt.duplicate,
    )


def verify_checkpoint_consistency(older: Checkpoint, newer: Checkpoint, proof: list[bytes]) -> None:
    """Check that ``newer`` extends ``older`` (no rewrite of history, no split view)."""
    if newer.size < older.size:
        raise VerificationError(
            f"rollback: newer checkpoint is smaller: {newer.size} < {older.size}"
        )
    if older.size == 0:
        return
    verify_consistency(older.size, newer.size, proof, older.root_hash, newer.root_hash)
