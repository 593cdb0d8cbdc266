"""Enrolment, the party's side: make a TLS key and a CSR, trade the operator's one-time code
for a client certificate, and write the credentials a command line uses.

The server's enrolment port checks no client certificate (the party has none yet); the party
checks the server's certificate against ``--ca``. Afterwards ``--credentials DIR --as
ROLE-NAME`` works for every other command. docs/security.md, "Enrolment".
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from clients.errors import from_rpc_error
from ledger.signing import (
    Ed25519Signer,
    format_signer_key,
    format_verifier_key,
    parse_signer_key,
)
from ledger.v1 import enrolment_service_pb2, enrolment_service_pb2_grpc, ledger_service_pb2

__all__ = [
    "Enrolled",
    "certificate_request",
    "enrol",
    "signing_key_file",
    "write_credentials",
]

SIGNING_ROLES = ("insurer",)
"""Roles that sign events, so they enrol a signing key (the server's ENROLLABLE_ROLES)."""


@dataclass(frozen=True)
class Enrolled:
    """What enrolment gave: the certificate, its key, the CA, the key registration's receipt."""

    certificate_pem: bytes
    key_pem: bytes
    ca_certificate_pem: bytes
    key_registered_receipt: ledger_service_pb2.Receipt | None


def certificate_request(
    trust_domain: str, role: str, name: str
) -> tuple[ec.EllipticCurvePrivateKey, bytes]:
    """A new P-256 key and a PEM CSR whose only SAN is the party's SPIFFE ID."""
    key = ec.generate_private_key(ec.SECP256R1())
    identity = f"spiffe://{trust_domain}/{role}/{name}"
    request = (
        x509.CertificateSigningRequestBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"{role}/{name}")]))
        .add_extension(
            x509.SubjectAlternativeName([x509.UniformResourceIdentifier(identity)]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    return key, request.public_bytes(serialization.Encoding.PEM)


def enrol(
    channel: grpc.Channel,
    *,
    code: str,
    role: str,
    name: str,
    signing_key: Ed25519Signer | None,
    trust_domain: str = "policy-ledger.local",
) -> Enrolled:
    """Enrol ``role``/``name`` over ``channel`` (to the enrolment port); ClientError if refused."""
    key, csr_pem = certificate_request(trust_domain, role, name)
    request = enrolment_service_pb2.EnrolRequest(
        code=code,
        role=role,
        name=name,
        csr_pem=csr_pem,
        signing_public_key=signing_key.public_key if signing_key is not None else b"",
    )
    try:
        answer = enrolment_service_pb2_grpc.EnrolmentServiceStub(channel).Enrol(request)
    except grpc.RpcError as error:
        raise from_rpc_error(error) from None
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    receipt = answer.key_registered_receipt if answer.HasField("key_registered_receipt") else None
    return Enrolled(answer.certificate_pem, key_pem, answer.ca_certificate_pem, receipt)


def write_credentials(
    directory: Path, role: str, name: str, enrolled: Enrolled, ca: bytes
) -> list[Path]:
    """Write ``ROLE-NAME.pem``, ``ROLE-NAME.key`` (mode 0600) and, if absent, ``ca.pem`` (the
    CA of the server's certificate, ``ca``) into ``directory``; return the files written."""
    directory.mkdir(parents=True, exist_ok=True)
    stem = f"{role}-{name}"
    written = [directory / f"{stem}.pem", directory / f"{stem}.key"]
    written[0].write_bytes(enrolled.certificate_pem)
    descriptor = os.open(written[1], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "wb") as handle:
        handle.write(enrolled.key_pem)
    if not (directory / "ca.pem").exists():
        (directory / "ca.pem").write_bytes(ca)
        written.append(directory / "ca.pem")
    return written


def signing_key_file(path: Path, name: str) -> Ed25519Signer:
    """The signer key in ``path``; if there is none, a new one named ``name``, written there
    (mode 0600) with its verifier key in ``path.pub``, as ``policy-ledger keygen`` does."""
    if path.exists():
        return parse_signer_key(path.read_text(encoding="utf-8").strip())
    signer = Ed25519Signer.generate(name)
    path.parent.mkdir(parents=True, exist_ok=True)
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
        handle.write(format_signer_key(signer) + "\n")
    Path(f"{path}.pub").write_text(format_verifier_key(signer) + "\n", encoding="utf-8")
    return signer
