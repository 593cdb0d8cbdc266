"""Enrolment codes: the one-time secret a new party trades for its client certificate.

The operator issues a code for one party (a role and a name) that expires; only its SHA-256 is
stored. A code carries ``limits.enrolment_code_bytes`` random bytes, so a fast hash is enough
(there is nothing to brute-force offline that a slow hash would protect), and the party may
try ``limits.enrolment_wrong_codes_max`` wrong codes before it is locked out. This module is
pure: storage is ``ledger/storage/enrolment_store.py``; the RPC is ``EnrolmentService``.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import re
import secrets

from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives.asymmetric import ec

from ledger import limits
from ledger.errors import FieldViolation, InvalidArgument, PermissionDenied
from ledger.identity.tokens import is_person_token
from ledger.pki import CertificateAuthority, spiffe_id
from ledger.signers import OPERATOR_ID, SignerRole, role_to_proto
from ledger.v1 import events_pb2

__all__ = [
    "ENROLLABLE_ROLES",
    "certify_request",
    "check_enrollable",
    "check_signing_key",
    "code_hash",
    "code_matches",
    "key_registered_event",
    "new_code",
    "parse_ttl",
]

ENROLLABLE_ROLES = ("insurer", "portal", "auditor", "beneficiary")
"""Roles a party may enrol in with a code. Not the operator (its certificate reads everyone's
data and its key signs the registry: issued by hand, offline) nor an authority (its key needs a
jurisdiction the code does not carry): both keep `pki issue` and `register_key`. A beneficiary
is a person (issue 11, item 4): its name is its person token (docs/beneficiaries.md)."""
SIGNING_ROLES = {"insurer": SignerRole.INSURER, "beneficiary": SignerRole.BENEFICIARY}
"""Enrollable roles that sign events, so enrolment registers their key."""

_TTL = re.compile(r"^([1-9][0-9]{0,5})([mhd])$")
_TTL_UNITS = {"m": "minutes", "h": "hours", "d": "days"}


def new_code() -> str:
    """A fresh code: base32 without padding, so it can be read out and typed."""
    raw = secrets.token_bytes(limits.enrolment_code_bytes)
    return base64.b32encode(raw).decode("ascii").rstrip("=")


def code_hash(code: str) -> str:
    """The stored form of ``code``: SHA-256 hex of its UTF-8 bytes."""
    return hashlib.sha256(code.encode("utf-8")).hexdigest()


def code_matches(code: str, stored_hash: str) -> bool:
    """Whether ``code`` hashes to ``stored_hash`` (compared in constant time)."""
    return hmac.compare_digest(code_hash(code), stored_hash)


def parse_ttl(text: str) -> dt.timedelta:
    """``30m``, ``24h`` or ``7d``; at most ``limits.enrolment_code_ttl_max``."""
    match = _TTL.match(text)
    if match is None:
        raise InvalidArgument(
            f"a time to live is a number and m, h or d (e.g. 24h): {text!r}", reason="TTL_INVALID"
        )
    ttl = dt.timedelta(**{_TTL_UNITS[match.group(2)]: int(match.group(1))})
    if ttl > limits.enrolment_code_ttl_max:
        raise InvalidArgument(
            f"time to live {text} is over {limits.enrolment_code_ttl_max.days} days",
            reason="TTL_TOO_LONG",
        )
    return ttl


def check_enrollable(role: str, name: str) -> None:
    """Raise InvalidArgument unless ``role``/``name`` is a party that may enrol."""
    if role not in ENROLLABLE_ROLES:
        raise InvalidArgument(
            f"role {role!r} cannot enrol with a code (only {', '.join(ENROLLABLE_ROLES)}): "
            "issue its certificate with `policy-ledger pki issue`",
            reason="ROLE_NOT_ENROLLABLE",
            field_violations=[FieldViolation("role", "not an enrollable role")],
        )
    spiffe_id("policy-ledger.local", role, name)  # the name's form
    if role == "beneficiary" and not is_person_token(name):
        raise InvalidArgument(
            f"a beneficiary enrols under their person token (pt_...), not {name!r}",
            reason="BENEFICIARY_NAME_NOT_TOKEN",
            field_violations=[FieldViolation("name", "not a person token")],
        )


def _violation(field: str, message: str, reason: str) -> InvalidArgument:
    return InvalidArgument(
        message, reason=reason, field_violations=[FieldViolation(field, message)]
    )


def _parse_request(csr_pem: bytes) -> x509.CertificateSigningRequest:
    if len(csr_pem) > limits.enrolment_csr_bytes_max:
        raise _violation(
            "csr_pem",
            f"{len(csr_pem)} bytes, over {limits.enrolment_csr_bytes_max}",
            "CSR_TOO_LARGE",
        )
    try:
        request = x509.load_pem_x509_csr(csr_pem)
        signature_valid = request.is_signature_valid
        public_key = request.public_key()
    except (ValueError, UnsupportedAlgorithm) as error:
        raise _violation(
            "csr_pem", f"not a PEM PKCS#10 request: {error}", "CSR_MALFORMED"
        ) from None
    if not signature_valid:
        raise _violation("csr_pem", "the request's self-signature is invalid", "CSR_MALFORMED")
    if (
        not isinstance(public_key, ec.EllipticCurvePublicKey)
        or public_key.curve.name != "secp256r1"
    ):
        raise _violation("csr_pem", "the request's key must be ECDSA P-256", "CSR_KEY_UNSUPPORTED")
    return request


def _requested_names(request: x509.CertificateSigningRequest) -> list[str]:
    try:
        extension = request.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        return []
    except ValueError as error:
        raise _violation("csr_pem", f"unreadable extensions: {error}", "CSR_MALFORMED") from None
    return [str(name.value) for name in extension.value]


def certify_request(
    authority: CertificateAuthority,
    csr_pem: bytes,
    *,
    trust_domain: str,
    role: str,
    name: str,
    now: dt.datetime,
) -> x509.Certificate:
    """The client certificate of the party's CSR, if it asks for exactly its enrolled identity.

    (1) the CSR parses, is self-signed and holds a P-256 key (else INVALID_ARGUMENT);
    (2) its only SAN is ``spiffe://<trust_domain>/<role>/<name>`` (else PERMISSION_DENIED);
    (3) the certificate carries our SAN and usage, not the CSR's extensions.
    """
    request = _parse_request(csr_pem)  # (1)
    identity = spiffe_id(trust_domain, role, name)
    requested = _requested_names(request)  # (2)
    if requested != [identity]:
        raise PermissionDenied(
            f"the CSR asks for {requested or 'no SAN'}; this code enrols {identity} only",
            reason="CSR_SAN_NOT_ENROLLED",
            metadata={"enrolled": identity},
        )
    public_key = request.public_key()
    if not isinstance(public_key, ec.EllipticCurvePublicKey):  # checked in (1); for the types
        raise _violation("csr_pem", "the request's key must be ECDSA P-256", "CSR_KEY_UNSUPPORTED")
    return authority.certify(  # (3)
        public_key,
        f"{role}/{name}",
        [x509.UniformResourceIdentifier(identity)],
        server=False,
        not_before=now - dt.timedelta(minutes=5),
        not_after=now + limits.enrolled_certificate_validity,
    )


def key_registered_event(
    role: str, name: str, public_key: bytes, now: dt.datetime, code_id: str
) -> events_pb2.Event:
    """The operator's KeyRegistered event of an enrolled party's signing key, valid from now.

    Its id names the code, so one code registers at most one key: a retry with the same key is
    a duplicate (the first receipt again), another key under the same id is refused.
    """
    event = events_pb2.Event(event_id=f"enrol-{code_id}", insurer_id=OPERATOR_ID)
    event.occurred_at.FromDatetime(now)
    body = event.key_registered
    body.principal_id = name
    body.role = role_to_proto(SIGNING_ROLES[role])
    body.public_key = public_key
    body.valid_from.FromDatetime(now)
    return event


def check_signing_key(role: str, public_key: bytes) -> None:
    """An insurer or a beneficiary sends its raw 32-byte Ed25519 key; a role that signs nothing
    sends none."""
    if role in SIGNING_ROLES and len(public_key) != 32:
        raise _violation(
            "signing_public_key",
            f"an {role} enrols with its raw 32-byte Ed25519 public key ({len(public_key)} bytes)",
            "SIGNING_KEY_INVALID",
        )
    if role not in SIGNING_ROLES and public_key:
        raise _violation(
            "signing_public_key",
            f"a {role} signs no events: send no signing key",
            "SIGNING_KEY_UNEXPECTED",
        )
