"""Coverage certificates, verified offline with the log's verifier key alone.

Self-contained: imports nothing from the server's ``ledger`` package (stdlib and
``cryptography`` only), so a clinic's scanner can ship this file and the log's verifier key and
nothing else. A certificate is a C2SP signed note (https://c2sp.org/signed-note) signed by the
log key, whose text is the statement ``ledger/coverage/certificate.py`` writes::

    policy-ledger coverage certificate v3
    person <COUNTRY>:<TYPE>:<VALUE>
    person-token <the person's token in the identity vault: pt_ and 26 base32 characters>
    date <YYYY-MM-DD>
    insurer <insurer id>
    policy <policy id>
    plan <plan>
    period <YYYY-MM-DD> <YYYY-MM-DD>
    relationship <self|spouse|child|parent|domestic_worker|other>
    valid-until <YYYY-MM-DD>   (v3 only: v2 certificates lack it, their period's end stands for it)
    leaf <leaf index>
    leaf-hash <base64 SHA-256(0x00 || entry)>
    tree-size <tree size>
    root <base64 root hash>
    proof <base64 hash>        (as many lines as the inclusion proof has)

:func:`verify_certificate` (1) parses the note strictly, (2) verifies the log key's Ed25519
signature on it, (3) parses the statement strictly, (4) verifies the RFC 9162 inclusion proof of
``leaf-hash`` at ``leaf`` in the tree of ``tree-size`` and ``root``, and, when given, (5) checks
the checkpoint note (same key, the log's origin, same size and root) and (6) the entry bytes
(SHA-256(0x00 || entry) == leaf-hash, and the entry names ``person-token``: the log's events
name people by token only, so this binds the ID the certificate shows to the proven entry).
Every failure raises :class:`CertificateError` saying
which check failed.

The certificate proves that the log stated the coverage at ``tree-size`` and that the entry that
created it is in the log. It is a snapshot: a cancellation logged later is not in it. So a
verifier shows the checkpoint it was issued at (``tree-size``), refuses it as expired after
``valid-until`` (:meth:`CertificateStatement.expired`), and tells the reader to check its status
online (``CoverageService/GetDocumentStatus``). The insurance card and the registration
certificate are verified by ``clients/offline/document.py`` with the same checks.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import json
import re
from dataclasses import dataclass
from typing import Protocol

from clients.offline import merkle, note
from clients.offline.note import NoteError, VerifierKey

__all__ = [
    "BUNDLE_FORMAT",
    "CERTIFICATE_HEADER",
    "CERTIFICATE_HEADER_V2",
    "CertificateBundle",
    "CertificateError",
    "CertificateStatement",
    "LogKey",
    "load_bundle",
    "parse_statement",
    "verify_certificate",
    "verify_inclusion",
]

CERTIFICATE_HEADER = "policy-ledger coverage certificate v3"
"""The first line of every certificate statement the log issues now."""
CERTIFICATE_HEADER_V2 = "policy-ledger coverage certificate v2"
"""The first line of the certificates issued before ``valid-until`` (still verified)."""
BUNDLE_FORMAT = "policy-ledger coverage certificate bundle v1"
"""The ``format`` of the JSON file ``policy-ledger certificate get`` writes."""

_HASH_BYTES = 32
_TREE_SIZE_MAX = 2**63 - 1
_PROOF_LINES_MAX = 63
_DECIMAL = re.compile(r"0|[1-9][0-9]{0,18}", re.ASCII)
_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}", re.ASCII)
_IDENTIFIER = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:/-]*", re.ASCII)
_PERSON_TOKEN = re.compile(r"pt_[a-z2-7]{26}")
_PERSON = re.compile(
    r"([A-Z]{2}):(RESIDENCE_ID|NATIONAL_ID|CIVIL_ID|PASSPORT|BORDER_NUMBER):([A-Z0-9]{1,32})",
    re.ASCII,
)
_RELATIONSHIPS = frozenset({"self", "spouse", "child", "parent", "domestic_worker", "other"})
_INSURER_CHARS_MAX = 64
_POLICY_CHARS_MAX = 128
_PLAN_CHARS_MAX = 64
_FIELDS = (
    "person",
    "person-token",
    "date",
    "insurer",
    "policy",
    "plan",
    "period",
    "relationship",
    "leaf",
    "leaf-hash",
    "tree-size",
    "root",
)
_FIELDS_V3 = (*_FIELDS[:8], "valid-until", *_FIELDS[8:])


class CertificateError(NoteError):
    """The certificate (or its key, checkpoint or entry) failed a check; the message says which."""


class LogKey(VerifierKey):
    """A log's C2SP Ed25519 verifier key, parsed by the one note library
    (:class:`clients.offline.note.VerifierKey`); a malformed key is a CertificateError."""

    @classmethod
    def parse(cls, text: str) -> LogKey:
        """The key of a verifier key string (surrounding whitespace ignored); its id is checked."""
        try:
            key = VerifierKey.parse(text)
        except note.MalformedVerifierKeyError as error:
            problem = str(error).removeprefix("malformed verifier key: ")
            raise CertificateError(f"malformed log key: {problem}") from None
        if key.signature_type != note.ED25519_TYPE:
            raise CertificateError("malformed log key: a log key is of signature type 0x01")
        return cls(key.name, key.key_id, key.public_key)


@dataclass(frozen=True)
class CertificateStatement:
    """What a certificate states: verified when :func:`verify_certificate` returns it, only
    well formed when :func:`parse_statement` does."""

    person: str
    """``<COUNTRY>:<TYPE>:<VALUE>``, e.g. ``SA:RESIDENCE_ID:2123456785``."""
    person_token: str
    """The token the log's entries name the person by (``pt_`` and 26 base32 characters)."""
    date: dt.date
    """The day the log stated the coverage on."""
    insurer: str
    policy: str
    plan: str
    start: dt.date
    end: dt.date
    """Last covered day, inclusive (as known at ``tree_size``)."""
    relationship: str
    leaf_index: int
    leaf_hash: bytes
    tree_size: int
    root_hash: bytes
    proof: tuple[bytes, ...]
    text: str
    """The statement, verbatim."""
    valid_until: dt.date | None = None
    """The last day the certificate is valid (v3); None for v2 (then ``end`` stands for it)."""

    def covers(self, day: dt.date) -> bool:
        """Whether ``day`` is in the stated period."""
        return self.start <= day <= self.end

    @property
    def last_valid_day(self) -> dt.date:
        """``valid_until``, or for a v2 certificate its period's end."""
        return self.valid_until if self.valid_until is not None else self.end

    def expired(self, today: dt.date) -> bool:
        """Whether ``today`` (the verifier's date) is after the last valid day."""
        return today > self.last_valid_day


@dataclass(frozen=True)
class CertificateBundle:
    """A certificate with what may be checked along with it (the checkpoint and the entry)."""

    certificate: bytes
    checkpoint: bytes | None = None
    entry: bytes | None = None

    def to_json(self) -> str:
        """The bundle file: JSON with the notes as text and the entry in base64."""
        document: dict[str, str] = {
            "format": BUNDLE_FORMAT,
            "certificate": self.certificate.decode("utf-8"),
        }
        if self.checkpoint is not None:
            document["checkpoint"] = self.checkpoint.decode("utf-8")
        if self.entry is not None:
            document["entry"] = base64.b64encode(self.entry).decode("ascii")
        return json.dumps(document, indent=2) + "\n"


def load_bundle(data: bytes) -> CertificateBundle:
    """A bundle file (JSON, see :meth:`CertificateBundle.to_json`) or a bare certificate note."""
    if any(data.startswith(header.encode("ascii") + b"\n") for header in _BARE_NOTE_HEADERS):
        return CertificateBundle(certificate=data)
    try:
        document = json.loads(data)
    except (UnicodeDecodeError, ValueError):
        raise CertificateError(
            "not a certificate: neither a certificate note nor a certificate bundle (JSON)"
        ) from None
    if not isinstance(document, dict) or document.get("format") != BUNDLE_FORMAT:
        raise CertificateError(f"not a certificate bundle: its format must be {BUNDLE_FORMAT!r}")
    unknown = sorted(set(document) - {"format", "certificate", "checkpoint", "entry"})
    if unknown:
        raise CertificateError(f"certificate bundle has unknown fields: {', '.join(unknown)}")
    for name in ("certificate", "checkpoint", "entry"):
        if name in document and not isinstance(document[name], str):
            raise CertificateError(f"certificate bundle: {name} must be a string")
    if "certificate" not in document:
        raise CertificateError("certificate bundle has no certificate")
    checkpoint = document.get("checkpoint")
    entry = document.get("entry")
    return CertificateBundle(
        certificate=document["certificate"].encode("utf-8"),
        checkpoint=None if checkpoint is None else checkpoint.encode("utf-8"),
        entry=None if entry is None else _b64decode(entry, "bundle entry"),
    )


def verify_certificate(
    certificate: bytes,
    log_key: LogKey | str,
    *,
    checkpoint: bytes | None = None,
    entry: bytes | None = None,
    origin: str | None = None,
) -> CertificateStatement:
    """The statement of ``certificate`` once every check passed (see the module docstring).

    ``origin`` is the log's checkpoint origin, by default the log key's name.
    """
    key = log_key if isinstance(log_key, LogKey) else LogKey.parse(log_key)
    text = _open_note(certificate, key, "certificate")
    statement = parse_statement(text)
    verify_inclusion(
        statement.leaf_index,
        statement.tree_size,
        statement.leaf_hash,
        statement.proof,
        statement.root_hash,
    )
    if checkpoint is not None:
        _check_checkpoint(checkpoint, key, origin or key.name, statement)
    if entry is not None and _leaf_hash(entry) != statement.leaf_hash:
        raise CertificateError(
            "entry does not match the certificate: SHA-256(0x00 || entry) differs"
        )
    if entry is not None and statement.person_token.encode("ascii") not in entry:
        raise CertificateError(
            f"the entry does not name the certificate's person token {statement.person_token}"
        )
    return statement


def parse_statement(text: str) -> CertificateStatement:
    """The fields of a statement, parsed strictly (this checks no signature and no proof)."""
    if not text.endswith("\n"):
        raise CertificateError("malformed certificate: statement does not end in a newline")
    lines = text[:-1].split("\n")
    if lines[0] not in {CERTIFICATE_HEADER, CERTIFICATE_HEADER_V2}:
        raise CertificateError(
            f"malformed certificate: first line must be {CERTIFICATE_HEADER!r} (or v2), "
            f"got {lines[0][:64]!r}"
        )
    names = _FIELDS_V3 if lines[0] == CERTIFICATE_HEADER else _FIELDS
    values, proof = statement_lines(lines, names, "certificate")
    day = _date(values["date"], "date")
    start_text, space, end_text = values["period"].partition(" ")
    if not space:
        raise CertificateError("malformed certificate: period must be '<start> <end>'")
    start, end = _date(start_text, "period start"), _date(end_text, "period end")
    if end < start:
        raise CertificateError(f"malformed certificate: period ends ({end}) before it starts")
    if not start <= day <= end:
        raise CertificateError(f"malformed certificate: date {day} is outside the period")
    leaf, size = _decimal(values["leaf"], "leaf"), _decimal(values["tree-size"], "tree-size")
    if leaf >= size:
        raise CertificateError(f"malformed certificate: leaf {leaf} is not below tree-size {size}")
    expected = _proof_length(leaf, size)
    if len(proof) != expected:
        raise CertificateError(
            f"malformed certificate: {len(proof)} proof lines, the proof of leaf {leaf} "
            f"in a tree of size {size} has {expected}"
        )
    return CertificateStatement(
        person=_person(values["person"]),
        person_token=_person_token(values["person-token"]),
        date=day,
        insurer=_identifier(values["insurer"], "insurer", _INSURER_CHARS_MAX),
        policy=_identifier(values["policy"], "policy", _POLICY_CHARS_MAX),
        plan=_plan(values["plan"]),
        start=start,
        end=end,
        relationship=_relationship(values["relationship"]),
        leaf_index=leaf,
        leaf_hash=_hash(values["leaf-hash"], "leaf-hash"),
        tree_size=size,
        root_hash=_hash(values["root"], "root"),
        proof=proof,
        text=text,
        valid_until=(
            _date(values["valid-until"], "valid-until") if "valid-until" in values else None
        ),
    )


def statement_lines(
    lines: list[str], names: tuple[str, ...], what: str
) -> tuple[dict[str, str], tuple[bytes, ...]]:
    """The values of a statement's lines after its header (``names``, in order, each once),
    and the hashes of the ``proof`` lines that follow (the proof block, docs/formats.md)."""
    values: dict[str, str] = {}
    for number, field in enumerate(names, 2):
        if number > len(lines):
            raise CertificateError(f"malformed {what}: line {number} ({field}) is missing")
        values[field] = _value(lines[number - 1], number, field)
    proof_lines = lines[len(names) + 1 :]
    if len(proof_lines) > _PROOF_LINES_MAX:
        raise CertificateError(
            f"malformed {what}: {len(proof_lines)} proof lines, at most {_PROOF_LINES_MAX}"
        )
    proof = tuple(
        _hash(_value(line, number, "proof"), f"line {number} (proof)")
        for number, line in enumerate(proof_lines, len(names) + 2)
    )
    return values, proof


def verify_inclusion(
    index: int, size: int, leaf_hash: bytes, proof: tuple[bytes, ...], root: bytes
) -> None:
    """RFC 9162 section 2.1.3.2: ``proof`` leads from ``leaf_hash`` at ``index`` to ``root``
    (:func:`clients.offline.merkle.verify_inclusion`)."""
    try:
        merkle.verify_inclusion(index, size, leaf_hash, proof, root)
    except merkle.VerificationFailure as error:
        raise CertificateError(str(error)) from None


def _open_note(data: bytes, key: LogKey, what: str) -> str:
    """The text of ``data`` once the log key's signature on it verifies (the one note parser)."""
    try:
        return note.open_note(data, [key]).text
    except note.MalformedNoteError as error:
        problem = str(error).removeprefix("malformed note: ")
        raise CertificateError(f"malformed {what}: {problem}") from None
    except note.UntrustedNoteError:
        raise CertificateError(f"{what} is not signed by the log key {key.label}") from None
    except note.NoteVerificationError as error:
        raise CertificateError(f"{what}: {error}") from None


class _IssuedAt(Protocol):
    """What a checkpoint is checked against: the tree a document was issued at."""

    @property
    def tree_size(self) -> int: ...
    @property
    def root_hash(self) -> bytes: ...


def _check_checkpoint(data: bytes, key: LogKey, origin: str, statement: _IssuedAt) -> None:
    try:
        checkpoint = note.parse_checkpoint(_open_note(data, key, "checkpoint"))
    except note.MalformedCheckpointError as error:
        raise CertificateError(str(error)) from None
    if checkpoint.origin != origin:
        raise CertificateError(
            f"checkpoint is of another log: origin {checkpoint.origin[:64]!r}, expected {origin!r}"
        )
    if checkpoint.size != statement.tree_size:
        raise CertificateError(
            f"checkpoint tree size '{checkpoint.size}' is not the certificate's "
            f"{statement.tree_size}"
        )
    if checkpoint.root_hash != statement.root_hash:
        raise CertificateError("checkpoint root hash is not the certificate's root")


def _value(line: str, number: int, field: str) -> str:
    name, space, value = line.partition(" ")
    if name != field or not space:
        raise CertificateError(
            f"malformed certificate: line {number} must be '{field} <value>', got {line[:64]!r}"
        )
    if not value:
        raise CertificateError(f"malformed certificate: line {number} ({field}) has no value")
    return value


def _date(text: str, field: str) -> dt.date:
    try:
        if not _DATE.fullmatch(text):
            raise ValueError(text)
        return dt.date.fromisoformat(text)
    except ValueError:
        raise CertificateError(
            f"malformed certificate: {field} {text[:32]!r} is not a YYYY-MM-DD date"
        ) from None


def _decimal(text: str, field: str) -> int:
    if not _DECIMAL.fullmatch(text) or int(text) > _TREE_SIZE_MAX:
        raise CertificateError(
            f"malformed certificate: {field} {text[:32]!r} is not a decimal in 0..2**63-1 "
            "without leading zeros"
        )
    return int(text)


def _hash(text: str, field: str) -> bytes:
    digest = _b64decode(text, f"certificate {field}")
    if len(digest) != _HASH_BYTES:
        raise CertificateError(
            f"malformed certificate: {field} is {len(digest)} bytes, SHA-256 hashes are 32"
        )
    return digest


def _person(text: str) -> str:
    if not _PERSON.fullmatch(text):
        raise CertificateError(
            f"malformed certificate: person {text[:48]!r} is not <COUNTRY>:<TYPE>:<VALUE>"
        )
    return text


def _person_token(text: str) -> str:
    if not _PERSON_TOKEN.fullmatch(text):
        raise CertificateError(
            f"malformed certificate: person-token {text[:48]!r} is not pt_ and 26 base32 characters"
        )
    return text


def _identifier(text: str, field: str, chars_max: int) -> str:
    if len(text) > chars_max or not _IDENTIFIER.fullmatch(text):
        raise CertificateError(
            f"malformed certificate: {field} {text[:48]!r} is not an identifier "
            f"(A-Z a-z 0-9 . _ : / -, at most {chars_max} characters)"
        )
    return text


def _plan(text: str) -> str:
    if len(text) > _PLAN_CHARS_MAX or not text.isprintable():
        raise CertificateError(
            f"malformed certificate: plan is not printable text of at most {_PLAN_CHARS_MAX} "
            "characters"
        )
    return text


def _relationship(text: str) -> str:
    if text not in _RELATIONSHIPS:
        raise CertificateError(
            f"malformed certificate: relationship {text[:32]!r} is not one of "
            f"{', '.join(sorted(_RELATIONSHIPS))}"
        )
    return text


def _b64decode(text: str, what: str) -> bytes:
    """Standard, padded, canonical base64 only: one encoding per value, so no two certificates
    with different bytes say the same thing."""
    try:
        decoded = base64.b64decode(text.encode("ascii"), validate=True)
    except (UnicodeEncodeError, binascii.Error):
        raise CertificateError(f"malformed {what}: not standard base64") from None
    if base64.b64encode(decoded).decode("ascii") != text:
        raise CertificateError(f"malformed {what}: not canonical base64")
    return decoded


_leaf_hash = merkle.leaf_hash
_BARE_NOTE_HEADERS = (
    CERTIFICATE_HEADER,
    CERTIFICATE_HEADER_V2,
    "policy-ledger insurance card v1",
    "policy-ledger registration certificate v1",
)


def _proof_length(index: int, size: int) -> int:
    """Hashes in the inclusion proof of ``index`` in a tree of ``size`` (RFC 9162 2.1.3.1)."""
    inner = (index ^ (size - 1)).bit_length()
    border = bin(index >> inner).count("1")
    return inner + border
