"""DSSE envelopes: PAE known answers, signing and verification, limits, the JSON form."""

from __future__ import annotations

import base64
import json
from dataclasses import replace

import pytest

from ledger import limits
from ledger.dsse import (
    ENVELOPE_JSON_BYTES_MAX,
    Envelope,
    EnvelopeSignature,
    check_envelope_limits,
    envelope_from_json,
    envelope_to_json,
    pae,
    sign_envelope,
    verify_envelope_signature,
)
from ledger.errors import InvalidArgument, ResourceExhausted
from ledger.signing import Ed25519Signer, SignatureError

INSURER = Ed25519Signer("gulf-health", bytes(range(32)))
OTHER = Ed25519Signer("other", bytes(range(1, 33)))
PAYLOAD_TYPE = "application/vnd.policy-ledger.event.v1+protobuf"
PAYLOAD = b"\x0a\x03abc"
ENVELOPE = sign_envelope(PAYLOAD_TYPE, PAYLOAD, INSURER, "ed25519:insurer")


def test_pae_known_answer_from_the_dsse_spec() -> None:
    # protocol.md, "Test Vectors": PAE("http://example.com/HelloWorld", "hello world").
    assert pae("http://example.com/HelloWorld", b"hello world") == (
        b"DSSEv1 29 http://example.com/HelloWorld 11 hello world"
    )


def test_pae_counts_bytes_not_characters() -> None:
    assert pae("", b"") == b"DSSEv1 0  0 "
    assert pae("\u00e9", b"\xff\x00") == b"DSSEv1 2 \xc3\xa9 2 \xff\x00"


def test_sign_and_verify() -> None:
    assert ENVELOPE.signatures[0].keyid == "ed25519:insurer"
    assert len(ENVELOPE.signatures[0].sig) == 64
    verify_envelope_signature(ENVELOPE, "ed25519:insurer", INSURER.public_key)
    # The signature is over the PAE, not the bare payload.
    INSURER.verifier().verify(pae(PAYLOAD_TYPE, PAYLOAD), ENVELOPE.signatures[0].sig)


def test_sign_with_a_bare_sign_function() -> None:
    envelope = sign_envelope(PAYLOAD_TYPE, PAYLOAD, INSURER.sign, "k")
    assert envelope.signatures == (EnvelopeSignature("k", ENVELOPE.signatures[0].sig),)


def test_sign_refuses_an_envelope_over_the_limits() -> None:
    with pytest.raises(ResourceExhausted, match="over 65536"):
        sign_envelope(PAYLOAD_TYPE, bytes(limits.envelope_payload_bytes_max + 1), INSURER, "k")


def test_verify_picks_the_signature_with_the_keyid() -> None:
    envelope = replace(
        ENVELOPE,
        signatures=(
            sign_envelope(PAYLOAD_TYPE, PAYLOAD, OTHER, "other").signatures[0],
            *ENVELOPE.signatures,
        ),
    )
    verify_envelope_signature(envelope, "ed25519:insurer", INSURER.public_key)
    verify_envelope_signature(envelope, "other", OTHER.public_key)


@pytest.mark.parametrize(
    "tampered",
    [
        replace(ENVELOPE, payload=PAYLOAD + b"!"),
        replace(ENVELOPE, payload_type=PAYLOAD_TYPE + "x"),
        replace(
            ENVELOPE,
            signatures=(EnvelopeSignature("ed25519:insurer", bytes(64)),),
        ),
        replace(
            ENVELOPE,
            signatures=(EnvelopeSignature("ed25519:insurer", ENVELOPE.signatures[0].sig[:63]),),
        ),
    ],
    ids=["payload", "payload-type", "sig", "short-sig"],
)
def test_verify_rejects_tampering(tampered: Envelope) -> None:
    with pytest.raises(SignatureError, match="by key 'ed25519:insurer' does not verify"):
        verify_envelope_signature(tampered, "ed25519:insurer", INSURER.public_key)


def test_verify_rejects_another_key() -> None:
    with pytest.raises(SignatureError, match="does not verify"):
        verify_envelope_signature(ENVELOPE, "ed25519:insurer", OTHER.public_key)


def test_verify_rejects_a_missing_keyid() -> None:
    with pytest.raises(SignatureError, match="no signature by key 'nobody'"):
        verify_envelope_signature(ENVELOPE, "nobody", INSURER.public_key)


def test_verify_rejects_a_malformed_public_key() -> None:
    with pytest.raises(InvalidArgument, match="public key must be 32 bytes, got 31"):
        verify_envelope_signature(ENVELOPE, "ed25519:insurer", INSURER.public_key[:31])


def test_limits_accept_the_largest_envelope() -> None:
    signatures = ENVELOPE.signatures * limits.envelope_signatures_max
    largest = Envelope(
        payload_type="t" * limits.envelope_payload_type_chars_max,
        payload=bytes(limits.envelope_payload_bytes_max),
        signatures=tuple(
            EnvelopeSignature("k" * limits.envelope_keyid_chars_max, signature.sig)
            for signature in signatures
        ),
    )
    check_envelope_limits(largest)


@pytest.mark.parametrize(
    ("fields", "error", "field", "message"),
    [
        (
            {"payload": bytes(limits.envelope_payload_bytes_max + 1)},
            ResourceExhausted,
            "envelope.payload",
            "payload is 65537 bytes, over 65536",
        ),
        (
            {"signatures": ENVELOPE.signatures * (limits.envelope_signatures_max + 1)},
            ResourceExhausted,
            "envelope.signatures",
            "5 signatures, over 4",
        ),
        ({"payload_type": ""}, InvalidArgument, "envelope.payload_type", "must not be empty"),
        (
            {"payload_type": "t" * (limits.envelope_payload_type_chars_max + 1)},
            InvalidArgument,
            "envelope.payload_type",
            "over 128 characters",
        ),
        ({"signatures": ()}, InvalidArgument, "envelope.signatures", "at least one signature"),
        (
            {"signatures": (EnvelopeSignature("k" * 129, bytes(64)),)},
            InvalidArgument,
            "envelope.signatures[0].keyid",
            "over 128 characters",
        ),
        (
            {"signatures": (EnvelopeSignature("k", bytes(64)), EnvelopeSignature("k", bytes(63)))},
            InvalidArgument,
            "envelope.signatures[1].sig",
            "Ed25519 signatures are 64 bytes, got 63",
        ),
    ],
)
def test_limits_reject_each_violation(
    fields: dict[str, object], error: type[Exception], field: str, message: str
) -> None:
    with pytest.raises(error) as raised:
        check_envelope_limits(replace(ENVELOPE, **fields))  # type: ignore[arg-type]
    violations = raised.value.details.field_violations  # type: ignore[attr-defined]
    assert [(v.field, message in v.description) for v in violations] == [(field, True)]


def test_limits_list_every_violation() -> None:
    envelope = Envelope("", PAYLOAD, (EnvelopeSignature("k", b""), EnvelopeSignature("k", b"")))
    with pytest.raises(InvalidArgument) as raised:
        check_envelope_limits(envelope)
    assert [v.field for v in raised.value.details.field_violations] == [
        "envelope.payload_type",
        "envelope.signatures[0].sig",
        "envelope.signatures[1].sig",
    ]


def test_json_round_trip_and_form() -> None:
    data = envelope_to_json(ENVELOPE)
    assert json.loads(data) == {
        "payload": base64.b64encode(PAYLOAD).decode(),
        "payloadType": PAYLOAD_TYPE,
        "signatures": [
            {
                "keyid": "ed25519:insurer",
                "sig": base64.b64encode(ENVELOPE.signatures[0].sig).decode(),
            }
        ],
    }
    assert envelope_from_json(data) == ENVELOPE


def _json(**document: object) -> bytes:
    return json.dumps(document).encode()


SIG_TEXT = base64.b64encode(ENVELOPE.signatures[0].sig).decode()
GOOD = {
    "payload": base64.b64encode(PAYLOAD).decode(),
    "payloadType": PAYLOAD_TYPE,
    "signatures": [{"keyid": "ed25519:insurer", "sig": SIG_TEXT}],
}


def test_json_accepts_what_the_dsse_envelope_spec_allows() -> None:
    # URL-safe base64 and missing padding are allowed; keyid may be unset; extra fields ignored.
    url_safe = base64.urlsafe_b64encode(ENVELOPE.signatures[0].sig).decode().rstrip("=")
    document = {
        **GOOD,
        "payload": base64.b64encode(PAYLOAD).decode().rstrip("="),
        "signatures": [{"sig": url_safe, "extra": 1}],
        "future": {"field": True},
    }
    envelope = envelope_from_json(_json(**document))
    assert envelope.payload == PAYLOAD
    assert envelope.signatures == (EnvelopeSignature("", ENVELOPE.signatures[0].sig),)


@pytest.mark.parametrize(
    ("data", "error", "message"),
    [
        (b"{", InvalidArgument, "envelope: not valid JSON"),
        (b"\xff", InvalidArgument, "not valid UTF-8"),
        (b"[]", InvalidArgument, "envelope: must be a JSON object"),
        (_json(**{**GOOD, "payload": None}), InvalidArgument, "envelope.payload: must be a JSON"),
        (
            _json(**{k: v for k, v in GOOD.items() if k != "payload"}),
            InvalidArgument,
            "envelope.payload: required",
        ),
        (
            _json(**{k: v for k, v in GOOD.items() if k != "payloadType"}),
            InvalidArgument,
            "envelope.payloadType: required",
        ),
        (_json(**{**GOOD, "payloadType": 5}), InvalidArgument, "payloadType: must be a JSON str"),
        (
            _json(**{k: v for k, v in GOOD.items() if k != "signatures"}),
            InvalidArgument,
            "envelope.signatures: required",
        ),
        (_json(**{**GOOD, "signatures": {}}), InvalidArgument, "must be a JSON array"),
        (_json(**{**GOOD, "signatures": ["x"]}), InvalidArgument, r"signatures\[0\]: must be"),
        (_json(**{**GOOD, "signatures": [{}]}), InvalidArgument, r"\[0\]\.sig: required"),
        (
            _json(**{**GOOD, "signatures": [{"sig": SIG_TEXT, "keyid": 7}]}),
            InvalidArgument,
            r"\[0\]\.keyid: must be a string",
        ),
        (_json(**{**GOOD, "payload": "a!=="}), InvalidArgument, "payload: not valid base64"),
        (_json(**{**GOOD, "payload": "AB=="}), InvalidArgument, "payload: not canonical base64"),
        (_json(**{**GOOD, "payload": "a+_-"}), InvalidArgument, "mixes standard and URL-safe"),
        (
            _json(**{**GOOD, "signatures": [{"sig": "AA="}]}),
            InvalidArgument,
            r"\[0\]\.sig: not valid base64",
        ),
        (
            _json(**{**GOOD, "signatures": [{"sig": "AAAA"}]}),
            InvalidArgument,
            r"signatures\[0\]\.sig: Ed25519 signatures are 64 bytes, got 3",
        ),
        (
            b'{"payload": "", "payload": "AA==", "payloadType": "t", "signatures": []}',
            InvalidArgument,
            "duplicate key",
        ),
        (
            _json(**{**GOOD, "signatures": GOOD["signatures"] * 5}),  # type: ignore[operator]
            ResourceExhausted,
            "5 signatures, over 4",
        ),
        (b" " * (ENVELOPE_JSON_BYTES_MAX + 1), ResourceExhausted, "JSON envelope is"),
        (_json(**{**GOOD, "payloadType": ""}), InvalidArgument, "payload_type: must not be empty"),
        (
            _json(**{**GOOD, "payloadType": "\ud800"}),
            InvalidArgument,
            "payload_type: not encodable as UTF-8",
        ),
        (
            _json(**{**GOOD, "signatures": [{"keyid": "\udc00", "sig": SIG_TEXT}]}),
            InvalidArgument,
            r"signatures\[0\]\.keyid: not encodable as UTF-8",
        ),
    ],
)
def test_json_rejects_each_malformation(data: bytes, error: type[Exception], message: str) -> None:
    with pytest.raises(error, match=message):
        envelope_from_json(data)
