"""The insurance card and the registration certificate: statements signed by the log key.

Both are C2SP signed notes like the coverage certificate (:mod:`ledger.coverage.certificate`),
whose proof block (:func:`~ledger.coverage.certificate.proof_block`) they end with; the formats,
field by field, and the QR payload are in docs/formats.md. ``clients/offline/document.py``
verifies them without this package.

:func:`read_document` is the server's side of ``GetDocumentStatus``: it opens a note with the
log key and reads the fields the status needs (the log signed it, so the proof is its own).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass

from ledger.cards.number import format_card_number
from ledger.coverage.certificate import CERTIFICATE_HEADER, proof_block
from ledger.coverage.model import CoverageRecord, PersonRef
from ledger.errors import FieldViolation, InvalidArgument, VerificationError
from ledger.i18n.messages import (
    CARD_SUMMARY,
    DOCUMENT_STATUS_NOTE,
    REGISTRATION_SUMMARY,
    Message,
)
from ledger.note import open_note, sign_note
from ledger.signing import Ed25519Verifier, Signer

__all__ = [
    "CARD_HEADER",
    "COVERAGE_CERTIFICATE_V2_HEADER",
    "REGISTRATION_HEADER",
    "DocumentFields",
    "ProvenLeaf",
    "card_messages",
    "card_text",
    "read_document",
    "registration_messages",
    "registration_text",
    "sign_document",
]

CARD_HEADER = "policy-ledger insurance card v1"
"""The first line of an insurance card's statement."""
REGISTRATION_HEADER = "policy-ledger registration certificate v1"
"""The first line of a registration certificate's statement."""
COVERAGE_CERTIFICATE_V2_HEADER = "policy-ledger coverage certificate v2"
"""Coverage certificates issued before ``valid-until`` (its period's end stands for it)."""

_KINDS = {
    CARD_HEADER: "insurance card",
    REGISTRATION_HEADER: "registration certificate",
    CERTIFICATE_HEADER: "coverage certificate",
    COVERAGE_CERTIFICATE_V2_HEADER: "coverage certificate",
}


@dataclass(frozen=True)
class ProvenLeaf:
    """The entry a document proves, and its inclusion proof at the tree it is issued at."""

    leaf_index: int
    leaf_hash: bytes
    tree_size: int
    root_hash: bytes
    proof: Sequence[bytes]

    def lines(self) -> list[str]:
        """The document's proof block (checked: the log signs no proof that fails)."""
        return proof_block(
            leaf_index=self.leaf_index,
            leaf_hash=self.leaf_hash,
            tree_size=self.tree_size,
            root_hash=self.root_hash,
            proof=self.proof,
        )


def _text(lines: list[str]) -> str:
    return "".join(line + "\n" for line in lines)


def card_text(
    *,
    card_number: str,
    person: PersonRef,
    person_token: str,
    insurer_id: str,
    issued_on: dt.date,
    valid_until: dt.date,
    proven: ProvenLeaf,
) -> str:
    """The statement of an insurance card (docs/formats.md, "Insurance card v1")."""
    return _text(
        [
            CARD_HEADER,
            f"card {card_number}",
            f"person {person.key}",
            f"person-token {person_token}",
            f"insurer {insurer_id}",
            f"issued {issued_on.isoformat()}",
            f"valid-until {valid_until.isoformat()}",
            *proven.lines(),
        ]
    )


def registration_text(
    record: CoverageRecord, *, issued_on: dt.date, valid_until: dt.date, proven: ProvenLeaf
) -> str:
    """The statement of a registration certificate (docs/formats.md)."""
    return _text(
        [
            REGISTRATION_HEADER,
            f"person {record.person.key}",
            f"person-token {record.person_token}",
            f"insurer {record.insurer_id}",
            f"policy {record.policy_id}",
            f"relationship {record.relationship.value}",
            f"registered {record.start.isoformat()}",
            f"issued {issued_on.isoformat()}",
            f"valid-until {valid_until.isoformat()}",
            *proven.lines(),
        ]
    )


def sign_document(text: str, signer: Signer) -> bytes:
    """The document: ``text`` as a C2SP signed note by ``signer`` (the log key)."""
    return sign_note(text, [signer])


def card_messages(
    *,
    card_number: str,
    person: PersonRef,
    insurer_id: str,
    issued_on: dt.date,
    valid_until: dt.date,
    tree_size: int,
) -> list[Message]:
    """A card's human text: whose card, by whom, until when, and to check its status."""
    return [
        Message(
            CARD_SUMMARY,
            {
                "card": format_card_number(card_number),
                "person": person.key,
                "insurer": insurer_id,
                "issued": issued_on,
                "valid_until": valid_until,
            },
        ),
        Message(DOCUMENT_STATUS_NOTE, {"tree_size": tree_size}),
    ]


def registration_messages(
    record: CoverageRecord, *, valid_until: dt.date, tree_size: int
) -> list[Message]:
    """A registration certificate's human text."""
    return [
        Message(
            REGISTRATION_SUMMARY,
            {
                "person": record.person.key,
                "insurer": record.insurer_id,
                "policy": record.policy_id,
                "registered": record.start,
                "valid_until": valid_until,
            },
        ),
        Message(DOCUMENT_STATUS_NOTE, {"tree_size": tree_size}),
    ]


@dataclass(frozen=True)
class DocumentFields:
    """What ``GetDocumentStatus`` reads of a document the log signed."""

    kind: str
    """``insurance card``, ``registration certificate`` or ``coverage certificate``."""
    fields: dict[str, str]
    """Each statement line's value by its name (the proof lines left out)."""
    valid_until: dt.date
    leaf_index: int


def _refuse(problem: str) -> InvalidArgument:
    return InvalidArgument(
        f"document: {problem}",
        reason="DOCUMENT_INVALID",
        field_violations=[FieldViolation("document", problem)],
    )


def read_document(data: bytes, signer: Signer) -> DocumentFields:
    """The fields of a document signed by the log key ``signer``; INVALID_ARGUMENT
    (``DOCUMENT_INVALID``) when it is not one: not a signed note, not signed by this log, or
    not a document this log issues."""
    verifier = Ed25519Verifier(signer.name, signer.public_key)
    try:
        text = open_note(data, [verifier]).text
    except (VerificationError, InvalidArgument) as error:
        raise _refuse(f"not a note signed by this log's key ({error.message})") from None
    lines = text[:-1].split("\n")
    kind = _KINDS.get(lines[0])
    if kind is None:
        raise _refuse(f"not a document this log issues (first line {lines[0][:64]!r})")
    fields: dict[str, str] = {}
    for line in lines[1:]:
        name, _, value = line.partition(" ")
        if name != "proof":
            fields.setdefault(name, value)
    try:
        until_text = fields.get("valid-until") or fields["period"].partition(" ")[2]
        return DocumentFields(
            kind=kind,
            fields=fields,
            valid_until=dt.date.fromisoformat(until_text),
            leaf_index=int(fields["leaf"]),
        )
    except (KeyError, ValueError):  # signed by this log's key: only an old or foreign format
        raise _refuse("its statement lacks valid-until or leaf") from None
