"""The auditor's client: fetch checkpoints, entries and proofs, and verify them all locally.

Trusts only the log's public key (a :class:`clients.verify.TrustedLog`). ``audit`` streams every
entry, recomputes every leaf hash and the root, and checks it against a verified checkpoint.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field

import grpc

from clients.errors import from_rpc_error
from clients.verify import TrustedLog, verify_checkpoint, verify_checkpoint_consistency
from ledger.checkpoint import Checkpoint
from ledger.dsse import Envelope, verify_envelope_signature
from ledger.entry import decode_entry
from ledger.errors import VerificationError
from ledger.merkle import CompactRange, leaf_hash, verify_inclusion
from ledger.v1 import ledger_service_pb2 as pb
from ledger.v1 import ledger_service_pb2_grpc as pb_grpc

__all__ = ["AuditReport", "AuditorClient", "check_fresh"]

_PAGE = 1000
MIN_TREE_SIZE_METADATA = "x-min-tree-size"
"""The metadata naming the smallest tree size an answer may be computed at (the server's
``ledger.limits.min_tree_size_metadata``; the client does not import server code)."""


def check_fresh(answered_size: int, min_tree_size: int) -> None:
    """VerificationError when an answer was computed at a tree smaller than the one asked for
    (``x-min-tree-size``): the server promised never to answer so; a client does not trust it."""
    if answered_size < min_tree_size:
        raise VerificationError(
            f"the answer is at tree size {answered_size}, older than the {min_tree_size} "
            "asked for (x-min-tree-size)"
        )


@dataclass
class AuditReport:
    """What a full audit checked."""

    tree_size: int = 0
    root_hash: bytes = b""
    entries_checked: int = 0
    signatures_checked: int = 0
    signers: dict[str, int] = field(default_factory=dict)


class AuditorClient:
    """Reads the log and verifies everything it reads."""

    def __init__(self, channel: grpc.Channel, *, log: TrustedLog, min_tree_size: int = 0) -> None:
        """``min_tree_size``: never be answered from a tree smaller than this (a receipt's
        checkpoint size; sent as ``x-min-tree-size``, which a server with a read standby
        honours by asking the primary when the standby is behind it)."""
        self._stub = pb_grpc.LedgerServiceStub(channel)
        self._log = log
        self.min_tree_size = min_tree_size

    @property
    def _metadata(self) -> tuple[tuple[str, str], ...]:
        if self.min_tree_size <= 0:
            return ()
        return ((MIN_TREE_SIZE_METADATA, str(self.min_tree_size)),)

    def checkpoint(self, tree_size: int = 0) -> Checkpoint:
        """The latest (or an exact-size) checkpoint, signature verified."""
        try:
            response = self._stub.GetCheckpoint(
                pb.GetCheckpointRequest(tree_size=tree_size), metadata=self._metadata
            )
        except grpc.RpcError as error:
            raise from_rpc_error(error) from None
        checkpoint = verify_checkpoint(response.checkpoint, self._log)
        check_fresh(checkpoint.size, self.min_tree_size)
        return checkpoint

    def entries(self, start_index: int, end_index: int) -> Iterator[tuple[int, bytes]]:
        """(leaf index, entry bytes) for ``[start_index, end_index)``, page by page."""
        index = start_index
        while index < end_index:
            request = pb.GetEntriesRequest(
                start_index=index, end_index=min(end_index, index + _PAGE)
            )
            try:
                for chunk in self._stub.GetEntries(request, metadata=self._metadata):
                    if chunk.start_index != index:
                        raise VerificationError(
                            f"entries out of order: expected {index}, got {chunk.start_index}"
                        )
                    if chunk.tree_size:  # servers before the field sent none
                        check_fresh(chunk.tree_size, self.min_tree_size)
                    for data in chunk.entries:
                        yield index, data
                        index += 1
            except grpc.RpcError as error:
                raise from_rpc_error(error) from None

    def verify_inclusion(self, leaf_index: int, checkpoint: Checkpoint) -> bytes:
        """Fetch the leaf and its proof at the checkpoint's size; verify; return the entry."""
        ((_, data),) = list(self.entries(leaf_index, leaf_index + 1))
        try:
            response = self._stub.GetInclusionProof(
                pb.GetInclusionProofRequest(leaf_index=leaf_index, tree_size=checkpoint.size),
                metadata=self._metadata,
            )
        except grpc.RpcError as error:
            raise from_rpc_error(error) from None
        verify_inclusion(
            leaf_index,
            checkpoint.size,
            leaf_hash(data),
            list(response.hashes),
            checkpoint.root_hash,
        )
        return data

    def verify_consistency(self, older: Checkpoint, newer: Checkpoint) -> None:
        """Prove ``newer`` extends ``older``; raise VerificationError on a rewrite."""
        proof: list[bytes] = []
        if 0 < older.size < newer.size:
            try:
                response = self._stub.GetConsistencyProof(
                    pb.GetConsistencyProofRequest(
                        from_tree_size=older.size, to_tree_size=newer.size
                    ),
                    metadata=self._metadata,
                )
            except grpc.RpcError as error:
                raise from_rpc_error(error) from None
            proof = list(response.hashes)
        if older.size == newer.size and older.root_hash != newer.root_hash:
            raise VerificationError(f"split view: two roots for tree size {older.size}")
        verify_checkpoint_consistency(older, newer, proof)

    def audit(
        self,
        insurer_keys: Mapping[str, bytes],
        *,
        checkpoint: Checkpoint | None = None,
        progress: Callable[[int, int], None] | None = None,
    ) -> AuditReport:
        """Recompute every leaf and the root up to ``checkpoint`` (default: the latest).

        Every entry's index must match its position and every envelope must carry a valid
        signature by a key in ``insurer_keys`` (key id -> raw public key).
        """
        checkpoint = checkpoint or self.checkpoint()
        tree = CompactRange.empty()
        report = AuditReport(tree_size=checkpoint.size)
        for index, data in self.entries(0, checkpoint.size):
            entry = decode_entry(data)
            if entry.leaf_index != index:
                raise VerificationError(f"entry {index}: says it is entry {entry.leaf_index}")
            keyid = self._verify_signature(index, entry.envelope, insurer_keys)
            report.signers[keyid] = report.signers.get(keyid, 0) + 1
            report.signatures_checked += 1
            tree.append(leaf_hash(data))
            report.entries_checked += 1
            if progress is not None:
                progress(report.entries_checked, checkpoint.size)
        root = tree.root()
        if root != checkpoint.root_hash:
            raise VerificationError(
                f"root of the {checkpoint.size} entries is {root.hex()}, "
                f"the checkpoint says {checkpoint.root_hash.hex()}"
            )
        report.root_hash = root
        return report

    @staticmethod
    def _verify_signature(index: int, envelope: Envelope, insurer_keys: Mapping[str, bytes]) -> str:
        for signature in envelope.signatures:
            public_key = insurer_keys.get(signature.keyid)
            if public_key is None:
                continue
            try:
                verify_envelope_signature(envelope, signature.keyid, public_key)
            except VerificationError as error:
                raise VerificationError(f"entry {index}: bad signature: {error}") from error
            return signature.keyid
        raise VerificationError(f"entry {index}: no signature by a known insurer key")
