"""One table of signed-note cases (tests/vectors/signed-note-cases.json), run through both note
parsers (the server's ledger/note.py and the offline clients/offline/note.py) and through every
entry point that takes a note: they must all agree, case by case."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from clients.offline import note as offline
from clients.offline import tlog_proof
from clients.offline.certificate import CertificateError, verify_certificate
from ledger import checkpoint as server_checkpoint
from ledger import note as server
from ledger.signing import parse_verifier_key

TABLE = json.loads(
    (Path(__file__).parent.parent / "vectors" / "signed-note-cases.json").read_text("utf-8")
)
CASES = TABLE["cases"]
KEY_TEXT: str = TABLE["trusted_key"]
ORIGIN: str = TABLE["origin"]


def _note(case: dict[str, Any]) -> bytes:
    return base64.b64decode(case["note_base64"])


def _outcome(run: Callable[[], object], classify: Callable[[Exception], str]) -> str:
    try:
        run()
    except Exception as error:  # every failure is classified; an unknown one is re-raised
        return classify(error)
    return "ok"


def _offline_class(error: Exception) -> str:
    kinds = [
        (offline.MalformedNoteError, "malformed"),
        (offline.InvalidNoteSignatureError, "bad_signature"),
        (offline.UntrustedNoteError, "untrusted"),
        (offline.MalformedCheckpointError, "malformed_checkpoint"),
    ]
    for kind, name in kinds:
        if isinstance(error, kind):
            return name
    raise error


def _server_class(error: Exception) -> str:
    kinds = [
        (server.MalformedNoteError, "malformed"),
        (server.NoteSignatureError, "bad_signature"),
        (server.UntrustedNoteError, "untrusted"),
        (server_checkpoint.MalformedCheckpointError, "malformed_checkpoint"),
    ]
    for kind, name in kinds:
        if isinstance(error, kind):
            return name
    raise error


def _tlog_proof_class(error: Exception) -> str:
    if isinstance(error, tlog_proof.MalformedTlogProofError):
        return "malformed"
    if isinstance(error, tlog_proof.TlogProofVerificationError):
        message = str(error)
        if "signed checkpoint is malformed" in message:
            return "malformed_checkpoint"
        return "untrusted" if "not signed by the log key" in message else "bad_signature"
    raise error


def _want_checkpoint(case: dict[str, Any]) -> str:
    if case["want"] != "ok":
        return str(case["want"])  # the note itself fails, at the same step everywhere
    return "malformed_checkpoint" if case["want_checkpoint"] == "malformed" else "ok"


def test_the_table_covers_every_outcome() -> None:
    assert {case["want"] for case in CASES} == {"ok", "malformed", "bad_signature", "untrusted"}
    assert len(CASES) >= 30


@pytest.mark.parametrize("case", CASES, ids=[case["desc"] for case in CASES])
def test_both_note_parsers_agree(case: dict[str, Any]) -> None:
    data = _note(case)
    offline_key = offline.VerifierKey.parse(KEY_TEXT)
    server_key = parse_verifier_key(KEY_TEXT)
    got_offline = _outcome(lambda: offline.open_note(data, [offline_key]), _offline_class)
    got_server = _outcome(lambda: server.open_note(data, [server_key]), _server_class)
    assert (got_offline, got_server) == (case["want"], case["want"])
    if case["want"] == "ok":
        assert (
            offline.open_note(data, [offline_key]).text == server.open_note(data, [server_key]).text
        )


@pytest.mark.parametrize("case", CASES, ids=[case["desc"] for case in CASES])
def test_every_checkpoint_entry_point_agrees(case: dict[str, Any]) -> None:
    data = _note(case)
    offline_key = offline.VerifierKey.parse(KEY_TEXT)
    server_key = parse_verifier_key(KEY_TEXT)
    want = _want_checkpoint(case)
    outcomes = {
        "offline verify_checkpoint": _outcome(
            lambda: offline.verify_checkpoint(data, offline_key, ORIGIN), _offline_class
        ),
        "tlog-proof verify_checkpoint_note": _outcome(
            lambda: tlog_proof.verify_checkpoint_note(data, offline_key, ORIGIN),
            _tlog_proof_class,
        ),
        "server open_checkpoint": _outcome(
            lambda: server_checkpoint.open_checkpoint(data, ORIGIN, [server_key]), _server_class
        ),
    }
    assert outcomes == dict.fromkeys(outcomes, want)


@pytest.mark.parametrize("case", CASES, ids=[case["desc"] for case in CASES])
def test_the_certificate_verifier_opens_notes_the_same_way(case: dict[str, Any]) -> None:
    # None of these notes is a certificate: one that opens fails at the statement, after the
    # signature checks; any other fails at the same step as the note parsers.
    with pytest.raises(CertificateError) as raised:
        verify_certificate(_note(case), KEY_TEXT)
    reached_statement = "malformed certificate: first line" in str(raised.value)
    assert reached_statement == (case["want"] == "ok"), str(raised.value)
