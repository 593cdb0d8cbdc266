"""The portal client verifies each answer's checkpoint note; a note byte-for-byte equal to the
last one that verified is not verified again, and any other note still is (a forged or
foreign one is refused after a good one as before)."""

from __future__ import annotations

import datetime as dt
from typing import Any

import grpc
import pytest

import clients.portal as portal_module
from clients.portal import PortalClient
from clients.verify import TrustedLog
from ledger.checkpoint import Checkpoint, sign_checkpoint
from ledger.errors import VerificationError
from ledger.signing import Ed25519Signer, format_verifier_key
from ledger.v1 import coverage_service_pb2 as pb
from ledger.v1 import types_pb2

SIGNER = Ed25519Signer.generate("example.com/log")
OTHER = Ed25519Signer.generate("example.com/log")  # same origin, another key


def _note(size: int, signer: Ed25519Signer = SIGNER) -> bytes:
    return sign_checkpoint(Checkpoint(SIGNER.name, size, bytes(32)), signer)


class _Stub:
    """Answers CheckHousehold with the next of ``notes`` (and its size as the tree size)."""

    def __init__(self, notes: list[tuple[bytes, int]]) -> None:
        self.notes = notes

    def CheckHousehold(self, request: pb.CheckHouseholdRequest, **options: Any) -> Any:
        note, size = self.notes.pop(0)
        return pb.CheckHouseholdResponse(
            renewable=True, basis=pb.AnswerBasis(tree_size=size, checkpoint=note)
        )


@pytest.fixture
def verified(monkeypatch: pytest.MonkeyPatch) -> list[bytes]:
    """The notes the client had verified, in order."""
    seen: list[bytes] = []
    real = portal_module.verify_checkpoint

    def counted(note: bytes, log: TrustedLog) -> Checkpoint:
        seen.append(note)
        return real(note, log)

    monkeypatch.setattr(portal_module, "verify_checkpoint", counted)
    return seen


def _client(notes: list[tuple[bytes, int]]) -> PortalClient:
    client = PortalClient(
        grpc.insecure_channel("127.0.0.1:1"),
        log=TrustedLog.from_verifier_key(format_verifier_key(SIGNER)),
    )
    client._stub = _Stub(notes)  # type: ignore[assignment]
    return client


def _check(client: PortalClient) -> Checkpoint:
    person = types_pb2.PersonId(value="1", country_code="SA")
    return client.check_household(person, [], through=dt.date(2026, 12, 31)).checkpoint


def test_the_same_note_is_verified_once_and_a_new_one_again(verified: list[bytes]) -> None:
    first, second = _note(5), _note(6)
    client = _client([(first, 5), (first, 5), (second, 6), (second, 6), (first, 5)])
    assert [_check(client).size for _ in range(5)] == [5, 5, 6, 6, 5]
    assert verified == [first, second, first]


def test_a_note_signed_by_another_key_is_refused_after_a_good_one(verified: list[bytes]) -> None:
    forged = _note(5, OTHER)
    client = _client([(_note(5), 5), (forged, 5)])
    assert _check(client).size == 5
    with pytest.raises(VerificationError):
        _check(client)
    assert verified[-1] == forged


def test_a_remembered_note_still_must_match_the_answers_tree_size(verified: list[bytes]) -> None:
    note = _note(5)
    client = _client([(note, 5), (note, 7)])
    _check(client)
    with pytest.raises(ValueError, match="tree size 7, its checkpoint 5"):
        _check(client)
    assert verified == [note]
