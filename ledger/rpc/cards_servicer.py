"""CoverageService's card and document methods (task E, docs/cards.md): GetCardStatus,
GetCard, GetRegistrationCertificate, GetDocumentStatus.

A mixin of :class:`ledger.rpc.coverage_servicer.CoverageServicer`, which provides the reads,
the clock, the log store and the log key (``_read``, ``_checked``, ``_clock``, ``_log_store``,
``_signer``, ``_reader``, ``_cards``, ``_served_basis``, ``_presentation``,
``_answer_language``).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

import grpc

from ledger import i18n, limits
from ledger.cards.document import (
    ProvenLeaf,
    card_messages,
    card_text,
    read_document,
    registration_messages,
    registration_text,
    sign_document,
)
from ledger.cards.number import card_number_problem
from ledger.cards.reader import CardReader, DocumentState
from ledger.coverage import rules
from ledger.coverage.model import PersonRef
from ledger.coverage.projector import person_ref
from ledger.coverage.reader import CoverageReader
from ledger.errors import FailedPrecondition, FieldViolation, NotFound, check, refuse_violations
from ledger.events import check_date, check_person, civil_date
from ledger.i18n.messages import (
    DOCUMENT_CANCELLED,
    DOCUMENT_CURRENT,
    DOCUMENT_EXPIRED,
    DOCUMENT_REPLACED,
    DOCUMENT_REVOKED,
    Message,
)
from ledger.merkle import leaf_hash
from ledger.signing import Signer
from ledger.storage.log_store import LogStore, StoredCheckpoint
from ledger.v1 import coverage_service_pb2 as pb

if TYPE_CHECKING:
    from ledger.clock import Clock

__all__ = ["CardMethods"]

_T = TypeVar("_T")
_Context = grpc.aio.ServicerContext[object, object]

_STATUS_MESSAGES = {
    "CURRENT": DOCUMENT_CURRENT,
    "EXPIRED": DOCUMENT_EXPIRED,
    "REPLACED": DOCUMENT_REPLACED,
    "REVOKED": DOCUMENT_REVOKED,
    "CANCELLED": DOCUMENT_CANCELLED,
}


def _status_proto(status: str) -> pb.DocumentStatus.ValueType:
    return pb.DocumentStatus.Value(f"DOCUMENT_STATUS_{status}")


def status_message(state: DocumentState) -> Message:
    """The human text of a status."""
    return Message(
        _STATUS_MESSAGES[state.status],
        {
            "date": state.as_of,
            "leaf": str(state.leaf_index),
            "valid_until": state.valid_until,
            "replaced_by": state.replaced_by,
        },
    )


def _status_fields(
    state: DocumentState, basis: pb.AnswerBasis, presentation: i18n.Presentation
) -> dict[str, Any]:
    return {
        "status": _status_proto(state.status),
        "leaf_index": state.leaf_index,
        "valid_until": civil_date(state.valid_until),
        "replaced_by": state.replaced_by,
        "as_of_date": civil_date(state.as_of),
        "basis": basis,
        "human_text": i18n.render(status_message(state), presentation),
    }


def _card_number(number: str) -> Callable[[], str]:
    def parse() -> str:
        problem = card_number_problem(number) if number else "required"
        refuse_violations([FieldViolation("card_number", problem)] if problem else [])
        return number

    return parse


class CardMethods:
    """The card and document RPCs (mixed into CoverageServicer)."""

    _reader: CoverageReader
    _cards: CardReader
    _clock: Clock
    _log_store: LogStore
    _signer: Signer

    if TYPE_CHECKING:

        async def _read(self, context: _Context, function: Callable[[], _T]) -> _T: ...
        async def _checked(self, context: _Context, check: Callable[[], _T]) -> _T: ...
        def _served_basis(
            self, head: StoredCheckpoint, leaves: list[int], log_store: LogStore | None = None
        ) -> pb.AnswerBasis: ...
        def _presentation(self, context: _Context) -> i18n.Presentation: ...
        async def _answer_language(
            self, context: _Context, presentation: i18n.Presentation
        ) -> None: ...

    def _today(self) -> dt.date:
        return rules.ledger_date(self._clock.now())

    def _proven(self, leaf: int, head: StoredCheckpoint) -> tuple[ProvenLeaf, bytes]:
        _, [entry] = self._log_store.entries(leaf, leaf + 1)
        size, proof = self._log_store.inclusion_proof(leaf, head.tree_size)
        check(size == head.tree_size, "inclusion proof at another tree size")
        proven = ProvenLeaf(leaf, leaf_hash(entry), head.tree_size, head.root_hash, proof)
        return proven, entry

    async def GetCardStatus(
        self, request: pb.GetCardStatusRequest, context: _Context
    ) -> pb.GetCardStatusResponse:
        """CURRENT, EXPIRED, REPLACED or REVOKED, and the entry that decided it."""
        presentation = await self._checked(context, lambda: self._presentation(context))
        number = await self._checked(context, _card_number(request.card_number))
        today = self._today()
        state, head = await self._read(context, lambda: self._cards.card_status(number, today))
        await self._answer_language(context, presentation)
        basis = self._served_basis(head, [state.leaf_index])
        return pb.GetCardStatusResponse(**_status_fields(state, basis, presentation))

    async def GetDocumentStatus(
        self, request: pb.GetDocumentStatusRequest, context: _Context
    ) -> pb.GetDocumentStatusResponse:
        """The status of any document the log signed, given its bytes."""
        presentation = await self._checked(context, lambda: self._presentation(context))

        def parse() -> Any:
            if not request.document:
                refuse_violations([FieldViolation("document", "required")])
            return read_document(request.document, self._signer)

        document = await self._checked(context, parse)
        today = self._today()
        state, head = await self._read(
            context, lambda: self._cards.document_status(document, today)
        )
        await self._answer_language(context, presentation)
        basis = self._served_basis(head, [state.leaf_index])
        return pb.GetDocumentStatusResponse(
            **_status_fields(state, basis, presentation), document_kind=document.kind
        )

    async def GetCard(self, request: pb.GetCardRequest, context: _Context) -> pb.GetCardResponse:
        """The signed card document of a current or expired card."""
        presentation = await self._checked(context, lambda: self._presentation(context))
        number = await self._checked(context, _card_number(request.card_number))
        today = self._today()
        response = await self._read(context, lambda: self._card(number, today, presentation))
        await self._answer_language(context, presentation)
        return response

    def _card(
        self, number: str, today: dt.date, presentation: i18n.Presentation
    ) -> pb.GetCardResponse:
        card, state, head = self._cards.card(number, today)
        if state.status in {"REPLACED", "REVOKED"}:
            raise FailedPrecondition(
                f"card {number} is {state.status.lower()} (entry {state.leaf_index}): "
                "no document is issued for it",
                reason=f"CARD_{state.status}",
                field_violations=[FieldViolation("card_number", state.status.lower())],
                metadata={"card_number": number, "leaf_index": str(state.leaf_index)},
            )
        if card.person is None:
            raise FailedPrecondition(
                "the card's holder was erased from the identity vault",
                reason="PERSON_ERASED",
                metadata={"card_number": number},
            )
        proven, entry = self._proven(card.issued_leaf, head)
        document = sign_document(
            card_text(
                card_number=number,
                person=card.person,
                person_token=card.person_token,
                insurer_id=card.insurer_id,
                issued_on=card.issued_on,
                valid_until=card.valid_until,
                proven=proven,
            ),
            self._signer,
        )
        text = " ".join(
            i18n.render(message, presentation)
            for message in card_messages(
                card_number=number,
                person=card.person,
                insurer_id=card.insurer_id,
                issued_on=card.issued_on,
                valid_until=card.valid_until,
                tree_size=head.tree_size,
            )
        )
        return pb.GetCardResponse(
            card=pb.SignedDocument(
                document=document,
                leaf_index=card.issued_leaf,
                entry=entry,
                human_text=text,
                valid_until=civil_date(card.valid_until),
            ),
            status=_status_proto(state.status),
            basis=self._served_basis(head, [card.issued_leaf]),
        )

    async def GetRegistrationCertificate(
        self, request: pb.GetRegistrationCertificateRequest, context: _Context
    ) -> pb.GetRegistrationCertificateResponse:
        """A registration certificate per registration of a person on a date."""
        presentation = await self._checked(context, lambda: self._presentation(context))

        def parse() -> tuple[PersonRef, dt.date]:
            violations: list[FieldViolation] = []
            if request.HasField("person"):
                check_person(violations, "person", request.person)
            else:
                violations.append(FieldViolation("person", "required"))
            day = check_date(violations, "date", request.date, present=request.HasField("date"))
            refuse_violations(violations)
            assert day is not None
            return person_ref(request.person), day

        person, day = await self._checked(context, parse)
        today = self._today()
        response = await self._read(
            context, lambda: self._registrations(person, day, today, presentation)
        )
        await self._answer_language(context, presentation)
        return response

    def _registrations(
        self, person: PersonRef, day: dt.date, today: dt.date, presentation: i18n.Presentation
    ) -> pb.GetRegistrationCertificateResponse:
        records, head = self._reader.coverage_on(person, day, counting_suspension=True)
        latest = today + dt.timedelta(days=limits.registration_certificate_validity_days)
        documents: list[pb.SignedDocument] = []
        for record in records:
            valid_until = min(record.end, latest)
            if valid_until < today:  # a registration that ended before today: nothing to certify
                continue
            leaf = record.leaf_indexes[0]
            proven, entry = self._proven(leaf, head)
            note = sign_document(
                registration_text(record, issued_on=today, valid_until=valid_until, proven=proven),
                self._signer,
            )
            documents.append(
                pb.SignedDocument(
                    document=note,
                    leaf_index=leaf,
                    entry=entry,
                    human_text=" ".join(
                        i18n.render(message, presentation)
                        for message in registration_messages(
                            record, valid_until=valid_until, tree_size=head.tree_size
                        )
                    ),
                    valid_until=civil_date(valid_until),
                )
            )
        if not documents:
            raise NotFound(
                f"{person.key} has no registration on {day.isoformat()} that holds on {today}",
                reason="REGISTRATION_NOT_FOUND",
                metadata={"person": person.key, "date": day.isoformat()},
            )
        return pb.GetRegistrationCertificateResponse(
            certificates=documents,
            basis=self._served_basis(head, [d.leaf_index for d in documents]),
        )
