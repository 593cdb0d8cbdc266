"""C2SP signed notes: the interop vectors, trust rules, and every malformation with its message."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ledger import limits
from ledger.errors import InvalidArgument, ResourceExhausted, VerificationError
from ledger.note import (
    MalformedNoteError,
    NoteSignature,
    NoteSignatureError,
    UntrustedNoteError,
    open_note,
    parse_note,
    sign_note,
)
from ledger.signing import (
    Ed25519Signer,
    Ed25519Verifier,
    Signer,
    parse_signer_key,
    parse_verifier_key,
)

VECTORS: list[dict[str, Any]] = json.loads(
    (Path(__file__).parent.parent / "vectors" / "signed-note.json").read_text(encoding="utf-8")
)["cases"]

LOG = Ed25519Signer("example.com/log", bytes(range(32)))
WITNESS = Ed25519Signer("example.com/witness", bytes(range(1, 33)))
STRANGER = Ed25519Signer("example.com/stranger", bytes(range(2, 34)))
TEXT = "example.com/log\n7\nsome text\n"


def _line(name: str, payload: bytes) -> bytes:
    return f"\u2014 {name} {base64.b64encode(payload).decode()}\n".encode()


def _note(text: str, *lines: bytes) -> bytes:
    return text.encode() + b"\n" + b"".join(lines)


SIGNATURE_LINE = _line("example.com/log", bytes(68))


@pytest.mark.parametrize("case", VECTORS, ids=[case["desc"] for case in VECTORS])
def test_vector_notes_verify(case: dict[str, Any]) -> None:
    verifier = parse_verifier_key(case["verifier_key"])
    note = open_note(case["note"].encode(), [verifier])
    assert case["want_verified"]
    assert [(s.name, s.key_id) for s in note.verified] == [(verifier.name, verifier.key_id)]
    assert note.unverified == ()
    assert case["note"].startswith(note.text)


@pytest.mark.parametrize(
    "case", [case for case in VECTORS if "signer_key" in case], ids=lambda case: case["desc"]
)
def test_vector_signature_is_reproduced_byte_for_byte(case: dict[str, Any]) -> None:
    text = parse_note(case["note"].encode()).text
    assert sign_note(text, [parse_signer_key(case["signer_key"])]) == case["note"].encode()


def test_text_with_empty_lines_is_a_valid_note() -> None:
    # C2SP: the text MAY contain empty lines; the signatures follow the *last* blank line.
    text = (
        "Ognuno sta solo sul cuor della terra\ntrafitto da un raggio di sole:\n"
        "\ned è subito sera.\n"
    )
    note = sign_note(text, [LOG])
    assert open_note(note, [LOG.verifier()]).text == text
    assert open_note(sign_note("\n", [LOG]), [LOG.verifier()]).text == "\n"
    assert open_note(sign_note("a\n\n", [LOG]), [LOG.verifier()]).text == "a\n\n"


def test_sign_note_accepts_bytes_and_signs_in_order() -> None:
    note = sign_note(TEXT.encode(), [LOG, WITNESS])
    assert [s.name for s in parse_note(note).signatures] == [LOG.name, WITNESS.name]


def test_witness_cosignature_verifies_with_either_key() -> None:
    note = sign_note(TEXT, [LOG, WITNESS])
    by_log = open_note(note, [LOG.verifier()])
    assert [s.name for s in by_log.verified] == [LOG.name]
    assert [s.name for s in by_log.unverified] == [WITNESS.name]
    by_witness = open_note(note, [WITNESS.verifier()])
    assert [s.name for s in by_witness.verified] == [WITNESS.name]
    both = open_note(note, [WITNESS.verifier(), LOG.verifier()])
    assert {s.name for s in both.verified} == {LOG.name, WITNESS.name}


def test_unknown_signature_lines_are_ignored() -> None:
    unknown = _line("example.com/other", bytes(4) + bytes(200))  # not even Ed25519-sized
    note = sign_note(TEXT, [LOG]) + unknown
    opened = open_note(note, [LOG.verifier()])
    assert opened.unverified == (NoteSignature("example.com/other", bytes(4), bytes(200)),)


def test_lines_sharing_only_the_name_or_only_the_key_id_are_ignored() -> None:
    # C2SP: "ignore signatures from unknown keys, even if they share a name or ID (but not both)".
    verifier = LOG.verifier()
    same_name = _line(LOG.name, b"\xff\xff\xff\xff" + bytes(64))
    same_id = _line("example.com/impostor", verifier.key_id + bytes(64))
    opened = open_note(sign_note(TEXT, [LOG]) + same_name + same_id, [verifier])
    assert [s.name for s in opened.unverified] == [LOG.name, "example.com/impostor"]


def test_note_signed_only_by_an_unknown_key_is_untrusted() -> None:
    with pytest.raises(UntrustedNoteError) as raised:
        open_note(sign_note(TEXT, [STRANGER]), [LOG.verifier()])
    expected = f"expected {LOG.name}+{LOG.key_id.hex()}; signed by {STRANGER.name}+"
    assert expected in raised.value.message
    assert raised.value.reason == "NOTE_UNTRUSTED"


def test_no_trusted_keys_means_untrusted() -> None:
    with pytest.raises(UntrustedNoteError, match="no trusted keys given"):
        open_note(sign_note(TEXT, [LOG]), [])


def test_bad_signature_from_a_known_key_rejects_the_note() -> None:
    note = bytearray(sign_note(TEXT, [LOG]))
    note[0:1] = b"E"  # the text changed after signing
    with pytest.raises(NoteSignatureError, match=r"trusted key example.com/log\+\w{8} does not"):
        open_note(bytes(note), [LOG.verifier()])


def test_bad_signature_from_a_known_key_rejects_even_with_another_good_one() -> None:
    forged = _line(WITNESS.name, WITNESS.key_id + bytes(64))
    with pytest.raises(NoteSignatureError):
        open_note(sign_note(TEXT, [LOG]) + forged, [LOG.verifier(), WITNESS.verifier()])


def test_short_signature_from_a_known_key_is_a_bad_signature() -> None:
    note = _note(TEXT, _line(LOG.name, LOG.key_id + bytes(10)))
    with pytest.raises(NoteSignatureError):
        open_note(note, [LOG.verifier()])


def test_duplicate_trusted_signature_is_reported_once() -> None:
    note = sign_note(TEXT, [LOG])
    signature_line = note[len(TEXT) + 1 :]
    assert len(open_note(note + signature_line, [LOG.verifier()]).verified) == 1


def test_accepts_sixteen_signatures_as_c2sp_requires() -> None:
    signers = [Ed25519Signer(f"example.com/w{index}", bytes([index]) * 32) for index in range(16)]
    note = sign_note(TEXT, signers)
    assert len(open_note(note, [signers[15].verifier()]).unverified) == 15


@pytest.mark.parametrize(
    ("data", "error", "message"),
    [
        (b"x" * (limits.note_bytes_max + 1), ResourceExhausted, "16385 bytes, over 16384"),
        (b"text\xff\n\n" + SIGNATURE_LINE, InvalidArgument, r"not valid UTF-8 \(at byte 4\)"),
        (b"te\x07xt\n\n" + SIGNATURE_LINE, InvalidArgument, "control character U\\+0007 at 2"),
        (b"text\r\n\r\n" + SIGNATURE_LINE, InvalidArgument, "control character U\\+000D"),
        (
            b"text\n\n" + SIGNATURE_LINE[:-1] + b"\t\n",
            InvalidArgument,
            "control character U\\+0009",
        ),
        (b"text\n" + SIGNATURE_LINE, InvalidArgument, "no blank line before the signatures"),
        (b"", InvalidArgument, "no blank line before the signatures"),
        (b"text\n\n", InvalidArgument, "no signatures after the blank line"),
        (b"text\n\n" + SIGNATURE_LINE[:-1], InvalidArgument, "block does not end in a newline"),
        (
            b"text\n\n" + SIGNATURE_LINE * (limits.note_signatures_max + 1),
            ResourceExhausted,
            "33 signatures, over 32",
        ),
        (b"text\n\n- a AAAAAAA=\n", InvalidArgument, "line 1 does not start with an em dash"),
        (
            b"text\n\n" + SIGNATURE_LINE + "\u2014a AAAAAAA=\n".encode(),
            InvalidArgument,
            "line 2 does not start with an em dash and a space",
        ),
        ("text\n\n\u2014 name\n".encode(), InvalidArgument, "no signature after the key name"),
        ("text\n\n\u2014 name \n".encode(), InvalidArgument, "no signature after the key name"),
        (
            b"text\n\n" + _line("", bytes(68)),
            InvalidArgument,
            "invalid key name: must not be empty",
        ),
        (b"text\n\n" + _line("a+b", bytes(68)), InvalidArgument, "must not contain '\\+'"),
        (
            "text\n\n\u2014 a\u3000b AAAAAAA=\n".encode(),
            InvalidArgument,
            "invalid key name: must not contain whitespace",
        ),
        ("text\n\n\u2014 a AA!A\n".encode(), InvalidArgument, "line 1 is not standard base64"),
        ("text\n\n\u2014 a AAAAAA\n".encode(), InvalidArgument, "line 1 is not standard base64"),
        ("text\n\n\u2014 a AAAAAA== \n".encode(), InvalidArgument, "not standard base64"),
        (
            b"text\n\n" + _line("a", bytes(4)),
            InvalidArgument,
            "line 1 is too short: 4 bytes, need a 4-byte key id and a signature",
        ),
    ],
)
def test_parse_note_rejects_each_malformation(
    data: bytes, error: type[Exception], message: str
) -> None:
    with pytest.raises(error, match=message):
        parse_note(data)
    # A verifier reports the same problem as a verification failure.
    with pytest.raises(MalformedNoteError, match=message):
        open_note(data, [LOG.verifier()])
    assert issubclass(MalformedNoteError, VerificationError)


def test_very_long_key_names_from_others_are_parsed() -> None:
    # Our own key names have a length limit; others' are only held to the C2SP rules.
    name = "n" * (limits.key_name_chars_max + 10)
    assert parse_note(b"text\n\n" + _line(name, bytes(68))).signatures[0].name == name


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "invalid note text: empty"),
        ("no newline", "invalid note text: does not end in a newline"),
        ("bell\x07\n", "contains control character U\\+0007"),
        ("crlf\r\n", "contains control character U\\+000D"),
        (b"\xff\n", "not valid UTF-8"),
        ("\ud800\n", "not encodable as UTF-8"),
    ],
)
def test_sign_note_rejects_invalid_text(text: str | bytes, message: str) -> None:
    with pytest.raises(InvalidArgument, match=message):
        sign_note(text, [LOG])


def test_sign_note_rejects_invalid_signer_sets() -> None:
    with pytest.raises(InvalidArgument, match="at least one signer"):
        sign_note(TEXT, [])
    with pytest.raises(InvalidArgument, match="share a key name and key id"):
        sign_note(TEXT, [LOG, LOG])
    with pytest.raises(ResourceExhausted, match="33 signers, over 32"):
        sign_note(TEXT, [LOG] * 33)


def test_sign_note_rejects_oversized_text_and_notes() -> None:
    with pytest.raises(ResourceExhausted, match="note text is 16385 bytes"):
        sign_note("x" * limits.note_bytes_max + "\n", [LOG])
    with pytest.raises(ResourceExhausted, match="signed note would be"):
        sign_note("x" * (limits.note_bytes_max - 100) + "\n", [LOG])


def test_the_same_verifier_twice_is_harmless() -> None:
    verifier = LOG.verifier()
    assert len(open_note(sign_note(TEXT, [LOG]), [verifier, verifier]).verified) == 1


def test_two_different_keys_with_the_same_name_and_key_id_are_refused() -> None:
    # Such a pair needs a key id collision; forge one to show the trust set is refused.
    impostor = Ed25519Verifier(LOG.name, WITNESS.public_key)
    object.__setattr__(impostor, "key_id", LOG.key_id)
    with pytest.raises(InvalidArgument, match="two trusted keys share name and key id"):
        open_note(sign_note(TEXT, [LOG]), [LOG.verifier(), impostor])


SIGNERS: list[Signer] = [LOG, WITNESS, STRANGER]
# Printable text without newlines, as lines of a note (they may be empty).
LINES = st.lists(
    st.text(st.characters(blacklist_categories=("Cc", "Cs")), max_size=40), min_size=1, max_size=8
)


@given(lines=LINES, signer_count=st.integers(1, 3))
def test_sign_parse_open_round_trip(lines: list[str], signer_count: int) -> None:
    text = "\n".join(lines) + "\n"
    signers = SIGNERS[:signer_count]
    note = sign_note(text, signers)
    parsed = parse_note(note)
    assert parsed.text == text
    assert [(s.name, s.key_id) for s in parsed.signatures] == [(s.name, s.key_id) for s in signers]
    opened = open_note(note, [signer.verifier() for signer in (LOG, WITNESS)])
    assert opened.text == text
    assert len(opened.verified) == min(signer_count, 2)
    assert len(opened.unverified) == max(signer_count - 2, 0)
