"""The page's verification module (web/verify/src/core.js, run by node) on each document of
docs/formats.md ("Signed documents and their QR payload"): coverage certificate v2 and v3,
insurance card v1 and registration certificate v1, signed here by a test log key with a real
inclusion proof; valid, expired and refused ones. (Coverage certificates v2 issued by a real
server are also checked against the Python verifier: test_verify_page.py.)"""

from __future__ import annotations

import base64
import datetime as dt
from pathlib import Path

import pytest

from clients.offline.merkle import leaf_hash, node_hash
from ledger.note import sign_note
from ledger.signing import Ed25519Signer, format_verifier_key
from ledger.verify_page import page_html, page_with_key
from tests.web.browser import ShownPage, dump_dom, js_verdicts, page_url

SIGNER = Ed25519Signer.generate("test.policy-ledger/log")
KEY = format_verifier_key(SIGNER)
TODAY = dt.date(2026, 12, 5)
TOKEN = "pt_" + "a" * 26
ENTRIES = (b"entry zero naming " + TOKEN.encode(), b"entry one")


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _proof_block() -> list[str]:
    """Leaf 0 of a tree of two: its proof is leaf 1's hash."""
    zero, one = (leaf_hash(entry) for entry in ENTRIES)
    return [
        "leaf 0",
        f"leaf-hash {_b64(zero)}",
        "tree-size 2",
        f"root {_b64(node_hash(zero, one))}",
        f"proof {_b64(one)}",
    ]


def _note(*lines: str, proof: list[str] | None = None) -> bytes:
    block = _proof_block() if proof is None else proof
    return sign_note("".join(f"{line}\n" for line in (*lines, *block)), [SIGNER])


def card(valid_until: str = "2027-06-30", number: str = "4000001234567899") -> bytes:
    return _note(
        "policy-ledger insurance card v1",
        f"card {number}",
        "person SD:NATIONAL_ID:1234567890",
        f"person-token {TOKEN}",
        "insurer nhif-sudan",
        "issued 2026-07-01",
        f"valid-until {valid_until}",
    )


def registration(valid_until: str = "2027-06-30") -> bytes:
    return _note(
        "policy-ledger registration certificate v1",
        "person MA:NATIONAL_ID:BE123456",
        f"person-token {TOKEN}",
        "insurer cnss-maroc",
        "policy AMO-0001",
        "relationship child",
        "registered 2026-01-01",
        "issued 2026-07-01",
        f"valid-until {valid_until}",
    )


def coverage_v3(valid_until: str = "2026-12-31", end: str = "2026-12-31") -> bytes:
    return _note(
        "policy-ledger coverage certificate v3",
        "person SA:RESIDENCE_ID:2123456785",
        f"person-token {TOKEN}",
        "date 2026-11-23",
        "insurer gulf-health",
        "policy POL-00000001",
        "plan CCHI-BASIC",
        f"period 2026-01-01 {end}",
        "relationship self",
        f"valid-until {valid_until}",
    )


CASES: list[tuple[str, bytes, str, str]] = [
    ("card", card(), "valid", ""),
    ("card, expired yesterday", card("2026-12-04"), "expired", ""),
    ("card, valid until today", card("2026-12-05"), "valid", ""),
    ("card, bad check digit", card(number="4000001234567898"), "invalid", "malformed"),
    ("card, altered", card().replace(b"nhif-sudan", b"nhif-sudam"), "invalid", "bad-signature"),
    ("registration", registration(), "valid", ""),
    ("registration, expired", registration("2026-01-31"), "expired", ""),
    ("coverage v3", coverage_v3(), "valid", ""),
    ("coverage v3, ended", coverage_v3("2026-11-30", "2026-11-30"), "expired", ""),
    ("coverage v3, valid-until past its period", coverage_v3("2027-12-31"), "invalid", "malformed"),
    (
        "card, proof of another root",
        _note(
            "policy-ledger insurance card v1",
            "card 4000001234567899",
            "person SD:NATIONAL_ID:1234567890",
            f"person-token {TOKEN}",
            "insurer nhif-sudan",
            "issued 2026-07-01",
            "valid-until 2027-06-30",
            proof=[*_proof_block()[:3], f"root {_b64(bytes(32))}", _proof_block()[4]],
        ),
        "invalid",
        "bad-proof",
    ),
    (
        "card, proof line missing",
        _note(
            "policy-ledger insurance card v1",
            "card 4000001234567899",
            "person SD:NATIONAL_ID:1234567890",
            f"person-token {TOKEN}",
            "insurer nhif-sudan",
            "issued 2026-07-01",
            "valid-until 2027-06-30",
            proof=_proof_block()[:4],
        ),
        "invalid",
        "malformed",
    ),
    (
        "unknown document",
        _note("policy-ledger boarding pass v1", "person SA:PASSPORT:A1"),
        "invalid",
        "malformed",
    ),
]


@pytest.mark.parametrize(
    ("name", "document", "status", "code"), CASES, ids=[case[0] for case in CASES]
)
def test_each_document_type(name: str, document: bytes, status: str, code: str) -> None:
    [verdict] = js_verdicts(
        [{"document": document.decode(), "key": KEY, "today": TODAY.isoformat()}]
    )
    assert (verdict["status"], verdict["code"]) == (status, code), verdict["detail"]


def test_a_card_is_shown_with_its_number_in_groups_of_four(tmp_path: Path) -> None:
    page = tmp_path / "verify.html"
    page.write_bytes(page_with_key(page_html(), KEY))
    until = (dt.datetime.now(dt.UTC).date() + dt.timedelta(days=365)).isoformat()
    shown = ShownPage(dump_dom(page_url(page.as_uri(), card(until), "en")))
    assert shown.status == "valid"
    assert shown.texts["kind"] == "Insurance card"
    assert shown.fields["Card number"] == "4000 0012 3456 7899"
    assert shown.fields["Insurer"] == "nhif-sudan"
    assert shown.fields["Valid until"] == until


def test_the_page_command_writes_the_page_with_the_key(tmp_path: Path) -> None:
    from policy_ledger.cli import main

    out = tmp_path / "verify.html"
    assert main(["certificate", "page", "--log-verifier", KEY, "--out", str(out)]) == 0
    assert f'content="{KEY}"'.encode() in out.read_bytes()
    shown = ShownPage(dump_dom(page_url(out.as_uri(), card(), "ar")))
    assert shown.status in {"valid", "expired"}  # the card's date is fixed; the browser's is not
    assert (shown.lang, shown.dir) == ("ar", "rtl")


def test_the_page_command_refuses_a_bad_key_and_writes_nothing(tmp_path: Path) -> None:
    from policy_ledger.cli import main

    out = tmp_path / "verify.html"
    bad = KEY[:-4] + "AAAA"
    assert main(["certificate", "page", "--log-verifier", bad, "--out", str(out)]) == 2
    assert not out.exists()
