"""Ed25519 keys: key ids, sumdb key strings (every malformation with its message), signing."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest

from ledger.errors import InvalidArgument, VerificationError
from ledger.signing import (
    Ed25519Signer,
    Ed25519Verifier,
    SignatureError,
    b64decode_canonical,
    format_signer_key,
    format_verifier_key,
    generate_keypair,
    note_key_id,
    parse_signer_key,
    parse_verifier_key,
    raw_public_key_verifier,
)

VECTORS: list[dict[str, Any]] = json.loads(
    (Path(__file__).parent.parent / "vectors" / "signed-note.json").read_text(encoding="utf-8")
)["cases"]
SIGNER_CASE = next(case for case in VECTORS if "signer_key" in case)
SIGNER_KEY: str = SIGNER_CASE["signer_key"]
VERIFIER_KEY: str = SIGNER_CASE["verifier_key"]


def _key(algorithm: int, material: bytes) -> str:
    return base64.b64encode(bytes([algorithm]) + material).decode("ascii")


@pytest.mark.parametrize("case", VECTORS, ids=[case["desc"] for case in VECTORS])
def test_vector_verifier_keys_parse_and_format_back(case: dict[str, Any]) -> None:
    verifier = parse_verifier_key(case["verifier_key"])
    name, key_id_hex, _ = case["verifier_key"].split("+", 2)
    assert verifier.name == name
    assert verifier.key_id.hex() == key_id_hex
    assert note_key_id(name, verifier.public_key) == verifier.key_id
    assert format_verifier_key(verifier) == case["verifier_key"]


def test_vector_signer_key_parses_and_formats_back() -> None:
    signer = parse_signer_key(SIGNER_KEY)
    assert signer.name == "PeterNeumann"
    assert format_signer_key(signer) == SIGNER_KEY
    assert format_verifier_key(signer) == VERIFIER_KEY
    assert signer.verifier() == parse_verifier_key(VERIFIER_KEY)


def test_note_key_id_known_answer() -> None:
    # The key id printed in the sumdb documentation's example key: c74f20a3.
    public_key = parse_verifier_key(VERIFIER_KEY).public_key
    assert note_key_id("PeterNeumann", public_key) == bytes.fromhex("c74f20a3")


def test_uppercase_hex_key_id_is_accepted_as_go_does() -> None:
    name, key_id_hex, key = VERIFIER_KEY.split("+", 2)
    assert parse_verifier_key(f"{name}+{key_id_hex.upper()}+{key}").key_id.hex() == key_id_hex


def test_generated_keypair_signs_and_verifies() -> None:
    signer_key, verifier_key = generate_keypair("example.com/log")
    signer, verifier = parse_signer_key(signer_key), parse_verifier_key(verifier_key)
    assert signer.public_key == verifier.public_key
    assert signer.key_id == verifier.key_id == note_key_id("example.com/log", signer.public_key)
    verifier.verify(b"message", signer.sign(b"message"))


def test_generate_gives_distinct_keys() -> None:
    assert Ed25519Signer.generate("a").public_key != Ed25519Signer.generate("a").public_key


def test_verifier_rejects_a_bad_signature() -> None:
    signer = Ed25519Signer(name="example.com/log", seed=bytes(32))
    signature = bytearray(signer.sign(b"message"))
    signature[0] ^= 1
    with pytest.raises(SignatureError, match=r"signature by example.com/log\+\w{8} does not"):
        signer.verifier().verify(b"message", bytes(signature))
    with pytest.raises(SignatureError, match="does not verify"):
        signer.verifier().verify(b"other message", signer.sign(b"message"))
    assert issubclass(SignatureError, VerificationError)


def test_verifier_rejects_a_signature_of_the_wrong_length() -> None:
    signer = Ed25519Signer("example.com/log", bytes(32))
    with pytest.raises(SignatureError, match="is 63 bytes, Ed25519 signatures are 64"):
        signer.verifier().verify(b"message", signer.sign(b"message")[:63])


def test_signer_repr_never_shows_the_seed() -> None:
    signer_key = generate_keypair("example.com/log")[0]
    seed_text = signer_key.split("+", 4)[4]
    assert seed_text not in repr(parse_signer_key(signer_key))
    assert "key_id=" in repr(parse_signer_key(signer_key))


@pytest.mark.parametrize(
    ("name", "message"),
    [
        ("", "must not be empty"),
        ("a+b", "must not contain '\\+'"),
        ("a b", "must not contain whitespace"),
        ("a\u00a0b", "must not contain whitespace"),
        ("x" * 129, "over 128 characters"),
        ("a\u200bb", "must not contain control characters"),
    ],
)
def test_signer_and_verifier_reject_invalid_names(name: str, message: str) -> None:
    with pytest.raises(InvalidArgument, match=message):
        Ed25519Signer(name, bytes(32))
    with pytest.raises(InvalidArgument, match=message):
        Ed25519Verifier(name, Ed25519Signer("a", bytes(32)).public_key)


def test_signer_rejects_a_seed_of_the_wrong_length() -> None:
    with pytest.raises(InvalidArgument, match="seed must be 32 bytes, got 31"):
        Ed25519Signer("a", bytes(31))


def test_verifier_rejects_a_public_key_of_the_wrong_length() -> None:
    with pytest.raises(InvalidArgument, match="public key must be 32 bytes, got 33"):
        Ed25519Verifier("a", bytes(33))


PUBLIC_KEY = parse_verifier_key(VERIFIER_KEY).public_key


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("PeterNeumann+c74f20a3", r"want <name>\+<hex8 key id>\+<base64 key>"),
        ("PeterNeumann", r"want <name>\+<hex8 key id>\+<base64 key>"),
        (f"+c74f20a3+{_key(1, PUBLIC_KEY)}", "invalid verifier key name '': must not be empty"),
        (f"Peter Neumann+c74f20a3+{_key(1, PUBLIC_KEY)}", "must not contain whitespace"),
        (f"{'x' * 129}+c74f20a3+{_key(1, PUBLIC_KEY)}", "over 128 characters"),
        (
            f"PeterNeumann+c74f20a+{_key(1, PUBLIC_KEY)}",
            "key id must be 8 hex digits, got 'c74f20a'",
        ),
        (f"PeterNeumann+c74f20g3+{_key(1, PUBLIC_KEY)}", "key id must be 8 hex digits"),
        (f"PeterNeumann+0xc74f20+{_key(1, PUBLIC_KEY)}", "key id must be 8 hex digits"),
        ("PeterNeumann+c74f20a3+AR!c2QcU", "key is not standard base64"),
        (f"PeterNeumann+c74f20a3+{_key(1, PUBLIC_KEY).rstrip('=')}x", "not standard base64"),
        (f"PeterNeumann+c74f20a3+{_key(1, PUBLIC_KEY)} ", "not standard base64"),
        ("PeterNeumann+c74f20a3+", "key is empty"),
        (f"PeterNeumann+c74f20a3+{_key(2, PUBLIC_KEY)}", r"unsupported algorithm 0x02 \(want 0x01"),
        (
            f"PeterNeumann+c74f20a3+{_key(1, PUBLIC_KEY[:31])}",
            "public key must be 32 bytes, got 31",
        ),
        (f"PeterNeumann+c74f20a4+{_key(1, PUBLIC_KEY)}", r"key id c74f20a4 does not match the key"),
        (f"Peter+c74f20a3+{_key(1, PUBLIC_KEY)}", "does not match the key"),
    ],
)
def test_parse_verifier_key_rejects_each_malformation(text: str, message: str) -> None:
    with pytest.raises(InvalidArgument, match=message):
        parse_verifier_key(text)


SEED = base64.b64decode(SIGNER_KEY.split("+", 4)[4])[1:]  # the base64 part may hold "+"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (VERIFIER_KEY, "malformed signer key: must start with 'PRIVATE\\+KEY\\+'"),
        (f"private+key+PeterNeumann+c74f20a3+{_key(1, SEED)}", "must start with"),
        ("PRIVATE+KEY+PeterNeumann+c74f20a3", "malformed signer key: want <name>"),
        (f"PRIVATE+KEY+Peter+Neumann+c74f20a3+{_key(1, SEED)}", "key id must be 8 hex digits"),
        (
            f"PRIVATE+KEY+PeterNeumann+c74f20a3+{_key(1, SEED[:16])}",
            "seed must be 32 bytes, got 16",
        ),
        (f"PRIVATE+KEY+PeterNeumann+c74f20a3+{_key(4, SEED)}", "unsupported algorithm 0x04"),
        (f"PRIVATE+KEY+PeterNeumann+00000000+{_key(1, SEED)}", "key id 00000000 does not match"),
    ],
)
def test_parse_signer_key_rejects_each_malformation(text: str, message: str) -> None:
    with pytest.raises(InvalidArgument, match=message):
        parse_signer_key(text)


def test_raw_public_key_verifier() -> None:
    signer = Ed25519Signer("insurer", bytes(range(32)))
    verifier = raw_public_key_verifier(signer.public_key)
    verifier.verify(b"payload", signer.sign(b"payload"))
    with pytest.raises(SignatureError, match="does not verify"):
        verifier.verify(b"payload!", signer.sign(b"payload"))
    with pytest.raises(InvalidArgument, match="signature must be 64 bytes, got 65"):
        verifier.verify(b"payload", signer.sign(b"payload") + b"\0")
    with pytest.raises(InvalidArgument, match="public key must be 32 bytes, got 31"):
        raw_public_key_verifier(signer.public_key[:31])


@pytest.mark.parametrize(
    ("text", "decoded"), [("", b""), ("AA==", b"\0"), ("AAA=", b"\0\0"), ("+/+/", b"\xfb\xff\xbf")]
)
def test_b64decode_canonical_accepts_canonical_standard_base64(text: str, decoded: bytes) -> None:
    assert b64decode_canonical(text) == decoded


@pytest.mark.parametrize("text", ["AA", "AB==", "AA=", "-_-_", "AA==AA==", "A A=", "é", " AA=="])
def test_b64decode_canonical_rejects_everything_else(text: str) -> None:
    with pytest.raises(ValueError):
        b64decode_canonical(text)
