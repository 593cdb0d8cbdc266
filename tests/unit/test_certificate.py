"""Coverage certificates: the server's statement against the offline verifier, every malformation
and every single-byte mutation refused, other keys refused, the QR code, and the offline
module's independence from the ``ledger`` package."""

from __future__ import annotations

import base64
import datetime as dt
import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from clients.certificate import QR_BYTES_MAX, certificate_qr, render_qr_png
from clients.offline.certificate import (
    CertificateBundle,
    CertificateError,
    LogKey,
    load_bundle,
    parse_statement,
    verify_certificate,
    verify_inclusion,
)
from ledger.checkpoint import Checkpoint, sign_checkpoint
from ledger.coverage.certificate import certificate_text, sign_certificate
from ledger.coverage.model import CoverageRecord, PersonRef, Relationship
from ledger.errors import InvariantViolation
from ledger.merkle import MemoryTree, leaf_hash
from ledger.note import sign_note
from ledger.signing import Ed25519Signer, format_verifier_key

LOG = Ed25519Signer("test.policy-ledger/log", bytes(range(32)))
LOG_KEY = format_verifier_key(LOG)
OTHER = Ed25519Signer("test.policy-ledger/other", bytes(range(1, 33)))
IMPOSTOR = Ed25519Signer(LOG.name, bytes(range(2, 34)))
"""Same key name as the log, another key (so another key id)."""
DAY = dt.date(2026, 11, 23)
SIZE, LEAF = 21, 13
TOKEN = "pt_" + "a" * 26
"""The person's token, which the proven entry names (the log's events name people by token)."""
RECORD = CoverageRecord(
    person=PersonRef(id_type="RESIDENCE_ID", value="2123456785", country="SA"),
    sponsor=PersonRef(id_type="RESIDENCE_ID", value="2123456785", country="SA"),
    relationship=Relationship.SELF,
    insurer_id="gulf-health",
    policy_id="POL-00000001",
    plan="CCHI-BASIC",
    start=dt.date(2026, 1, 1),
    end=dt.date(2026, 12, 31),
    cancelled=False,
    end_reason="PERIOD_END",
    leaf_indexes=(LEAF, 19),
    person_token=TOKEN,
)


def _tree(size: int) -> MemoryTree:
    tree = MemoryTree()
    for number in range(size):
        tree.append(f"entry {number} naming {TOKEN}".encode())
    return tree


TREE = _tree(SIZE)
ENTRY = f"entry {LEAF} naming {TOKEN}".encode()


def _text(record: CoverageRecord = RECORD, day: dt.date = DAY, leaf: int = LEAF) -> str:
    return certificate_text(
        record,
        day,
        leaf_index=leaf,
        leaf_hash=TREE.get_leaf_hash(leaf),
        tree_size=SIZE,
        root_hash=TREE.root(SIZE),
        proof=TREE.inclusion_proof(leaf, SIZE),
    )


def _certificate(signer: Ed25519Signer = LOG) -> bytes:
    return sign_certificate(
        RECORD,
        DAY,
        leaf_index=LEAF,
        leaf_hash=TREE.get_leaf_hash(LEAF),
        tree_size=SIZE,
        root_hash=TREE.root(SIZE),
        proof=TREE.inclusion_proof(LEAF, SIZE),
        signer=signer,
    )


def _checkpoint(
    signer: Ed25519Signer = LOG, size: int = SIZE, origin: str = LOG.name, root: bytes = b""
) -> bytes:
    return sign_checkpoint(Checkpoint(origin, size, root or TREE.root(size)), signer)


CERTIFICATE = _certificate()


# --- round trip -----------------------------------------------------------------------------


def test_statement_round_trip() -> None:
    statement = verify_certificate(CERTIFICATE, LOG_KEY, checkpoint=_checkpoint(), entry=ENTRY)
    assert (statement.person, statement.date) == ("SA:RESIDENCE_ID:2123456785", DAY)
    assert (statement.insurer, statement.policy, statement.plan) == (
        "gulf-health",
        "POL-00000001",
        "CCHI-BASIC",
    )
    assert (statement.start, statement.end, statement.relationship) == (
        RECORD.start,
        RECORD.end,
        "self",
    )
    assert (statement.leaf_index, statement.tree_size) == (LEAF, SIZE)
    assert statement.leaf_hash == leaf_hash(ENTRY)
    assert statement.root_hash == TREE.root(SIZE)
    assert list(statement.proof) == TREE.inclusion_proof(LEAF, SIZE)
    assert statement.text == _text()
    assert CERTIFICATE.startswith(statement.text.encode() + b"\n" + "\u2014 ".encode())
    assert statement.covers(DAY) and not statement.covers(dt.date(2027, 1, 1))


def test_statement_format_is_the_documented_one() -> None:
    lines = _text().splitlines()
    assert lines[:14] == [
        "policy-ledger coverage certificate v3",
        "person SA:RESIDENCE_ID:2123456785",
        f"person-token {TOKEN}",
        "date 2026-11-23",
        "insurer gulf-health",
        "policy POL-00000001",
        "plan CCHI-BASIC",
        "period 2026-01-01 2026-12-31",
        "relationship self",
        "valid-until 2026-12-31",
        f"leaf {LEAF}",
        f"leaf-hash {base64.b64encode(TREE.get_leaf_hash(LEAF)).decode()}",
        f"tree-size {SIZE}",
        f"root {base64.b64encode(TREE.root(SIZE)).decode()}",
    ]
    assert lines[14:] == [
        f"proof {base64.b64encode(digest).decode()}" for digest in TREE.inclusion_proof(LEAF, SIZE)
    ]


def test_plan_with_spaces_and_other_relationships_round_trip() -> None:
    record = replace(RECORD, plan="Gold plan  (family) ", relationship=Relationship.CHILD)
    statement = parse_statement(_text(record))
    assert (statement.plan, statement.relationship) == ("Gold plan  (family) ", "child")


@pytest.mark.parametrize("size", range(1, 34))
def test_inclusion_verifier_agrees_with_the_ledger(size: int) -> None:
    tree = _tree(size)
    for index in range(size):
        proof = tuple(tree.inclusion_proof(index, size))
        verify_inclusion(index, size, tree.get_leaf_hash(index), proof, tree.root(size))
        with pytest.raises(CertificateError, match="does not lead"):
            verify_inclusion(index, size, tree.get_leaf_hash(index), proof, bytes(32))
        if size > 1:
            with pytest.raises(CertificateError, match=r"does not lead|too few|too many"):
                wrong = (index + 1) % size
                verify_inclusion(wrong, size, tree.get_leaf_hash(index), proof, tree.root(size))


def test_inclusion_verifier_refuses_wrong_proof_lengths() -> None:
    proof = tuple(TREE.inclusion_proof(LEAF, SIZE))
    root = TREE.root(SIZE)
    with pytest.raises(CertificateError, match="too many"):
        verify_inclusion(LEAF, SIZE, TREE.get_leaf_hash(LEAF), (*proof, bytes(32)), root)
    with pytest.raises(CertificateError, match="too few"):
        verify_inclusion(LEAF, SIZE, TREE.get_leaf_hash(LEAF), proof[:-1], root)
    with pytest.raises(CertificateError, match="not in the tree of size"):
        verify_inclusion(SIZE, SIZE, TREE.get_leaf_hash(LEAF), proof, root)


def test_server_never_signs_what_does_not_hold() -> None:
    with pytest.raises(InvariantViolation, match="outside the coverage period"):
        _text(day=dt.date(2027, 1, 1))
    with pytest.raises(InvariantViolation, match="not one of the coverage's"):
        _text(leaf=3)
    with pytest.raises(InvariantViolation, match="does not verify"):
        certificate_text(
            RECORD,
            DAY,
            leaf_index=LEAF,
            leaf_hash=TREE.get_leaf_hash(LEAF),
            tree_size=SIZE,
            root_hash=bytes(32),
            proof=TREE.inclusion_proof(LEAF, SIZE),
        )


# --- malformed statements, signed by the log key (so only the parser can refuse them) ---------

B64_LEAF = base64.b64encode(TREE.get_leaf_hash(LEAF)).decode()
B64_ROOT = base64.b64encode(TREE.root(SIZE)).decode()
FIRST_PROOF = base64.b64encode(TREE.inclusion_proof(LEAF, SIZE)[0]).decode()


def _noncanonical(encoded: str) -> str:
    """The same bytes in base64 whose unused low bits are not zero."""
    alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    last = encoded.rstrip("=")
    bumped = alphabet[alphabet.index(last[-1]) + 1]
    return last[:-1] + bumped + "=" * (len(encoded) - len(last))


MALFORMED = [
    (
        "policy-ledger coverage certificate v3",
        "policy-ledger coverage certificate v1",
        "first line",
    ),
    (f"person-token {TOKEN}", "person-token 2123456785", "person-token"),
    (f"person-token {TOKEN}", f"person-token {TOKEN.upper()}", "person-token"),
    ("person SA:", "person  SA:", "person"),
    ("SA:RESIDENCE_ID:2123456785", "SA:RESIDENCE:2123456785", "person"),
    ("SA:RESIDENCE_ID:2123456785", "sa:RESIDENCE_ID:2123456785", "person"),
    ("SA:RESIDENCE_ID:2123456785", "SA:RESIDENCE_ID:21234 56785", "person"),
    ("date 2026-11-23", "date 2026-11-31", "not a YYYY-MM-DD date"),
    ("date 2026-11-23", "date 2026-11-3", "not a YYYY-MM-DD date"),
    ("date 2026-11-23", "date 20261123", "not a YYYY-MM-DD date"),
    ("date 2026-11-23", "date 2027-01-01", "outside the period"),
    ("date 2026-11-23", "date 2025-12-31", "outside the period"),
    ("date 2026-11-23", "Date 2026-11-23", "line 4 must be 'date <value>'"),
    ("date 2026-11-23", "date ", "line 4 \\(date\\) has no value"),
    ("date 2026-11-23", "date", "line 4 must be 'date <value>'"),
    ("insurer gulf-health", "insurer gulf health", "insurer 'gulf health' is not an identifier"),
    ("insurer gulf-health", "insurer " + "g" * 65, "not an identifier"),
    ("policy POL-00000001", "policy -POL", "not an identifier"),
    ("plan CCHI-BASIC", "plan " + "P" * 65, "plan is not printable"),
    ("period 2026-01-01 2026-12-31", "period 2026-12-31 2026-01-01", "ends .* before it starts"),
    ("period 2026-01-01 2026-12-31", "period 2026-01-01", "period must be"),
    ("period 2026-01-01 2026-12-31", "period 2026-01-01  2026-12-31", "period end"),
    ("relationship self", "relationship SELF", "relationship 'SELF' is not one of"),
    ("relationship self", "relationship wife", "is not one of"),
    (f"leaf {LEAF}\n", f"leaf 0{LEAF}\n", "leaf '013' is not a decimal"),
    (f"leaf {LEAF}\n", "leaf -1\n", "is not a decimal"),
    (f"leaf {LEAF}\n", f"leaf {SIZE}\n", f"leaf {SIZE} is not below tree-size {SIZE}"),
    (f"tree-size {SIZE}", "tree-size 9223372036854775808", "is not a decimal in 0..2\\*\\*63-1"),
    (f"tree-size {SIZE}", "tree-size 99999999999999999999", "is not a decimal"),
    (
        f"tree-size {SIZE}",
        "tree-size 16",
        "5 proof lines, the proof of leaf 13 in a tree of size 16 has 4",
    ),
    (f"tree-size {SIZE}", "tree-size 1e3", "is not a decimal"),
    (B64_LEAF, B64_LEAF[:-4], "leaf-hash is 30 bytes"),
    (B64_LEAF, B64_LEAF.rstrip("="), "not standard base64"),
    (B64_LEAF, _noncanonical(B64_LEAF), "not canonical base64"),
    (B64_LEAF, B64_LEAF.replace("=", "") + "==", "not standard base64"),
    (B64_ROOT, base64.b64encode(bytes(32)).decode(), "does not lead to the checkpoint's root"),
    (B64_LEAF, base64.b64encode(bytes(32)).decode(), "does not lead to the checkpoint's root"),
    (FIRST_PROOF, base64.b64encode(bytes(32)).decode(), "does not lead"),
    (f"proof {FIRST_PROOF}\n", "", "proof lines, the proof of leaf 13 in a tree of size 21 has"),
    (f"proof {FIRST_PROOF}\n", f"proof {FIRST_PROOF}\n" * 2, "proof lines, the proof of leaf"),
    (f"proof {FIRST_PROOF}\n", f"proof {FIRST_PROOF}\nextra line\n", "must be 'proof <value>'"),
    (f"proof {FIRST_PROOF}\n", f"proof {FIRST_PROOF}\nproof {'A' * 64}\n", "proof"),
    ("insurer gulf-health\npolicy POL-00000001\n", "policy POL-00000001\n", "line 5"),
    (
        "insurer gulf-health\npolicy POL-00000001\n",
        "policy POL-00000001\ninsurer gulf-health\n",
        "line 5 must be 'insurer <value>'",
    ),
]


@pytest.mark.parametrize(("old", "new", "message"), MALFORMED, ids=[m[2] for m in MALFORMED])
def test_malformed_statements_are_refused(old: str, new: str, message: str) -> None:
    text = _text()
    assert old in text
    note = sign_note(text.replace(old, new, 1), [LOG])
    with pytest.raises(CertificateError, match=message):
        verify_certificate(note, LOG_KEY)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("policy-ledger coverage certificate v2\n", "line 2 \\(person\\) is missing"),
        ("hello\n", "first line must be"),
        ("policy-ledger coverage certificate v2\nperson SA:RESIDENCE_ID:2123456785\n", "line 3"),
        (_text() + "proof " + FIRST_PROOF + "\n" * 1, "proof lines, the proof of leaf"),
        (_text() + ("proof " + FIRST_PROOF + "\n") * 64, "69 proof lines, at most 63"),
        (_text() + "\n", "line 20 must be 'proof <value>'"),
    ],
)
def test_truncated_or_extended_statements_are_refused(text: str, message: str) -> None:
    with pytest.raises(CertificateError, match=message):
        verify_certificate(sign_note(text, [LOG]), LOG_KEY)


def test_statement_must_end_in_a_newline() -> None:
    with pytest.raises(CertificateError, match="does not end in a newline"):
        parse_statement(_text()[:-1])


def _signature_line() -> bytes:
    return CERTIFICATE[CERTIFICATE.rindex(b"\n\n") + 2 :]


@pytest.mark.parametrize(
    ("note", "message"),
    [
        (_text().encode() + _signature_line(), "no blank line between the text and the signatures"),
        (_text().encode() + b"\n", "no signature lines after the blank line"),
        (CERTIFICATE[:-1], "signature block does not end in a newline"),
        (CERTIFICATE.replace("\u2014".encode(), b"-"), "does not start with an em dash"),
        (CERTIFICATE.replace(b"coverage", b"cov\xffrage"), "not valid UTF-8 \\(at byte"),
        (CERTIFICATE.replace(b"gulf-health", b"gulf\x01health"), "control character U\\+0001"),
        (CERTIFICATE.replace(b"gulf-health", b"gulf\thealth"), "control character U\\+0009"),
        (
            CERTIFICATE.replace(LOG.name.encode() + b" ", LOG.name.encode() + b"  "),
            "signature line 1 is not standard padded base64",
        ),
        (CERTIFICATE[:-3] + b"!=\n", "signature line 1 is not standard padded base64"),
        (CERTIFICATE + _signature_line() * 32, "33 signature lines, over 32"),
        (CERTIFICATE + b"x" * 16384, "bytes, over 16384"),
        (
            _text().encode()
            + b"\n"
            + f"\u2014 {LOG.name} {base64.b64encode(LOG.key_id).decode()}\n".encode(),
            "signature line 1 is 4 bytes: no room for a key id",
        ),
        (
            _text().encode()
            + b"\n"
            + f"\u2014 {LOG.name} {base64.b64encode(LOG.key_id + bytes(63)).decode()}\n".encode(),
            "is 63 bytes, an Ed25519 signature is 64",
        ),
    ],
)
def test_malformed_notes_are_refused(note: bytes, message: str) -> None:
    with pytest.raises(CertificateError, match=message):
        verify_certificate(note, LOG_KEY)


def test_every_single_byte_mutation_is_refused() -> None:
    refused = 0
    for position in range(len(CERTIFICATE)):
        for flip in (0x01, 0x02, 0x20, 0x80):
            mutated = bytearray(CERTIFICATE)
            mutated[position] ^= flip
            with pytest.raises(CertificateError):
                verify_certificate(bytes(mutated), LOG_KEY)
            refused += 1
    assert refused == 4 * len(CERTIFICATE)


def test_every_single_byte_deletion_or_insertion_is_refused() -> None:
    for position in range(len(CERTIFICATE)):
        with pytest.raises(CertificateError):
            verify_certificate(CERTIFICATE[:position] + CERTIFICATE[position + 1 :], LOG_KEY)
        with pytest.raises(CertificateError):
            verify_certificate(CERTIFICATE[:position] + b"A" + CERTIFICATE[position:], LOG_KEY)


def test_a_certificate_signed_by_another_key_is_refused() -> None:
    with pytest.raises(CertificateError, match=f"not signed by the log key {LOG.name}\\+"):
        verify_certificate(_certificate(OTHER), LOG_KEY)
    # Same key name, another key: the key id differs, so the line is not the log key's.
    with pytest.raises(CertificateError, match="not signed by the log key"):
        verify_certificate(_certificate(IMPOSTOR), LOG_KEY)


def test_a_forged_line_with_the_log_key_id_is_refused() -> None:
    signature = IMPOSTOR.sign(_text().encode())
    encoded = base64.b64encode(LOG.key_id + signature).decode()
    forged = _text().encode() + f"\n\u2014 {LOG.name} {encoded}\n".encode()
    with pytest.raises(CertificateError, match=r"signature by .* does not verify"):
        verify_certificate(forged, LOG_KEY)


def test_other_signatures_are_ignored_but_the_log_key_is_required() -> None:
    cosigned = sign_note(_text(), [LOG, OTHER])
    assert verify_certificate(cosigned, LOG_KEY).leaf_index == LEAF
    with pytest.raises(CertificateError, match="not signed by the log key"):
        verify_certificate(sign_note(_text(), [OTHER]), LOG_KEY)


def test_a_checkpoint_must_match_the_certificate() -> None:
    other_tree_root = _tree(SIZE + 1).root(SIZE + 1)
    cases = [
        (_checkpoint(signer=OTHER), "checkpoint is not signed by the log key"),
        (_checkpoint(size=SIZE + 1, root=other_tree_root), "checkpoint tree size '22'"),
        (_checkpoint(root=bytes(32)), "checkpoint root hash is not the certificate's"),
        (_checkpoint(origin="another.example/log"), "checkpoint is of another log"),
        (b"not a note", "malformed checkpoint"),
        (sign_note("only\ntwo\n", [LOG]), "malformed checkpoint: want origin"),
    ]
    for checkpoint, message in cases:
        with pytest.raises(CertificateError, match=message):
            verify_certificate(CERTIFICATE, LOG_KEY, checkpoint=checkpoint)
    # A configured origin other than the key name.
    verify_certificate(
        CERTIFICATE,
        LOG_KEY,
        checkpoint=_checkpoint(origin="ledger.example/log"),
        origin="ledger.example/log",
    )


def test_a_tree_size_the_proof_cannot_tell_apart_is_caught_by_the_checkpoint() -> None:
    # Leaf 13's proof is the same in trees of 21 and 22 entries (RFC 9162 binds the size to the
    # root only through a signed tree head): the log's signature vouches for the pair, and the
    # checkpoint, when given, must agree with it.
    note = sign_note(_text().replace(f"tree-size {SIZE}", "tree-size 22"), [LOG])
    assert verify_certificate(note, LOG_KEY).tree_size == 22
    with pytest.raises(
        CertificateError, match="checkpoint tree size '21' is not the certificate's 22"
    ):
        verify_certificate(note, LOG_KEY, checkpoint=_checkpoint())


def test_the_entry_must_match_the_leaf_hash() -> None:
    with pytest.raises(CertificateError, match="entry does not match"):
        verify_certificate(CERTIFICATE, LOG_KEY, entry=ENTRY + b"x")


@pytest.mark.parametrize(
    ("key", "message"),
    [
        ("nonsense", "want <name>\\+<hex key id>\\+<base64 key>"),
        (LOG_KEY.replace("+", "+X", 1), "key id must be 8 hex digits \\(lowercase\\)"),
        (LOG_KEY[:-4] + "AAAA", "key id .* does not match the key"),
        (LOG_KEY[:-2], "not standard padded base64"),
        (
            LOG_KEY.rsplit("+", 1)[0] + "+" + base64.b64encode(b"\x02" + bytes(32)).decode(),
            "0x01|32 bytes",
        ),
        ("+" + LOG_KEY.split("+", 1)[1], "key name '' is empty"),
    ],
)
def test_malformed_log_keys_are_refused(key: str, message: str) -> None:
    with pytest.raises(CertificateError, match=message):
        LogKey.parse(key)


def test_log_key_parses_with_surrounding_whitespace() -> None:
    key = LogKey.parse(f"  {LOG_KEY}\n")
    assert (key.name, key.key_id, key.public_key) == (LOG.name, LOG.key_id, LOG.public_key)


# --- bundles and the QR code ----------------------------------------------------------------


def test_bundle_round_trip_and_bare_notes() -> None:
    bundle = CertificateBundle(CERTIFICATE, _checkpoint(), ENTRY)
    assert load_bundle(bundle.to_json().encode()) == bundle
    assert load_bundle(CERTIFICATE) == CertificateBundle(CERTIFICATE)
    assert load_bundle(CertificateBundle(CERTIFICATE).to_json().encode()) == CertificateBundle(
        CERTIFICATE
    )


@pytest.mark.parametrize(
    ("data", "message"),
    [
        (b"\xff", "neither a certificate note nor a certificate bundle"),
        (b"[]", "its format must be"),
        (json.dumps({"format": "x"}).encode(), "its format must be"),
        (
            json.dumps({"format": "policy-ledger coverage certificate bundle v1"}).encode(),
            "has no certificate",
        ),
        (
            json.dumps(
                {"format": "policy-ledger coverage certificate bundle v1", "certificate": 1}
            ).encode(),
            "certificate must be a string",
        ),
        (
            json.dumps(
                {"format": "policy-ledger coverage certificate bundle v1", "extra": ""}
            ).encode(),
            "unknown fields: extra",
        ),
        (
            json.dumps(
                {
                    "format": "policy-ledger coverage certificate bundle v1",
                    "certificate": "x",
                    "entry": "!!",
                }
            ).encode(),
            "bundle entry: not standard base64",
        ),
    ],
)
def test_malformed_bundles_are_refused(data: bytes, message: str) -> None:
    with pytest.raises(CertificateError, match=message):
        load_bundle(data)


def test_qr_code_of_a_certificate(tmp_path: Path) -> None:
    qr = certificate_qr(CERTIFICATE)
    assert qr.mode == "byte" and 1 <= int(qr.version) <= 40
    path = tmp_path / "card.png"
    render_qr_png(CERTIFICATE, path)
    assert path.read_bytes().startswith(b"\x89PNG\r\n\x1a\n")


def test_qr_code_of_a_certificate_of_a_billion_entries_fits() -> None:
    # 30 proof lines: the proof length of a tree of up to 2**30 entries.
    text = _text().split("proof ")[0] + "".join(f"proof {FIRST_PROOF}\n" for _ in range(30))
    note = sign_note(text, [LOG])
    assert len(note) < QR_BYTES_MAX
    qr = certificate_qr(note)
    assert int(qr.version) <= 40


def test_qr_code_refuses_what_does_not_fit() -> None:
    with pytest.raises(ValueError, match="a QR code holds 2953"):
        certificate_qr(b"x" * (QR_BYTES_MAX + 1))


# --- independence ---------------------------------------------------------------------------


def test_offline_module_imports_nothing_from_ledger() -> None:
    code = (
        "import sys\n"
        "import clients.offline.certificate\n"
        "loaded = sorted(m for m in sys.modules if m == 'ledger' or m.startswith('ledger.'))\n"
        "assert not loaded, loaded\n"
        "assert 'grpc' not in sys.modules and 'google.protobuf' not in sys.modules\n"
        "print('ok')\n"
    )
    root = Path(__file__).resolve().parents[2]
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=root, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout == "ok\n"


def test_an_entry_that_does_not_name_the_certificates_token_is_refused() -> None:
    """The certificate states the ID and the token; the proven entry names only the token, so
    a certificate for someone else's ID over this entry is caught offline."""
    statement = verify_certificate(CERTIFICATE, LOG_KEY, entry=ENTRY)
    assert statement.person_token == TOKEN
    other = replace(RECORD, person_token="pt_" + "b" * 26)
    forged = sign_certificate(
        other,
        DAY,
        leaf_index=LEAF,
        leaf_hash=TREE.get_leaf_hash(LEAF),
        tree_size=SIZE,
        root_hash=TREE.root(SIZE),
        proof=TREE.inclusion_proof(LEAF, SIZE),
        signer=LOG,
    )
    with pytest.raises(CertificateError, match="does not name the certificate's person token"):
        verify_certificate(forged, LOG_KEY, entry=ENTRY)


def test_a_v2_certificate_still_verifies_and_its_period_end_is_its_last_valid_day() -> None:
    """Certificates issued before valid-until (v2) keep verifying; they expire after their
    period's last day, as a v3 certificate after its valid-until line."""
    v3 = _text()
    v2 = v3.replace("coverage certificate v3", "coverage certificate v2")
    v2 = v2.replace("valid-until 2026-12-31\n", "")
    old, new = parse_statement(v2), parse_statement(v3)
    assert old.valid_until is None and new.valid_until == dt.date(2026, 12, 31)
    assert old.last_valid_day == new.last_valid_day == dt.date(2026, 12, 31)
    assert not new.expired(dt.date(2026, 12, 31))
    assert new.expired(dt.date(2027, 1, 1)) and old.expired(dt.date(2027, 1, 1))
