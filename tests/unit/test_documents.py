"""Signed cards and registration certificates offline (clients/offline/document.py): the shared
vectors (tests/vectors/signed-documents.json, which the browser page of the QR payload reads
too) are what their script writes and the verifier says what each case wants; malformed cards
are refused; the server reads back what it signed (GetDocumentStatus) and refuses what it did
not; the offline module imports nothing from the server."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
from pathlib import Path

import pytest

from clients.offline.certificate import CertificateError
from clients.offline.document import parse_document, verify_document
from ledger.cards.document import read_document
from ledger.errors import InvalidArgument
from ledger.signing import Ed25519Signer
from tests.vectors import make_signed_documents as vectors

ROOT = Path(__file__).resolve().parents[2]
VECTORS = json.loads(vectors.OUT.read_text(encoding="utf-8"))


def test_the_vectors_are_what_their_script_writes() -> None:
    assert vectors.OUT.read_text(encoding="utf-8") == vectors.render()


@pytest.mark.parametrize("case", VECTORS["cases"], ids=lambda case: case["desc"])
def test_the_offline_verifier_agrees_with_every_vector(case: dict[str, str]) -> None:
    key = VECTORS["log_verifier_key"]
    document = case["document"].encode("utf-8")
    today = dt.date.fromisoformat(case["today"])
    if case["want"] == "rejected":
        with pytest.raises(CertificateError):
            verify_document(document, key)
        return
    statement = verify_document(document, key, entry=VECTORS["entry_of_leaf"].encode())
    assert statement.kind == case["kind"]
    assert statement.valid_until.isoformat() == case["valid_until"]
    assert statement.tree_size == vectors.SIZE and statement.check_status
    assert statement.expired(today) == (case["want"] == "expired")


def _card_text() -> str:
    note = VECTORS["cases"][0]["document"]
    return str(note[: note.rindex("\n\n") + 1])


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        ("insurance card v1", "insurance card v2", "first line"),
        ("card 4000001234567899", "card 4000 0012 3456 7899", "16 digits"),
        ("card 4000001234567899\n", "", "line 2 must be 'card"),
        ("issued 2026-12-01", "issued 2026-13-01", "issued"),
        ("valid-until 2027-11-30", "valid-until tomorrow", "valid-until"),
        ("insurer sd-nhif", "insurer sd nhif", "insurer"),
        ("tree-size 21", "tree-size 13", "not below tree-size"),
    ],
)
def test_malformed_cards_are_refused(old: str, new: str, message: str) -> None:
    text = _card_text()
    assert old in text
    with pytest.raises(CertificateError, match=message):
        parse_document(text.replace(old, new, 1))


def test_the_server_reads_back_what_it_signed_and_nothing_else() -> None:
    card = VECTORS["cases"][0]["document"].encode("utf-8")
    read = read_document(card, vectors.LOG)
    assert (read.kind, read.leaf_index, read.fields["card"]) == (
        "insurance card",
        vectors.LEAF,
        "4000001234567899",
    )
    assert read.valid_until == dt.date(2027, 11, 30)
    stranger = Ed25519Signer("example.com/log", bytes(range(5, 37)))
    for signer, data in ((stranger, card), (vectors.LOG, b"not a note"), (vectors.LOG, b"")):
        with pytest.raises(InvalidArgument) as refused:
            read_document(data, signer)
        assert refused.value.details.reason == "DOCUMENT_INVALID"


def test_offline_document_module_imports_nothing_from_ledger() -> None:
    code = (
        "import sys\n"
        "import clients.offline.document\n"
        "loaded = sorted(m for m in sys.modules if m == 'ledger' or m.startswith('ledger.'))\n"
        "assert not loaded, loaded\n"
        "print('ok')\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=False
    )
    assert result.stdout.strip() == "ok", result.stderr
