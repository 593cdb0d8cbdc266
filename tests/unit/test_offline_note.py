"""The offline note library's own API (clients/offline/note.py): verifier keys of both supported
types, key ids, canonical base64 and ASCII decimals. Notes themselves are tested case by case in
test_signed_note_cases.py, against the server's parser."""

from __future__ import annotations

import pytest

from clients.offline.note import (
    COSIGNATURE_V1_TYPE,
    ED25519_TYPE,
    MalformedVerifierKeyError,
    VerifierKey,
    b64decode_canonical,
    compute_key_id,
    parse_decimal,
)

SPEC_KEY = "example.com/foo+530d903a+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k"


def test_the_spec_verifier_key_parses_and_encodes_back() -> None:
    key = VerifierKey.parse(SPEC_KEY)
    assert (key.name, key.key_id.hex(), key.signature_type) == ("example.com/foo", "530d903a", 1)
    assert key.encode() == SPEC_KEY
    assert compute_key_id(key.name, ED25519_TYPE, key.public_key) == key.key_id


def test_a_cosignature_key_has_its_own_key_id() -> None:
    log_key = VerifierKey.parse(SPEC_KEY)
    witness = VerifierKey.from_public_key(log_key.name, log_key.public_key, COSIGNATURE_V1_TYPE)
    assert witness.key_id != log_key.key_id
    assert VerifierKey.parse(witness.encode()) == witness


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("example.com/foo+530D903A+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k", "lowercase"),
        ("example.com/foo+530d903a+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2", "base64"),
        ("example.com/foo+530d903a+AukyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k", "0x02"),
        ("example.com/foo+530d903a+", "key is empty"),
        ("example.com/bar+530d903a+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k", "does not match"),
        ("example com+530d903a+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k", "whitespace"),
    ],
)
def test_malformed_verifier_keys_are_refused(text: str, message: str) -> None:
    with pytest.raises(MalformedVerifierKeyError, match=message):
        VerifierKey.parse(text)


@pytest.mark.parametrize("text", ["AAE", "AAE=\n", "AAF=", "AA==A", " AAE="])
def test_only_canonical_padded_base64_decodes(text: str) -> None:
    with pytest.raises(ValueError):
        b64decode_canonical(text)
    assert b64decode_canonical("AAE=") == b"\x00\x01"


@pytest.mark.parametrize("text", ["", "+1", "01", "1 ", "\u0661", "\uff11", "10"])
def test_decimals_are_ascii_without_leading_zeros_and_in_range(text: str) -> None:
    with pytest.raises(ValueError):
        parse_decimal(text, 9)
    assert parse_decimal("0", 9) == 0
    assert parse_decimal("9", 9) == 9
