"""C2SP tlog-proof bundles (https://c2sp.org/tlog-proof): format, malformations, verification.

Trees come from the RFC 6962 oracle in tests/merkle_reference.py; checkpoints are signed with the
ledger's own signer (the offline verifier must accept what the server signs).
"""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from clients.offline.tlog_proof import (
    BUNDLE_BYTES_MAX,
    CHECKPOINT_BYTES_MAX,
    EXTRA_BYTES_MAX,
    INDEX_MAX,
    PROOF_HASHES_MAX,
    MalformedTlogProofError,
    MalformedVerifierKeyError,
    TlogProof,
    TlogProofError,
    TlogProofVerificationError,
    leaf_hash,
    parse_tlog_proof,
    parse_verifier_key,
    serialize_tlog_proof,
    verify_checkpoint_note,
    verify_inclusion,
    verify_tlog_proof,
)
from ledger.checkpoint import Checkpoint, sign_checkpoint
from ledger.note import sign_note
from ledger.signing import Ed25519Signer, format_verifier_key
from tests import merkle_reference

REPO = Path(__file__).resolve().parents[2]
ORIGIN = "example.com/policy-ledger"
LOG = Ed25519Signer(ORIGIN, bytes(range(32)))
LOG_KEY = format_verifier_key(LOG)
WITNESS = Ed25519Signer("example.com/witness", bytes(range(1, 33)))
IMPOSTOR = Ed25519Signer(ORIGIN, bytes(range(2, 34)))  # same name, another key
ENTRIES = [f"entry {number}".encode() for number in range(11)]
HASH = bytes(range(32))
HASH_TEXT = base64.b64encode(HASH).decode()


def _checkpoint_note(
    size: int, root: bytes, *signers: Ed25519Signer, origin: str = ORIGIN
) -> bytes:
    text = Checkpoint(origin, size, root).to_text()
    return sign_note(text, list(signers) or [LOG])


def _bundle(
    index: int = 6,
    entries: list[bytes] = ENTRIES,
    *,
    signers: tuple[Ed25519Signer, ...] = (LOG,),
    extra: bytes = b"",
) -> bytes:
    note = _checkpoint_note(len(entries), merkle_reference.mth(entries), *signers)
    hashes = tuple(merkle_reference.path(index, entries))
    return serialize_tlog_proof(TlogProof(index, hashes, note, extra))


def _replace_line(bundle: bytes, number: int, line: bytes) -> bytes:
    lines = bundle.split(b"\n")
    lines[number] = line
    return b"\n".join(lines)


# --- Format ----------------------------------------------------------------------------------


def test_serialized_layout_is_the_spec_layout() -> None:
    note = _checkpoint_note(2, HASH)
    proof = TlogProof(index=73894, hashes=(HASH, HASH[::-1]), checkpoint=note, extra=b"ctx")
    expected = (
        f"c2sp.org/tlog-proof@v1\nextra Y3R4\nindex 73894\n{HASH_TEXT}\n"
        f"{base64.b64encode(HASH[::-1]).decode()}\n\n"
    ).encode() + note
    assert serialize_tlog_proof(proof) == expected
    # No extra data: the line is omitted.
    without = TlogProof(index=0, hashes=(), checkpoint=note)
    assert serialize_tlog_proof(without) == b"c2sp.org/tlog-proof@v1\nindex 0\n\n" + note


@pytest.mark.parametrize("extra", [b"", b"\x00", b"opaque context \xff" * 3])
@pytest.mark.parametrize("hashes", [0, 1, 5, PROOF_HASHES_MAX])
def test_round_trip(extra: bytes, hashes: int) -> None:
    note = _checkpoint_note(9, HASH, LOG, WITNESS)
    proof = TlogProof(
        index=INDEX_MAX,
        hashes=tuple(bytes([n]) * 32 for n in range(hashes)),
        checkpoint=note,
        extra=extra,
    )
    data = serialize_tlog_proof(proof)
    assert parse_tlog_proof(data) == proof
    assert serialize_tlog_proof(parse_tlog_proof(data)) == data


@given(
    index=st.integers(0, INDEX_MAX),
    hashes=st.lists(st.binary(min_size=32, max_size=32), max_size=PROOF_HASHES_MAX),
    extra=st.binary(max_size=200),
)
def test_round_trip_property(index: int, hashes: list[bytes], extra: bytes) -> None:
    note = _checkpoint_note(3, HASH)
    proof = TlogProof(index, tuple(hashes), note, extra)
    assert parse_tlog_proof(serialize_tlog_proof(proof)) == proof


def test_a_checkpoint_with_extension_lines_and_cosignatures_is_kept_verbatim() -> None:
    text = Checkpoint(ORIGIN, 11, merkle_reference.mth(ENTRIES), ("ext one", "ext two")).to_text()
    note = sign_note(text, [WITNESS, LOG])
    bundle = serialize_tlog_proof(TlogProof(3, tuple(merkle_reference.path(3, ENTRIES)), note))
    assert parse_tlog_proof(bundle).checkpoint == note
    verified = verify_tlog_proof(bundle, ENTRIES[3], LOG_KEY)
    assert verified.checkpoint_extensions == ("ext one", "ext two")
    assert verified.other_signatures == 1


_NOTE = _checkpoint_note(11, HASH)
_GOOD = serialize_tlog_proof(TlogProof(6, (HASH,), _NOTE))
_HEAD = b"c2sp.org/tlog-proof@v1\n"


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"", "malformed tlog-proof: empty bundle"),
        (_GOOD + b"x" * BUNDLE_BYTES_MAX, f"over {BUNDLE_BYTES_MAX}"),
        (b"c2sp.org/tlog-proof\nindex 0\n\n" + _NOTE, "first line is not the header"),
        (b"c2sp.org/tlog-proof@v2\nindex 0\n\n" + _NOTE, "unsupported version"),
        (b"c2sp.org/tlog-proof@v1", "line 1 does not end in a newline"),
        (_HEAD, "truncated: missing index after line 1"),
        (_HEAD + b"index 6", "line 2 does not end in a newline"),
        (_HEAD + b"index 6\n", "truncated: missing blank line before the checkpoint after line 2"),
        (_HEAD + b"index 6\n" + HASH_TEXT.encode() + b"\n", "truncated: missing blank line"),
        (_HEAD + b"extra \nindex 6\n\n" + _NOTE, "extra line has no data"),
        (_HEAD + b"extra\nindex 6\n\n" + _NOTE, "extra line has no data"),
        (_HEAD + b"extra ab!=\nindex 6\n\n" + _NOTE, "extra data is not standard padded base64"),
        (_HEAD + b"extra YQ\nindex 6\n\n" + _NOTE, "extra data is not standard padded base64"),
        (
            _HEAD + b"extra " + base64.b64encode(b"x" * (EXTRA_BYTES_MAX + 3)) + b"\n",
            f"extra data is over {EXTRA_BYTES_MAX} bytes",
        ),
        (_HEAD + b"\n\n" + _NOTE, "missing index line"),
        (_HEAD + b"idx 6\n\n" + _NOTE, "missing index line"),
        (_HEAD + b"index\n\n" + _NOTE, "missing index line"),
        (_HEAD + b"index \n\n" + _NOTE, "index line has no number"),
        (_HEAD + b"index -1\n\n" + _NOTE, "is not an ASCII decimal number"),
        (_HEAD + b"index 0x6\n\n" + _NOTE, "is not an ASCII decimal number"),
        (_HEAD + b"index  6\n\n" + _NOTE, "is not an ASCII decimal number"),
        (_HEAD + b"index 06\n\n" + _NOTE, "has leading zeros"),
        (_HEAD + b"index 18446744073709551616\n\n" + _NOTE, "out of range 0..2**64-1"),
        (_HEAD + b"index 1" + b"0" * 40 + b"\n\n" + _NOTE, "out of range 0..2**64-1"),
        (_HEAD + "index \u0666\n\n".encode() + _NOTE, "line 2 is not ASCII"),
        (_HEAD + b"index 6\r\n\n" + _NOTE, "line 2 contains a control character"),
        (_HEAD + b"index 6\n" + b"not base64!\n\n" + _NOTE, "proof hash 1 is not standard"),
        (
            _HEAD + b"index 6\n" + HASH_TEXT.rstrip("=").encode() + b"\n\n" + _NOTE,
            "proof hash 1 is not standard padded base64",
        ),
        (
            _HEAD
            + b"index 6\n"
            + HASH_TEXT.encode()
            + b"\n"
            + base64.b64encode(HASH[:31])
            + b"\n\n"
            + _NOTE,
            "proof hash 2 is 31 bytes, want 32",
        ),
        (
            _HEAD
            + b"index 6\n"
            + (HASH_TEXT.encode() + b"\n") * (PROOF_HASHES_MAX + 1)
            + b"\n"
            + _NOTE,
            f"more than {PROOF_HASHES_MAX} proof hashes",
        ),
        (_HEAD + b"index 6\n\n", "no checkpoint after the blank line"),
        (_HEAD + b"index 6\n\n\n" + _NOTE, "more than one blank line before the checkpoint"),
        (_HEAD + b"index 6\n\n" + _NOTE[:-1], "checkpoint does not end in a newline"),
        (
            _HEAD + b"index 6\n\n" + b"x" * CHECKPOINT_BYTES_MAX + b"\n",
            f"over {CHECKPOINT_BYTES_MAX}",
        ),
    ],
)
def test_malformed_bundles_are_refused_with_their_message(data: bytes, message: str) -> None:
    with pytest.raises(MalformedTlogProofError, match=message.replace("*", r"\*")) as raised:
        parse_tlog_proof(data)
    assert str(raised.value).startswith("malformed tlog-proof: ")
    # The verifier refuses them with the same message.
    with pytest.raises(MalformedTlogProofError, match=message.replace("*", r"\*")):
        verify_tlog_proof(data, ENTRIES[6], LOG_KEY)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"index": -1}, "index -1 out of range"),
        ({"index": INDEX_MAX + 1}, "out of range"),
        ({"hashes": (HASH,) * (PROOF_HASHES_MAX + 1)}, f"over {PROOF_HASHES_MAX}"),
        ({"hashes": (HASH, HASH[:31])}, "proof hash 2 is 31 bytes"),
        ({"extra": b"x" * (EXTRA_BYTES_MAX + 1)}, "extra data is"),
        ({"checkpoint": b""}, "no checkpoint"),
        ({"checkpoint": _NOTE[:-1]}, "does not end in a newline"),
        ({"checkpoint": b"\n" + _NOTE}, "more than one blank line"),
    ],
)
def test_invalid_fields_are_refused_at_construction(fields: dict[str, Any], message: str) -> None:
    values: dict[str, Any] = {"index": 0, "hashes": (), "checkpoint": _NOTE} | fields
    with pytest.raises(MalformedTlogProofError, match=message):
        TlogProof(**values)


# --- Verifier keys -----------------------------------------------------------------------------


def test_verifier_key_parses_as_the_ledger_formats_it() -> None:
    key = parse_verifier_key(LOG_KEY)
    assert (key.name, key.key_id, key.public_key) == (LOG.name, LOG.key_id, LOG.public_key)
    assert key.label == f"{LOG.name}+{LOG.key_id.hex()}"


def test_signed_note_vectors_verify() -> None:
    vectors = json.loads((REPO / "tests" / "vectors" / "signed-note.json").read_text())
    for case in vectors["cases"]:
        key = parse_verifier_key(case["verifier_key"])
        note = case["note"].encode()
        if case["want_verified"]:
            # The vectors' texts are not checkpoints: a verified signature, then a body refusal.
            with pytest.raises(TlogProofVerificationError, match="signed checkpoint is malformed"):
                verify_checkpoint_note(note, key)


_PUBLIC = base64.b64encode(b"\x01" + LOG.public_key).decode()
_ALGORITHM_2 = base64.b64encode(b"\x02" + LOG.public_key).decode()
_SHORT_KEY = base64.b64encode(b"\x01" + LOG.public_key[:31]).decode()
_KEY_ID = LOG.key_id.hex()


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "want <name>\\+<hex key id>\\+<base64 key>"),
        (f"{ORIGIN}+{_KEY_ID}", "want <name>"),
        (f"+{_KEY_ID}+{_PUBLIC}", "key name '' is empty"),
        (f"a b+{_KEY_ID}+{_PUBLIC}", "contains whitespace"),
        (f"{ORIGIN}+{_KEY_ID[:6]}+{_PUBLIC}", "key id must be 8 hex digits"),
        (f"{ORIGIN}+zzzzzzzz+{_PUBLIC}", "key id must be 8 hex digits"),
        (f"{ORIGIN}+{_KEY_ID}+{_PUBLIC[:-1]}", "key is not standard padded base64"),
        (f"{ORIGIN}+{_KEY_ID}+{_PUBLIC}=", "key is not standard padded base64"),
        (f"{ORIGIN}+{_KEY_ID}+", "key is not standard padded base64|key is empty"),
        (
            f"{ORIGIN}+{_KEY_ID}+{_ALGORITHM_2}",
            "unsupported signature algorithm 0x02",
        ),
        (
            f"{ORIGIN}+{_KEY_ID}+{_SHORT_KEY}",
            "must be 32 bytes, got 31",
        ),
        (f"{ORIGIN}+00000000+{_PUBLIC}", "key id 00000000 does not match the key"),
        (f"other.example/log+{_KEY_ID}+{_PUBLIC}", "does not match the key"),
    ],
)
def test_malformed_verifier_keys_are_refused(text: str, message: str) -> None:
    with pytest.raises(MalformedVerifierKeyError, match=message):
        parse_verifier_key(text)
    with pytest.raises(MalformedVerifierKeyError, match=message):
        verify_tlog_proof(_bundle(), ENTRIES[6], text)


# --- Verification ------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [1, 2, 3, 4, 5, 7, 8, 9, 16, 17])
def test_every_leaf_of_every_tree_verifies(size: int) -> None:
    entries = ENTRIES[:size] if size <= len(ENTRIES) else [bytes([n]) for n in range(size)]
    root = merkle_reference.mth(entries)
    for index, entry in enumerate(entries):
        bundle = _bundle(index, entries)
        verified = verify_tlog_proof(bundle, entry, LOG_KEY)
        assert (verified.origin, verified.tree_size, verified.root_hash) == (ORIGIN, size, root)
        assert (verified.leaf_index, verified.leaf_hash) == (index, leaf_hash(entry))
        assert verified.log_key == f"{LOG.name}+{LOG.key_id.hex()}"
        assert verified.extra == b""
        assert verified.other_signatures == 0


def test_leaf_hash_is_rfc6962() -> None:
    assert leaf_hash(b"") == bytes.fromhex(
        "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d"
    )


def test_verification_agrees_with_the_ledger_tree() -> None:
    from ledger.merkle import MemoryTree

    tree = MemoryTree()
    for entry in ENTRIES:
        tree.append(entry)
    for index in range(len(ENTRIES)):
        verify_inclusion(
            index,
            len(ENTRIES),
            leaf_hash(ENTRIES[index]),
            tree.inclusion_proof(index, len(ENTRIES)),
            tree.root(),
        )


def test_extra_data_is_returned_but_not_authenticated() -> None:
    verified = verify_tlog_proof(_bundle(extra=b"context"), ENTRIES[6], LOG_KEY)
    assert verified.extra == b"context"
    assert verify_tlog_proof(_bundle(extra=b"changed"), ENTRIES[6], LOG_KEY).extra == b"changed"


def test_every_single_byte_change_of_the_bundle_is_rejected() -> None:
    # Log key only: a witness's cosignature line is not checked (C2SP), so changing it is not.
    bundle = _bundle(6)
    verify_tlog_proof(bundle, ENTRIES[6], LOG_KEY)
    for position in range(len(bundle)):
        for mask in (0x01, 0x80):
            mutated = bytearray(bundle)
            mutated[position] ^= mask
            with pytest.raises(TlogProofError):
                verify_tlog_proof(bytes(mutated), ENTRIES[6], LOG_KEY)


def test_every_single_byte_change_of_a_proof_hash_is_rejected() -> None:
    note = _checkpoint_note(len(ENTRIES), merkle_reference.mth(ENTRIES))
    hashes = merkle_reference.path(6, ENTRIES)
    assert len(hashes) == 4
    for which, proof_hash in enumerate(hashes):
        for position in range(32):
            mutated = bytearray(proof_hash)
            mutated[position] ^= 0x01
            changed = (*hashes[:which], bytes(mutated), *hashes[which + 1 :])
            bundle = serialize_tlog_proof(TlogProof(6, changed, note))
            with pytest.raises(TlogProofVerificationError, match="does not lead to the checkpoint"):
                verify_tlog_proof(bundle, ENTRIES[6], LOG_KEY)


def test_every_single_byte_change_of_the_root_is_rejected_even_when_signed() -> None:
    root = merkle_reference.mth(ENTRIES)
    hashes = tuple(merkle_reference.path(6, ENTRIES))
    for position in range(32):
        mutated = bytearray(root)
        mutated[position] ^= 0x01
        # Signed by the log key: the signature holds, the inclusion proof does not.
        note = _checkpoint_note(len(ENTRIES), bytes(mutated))
        bundle = serialize_tlog_proof(TlogProof(6, hashes, note))
        with pytest.raises(TlogProofVerificationError, match="does not lead to the checkpoint"):
            verify_tlog_proof(bundle, ENTRIES[6], LOG_KEY)


def test_every_other_index_is_rejected() -> None:
    bundle = _bundle(6)
    for index in [*range(len(ENTRIES) + 3), INDEX_MAX]:
        if index == 6:
            continue
        changed = _replace_line(bundle, 1, f"index {index}".encode())
        with pytest.raises(TlogProofVerificationError, match="verification failed"):
            verify_tlog_proof(changed, ENTRIES[6], LOG_KEY)


def test_every_single_byte_change_of_the_signature_is_rejected() -> None:
    bundle = _bundle(6)
    signature_line = bundle.rstrip(b"\n").rsplit(b"\n", 1)[1]
    prefix, encoded = signature_line.rsplit(b" ", 1)
    raw = base64.b64decode(encoded)
    assert len(raw) == 4 + 64
    for position in range(4, len(raw)):
        mutated = bytearray(raw)
        mutated[position] ^= 0x01
        line = prefix + b" " + base64.b64encode(bytes(mutated))
        with pytest.raises(TlogProofVerificationError, match=r"signature by .* does not verify"):
            verify_tlog_proof(bundle.replace(signature_line, line), ENTRIES[6], LOG_KEY)
    for position in range(4):  # the key id: the line is no longer the log key's
        mutated = bytearray(raw)
        mutated[position] ^= 0x01
        line = prefix + b" " + base64.b64encode(bytes(mutated))
        with pytest.raises(TlogProofVerificationError, match="not signed by the log key"):
            verify_tlog_proof(bundle.replace(signature_line, line), ENTRIES[6], LOG_KEY)


def test_every_single_byte_change_of_the_entry_is_rejected() -> None:
    bundle = _bundle(6)
    entry = ENTRIES[6]
    for position in range(len(entry)):
        mutated = bytearray(entry)
        mutated[position] ^= 0x01
        with pytest.raises(TlogProofVerificationError, match="does not lead to the checkpoint"):
            verify_tlog_proof(bundle, bytes(mutated), LOG_KEY)
    with pytest.raises(TlogProofVerificationError):
        verify_tlog_proof(bundle, entry + b"\x00", LOG_KEY)


def test_a_bundle_signed_by_another_key_is_rejected() -> None:
    for signer in (IMPOSTOR, WITNESS):
        bundle = _bundle(6, signers=(signer,))
        with pytest.raises(TlogProofVerificationError, match="not signed by the log key"):
            verify_tlog_proof(bundle, ENTRIES[6], LOG_KEY)
    # ...and accepted with that key, when it is the one trusted (and the origin is its name).
    verify_tlog_proof(_bundle(6, signers=(IMPOSTOR,)), ENTRIES[6], format_verifier_key(IMPOSTOR))


def test_a_bad_signature_by_the_log_key_rejects_even_beside_a_good_one() -> None:
    bundle = _bundle(6)
    signature_line = bundle.rstrip(b"\n").rsplit(b"\n", 1)[1]
    prefix, encoded = signature_line.rsplit(b" ", 1)
    raw = bytearray(base64.b64decode(encoded))
    raw[-1] ^= 0x01
    forged = prefix + b" " + base64.b64encode(bytes(raw)) + b"\n"
    with pytest.raises(TlogProofVerificationError, match="does not verify"):
        verify_tlog_proof(bundle + forged, ENTRIES[6], LOG_KEY)


def test_origin_must_be_the_expected_one() -> None:
    root = merkle_reference.mth(ENTRIES)
    note = _checkpoint_note(len(ENTRIES), root, origin="example.com/another-log")
    bundle = serialize_tlog_proof(TlogProof(6, tuple(merkle_reference.path(6, ENTRIES)), note))
    with pytest.raises(
        TlogProofVerificationError, match=r"checkpoint origin is 'example\.com/another-log'"
    ):
        verify_tlog_proof(bundle, ENTRIES[6], LOG_KEY)
    verified = verify_tlog_proof(bundle, ENTRIES[6], LOG_KEY, origin="example.com/another-log")
    assert verified.origin == "example.com/another-log"


def test_proofs_of_the_wrong_length_are_rejected() -> None:
    note = _checkpoint_note(len(ENTRIES), merkle_reference.mth(ENTRIES))
    hashes = tuple(merkle_reference.path(6, ENTRIES))
    longer = serialize_tlog_proof(TlogProof(6, (*hashes, HASH), note))
    with pytest.raises(TlogProofVerificationError, match="5 hashes, too many"):
        verify_tlog_proof(longer, ENTRIES[6], LOG_KEY)
    shorter = serialize_tlog_proof(TlogProof(6, hashes[:-1], note))
    with pytest.raises(TlogProofVerificationError, match="3 hashes, too few"):
        verify_tlog_proof(shorter, ENTRIES[6], LOG_KEY)


def test_an_empty_tree_includes_nothing() -> None:
    note = _checkpoint_note(0, merkle_reference.mth([]))
    bundle = serialize_tlog_proof(TlogProof(0, (), note))
    with pytest.raises(
        TlogProofVerificationError, match="leaf index 0 is not in the tree of size 0"
    ):
        verify_tlog_proof(bundle, b"", LOG_KEY)


_SIGNED_BY_LOG = sign_note(f"{ORIGIN}\n11\n{HASH_TEXT}\n", [LOG])
_SIGNATURE_LINE = _SIGNED_BY_LOG.split(b"\n\n")[1]


@pytest.mark.parametrize(
    ("note", "message"),
    [
        (b"\xff" + _SIGNED_BY_LOG, "checkpoint note: not valid UTF-8"),
        (
            _SIGNED_BY_LOG.replace(b"11\n", b"1\x0b1\n"),
            "checkpoint note: control character U\\+000B",
        ),
        (f"{ORIGIN}\n11\n".encode() + _SIGNATURE_LINE, "no blank line between the text"),
        (_SIGNED_BY_LOG + b"\n", "no signature lines after the blank line|does not start"),
        (_SIGNED_BY_LOG.replace("\u2014".encode(), b"-"), "does not start with an em dash"),
        (_SIGNED_BY_LOG + "\u2014 name\n".encode(), "has no signature after the key name"),
        (_SIGNED_BY_LOG + "\u2014 a+b QUJDREVGRw==\n".encode(), "key name contains '\\+'"),
        (_SIGNED_BY_LOG + "\u2014 name QUJDREVGRw\n".encode(), "is not standard padded base64"),
        (_SIGNED_BY_LOG + "\u2014 name QUJDRA==\n".encode(), "no room for a key id and signature"),
        (
            _SIGNED_BY_LOG + "\u2014 witness QUJDREVGRw==\n".encode() * 32,
            "33 signature lines, over 32",
        ),
    ],
)
def test_malformed_checkpoint_notes_are_refused(note: bytes, message: str) -> None:
    bundle = serialize_tlog_proof(TlogProof(6, (), note))
    with pytest.raises(MalformedTlogProofError, match=message):
        verify_tlog_proof(bundle, ENTRIES[6], LOG_KEY)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (f"{ORIGIN}\n11\n", "want origin, tree size and root hash lines, got 2"),
        (f"{ORIGIN}\n+11\n{HASH_TEXT}\n", "tree size '\\+11' is not an ASCII decimal"),
        (f"{ORIGIN}\n011\n{HASH_TEXT}\n", "tree size '011' has leading zeros"),
        (
            f"{ORIGIN}\n18446744073709551616\n{HASH_TEXT}\n",
            "tree size 18446744073709551616 out of range",
        ),
        (f"{ORIGIN}\n11\n{HASH_TEXT.rstrip('=')}\n", "root hash is not standard padded base64"),
        (f"{ORIGIN}\n11\n{base64.b64encode(HASH[:31]).decode()}\n", "root hash is 31 bytes"),
        (f"{ORIGIN}\n11\n{HASH_TEXT}\next\n\nafter\n", "extension line 5 is empty"),
    ],
)
def test_malformed_signed_checkpoints_are_refused(text: str, message: str) -> None:
    note = sign_note(text, [LOG])
    bundle = serialize_tlog_proof(TlogProof(6, (), note))
    with pytest.raises(
        TlogProofVerificationError, match="signed checkpoint is malformed: " + message
    ):
        verify_tlog_proof(bundle, ENTRIES[6], LOG_KEY)


def test_an_empty_origin_is_refused() -> None:
    # (In a bundle it cannot even be framed: the checkpoint would start with a blank line.)
    note = sign_note(f"\n11\n{HASH_TEXT}\n", [LOG])
    with pytest.raises(TlogProofVerificationError, match="malformed: empty origin line"):
        verify_checkpoint_note(note, parse_verifier_key(LOG_KEY))


def test_witness_cosignatures_are_ignored_even_when_changed() -> None:
    bundle = _bundle(6, signers=(LOG, WITNESS))
    witness_line = bundle.rstrip(b"\n").rsplit(b"\n", 1)[1]
    assert witness_line.startswith("\u2014 example.com/witness ".encode())
    forged = witness_line[:-4] + (b"AAA=" if witness_line[-4:] != b"AAA=" else b"AQA=")
    verified = verify_tlog_proof(bundle.replace(witness_line, forged), ENTRIES[6], LOG_KEY)
    assert verified.other_signatures == 1


def test_a_checkpoint_the_server_signs_is_accepted() -> None:
    root = merkle_reference.mth(ENTRIES)
    note = sign_checkpoint(Checkpoint(ORIGIN, len(ENTRIES), root), LOG)
    key = parse_verifier_key(LOG_KEY)
    checkpoint, others = verify_checkpoint_note(note, key)
    assert (checkpoint.origin, checkpoint.size, checkpoint.root_hash, others) == (
        ORIGIN,
        len(ENTRIES),
        root,
        0,
    )


def test_importing_the_offline_verifier_loads_no_ledger_module() -> None:
    code = (
        "import clients.offline.tlog_proof, sys; "
        "print([m for m in sys.modules if m == 'ledger' or m.startswith('ledger.')])"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]", result.stdout
