"""Coverage certificates: fetch them over gRPC, and render them as QR codes a clinic can scan.

A certificate is a note signed by the log key stating one coverage of a person on a date, with
the inclusion proof of the entry that created it (``ledger/coverage/certificate.py``; verified
offline by ``clients/offline/certificate.py`` with the log's verifier key alone)::

    client = CertificateClient(channel, log_key=LOG_VERIFIER_KEY)
    for issued in client.get(person, date(2026, 11, 23)):
        Path("card.json").write_text(issued.bundle.to_json())
        render_qr_png(issued.bundle.certificate, "card.png")

The QR code holds the certificate note alone, in byte mode: it verifies by itself (its
signature covers the tree size and root the proof leads to), while the checkpoint, signed by the
same key, would add nothing a scanner without witness keys could check, and would make the code
denser. A certificate of a tree of a million entries is about 1.5 KB: a version 28 code at error
correction level L (segno raises the level when the version leaves room for it).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

import grpc
import segno

from clients.errors import from_rpc_error
from clients.offline.certificate import (
    CertificateBundle,
    CertificateError,
    CertificateStatement,
    LogKey,
    verify_certificate,
)
from ledger.v1 import coverage_service_pb2 as pb
from ledger.v1 import coverage_service_pb2_grpc as pb_grpc
from ledger.v1 import types_pb2

__all__ = [
    "QR_BYTES_MAX",
    "CertificateClient",
    "IssuedCertificate",
    "certificate_qr",
    "render_qr_png",
]

QR_BYTES_MAX = 2953
"""What a QR code holds at most in byte mode (version 40, error correction level L)."""


@dataclass(frozen=True)
class IssuedCertificate:
    """One certificate as the server issued it."""

    bundle: CertificateBundle
    """The certificate note, the checkpoint of its tree size, and the entry it proves."""
    coverage: pb.Coverage
    """The coverage it states (as GetCoverage returns it)."""
    statement: CertificateStatement | None
    """Its verified statement, when the client was given the log key; else None."""
    human_text: str = ""
    """For people, in the language asked for (not signed: the statement is)."""


class CertificateClient:
    """CoverageService.GetCoverageCertificate; verifies each certificate when given the log key."""

    def __init__(
        self,
        channel: grpc.Channel,
        *,
        log_key: str | None = None,
        timeout: float = 30.0,
        purpose: types_pb2.AccessPurpose.ValueType = types_pb2.ACCESS_PURPOSE_BENEFICIARY_SELF,
    ) -> None:
        """``log_key`` is the log's verifier key string (``<name>+<hex8>+<base64>``);
        ``purpose`` is why the person's data is read (default: the person asked for it)."""
        self._purpose = purpose
        self._stub = pb_grpc.CoverageServiceStub(channel)
        self._log_key = None if log_key is None else LogKey.parse(log_key)
        self._timeout = timeout

    def get(
        self, person: types_pb2.PersonId, day: dt.date, *, accept_language: str = ""
    ) -> list[IssuedCertificate]:
        """A certificate per coverage of ``person`` on ``day`` (NotFoundError when none).

        ``accept_language`` (the ``accept-language`` metadata, docs/i18n.md) chooses the
        language and calendar of each certificate's ``human_text``.

        With a log key, each is verified (signature, proof, checkpoint, entry) before it is
        returned, and CertificateError says what failed.
        """
        request = pb.GetCoverageCertificateRequest(
            purpose=self._purpose,
            person=person,
            date=types_pb2.CivilDate(year=day.year, month=day.month, day=day.day),
        )
        try:
            response = self._stub.GetCoverageCertificate(
                request,
                timeout=self._timeout,
                metadata=(("accept-language", accept_language),) if accept_language else (),
            )
        except grpc.RpcError as error:
            raise from_rpc_error(error) from None
        issued: list[IssuedCertificate] = []
        for certificate in response.certificates:
            bundle = CertificateBundle(
                certificate=certificate.certificate,
                checkpoint=response.basis.checkpoint,
                entry=certificate.entry,
            )
            statement = None
            if self._log_key is not None:
                statement = verify_certificate(
                    bundle.certificate,
                    self._log_key,
                    checkpoint=bundle.checkpoint,
                    entry=bundle.entry,
                )
                if statement.leaf_index != certificate.leaf_index:
                    raise CertificateError(
                        f"the response names leaf {certificate.leaf_index}, "
                        f"the certificate leaf {statement.leaf_index}"
                    )
            issued.append(
                IssuedCertificate(bundle, certificate.coverage, statement, certificate.human_text)
            )
        return issued


def certificate_qr(certificate_note: bytes) -> segno.QRCode:
    """The QR code (byte mode, smallest version, error correction L or better) of a note."""
    if len(certificate_note) > QR_BYTES_MAX:
        raise ValueError(
            f"certificate is {len(certificate_note)} bytes, a QR code holds {QR_BYTES_MAX}"
        )
    return segno.make(certificate_note, error="l", mode="byte", micro=False, boost_error=True)


def render_qr_png(certificate_note: bytes, path: str | Path, *, scale: int = 4) -> None:
    """Write the QR code of ``certificate_note`` to ``path`` as a PNG (4-module quiet zone)."""
    certificate_qr(certificate_note).save(str(path), kind="png", scale=scale, border=4)
