"""Receipts from a real server, verified by the offline verifier alone (no server code)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from clients.insurer import sign_event
from clients.offline.merkle import VerificationFailure
from clients.offline.note import VerifierKey
from clients.offline.receipt import verify_receipt
from clients.samples import sample_events
from ledger.signing import Ed25519Signer, format_verifier_key
from ledger.v1 import ledger_service_pb2 as pb
from ledger.v1 import ledger_service_pb2_grpc as pb_grpc
from tests import clock as test_clock
from tests.builders import tokens
from tests.conftest import ServerHandle, onboard

INSURER = "gulf-health"


def test_receipts_verify_offline_and_every_tampering_fails(
    server: ServerHandle, operator_signer: Ed25519Signer, insurer_signer: Ed25519Signer
) -> None:
    onboard(server, operator_signer, INSURER, insurer_signer)
    key = VerifierKey.parse(server.log_verifier_key)
    with server.channel("insurer", INSURER) as channel:
        stub = pb_grpc.LedgerServiceStub(channel)
        for event in sample_events(5, INSURER, test_clock.now(), tokens=tokens):
            envelope = sign_event(event, insurer_signer)
            receipt = stub.SubmitEvent(pb.SubmitEventRequest(envelope=envelope)).receipt
            fields = {
                "leaf_index": receipt.leaf_index,
                "leaf_hash_": receipt.leaf_hash,
                "entry": receipt.entry,
                "checkpoint_note": receipt.checkpoint,
                "inclusion_proof": list(receipt.inclusion_proof),
                "payload": envelope.payload,
                "key": key,
            }
            checkpoint = verify_receipt(**fields)  # type: ignore[arg-type]
            assert checkpoint.size > receipt.leaf_index
    tampered = [
        {"payload": envelope.payload + b"x"},
        {"leaf_index": receipt.leaf_index + 1},
        {"entry": receipt.entry[:-1] + bytes([receipt.entry[-1] ^ 1])},
        {"inclusion_proof": [bytes(32)] * len(receipt.inclusion_proof)},
        {"checkpoint_note": receipt.checkpoint.replace(b"\n\n", b"\n\n\n", 1)},
        {"key": VerifierKey.parse(format_verifier_key(Ed25519Signer.generate(key.name)))},
    ]
    for change in tampered:
        with pytest.raises(VerificationFailure):
            verify_receipt(**{**fields, **change})  # type: ignore[arg-type]


def test_the_offline_verifier_imports_no_server_code() -> None:
    modules = "audit, certificate, merkle, note, receipt, sources, tlog_proof, wire, witness_policy"
    # The witness is somebody else's process: it needs none of the log's code either.
    witness = "cli, keys, process, protocol, server, store, witness"
    probe = (
        f"import sys; from clients.offline import {modules}; "
        f"from clients.witness import {witness}; "
        "print([m for m in sys.modules if m == 'ledger' or m.startswith('ledger.')])"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60
    )
    assert result.stdout.strip() == "[]"
