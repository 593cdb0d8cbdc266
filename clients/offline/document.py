"""Insurance cards and registration certificates, verified offline with the log's key alone.

Self-contained like ``clients/offline/certificate.py`` (whose note, proof and field checks it
uses: stdlib and ``cryptography`` only). The formats, field by field, and the QR payload are in
docs/formats.md::

    policy-ledger insurance card v1          policy-ledger registration certificate v1
    card <16 digits>                         person <COUNTRY>:<TYPE>:<VALUE>
    person <COUNTRY>:<TYPE>:<VALUE>          person-token pt_...
    person-token pt_...                      insurer <insurer id>
    insurer <insurer id>                     policy <policy id>
    issued <YYYY-MM-DD>                      relationship <self|spouse|...>
    valid-until <YYYY-MM-DD>                 registered <YYYY-MM-DD>
    leaf / leaf-hash / tree-size / root      issued <YYYY-MM-DD>
    proof ...                                valid-until <YYYY-MM-DD>
                                             leaf / leaf-hash / tree-size / root / proof ...

:func:`verify_document` (1) checks the log key's signature, (2) parses the statement strictly,
(3) verifies the inclusion proof, and when given (4) the checkpoint and (5) the entry, as
``verify_certificate`` does; it accepts a coverage certificate too. The result says what the
document states, the checkpoint it was issued at (``tree_size``), and, given the verifier's
date, whether it has expired. It cannot say whether the ledger replaced, revoked or cancelled
it since: :attr:`DocumentStatement.check_status` is always true, and the status is asked online
(``CoverageService/GetDocumentStatus``, or ``GetCardStatus`` for a card).
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass, replace

from clients.offline import certificate as _cert
from clients.offline.certificate import (
    CERTIFICATE_HEADER,
    CERTIFICATE_HEADER_V2,
    CertificateError,
    LogKey,
    statement_lines,
    verify_certificate,
)

__all__ = [
    "CARD_HEADER",
    "REGISTRATION_HEADER",
    "DocumentStatement",
    "parse_document",
    "verify_document",
]

CARD_HEADER = "policy-ledger insurance card v1"
REGISTRATION_HEADER = "policy-ledger registration certificate v1"

_CARD_FIELDS = (
    "card",
    "person",
    "person-token",
    "insurer",
    "issued",
    "valid-until",
    "leaf",
    "leaf-hash",
    "tree-size",
    "root",
)
_REGISTRATION_FIELDS = (
    "person",
    "person-token",
    "insurer",
    "policy",
    "relationship",
    "registered",
    "issued",
    "valid-until",
    "leaf",
    "leaf-hash",
    "tree-size",
    "root",
)
_CARD_NUMBER = re.compile(r"[0-9]{16}", re.ASCII)
_INSURER_CHARS_MAX = 64
_POLICY_CHARS_MAX = 128


@dataclass(frozen=True)
class DocumentStatement:
    """What a signed document states (verified when :func:`verify_document` returns it)."""

    kind: str
    """``insurance card``, ``registration certificate`` or ``coverage certificate``."""
    person: str
    person_token: str
    insurer: str
    valid_until: dt.date
    """The last day it is valid, inclusive."""
    leaf_index: int
    tree_size: int
    """The size of the log's tree it was issued at (its checkpoint)."""
    leaf_hash: bytes
    root_hash: bytes
    proof: tuple[bytes, ...]
    text: str
    card_number: str = ""
    """For a card."""
    policy: str = ""
    """For a certificate."""
    relationship: str = ""
    issued: dt.date | None = None
    """For a card or a registration certificate: the ledger date it was issued on."""
    registered: dt.date | None = None
    """For a registration certificate: the registration's first day."""
    check_status: bool = True
    """Always: offline, nothing says whether the ledger withdrew it since ``tree_size``."""

    def expired(self, today: dt.date) -> bool:
        """Whether ``today`` (the verifier's own date) is after ``valid_until``."""
        return today > self.valid_until


def parse_document(text: str) -> DocumentStatement:
    """The fields of a card's or registration certificate's statement, strictly (this checks no
    signature and no proof); a coverage certificate is parsed by ``parse_statement``."""
    if not text.endswith("\n"):
        raise CertificateError("malformed document: statement does not end in a newline")
    lines = text[:-1].split("\n")
    if lines[0] == CARD_HEADER:
        values, proof = statement_lines(lines, _CARD_FIELDS, "card")
        if not _CARD_NUMBER.fullmatch(values["card"]):
            raise CertificateError("malformed card: card is not 16 digits")
        return replace(
            _common("insurance card", values, proof, text),
            card_number=values["card"],
            issued=_cert._date(values["issued"], "issued"),
        )
    if lines[0] == REGISTRATION_HEADER:
        values, proof = statement_lines(lines, _REGISTRATION_FIELDS, "registration certificate")
        return replace(
            _common("registration certificate", values, proof, text),
            policy=_cert._identifier(values["policy"], "policy", _POLICY_CHARS_MAX),
            relationship=_cert._relationship(values["relationship"]),
            registered=_cert._date(values["registered"], "registered"),
            issued=_cert._date(values["issued"], "issued"),
        )
    raise CertificateError(
        f"malformed document: first line must be {CARD_HEADER!r} or {REGISTRATION_HEADER!r}, "
        f"got {lines[0][:64]!r}"
    )


def _common(
    kind: str, values: dict[str, str], proof: tuple[bytes, ...], text: str
) -> DocumentStatement:
    leaf = _cert._decimal(values["leaf"], "leaf")
    size = _cert._decimal(values["tree-size"], "tree-size")
    if leaf >= size:
        raise CertificateError(f"malformed document: leaf {leaf} is not below tree-size {size}")
    expected = _cert._proof_length(leaf, size)
    if len(proof) != expected:
        raise CertificateError(
            f"malformed document: {len(proof)} proof lines, the proof of leaf {leaf} "
            f"in a tree of size {size} has {expected}"
        )
    return DocumentStatement(
        kind=kind,
        person=_cert._person(values["person"]),
        person_token=_cert._person_token(values["person-token"]),
        insurer=_cert._identifier(values["insurer"], "insurer", _INSURER_CHARS_MAX),
        valid_until=_cert._date(values["valid-until"], "valid-until"),
        leaf_index=leaf,
        tree_size=size,
        leaf_hash=_cert._hash(values["leaf-hash"], "leaf-hash"),
        root_hash=_cert._hash(values["root"], "root"),
        proof=proof,
        text=text,
    )


def verify_document(
    document: bytes,
    log_key: LogKey | str,
    *,
    checkpoint: bytes | None = None,
    entry: bytes | None = None,
    origin: str | None = None,
) -> DocumentStatement:
    """The statement of a signed card, registration certificate or coverage certificate once
    every check passed (see the module docstring); CertificateError says which failed."""
    key = log_key if isinstance(log_key, LogKey) else LogKey.parse(log_key)
    first = document.split(b"\n", 1)[0].decode("utf-8", "replace")
    if first in {CERTIFICATE_HEADER, CERTIFICATE_HEADER_V2}:
        coverage = verify_certificate(
            document, key, checkpoint=checkpoint, entry=entry, origin=origin
        )
        return DocumentStatement(
            kind="coverage certificate",
            person=coverage.person,
            person_token=coverage.person_token,
            insurer=coverage.insurer,
            valid_until=coverage.last_valid_day,
            leaf_index=coverage.leaf_index,
            tree_size=coverage.tree_size,
            leaf_hash=coverage.leaf_hash,
            root_hash=coverage.root_hash,
            proof=coverage.proof,
            text=coverage.text,
            policy=coverage.policy,
            relationship=coverage.relationship,
        )
    text = _cert._open_note(document, key, "document")
    statement = parse_document(text)
    _cert.verify_inclusion(
        statement.leaf_index,
        statement.tree_size,
        statement.leaf_hash,
        statement.proof,
        statement.root_hash,
    )
    if checkpoint is not None:
        _cert._check_checkpoint(checkpoint, key, origin or key.name, statement)
    if entry is not None and _cert._leaf_hash(entry) != statement.leaf_hash:
        raise CertificateError("entry does not match the document: SHA-256(0x00 || entry) differs")
    if entry is not None and statement.person_token.encode("ascii") not in entry:
        raise CertificateError(
            f"the entry does not name the document's person token {statement.person_token}"
        )
    return statement
