"""Witness policies (clients/offline/witness_policy.py): K of N valid cosignatures, the missing
witnesses named; a split view is refused by the witness and caught by a 1-of-1 policy."""

from __future__ import annotations

import argparse
import base64
from pathlib import Path

import pytest

from clients.cli_witness_policy import add_witness_arguments, check_witnesses
from clients.offline.note import (
    InvalidNoteSignatureError,
    MalformedVerifierKeyError,
    VerifierKey,
    verify_checkpoint,
)
from clients.offline.witness_policy import WitnessPolicy, WitnessPolicyError, verify_cosignatures
from clients.witness.keys import WitnessKey
from clients.witness.protocol import format_add_checkpoint
from clients.witness.store import WitnessStore
from clients.witness.witness import Witness
from ledger.signing import Ed25519Signer, format_verifier_key
from tests import merkle_reference

ORIGIN = "example.com/log"
LOG = Ed25519Signer(ORIGIN, bytes(range(32)))
LOG_KEY = VerifierKey.parse(format_verifier_key(LOG))
WITNESSES = [WitnessKey(f"witness.example/w{n}", bytes([n + 1]) * 32) for n in range(3)]
KEYS = [w.verifier_key.encode() for w in WITNESSES]
LEAVES = [f"leaf {n}".encode() for n in range(8)]


def _checkpoint(leaves: list[bytes]) -> bytes:
    root = base64.b64encode(merkle_reference.mth(leaves)).decode()
    text = f"{ORIGIN}\n{len(leaves)}\n{root}\n".encode()
    signature = base64.b64encode(LOG.key_id + LOG.sign(text)).decode()
    return text + f"\n\u2014 {ORIGIN} {signature}\n".encode()


def _cosign(note: bytes, *witnesses: WitnessKey) -> bytes:
    text = note[: note.rindex(b"\n\n") + 1].decode()
    return (
        note
        + "".join(
            w.cosign(text, 1_700_000_000 + n).line() for n, w in enumerate(witnesses)
        ).encode()
    )


def test_two_of_three_is_met_with_one_missing_and_three_of_three_names_it() -> None:
    note = _cosign(_checkpoint(LEAVES), WITNESSES[0], WITNESSES[2])
    cosigned = verify_cosignatures(note, WitnessPolicy.parse(KEYS, 2))
    assert [c.witness for c in cosigned] == [
        WITNESSES[0].verifier_key.label,
        WITNESSES[2].verifier_key.label,
    ]
    with pytest.raises(WitnessPolicyError, match="2 valid witness cosignature") as raised:
        verify_cosignatures(note, WitnessPolicy.parse(KEYS, 3))
    assert raised.value.missing == (WITNESSES[1].verifier_key.label,)
    assert verify_cosignatures(note, WitnessPolicy.parse(KEYS, 0)) == ()


def test_the_log_key_ignores_cosignatures_and_a_policy_ignores_the_log_line() -> None:
    note = _cosign(_checkpoint(LEAVES), *WITNESSES)
    assert verify_checkpoint(note, LOG_KEY).size == len(LEAVES)
    assert len(verify_cosignatures(note, WitnessPolicy.parse(KEYS))) == 3


def test_a_bad_cosignature_by_a_policy_witness_rejects_the_note() -> None:
    note = _checkpoint(LEAVES)
    forged = WITNESSES[0].cosign("another text\n", 1_700_000_000).line().encode()
    with pytest.raises(InvalidNoteSignatureError, match=r"witness\.example/w0"):
        verify_cosignatures(note + forged, WitnessPolicy.parse(KEYS, 1))


def test_a_cosignature_of_another_witness_with_the_same_name_does_not_count() -> None:
    impostor = WitnessKey("witness.example/w0", bytes([77]) * 32)
    note = _cosign(_checkpoint(LEAVES), impostor)
    with pytest.raises(WitnessPolicyError, match=r"missing: witness\.example/w0"):
        verify_cosignatures(note, WitnessPolicy.parse(KEYS[:1], 1))


@pytest.mark.parametrize(
    ("keys", "threshold", "message"),
    [
        ([format_verifier_key(LOG)], 1, "not a cosignature/v1 key"),
        (KEYS, 4, "threshold 4 is not in 0..3"),
        (KEYS, -1, "threshold -1 is not in 0..3"),
        ([KEYS[0], KEYS[0]], 1, "named twice"),
        (["nonsense"], 1, "malformed verifier key"),
    ],
)
def test_malformed_policies_are_refused(keys: list[str], threshold: int, message: str) -> None:
    with pytest.raises(MalformedVerifierKeyError, match=message):
        WitnessPolicy.parse(keys, threshold)


def test_a_split_view_is_refused_by_the_witness_and_caught_by_a_one_of_one_policy(
    tmp_path: Path,
) -> None:
    witness = Witness(WITNESSES[0], {ORIGIN: [LOG_KEY]}, WitnessStore(tmp_path / "w.db"))
    shown_to_witness = _checkpoint(LEAVES[:6])
    answer = witness.add_checkpoint(format_add_checkpoint(0, [], shown_to_witness))
    assert answer.status == 200
    # The operator signs a second checkpoint of the same size, with another history.
    shown_to_victim = _checkpoint([b"rewritten", *LEAVES[1:6]])
    assert verify_checkpoint(shown_to_victim, LOG_KEY).size == 6  # the log key alone is fooled
    refused = witness.add_checkpoint(format_add_checkpoint(6, [], shown_to_victim))
    assert refused.status == 422
    policy = WitnessPolicy.parse(KEYS[:1], 1)
    assert len(verify_cosignatures(shown_to_witness + answer.body, policy)) == 1
    with pytest.raises(WitnessPolicyError, match=r"requires 1; missing: witness\.example/w0"):
        verify_cosignatures(shown_to_victim, policy)
    # Even a cosignature line copied from the honest checkpoint does not verify on the other.
    with pytest.raises(InvalidNoteSignatureError):
        verify_cosignatures(shown_to_victim + answer.body, policy)


def test_the_command_line_options_build_the_policy(tmp_path: Path) -> None:
    parser = argparse.ArgumentParser()
    add_witness_arguments(parser)
    key_file = tmp_path / "w1.pub"
    key_file.write_text(KEYS[1] + "\n")
    args = parser.parse_args(["--witness", KEYS[0], "--witness", f"@{key_file}"])
    note = _cosign(_checkpoint(LEAVES), WITNESSES[0])
    with pytest.raises(WitnessPolicyError, match=r"missing: witness\.example/w1"):
        check_witnesses(args, note)
    args = parser.parse_args(
        ["--witness", KEYS[0], "--witness", KEYS[1], "--witness-threshold", "1"]
    )
    assert len(check_witnesses(args, note)) == 1
    assert check_witnesses(parser.parse_args([]), note) == ()
