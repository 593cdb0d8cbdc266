"""The clients' side of ``x-min-tree-size``: sent on every read, and an answer older than it is
refused by the client itself (it does not take the server's word for its freshness)."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import grpc
import pytest

from clients.auditor import MIN_TREE_SIZE_METADATA, AuditorClient
from clients.verify import TrustedLog
from ledger import limits
from ledger.checkpoint import Checkpoint, sign_checkpoint
from ledger.errors import VerificationError
from ledger.signing import Ed25519Signer, format_verifier_key
from ledger.v1 import ledger_service_pb2 as pb

SIGNER = Ed25519Signer.generate("example.com/log")


class _Stub:
    """Answers GetCheckpoint at ``size`` and remembers the metadata of each call."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.metadata: list[Any] = []

    def GetCheckpoint(self, request: pb.GetCheckpointRequest, **options: Any) -> Any:
        self.metadata.append(options.get("metadata", ()))
        note = sign_checkpoint(Checkpoint(SIGNER.name, self.size, bytes(32)), SIGNER)
        return SimpleNamespace(checkpoint=note)


def _client(size: int, min_tree_size: int) -> tuple[AuditorClient, _Stub]:
    client = AuditorClient(
        grpc.insecure_channel("127.0.0.1:1"),
        log=TrustedLog.from_verifier_key(format_verifier_key(SIGNER)),
        min_tree_size=min_tree_size,
    )
    stub = _Stub(size)
    client._stub = stub  # type: ignore[assignment]
    return client, stub


def test_the_client_and_server_name_the_same_metadata() -> None:
    assert limits.min_tree_size_metadata == MIN_TREE_SIZE_METADATA


def test_an_answer_older_than_the_size_asked_for_is_refused() -> None:
    client, stub = _client(size=9, min_tree_size=10)
    with pytest.raises(VerificationError, match="older than the 10 asked for"):
        client.checkpoint()
    assert stub.metadata == [((MIN_TREE_SIZE_METADATA, "10"),)]


def test_an_answer_at_or_after_the_size_asked_for_is_taken() -> None:
    client, stub = _client(size=10, min_tree_size=10)
    assert client.checkpoint().size == 10
    client.min_tree_size = 0  # nothing asked: no metadata, any size
    assert client.checkpoint().size == 10
    assert stub.metadata == [((MIN_TREE_SIZE_METADATA, "10"),), ()]
