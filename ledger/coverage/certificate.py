"""Coverage certificates: a coverage, stated and signed by the log key, with its inclusion proof.

A certificate is a C2SP signed note (:mod:`ledger.note`), signed by the log's checkpoint key,
whose text is a line-based statement::

    policy-ledger coverage certificate v3
    person SA:RESIDENCE_ID:2123456785
    person-token pt_...
    date 2026-11-23
    insurer gulf-health
    policy POL-00000001
    plan CCHI-BASIC
    period 2026-01-01 2026-12-31
    relationship self
    valid-until 2026-12-31         (the period's last day)
    leaf 17
    leaf-hash <base64 SHA-256(0x00 || entry)>
    tree-size 4242
    root <base64 root hash of the tree of that size>
    proof <base64 hash>            (one line per inclusion proof hash, RFC 9162 order)

Every line appears once, in this order (``proof`` 0..63 times, as many as the proof of ``leaf``
in a tree of ``tree-size`` has). The first line keeps certificates and checkpoints apart: a
checkpoint's second line is a number, a certificate's never is. ``clients/offline/certificate.py``
parses and verifies it without this package. The insurance card and the registration certificate
(:mod:`ledger.cards.document`) end with the same proof block (:func:`proof_block`); the formats
are in docs/formats.md.
"""

from __future__ import annotations

import base64
import datetime as dt
from collections.abc import Sequence

from ledger.coverage.model import CoverageRecord
from ledger.errors import VerificationError, check
from ledger.i18n.messages import CERTIFICATE_STATUS_NOTE, CERTIFICATE_SUMMARY, Message
from ledger.merkle import HASH_SIZE, verify_inclusion
from ledger.note import sign_note
from ledger.signing import Signer

__all__ = [
    "CERTIFICATE_HEADER",
    "certificate_messages",
    "certificate_text",
    "proof_block",
    "sign_certificate",
]

CERTIFICATE_HEADER = "policy-ledger coverage certificate v3"
"""The first line of every certificate statement (its format and version)."""


def _b64(digest: bytes) -> str:
    return base64.b64encode(digest).decode("ascii")


def certificate_text(
    record: CoverageRecord,
    day: dt.date,
    *,
    leaf_index: int,
    leaf_hash: bytes,
    tree_size: int,
    root_hash: bytes,
    proof: Sequence[bytes],
) -> str:
    """The statement that ``record`` covers its person on ``day``, proven by ``leaf_index``.

    Checks what it states: ``day`` lies in the record's period, and ``proof`` proves
    ``leaf_hash`` at ``leaf_index`` in the tree of ``tree_size`` with ``root_hash`` (the log
    never signs a certificate that does not verify).
    """
    check(record.start <= day <= record.end, f"{day} is outside the coverage period")
    check(leaf_index in record.leaf_indexes, f"leaf {leaf_index} is not one of the coverage's")
    lines = [
        CERTIFICATE_HEADER,
        f"person {record.person.key}",
        f"person-token {record.person_token}",
        f"date {day.isoformat()}",
        f"insurer {record.insurer_id}",
        f"policy {record.policy_id}",
        f"plan {record.plan}",
        f"period {record.start.isoformat()} {record.end.isoformat()}",
        f"relationship {record.relationship.value}",
        f"valid-until {record.end.isoformat()}",
        *proof_block(
            leaf_index=leaf_index,
            leaf_hash=leaf_hash,
            tree_size=tree_size,
            root_hash=root_hash,
            proof=proof,
        ),
    ]
    return "".join(line + "\n" for line in lines)


def proof_block(
    *,
    leaf_index: int,
    leaf_hash: bytes,
    tree_size: int,
    root_hash: bytes,
    proof: Sequence[bytes],
) -> list[str]:
    """The lines every signed document ends with (``leaf``, ``leaf-hash``, ``tree-size``,
    ``root``, one ``proof`` per hash), once the proof verifies: the log never signs a document
    whose proof does not."""
    check(
        len(leaf_hash) == HASH_SIZE and len(root_hash) == HASH_SIZE,
        "certificate hashes must be SHA-256 digests",
    )
    try:
        verify_inclusion(leaf_index, tree_size, leaf_hash, proof, root_hash)
    except VerificationError as error:  # the stored tree disagrees with itself: a bug
        check(False, f"inclusion proof of leaf {leaf_index} does not verify: {error.message}")
    return [
        f"leaf {leaf_index}",
        f"leaf-hash {_b64(leaf_hash)}",
        f"tree-size {tree_size}",
        f"root {_b64(root_hash)}",
        *(f"proof {_b64(digest)}" for digest in proof),
    ]


def sign_certificate(
    record: CoverageRecord,
    day: dt.date,
    *,
    leaf_index: int,
    leaf_hash: bytes,
    tree_size: int,
    root_hash: bytes,
    proof: Sequence[bytes],
    signer: Signer,
) -> bytes:
    """The certificate: :func:`certificate_text` as a C2SP signed note by ``signer`` (the log)."""
    text = certificate_text(
        record,
        day,
        leaf_index=leaf_index,
        leaf_hash=leaf_hash,
        tree_size=tree_size,
        root_hash=root_hash,
        proof=proof,
    )
    return sign_note(text, [signer])


def certificate_messages(record: CoverageRecord, day: dt.date, *, tree_size: int) -> list[Message]:
    """The certificate's human text, to render in the reader's language (``ledger.i18n``): who
    is covered on ``day``, by whom, for which period, and that its status must be checked."""
    summary = Message(
        CERTIFICATE_SUMMARY,
        {
            "person": record.person.key,
            "date": day,
            "insurer": record.insurer_id,
            "policy": record.policy_id,
            "plan": record.plan,
            "start": record.start,
            "end": record.end,
        },
    )
    return [summary, Message(CERTIFICATE_STATUS_NOTE, {"tree_size": tree_size})]
