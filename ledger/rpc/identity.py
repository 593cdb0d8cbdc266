"""Who is calling: the SPIFFE ID in the caller's client certificate, and nothing else.

gRPC has already checked, during the TLS handshake, that the certificate chains to the
configured client CA and is within its validity period (``require_client_auth=True``); a
certificate that fails those checks never reaches this module. What is left is the identity:
exactly one ``spiffe://`` URI SAN, of our trust domain, of the form ``/<role>/<name>`` with a
known role (https://github.com/spiffe/spiffe/blob/main/standards/X509-SVID.md). No other
certificate field (subject, CN, other SANs) grants anything.

The caller of the call under way is kept in a context variable, set by the interceptor before
any servicer runs.
"""

from __future__ import annotations

import contextvars
import functools
from dataclasses import dataclass
from urllib.parse import urlsplit

from cryptography import x509

from ledger.errors import InvalidArgument, Unauthenticated
from ledger.pki import ROLES, check_spiffe_part

__all__ = ["Caller", "caller_from_certificate", "current_caller", "set_current_caller"]

_CERTIFICATES_CACHED_MAX = 1024
"""Certificates parsed once and remembered (a client reuses one certificate for many calls)."""


@dataclass(frozen=True)
class Caller:
    """An authenticated caller: ``spiffe://<trust-domain>/<role>/<name>``."""

    role: str
    name: str
    spiffe_id: str


_current: contextvars.ContextVar[Caller | None] = contextvars.ContextVar(
    "policy_ledger_caller", default=None
)


def current_caller() -> Caller | None:
    """The caller of the call under way (None outside a call, or on an open method)."""
    return _current.get()


def set_current_caller(caller: Caller | None) -> None:
    """Set the caller of the call under way (the interceptor does this)."""
    _current.set(caller)


def _refuse(message: str, reason: str) -> Unauthenticated:
    return Unauthenticated(message, reason=reason)


@functools.lru_cache(maxsize=_CERTIFICATES_CACHED_MAX)
def _spiffe_uris(certificate_pem: bytes) -> tuple[str, ...]:
    try:
        certificate = x509.load_pem_x509_certificate(certificate_pem)
    except ValueError:
        raise _refuse("the client certificate cannot be parsed", "CERTIFICATE_INVALID") from None
    try:
        names = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    except x509.ExtensionNotFound:
        return ()
    uris = names.value.get_values_for_type(x509.UniformResourceIdentifier)
    return tuple(uri for uri in uris if uri.lower().startswith("spiffe:"))


def caller_from_certificate(certificate_pem: bytes | None, trust_domain: str) -> Caller:
    """The caller a (chain-verified) client certificate names; raise UNAUTHENTICATED why not."""
    if not certificate_pem:
        raise _refuse(
            "a client certificate is required (mTLS); see docs/security.md",
            "CLIENT_CERTIFICATE_MISSING",
        )
    uris = _spiffe_uris(certificate_pem)
    if len(uris) != 1:
        raise _refuse(
            f"the client certificate must carry exactly one spiffe:// URI SAN, it has {len(uris)}",
            "SPIFFE_ID_COUNT",
        )
    return caller_from_spiffe_id(uris[0], trust_domain)


def caller_from_spiffe_id(spiffe_id: str, trust_domain: str) -> Caller:
    """Parse ``spiffe://<trust_domain>/<role>/<name>`` strictly."""
    parts = urlsplit(spiffe_id)
    if parts.scheme != "spiffe" or parts.query or parts.fragment or parts.port is not None:
        raise _refuse(f"not a SPIFFE ID: {spiffe_id!r}", "SPIFFE_ID_INVALID")
    if parts.netloc != trust_domain:
        raise _refuse(
            f"SPIFFE ID of trust domain {parts.netloc!r}, this server trusts {trust_domain!r}",
            "TRUST_DOMAIN_FOREIGN",
        )
    segments = parts.path.split("/")
    if len(segments) != 3 or segments[0] != "":
        raise _refuse(
            f"a SPIFFE ID here is spiffe://{trust_domain}/<role>/<name>, got {spiffe_id!r}",
            "SPIFFE_ID_INVALID",
        )
    role, name = segments[1], segments[2]
    if role not in ROLES:
        raise _refuse(f"unknown role {role!r}: one of {', '.join(ROLES)}", "ROLE_UNKNOWN")
    try:
        check_spiffe_part("name", name)
    except InvalidArgument as error:
        raise _refuse(f"invalid caller name in {spiffe_id!r}: {error}", "NAME_INVALID") from None
    return Caller(role=role, name=name, spiffe_id=spiffe_id)
