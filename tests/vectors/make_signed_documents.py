"""Writes signed-documents.json: signed cards and certificates, real, tampered and expired, for
every verifier of the QR payload (the offline Python verifier, the browser page). Run from the
repo root: ``.venv/bin/python tests/vectors/make_signed_documents.py``. Ed25519 is deterministic,
so the output is the same on every run; the JSON is committed and
``tests/unit/test_documents.py`` checks that it is what this script writes and that the offline
verifier agrees with every case. The formats: docs/formats.md."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

from ledger.cards.document import ProvenLeaf, card_text, registration_text, sign_document
from ledger.coverage.certificate import sign_certificate
from ledger.coverage.model import CoverageRecord, PersonRef, Relationship
from ledger.merkle import MemoryTree
from ledger.signing import Ed25519Signer, format_verifier_key

LOG = Ed25519Signer("example.com/log", bytes(range(32)))
OTHER = Ed25519Signer("example.com/log", bytes(range(1, 33)))
TOKEN = "pt_" + "b" * 26
PERSON = PersonRef(id_type="RESIDENCE_ID", value="2123456785", country="SA")
SIZE, LEAF = 21, 13
OUT = Path(__file__).with_name("signed-documents.json")


def entry(number: int) -> bytes:
    return f"entry {number} naming {TOKEN}".encode()


def tree() -> MemoryTree:
    memory = MemoryTree()
    for number in range(SIZE):
        memory.append(entry(number))
    return memory


def proven(memory: MemoryTree) -> ProvenLeaf:
    return ProvenLeaf(
        LEAF,
        memory.get_leaf_hash(LEAF),
        SIZE,
        memory.root(SIZE),
        tuple(memory.inclusion_proof(LEAF, SIZE)),
    )


def documents() -> dict[str, bytes]:
    memory = tree()
    record = CoverageRecord(
        person=PERSON,
        sponsor=PERSON,
        relationship=Relationship.SELF,
        insurer_id="sd-nhif",
        policy_id="POL-00000001",
        plan="NHIF-BASIC",
        start=dt.date(2026, 1, 1),
        end=dt.date(2026, 12, 31),
        cancelled=False,
        end_reason="PERIOD_END",
        leaf_indexes=(LEAF,),
        person_token=TOKEN,
    )
    card = sign_document(
        card_text(
            card_number="4000001234567899",
            person=PERSON,
            person_token=TOKEN,
            insurer_id="sd-nhif",
            issued_on=dt.date(2026, 12, 1),
            valid_until=dt.date(2027, 11, 30),
            proven=proven(memory),
        ),
        LOG,
    )
    registration = sign_document(
        registration_text(
            record,
            issued_on=dt.date(2026, 12, 1),
            valid_until=dt.date(2027, 2, 28),
            proven=proven(memory),
        ),
        LOG,
    )
    coverage = sign_certificate(
        record,
        dt.date(2026, 12, 1),
        leaf_index=LEAF,
        leaf_hash=memory.get_leaf_hash(LEAF),
        tree_size=SIZE,
        root_hash=memory.root(SIZE),
        proof=tuple(memory.inclusion_proof(LEAF, SIZE)),
        signer=LOG,
    )
    return {"card": card, "registration": registration, "coverage": coverage}


def cases() -> list[dict[str, Any]]:
    made = documents()
    card = made["card"]
    tampered = card.replace(b"valid-until 2027-11-30", b"valid-until 2028-11-30")
    foreign = sign_document(card.decode().split("\n\n")[0] + "\n", OTHER)
    return [
        {"desc": "a real card", "document": made["card"].decode(), "today": "2026-12-05",
         "want": "valid", "kind": "insurance card", "valid_until": "2027-11-30"},
        {"desc": "the same card on its last valid day", "document": card.decode(),
         "today": "2027-11-30", "want": "valid", "kind": "insurance card",
         "valid_until": "2027-11-30"},
        {"desc": "the same card the day after valid-until", "document": card.decode(),
         "today": "2027-12-01", "want": "expired", "kind": "insurance card",
         "valid_until": "2027-11-30"},
        {"desc": "a tampered card: valid-until changed after signing",
         "document": tampered.decode(), "today": "2026-12-05", "want": "rejected"},
        {"desc": "a card signed by another key of the same name", "document": foreign.decode(),
         "today": "2026-12-05", "want": "rejected"},
        {"desc": "a real registration certificate", "document": made["registration"].decode(),
         "today": "2026-12-05", "want": "valid", "kind": "registration certificate",
         "valid_until": "2027-02-28"},
        {"desc": "a real coverage certificate (v3)", "document": made["coverage"].decode(),
         "today": "2026-12-05", "want": "valid", "kind": "coverage certificate",
         "valid_until": "2026-12-31"},
        {"desc": "that coverage certificate after its valid-until",
         "document": made["coverage"].decode(), "today": "2027-01-01", "want": "expired",
         "kind": "coverage certificate", "valid_until": "2026-12-31"},
    ]  # fmt: skip


def render() -> str:
    document = {
        "about": "Signed documents and their QR payload (docs/formats.md). Each case: the "
        "document (the QR code's bytes, UTF-8), the verifier's date, and what a verifier must "
        "say: valid (then 'check its status online'), expired, or rejected.",
        "log_verifier_key": format_verifier_key(LOG),
        "entry_of_leaf": entry(LEAF).decode(),
        "cases": cases(),
    }
    return json.dumps(document, indent=2, ensure_ascii=False) + "\n"


if __name__ == "__main__":
    OUT.write_text(render(), encoding="utf-8")
