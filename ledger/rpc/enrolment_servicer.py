"""EnrolmentService: a one-time code for a client certificate and a registered signing key.

Served only on the enrolment port (ledger/rpc/enrolment_port.py). ``Enroller`` does the work in
numbered steps; the servicer parses, delegates and converts.
"""

from __future__ import annotations

import asyncio
import datetime as dt

import grpc
from cryptography.hazmat.primitives import serialization

from ledger import limits
from ledger.clock import Clock
from ledger.dsse import sign_envelope
from ledger.enrolment import (
    SIGNING_ROLES,
    certify_request,
    check_enrollable,
    check_signing_key,
    key_registered_event,
)
from ledger.errors import FieldViolation, InvalidArgument
from ledger.events import EVENT_PAYLOAD_TYPE
from ledger.keys import insurer_key_id
from ledger.pki import CertificateAuthority
from ledger.rpc.ledger_servicer import receipt_to_proto
from ledger.rpc.status import abort
from ledger.service import Ledger
from ledger.signing import Signer
from ledger.storage.append import Receipt
from ledger.storage.enrolment_store import EnrolmentStore
from ledger.v1 import enrolment_service_pb2 as pb
from ledger.v1 import enrolment_service_pb2_grpc as pb_grpc

__all__ = ["Enroller", "EnrolmentServicer"]

_Context = grpc.aio.ServicerContext[object, object]


class Enroller:
    """Checks a code and a CSR, issues the certificate, registers the signing key."""

    def __init__(
        self,
        store: EnrolmentStore,
        *,
        authority: CertificateAuthority,
        operator_signer: Signer | None,
        ledger: Ledger,
        clock: Clock,
        trust_domain: str,
    ) -> None:
        self._store = store
        self._authority = authority
        self._operator_signer = operator_signer
        self._ledger = ledger
        self._clock = clock
        self._trust_domain = trust_domain

    async def enrol(self, request: pb.EnrolRequest) -> pb.EnrolResponse:
        """(1) the request's form, (2) the CSR, (3) the code, (4) the key event, (5) the code
        is used. A refusal at any step leaves no certificate and no key event; the code is
        used only in (5), after everything else succeeded."""
        now = self._clock.now()
        _check_form(request)  # (1)
        certificate = certify_request(  # (2)
            self._authority,
            request.csr_pem,
            trust_domain=self._trust_domain,
            role=request.role,
            name=request.name,
            now=now,
        )
        code = await asyncio.to_thread(  # (3)
            self._store.check, request.role, request.name, request.code, now
        )
        answer = pb.EnrolResponse(
            certificate_pem=certificate.public_bytes(serialization.Encoding.PEM),
            ca_certificate_pem=self._authority.certificate_pem,
        )
        if request.role in SIGNING_ROLES:  # (4)
            receipt = await self._register_key(request, now, code.code_id)
            answer.key_registered_receipt.CopyFrom(receipt_to_proto(receipt))
        serial = format(certificate.serial_number, "x")
        await asyncio.to_thread(self._store.redeem, code.code_id, serial, now)  # (5)
        return answer

    async def _register_key(
        self, request: pb.EnrolRequest, now: dt.datetime, code_id: str
    ) -> Receipt:
        if self._operator_signer is None:
            raise InvalidArgument(  # start-up refuses this configuration; kept for the types
                "this server has no operator key to register signing keys with",
                reason="OPERATOR_KEY_MISSING",
            )
        event = key_registered_event(
            request.role, request.name, request.signing_public_key, now, code_id
        )
        envelope = sign_envelope(
            EVENT_PAYLOAD_TYPE,
            event.SerializeToString(deterministic=True),
            self._operator_signer,
            insurer_key_id(self._operator_signer.public_key),
        )
        return await self._ledger.submit(envelope)


def _check_form(request: pb.EnrolRequest) -> None:
    if not request.code or len(request.code) > limits.enrolment_code_chars_max:
        raise InvalidArgument(
            f"the code must be 1..{limits.enrolment_code_chars_max} characters",
            reason="CODE_MALFORMED",
            field_violations=[FieldViolation("code", "missing or too long")],
        )
    check_enrollable(request.role, request.name)
    check_signing_key(request.role, request.signing_public_key)


class EnrolmentServicer(pb_grpc.EnrolmentServiceServicer):
    """The enrolment port's one RPC."""

    def __init__(self, enroller: Enroller) -> None:
        self._enroller = enroller

    async def Enrol(self, request: pb.EnrolRequest, context: _Context) -> pb.EnrolResponse:
        """Trade a one-time code and a CSR for a client certificate (see Enroller.enrol)."""
        try:
            return await self._enroller.enrol(request)
        except Exception as error:  # every failure becomes a status; bugs are logged there
            await abort(context, error)
