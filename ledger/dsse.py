"""DSSE v1 envelopes: the signed wrapper around every event an insurer submits.

This module owns the envelope (https://github.com/secure-systems-lab/dsse/blob/master/envelope.md),
its pre-authentication encoding and Ed25519 signatures over it
(https://github.com/secure-systems-lab/dsse/blob/master/protocol.md)::

    PAE(type, body) = "DSSEv1" SP LEN(type) SP type SP LEN(body) SP body

where LEN is the ASCII decimal byte length. Only PAE bytes are ever signed or verified, and the
payload is kept exactly as submitted: it is never re-serialized before verification.

:func:`check_envelope_limits` enforces our limits (``ledger.limits``) with one field violation
per problem; :func:`envelope_from_json` parses the standard JSON form strictly.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from ledger import limits
from ledger.errors import FieldViolation, InvalidArgument, ResourceExhausted
from ledger.signing import SignatureError, Signer, raw_public_key_verifier

__all__ = [
    "Envelope",
    "EnvelopeSignature",
    "check_envelope_limits",
    "envelope_from_json",
    "envelope_to_json",
    "pae",
    "sign_envelope",
    "verify_envelope_signature",
]

_T = TypeVar("_T")

ENVELOPE_JSON_BYTES_MAX = 2 * limits.envelope_payload_bytes_max + 16 * 1024
"""Largest JSON envelope parsed: the base64 payload (4/3 of it) plus room for the signatures."""


@dataclass(frozen=True)
class EnvelopeSignature:
    """One signature: ``keyid`` is an unauthenticated hint naming the key, ``sig`` the raw bytes."""

    keyid: str
    sig: bytes


@dataclass(frozen=True)
class Envelope:
    """A DSSE envelope: the payload bytes exactly as signed, their type, and signatures."""

    payload_type: str
    payload: bytes
    signatures: tuple[EnvelopeSignature, ...]


def pae(payload_type: str, payload: bytes) -> bytes:
    """The DSSE v1 pre-authentication encoding of (``payload_type``, ``payload``)."""
    type_bytes = payload_type.encode("utf-8")
    return b"DSSEv1 %d %b %d %b" % (len(type_bytes), type_bytes, len(payload), payload)


def sign_envelope(
    payload_type: str,
    payload: bytes,
    signer: Signer | Callable[[bytes], bytes],
    keyid: str,
) -> Envelope:
    """An envelope of ``payload`` with one signature over its PAE, labelled ``keyid``.

    ``signer`` is a :class:`~ledger.signing.Signer` or a bare ``sign(message) -> signature``.
    The envelope is checked against our limits, so it is never one the ledger would refuse.
    """
    sign = signer if callable(signer) else signer.sign
    signature = EnvelopeSignature(keyid=keyid, sig=sign(pae(payload_type, payload)))
    envelope = Envelope(payload_type=payload_type, payload=payload, signatures=(signature,))
    check_envelope_limits(envelope)
    return envelope


def check_envelope_limits(envelope: Envelope) -> None:
    """Raise unless ``envelope`` is within every limit; nothing is verified here.

    Over-size payload or too many signatures: ResourceExhausted. Anything else (empty or long
    payload type, no signature, long key id, signature not 64 bytes): InvalidArgument listing
    every bad field.
    """
    if len(envelope.payload) > limits.envelope_payload_bytes_max:
        raise _resource(
            "envelope.payload",
            f"payload is {len(envelope.payload)} bytes, over {limits.envelope_payload_bytes_max}",
        )
    if len(envelope.signatures) > limits.envelope_signatures_max:
        raise _resource(
            "envelope.signatures",
            f"{len(envelope.signatures)} signatures, over {limits.envelope_signatures_max}",
        )
    violations = _type_violations(envelope.payload_type) + _signature_violations(envelope)
    if violations:
        summary = "; ".join(f"{v.field}: {v.description}" for v in violations)
        raise InvalidArgument(
            f"invalid envelope: {summary}",
            reason="ENVELOPE_INVALID",
            field_violations=violations,
        )


def verify_envelope_signature(envelope: Envelope, keyid: str, public_key: bytes) -> None:
    """Return if a signature labelled ``keyid`` is ``public_key``'s signature of the PAE.

    Raises SignatureError if no signature carries ``keyid`` or none of those verifies;
    InvalidArgument if ``public_key`` is not a 32-byte Ed25519 key.
    """
    verifier = raw_public_key_verifier(public_key)
    candidates = [signature for signature in envelope.signatures if signature.keyid == keyid]
    if not candidates:
        raise SignatureError(
            f"envelope has no signature by key {keyid!r}", reason="SIGNATURE_MISSING"
        )
    message = pae(envelope.payload_type, envelope.payload)
    for signature in candidates:
        # A wrong-length signature cannot verify; say so rather than calling it malformed input.
        if len(signature.sig) != limits.ed25519_signature_bytes:
            continue
        try:
            verifier.verify(message, signature.sig)
        except SignatureError:
            continue
        return
    raise SignatureError(
        f"envelope signature by key {keyid!r} does not verify", reason="SIGNATURE_INVALID"
    )


def envelope_to_json(envelope: Envelope) -> bytes:
    """The standard DSSE JSON envelope, standard base64 with padding, compact, UTF-8."""
    document = {
        "payload": _b64encode(envelope.payload),
        "payloadType": envelope.payload_type,
        "signatures": [
            {"keyid": signature.keyid, "sig": _b64encode(signature.sig)}
            for signature in envelope.signatures
        ],
    }
    return json.dumps(document, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def envelope_from_json(data: bytes) -> Envelope:
    """The envelope of a standard DSSE JSON document, then checked against our limits.

    As the envelope spec says: ``payload``, ``payloadType``, ``signatures`` and each ``sig`` are
    required, ``keyid`` may be unset (meaning ""), unknown fields are ignored, and base64 may be
    standard or URL-safe. Duplicate keys are rejected: they let two readers see two envelopes.
    """
    if len(data) > ENVELOPE_JSON_BYTES_MAX:
        raise _resource(
            "envelope", f"JSON envelope is {len(data)} bytes, over {ENVELOPE_JSON_BYTES_MAX}"
        )
    document = _load_json(data)
    if not isinstance(document, dict):
        raise _invalid("envelope", "must be a JSON object")
    signatures = _required(document, "signatures", list, "envelope.signatures")
    if len(signatures) > limits.envelope_signatures_max:
        raise _resource(
            "envelope.signatures",
            f"{len(signatures)} signatures, over {limits.envelope_signatures_max}",
        )
    envelope = Envelope(
        payload_type=_required(document, "payloadType", str, "envelope.payloadType"),
        payload=_b64decode(
            _required(document, "payload", str, "envelope.payload"), "envelope.payload"
        ),
        signatures=tuple(
            _signature_from_json(item, index) for index, item in enumerate(signatures)
        ),
    )
    check_envelope_limits(envelope)
    return envelope


def _type_violations(payload_type: str) -> list[FieldViolation]:
    if not payload_type:
        return [FieldViolation("envelope.payload_type", "must not be empty")]
    if not _is_utf8(payload_type):
        return [FieldViolation("envelope.payload_type", "not encodable as UTF-8")]
    if len(payload_type) > limits.envelope_payload_type_chars_max:
        return [
            FieldViolation(
                "envelope.payload_type",
                f"over {limits.envelope_payload_type_chars_max} characters ({len(payload_type)})",
            )
        ]
    return []


def _signature_violations(envelope: Envelope) -> list[FieldViolation]:
    if not envelope.signatures:
        return [FieldViolation("envelope.signatures", "at least one signature is required")]
    violations: list[FieldViolation] = []
    for index, signature in enumerate(envelope.signatures):
        path = f"envelope.signatures[{index}]"
        if len(signature.keyid) > limits.envelope_keyid_chars_max:
            violations.append(
                FieldViolation(
                    f"{path}.keyid",
                    f"over {limits.envelope_keyid_chars_max} characters ({len(signature.keyid)})",
                )
            )
        if not _is_utf8(signature.keyid):
            violations.append(FieldViolation(f"{path}.keyid", "not encodable as UTF-8"))
        if len(signature.sig) != limits.ed25519_signature_bytes:
            violations.append(
                FieldViolation(
                    f"{path}.sig",
                    f"Ed25519 signatures are {limits.ed25519_signature_bytes} bytes, "
                    f"got {len(signature.sig)}",
                )
            )
    return violations


def _is_utf8(text: str) -> bool:
    # JSON escapes can produce lone surrogates, which have no UTF-8 form (and so no PAE).
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _signature_from_json(item: object, index: int) -> EnvelopeSignature:
    path = f"envelope.signatures[{index}]"
    if not isinstance(item, dict):
        raise _invalid(path, "must be a JSON object")
    keyid = item.get("keyid", "")
    if not isinstance(keyid, str):
        raise _invalid(f"{path}.keyid", "must be a string")
    sig = _b64decode(_required(item, "sig", str, f"{path}.sig"), f"{path}.sig")
    return EnvelopeSignature(keyid=keyid, sig=sig)


def _load_json(data: bytes) -> Any:
    try:
        return json.loads(data.decode("utf-8"), object_pairs_hook=_reject_duplicate_keys)
    except UnicodeDecodeError:
        raise _invalid("envelope", "JSON envelope is not valid UTF-8") from None
    except ValueError as error:
        # json.JSONDecodeError and our duplicate-key error are both ValueErrors.
        raise _invalid("envelope", f"not valid JSON: {error}") from None


def _reject_duplicate_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    document = dict(pairs)
    if len(document) != len(pairs):
        raise ValueError("duplicate key in JSON object")
    return document


def _required(document: dict[str, Any], key: str, kind: type[_T], path: str) -> _T:
    if key not in document:
        raise _invalid(path, "required")
    value = document[key]
    if not isinstance(value, kind):
        raise _invalid(path, f"must be a JSON {'string' if kind is str else 'array'}")
    return value


def _b64decode(text: str, path: str) -> bytes:
    """Standard or URL-safe base64 (DSSE allows both), padded or not, but canonical."""
    if "-" in text or "_" in text:
        if "+" in text or "/" in text:
            raise _invalid(path, "mixes standard and URL-safe base64")
        text = text.translate(str.maketrans("-_", "+/"))
    if not text.endswith("="):
        text += "=" * (-len(text) % 4)
    try:
        decoded = base64.b64decode(text, validate=True)
    except ValueError:  # binascii.Error, and non-ASCII text
        raise _invalid(path, "not valid base64") from None
    if _b64encode(decoded) != text:
        raise _invalid(path, "not canonical base64")
    return decoded


def _b64encode(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _invalid(path: str, problem: str) -> InvalidArgument:
    return InvalidArgument(
        f"malformed envelope: {path}: {problem}",
        reason="ENVELOPE_MALFORMED",
        field_violations=[FieldViolation(path, problem)],
    )


def _resource(path: str, problem: str) -> ResourceExhausted:
    return ResourceExhausted(
        problem, reason="ENVELOPE_TOO_LARGE", field_violations=[FieldViolation(path, problem)]
    )
