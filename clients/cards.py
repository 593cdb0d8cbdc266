"""Insurance cards and signed documents over gRPC: issue, replace and revoke a card (signed
events), fetch a card or a registration certificate, and ask any document's status.

::

    cards = CardClient(channel, log_key=LOG_VERIFIER_KEY)
    issued = cards.get("4000001234567899")          # the signed card, verified
    render_qr_png(issued.document, "card.png")       # clients.certificate: the same QR code
    cards.status("4000001234567899").status          # CURRENT / REPLACED / REVOKED / EXPIRED

Formats and the QR payload: docs/formats.md; rules: docs/cards.md.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import grpc

from clients.errors import from_rpc_error
from clients.offline.certificate import CertificateBundle, LogKey
from clients.offline.document import DocumentStatement, verify_document
from ledger.events import civil_date
from ledger.v1 import coverage_service_pb2 as pb
from ledger.v1 import coverage_service_pb2_grpc as pb_grpc
from ledger.v1 import events_pb2, types_pb2

__all__ = [
    "CardClient",
    "DocumentStatus",
    "IssuedDocument",
    "card_issued_event",
    "card_replaced_event",
    "card_revoked_event",
]


@dataclass(frozen=True)
class IssuedDocument:
    """A signed document as the server issued it."""

    bundle: CertificateBundle
    """The note, the checkpoint it was issued at, and the entry it proves."""
    statement: DocumentStatement | None
    """Verified, when the client has the log key."""
    human_text: str
    valid_until: dt.date

    @property
    def document(self) -> bytes:
        """The signed note: what the QR code holds."""
        return self.bundle.certificate


@dataclass(frozen=True)
class DocumentStatus:
    """A status answer."""

    status: str
    """CURRENT, EXPIRED, REPLACED, REVOKED or CANCELLED."""
    leaf_index: int
    valid_until: dt.date
    as_of: dt.date
    replaced_by: str
    tree_size: int
    human_text: str
    kind: str = "insurance card"


def _date(civil: types_pb2.CivilDate) -> dt.date:
    return dt.date(civil.year, civil.month, civil.day)


def _status(
    answer: pb.GetCardStatusResponse | pb.GetDocumentStatusResponse, kind: str
) -> DocumentStatus:
    return DocumentStatus(
        status=pb.DocumentStatus.Name(answer.status).removeprefix("DOCUMENT_STATUS_"),
        leaf_index=answer.leaf_index,
        valid_until=_date(answer.valid_until),
        as_of=_date(answer.as_of_date),
        replaced_by=answer.replaced_by,
        tree_size=answer.basis.tree_size,
        human_text=answer.human_text,
        kind=kind,
    )


class CardClient:
    """CoverageService's card and document methods; verifies documents given the log key."""

    def __init__(
        self,
        channel: grpc.Channel,
        *,
        log_key: str | None = None,
        timeout: float = 30.0,
        purpose: types_pb2.AccessPurpose.ValueType = types_pb2.ACCESS_PURPOSE_BENEFICIARY_SELF,
    ) -> None:
        self._stub = pb_grpc.CoverageServiceStub(channel)
        self._log_key = None if log_key is None else LogKey.parse(log_key)
        self._timeout = timeout
        self._purpose = purpose

    def _metadata(self, accept_language: str) -> tuple[tuple[str, str], ...]:
        return (("accept-language", accept_language),) if accept_language else ()

    def _issued(self, document: pb.SignedDocument, checkpoint: bytes) -> IssuedDocument:
        bundle = CertificateBundle(document.document, checkpoint, document.entry)
        statement = None
        if self._log_key is not None:
            statement = verify_document(
                bundle.certificate, self._log_key, checkpoint=checkpoint, entry=document.entry
            )
        return IssuedDocument(bundle, statement, document.human_text, _date(document.valid_until))

    def status(self, card_number: str, *, accept_language: str = "") -> DocumentStatus:
        """The card's status (NotFoundError for a number never issued)."""
        try:
            answer = self._stub.GetCardStatus(
                pb.GetCardStatusRequest(card_number=card_number),
                timeout=self._timeout,
                metadata=self._metadata(accept_language),
            )
        except grpc.RpcError as error:
            raise from_rpc_error(error) from None
        return _status(answer, "insurance card")

    def document_status(self, document: bytes, *, accept_language: str = "") -> DocumentStatus:
        """The status of any document the log signed (its note bytes)."""
        try:
            answer = self._stub.GetDocumentStatus(
                pb.GetDocumentStatusRequest(document=document),
                timeout=self._timeout,
                metadata=self._metadata(accept_language),
            )
        except grpc.RpcError as error:
            raise from_rpc_error(error) from None
        return _status(answer, answer.document_kind)

    def get(self, card_number: str, *, accept_language: str = "") -> IssuedDocument:
        """The signed card (FailedPreconditionError for a replaced or revoked one)."""
        try:
            answer = self._stub.GetCard(
                pb.GetCardRequest(card_number=card_number, purpose=self._purpose),
                timeout=self._timeout,
                metadata=self._metadata(accept_language),
            )
        except grpc.RpcError as error:
            raise from_rpc_error(error) from None
        return self._issued(answer.card, answer.basis.checkpoint)

    def registration(
        self, person: types_pb2.PersonId, day: dt.date, *, accept_language: str = ""
    ) -> list[IssuedDocument]:
        """A registration certificate per registration of ``person`` holding on ``day``."""
        try:
            answer = self._stub.GetRegistrationCertificate(
                pb.GetRegistrationCertificateRequest(
                    person=person, date=civil_date(day), purpose=self._purpose
                ),
                timeout=self._timeout,
                metadata=self._metadata(accept_language),
            )
        except grpc.RpcError as error:
            raise from_rpc_error(error) from None
        return [self._issued(item, answer.basis.checkpoint) for item in answer.certificates]


def _event(insurer_id: str, event_id: str, occurred_at: dt.datetime) -> events_pb2.Event:
    event = events_pb2.Event(event_id=event_id, insurer_id=insurer_id)
    event.occurred_at.FromDatetime(occurred_at)
    return event


def card_issued_event(
    *,
    insurer_id: str,
    event_id: str,
    card_number: str,
    person_token: str,
    valid_until: dt.date,
    occurred_at: dt.datetime,
) -> events_pb2.Event:
    """A CardIssued event to sign."""
    event = _event(insurer_id, event_id, occurred_at)
    event.card_issued.card_number = card_number
    event.card_issued.person_token = person_token
    event.card_issued.valid_until.CopyFrom(civil_date(valid_until))
    return event


def card_replaced_event(
    *,
    insurer_id: str,
    event_id: str,
    old_card_number: str,
    new_card_number: str,
    valid_until: dt.date,
    reason: events_pb2.CardReason.ValueType,
    occurred_at: dt.datetime,
) -> events_pb2.Event:
    """A CardReplaced event to sign."""
    event = _event(insurer_id, event_id, occurred_at)
    body = event.card_replaced
    body.old_card_number = old_card_number
    body.new_card_number = new_card_number
    body.valid_until.CopyFrom(civil_date(valid_until))
    body.reason = reason
    return event


def card_revoked_event(
    *,
    insurer_id: str,
    event_id: str,
    card_number: str,
    reason: events_pb2.CardReason.ValueType,
    occurred_at: dt.datetime,
) -> events_pb2.Event:
    """A CardRevoked event to sign."""
    event = _event(insurer_id, event_id, occurred_at)
    event.card_revoked.card_number = card_number
    event.card_revoked.reason = reason
    return event
