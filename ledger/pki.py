"""A development PKI: one CA, a server certificate, and one client certificate per caller.

Every caller of the server proves who it is with a client certificate whose only grant is its
SPIFFE ID, a URI SAN ``spiffe://<trust-domain>/<role>/<name>`` (https://github.com/spiffe/spiffe/
blob/main/standards/X509-SVID.md). This module issues such certificates with ``cryptography``'s
x509 builder, for development, tests and the demo; production operators bring their own CA
(docs/security.md) and only need its certificate as the server's ``--client-ca``.

Keys are ECDSA P-256: every TLS 1.3 stack (gRPC's BoringSSL included) accepts it, which is not
true of Ed25519 certificates. File names in a credentials directory (see ``credential_paths``):

  ca.pem, ca.key                     the CA (keep ca.key offline in anything but development)
  server.pem, server.key             the server, for 127.0.0.1 and localhost
  <role>-<name>.pem, <role>-<name>.key   one client, e.g. insurer-acme-health.pem
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import re
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from ledger.errors import InvalidArgument

__all__ = [
    "DEFAULT_TRUST_DOMAIN",
    "ROLES",
    "CertificateAuthority",
    "IssuedCertificate",
    "check_spiffe_part",
    "client_file_stem",
    "init_directory",
    "issue_into_directory",
    "spiffe_id",
]

DEFAULT_TRUST_DOMAIN = "policy-ledger.local"
ROLES = (
    "insurer",
    "portal",
    "authority",
    "auditor",
    "operator",
    "funder",
    "regulator",
    "beneficiary",
)
"""Every role a caller may have; the authorization table (ledger/rpc/authorization.py) says
what each may call."""

CA_VALIDITY = dt.timedelta(days=3650)
LEAF_VALIDITY = dt.timedelta(days=365)
_SPIFFE_PART = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


def check_spiffe_part(what: str, value: str) -> None:
    """Raise InvalidArgument unless ``value`` is a safe SPIFFE path segment (and file name)."""
    if not _SPIFFE_PART.match(value) or value in (".", ".."):
        raise InvalidArgument(
            f"{what} must be 1..64 characters of letters, digits, '.', '_' or '-': {value!r}",
            reason="SPIFFE_PART_INVALID",
        )


def spiffe_id(trust_domain: str, role: str, name: str) -> str:
    """``spiffe://<trust_domain>/<role>/<name>``, checked."""
    check_spiffe_part("trust domain", trust_domain)
    if role not in ROLES:
        raise InvalidArgument(f"role must be one of {', '.join(ROLES)}: {role!r}", reason="ROLE")
    check_spiffe_part("name", name)
    return f"spiffe://{trust_domain}/{role}/{name}"


def client_file_stem(role: str, name: str) -> str:
    """The file name (without .pem/.key) of a client's credentials: ``<role>-<name>``."""
    return f"{role}-{name}"


@dataclass(frozen=True)
class IssuedCertificate:
    """A certificate and its private key, both PEM."""

    certificate_pem: bytes
    key_pem: bytes

    def write(self, directory: Path, stem: str) -> None:
        """Write ``<stem>.pem`` and ``<stem>.key`` (mode 0600) into ``directory``."""
        (directory / f"{stem}.pem").write_bytes(self.certificate_pem)
        _write_private(directory / f"{stem}.key", self.key_pem)


def _write_private(path: Path, data: bytes) -> None:
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "wb") as handle:
        handle.write(data)


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


@dataclass(frozen=True)
class CertificateAuthority:
    """A CA that signs server and client certificates."""

    certificate: x509.Certificate
    key: ec.EllipticCurvePrivateKey

    @classmethod
    def create(cls, common_name: str, now: dt.datetime) -> CertificateAuthority:
        """A new self-signed CA, valid from ``now`` for ten years."""
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
        certificate = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + CA_VALIDITY)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=False,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False
            )
            .sign(key, hashes.SHA256())
        )
        return cls(certificate, key)

    @classmethod
    def load(cls, directory: Path) -> CertificateAuthority:
        """The CA of a credentials directory (``ca.pem`` and ``ca.key``)."""
        certificate = x509.load_pem_x509_certificate((directory / "ca.pem").read_bytes())
        key = serialization.load_pem_private_key((directory / "ca.key").read_bytes(), None)
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise InvalidArgument("ca.key is not an ECDSA key", reason="CA_KEY_UNSUPPORTED")
        return cls(certificate, key)

    @property
    def certificate_pem(self) -> bytes:
        """The CA certificate, PEM (what the server's --client-ca and clients' ca.pem hold)."""
        return self.certificate.public_bytes(serialization.Encoding.PEM)

    def issue(
        self,
        common_name: str,
        names: list[x509.GeneralName],
        *,
        server: bool,
        not_before: dt.datetime,
        not_after: dt.datetime,
    ) -> IssuedCertificate:
        """A leaf certificate for ``names`` (SANs), for a server or a client."""
        key = ec.generate_private_key(ec.SECP256R1())
        certificate = self.certify(
            key.public_key(),
            common_name,
            names,
            server=server,
            not_before=not_before,
            not_after=not_after,
        )
        return IssuedCertificate(
            certificate.public_bytes(serialization.Encoding.PEM), _key_pem(key)
        )

    def certify(
        self,
        public_key: ec.EllipticCurvePublicKey,
        common_name: str,
        names: list[x509.GeneralName],
        *,
        server: bool,
        not_before: dt.datetime,
        not_after: dt.datetime,
    ) -> x509.Certificate:
        """A leaf certificate of ``public_key`` (held by someone else, e.g. from a CSR)."""
        usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
            .issuer_name(self.certificate.subject)
            .public_key(public_key)
            .serial_number(x509.random_serial_number())
            .not_valid_before(not_before)
            .not_valid_after(not_after)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()),
                critical=False,
            )
        )
        if names:
            builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
        return builder.sign(self.key, hashes.SHA256())

    def issue_server(self, hosts: list[str], now: dt.datetime) -> IssuedCertificate:
        """A server certificate for ``hosts`` (IP addresses or DNS names)."""
        names: list[x509.GeneralName] = []
        for host in hosts:
            try:
                names.append(x509.IPAddress(ipaddress.ip_address(host)))
            except ValueError:
                names.append(x509.DNSName(host))
        return self.issue(
            hosts[0],
            names,
            server=True,
            not_before=now - dt.timedelta(minutes=5),
            not_after=now + LEAF_VALIDITY,
        )

    def issue_client(
        self, trust_domain: str, role: str, name: str, now: dt.datetime
    ) -> IssuedCertificate:
        """A client certificate whose only SAN is ``spiffe://<trust_domain>/<role>/<name>``."""
        identity = spiffe_id(trust_domain, role, name)
        return self.issue(
            f"{role}/{name}",
            [x509.UniformResourceIdentifier(identity)],
            server=False,
            not_before=now - dt.timedelta(minutes=5),
            not_after=now + LEAF_VALIDITY,
        )


DEVELOPMENT_CLIENTS = (
    ("operator", "operator"),
    ("auditor", "auditor"),
    ("authority", "gov-health"),
    ("portal", "KW"),
    ("portal", "SA"),
    ("insurer", "acme-health"),
)
"""The clients ``pki init`` issues: one per role (two portals, to show jurisdictions)."""


def init_directory(
    directory: Path,
    *,
    trust_domain: str = DEFAULT_TRUST_DOMAIN,
    hosts: tuple[str, ...] = ("127.0.0.1", "localhost"),
    now: dt.datetime | None = None,
) -> list[Path]:
    """Make a CA, a server certificate and the development clients in ``directory``.

    Refuses to overwrite an existing ``ca.pem``: a second CA would silently orphan every
    certificate issued by the first. Returns the files written.
    """
    now = now or dt.datetime.now(dt.UTC)
    check_spiffe_part("trust domain", trust_domain)
    directory.mkdir(parents=True, exist_ok=True)
    if (directory / "ca.pem").exists():
        raise InvalidArgument(
            f"{directory / 'ca.pem'} exists: use `pki issue` to add a certificate, or another "
            "--out directory",
            reason="CA_EXISTS",
        )
    authority = CertificateAuthority.create(f"policy-ledger development CA ({trust_domain})", now)
    (directory / "ca.pem").write_bytes(authority.certificate_pem)
    _write_private(directory / "ca.key", _key_pem(authority.key))
    authority.issue_server(list(hosts), now).write(directory, "server")
    written = [directory / name for name in ("ca.pem", "ca.key", "server.pem", "server.key")]
    for role, name in DEVELOPMENT_CLIENTS:
        written.extend(issue_into_directory(directory, role, name, trust_domain, now))
    return written


def issue_into_directory(
    directory: Path,
    role: str,
    name: str,
    trust_domain: str = DEFAULT_TRUST_DOMAIN,
    now: dt.datetime | None = None,
) -> list[Path]:
    """Issue ``<role>-<name>.pem/.key`` with the CA of ``directory``; return the files."""
    authority = CertificateAuthority.load(directory)
    issued = authority.issue_client(trust_domain, role, name, now or dt.datetime.now(dt.UTC))
    stem = client_file_stem(role, name)
    issued.write(directory, stem)
    return [directory / f"{stem}.pem", directory / f"{stem}.key"]
