"""A submission's receipt, verified offline: the leaf holds what was signed, the proof leads to a
checkpoint signed by the log key. Imports nothing from the server's ``ledger`` package."""

from __future__ import annotations

from collections.abc import Sequence

from clients.offline.merkle import VerificationFailure, leaf_hash, verify_inclusion
from clients.offline.note import Checkpoint, VerifierKey, verify_checkpoint
from clients.offline.wire import decode_entry

__all__ = ["verify_receipt"]


def verify_receipt(
    *,
    leaf_index: int,
    leaf_hash_: bytes,
    entry: bytes,
    checkpoint_note: bytes,
    inclusion_proof: Sequence[bytes],
    payload: bytes,
    key: VerifierKey,
) -> Checkpoint:
    """The verified checkpoint the receipt proves inclusion in; VerificationFailure otherwise.

    ``payload`` is the event bytes the submitter signed: the entry must hold exactly them.
    """
    checkpoint = verify_checkpoint(checkpoint_note, key)
    if leaf_hash(entry) != leaf_hash_:
        raise VerificationFailure("the leaf hash is not SHA-256(0x00 || entry)")
    decoded = decode_entry(entry)
    if decoded.leaf_index != leaf_index:
        raise VerificationFailure(f"the entry says leaf {decoded.leaf_index}, not {leaf_index}")
    if decoded.payload != payload:
        raise VerificationFailure("the entry does not hold the payload that was signed")
    verify_inclusion(leaf_index, checkpoint.size, leaf_hash_, inclusion_proof, checkpoint.root_hash)
    return checkpoint
