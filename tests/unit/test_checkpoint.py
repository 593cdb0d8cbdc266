"""C2SP checkpoints: round trips, every malformation with its message, signing and opening."""

from __future__ import annotations

import base64
from dataclasses import replace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ledger import limits
from ledger.checkpoint import (
    TREE_SIZE_MAX,
    Checkpoint,
    MalformedCheckpointError,
    OriginMismatchError,
    open_checkpoint,
    parse_checkpoint,
    sign_checkpoint,
)
from ledger.errors import InvalidArgument, VerificationError
from ledger.note import NoteSignatureError, UntrustedNoteError, sign_note
from ledger.signing import Ed25519Signer

LOG = Ed25519Signer("example.com/log", bytes(range(32)))
WITNESS = Ed25519Signer("example.com/witness", bytes(range(1, 33)))
ROOT = bytes(range(32))
ROOT_TEXT = base64.b64encode(ROOT).decode()
CHECKPOINT = Checkpoint("example.com/log", 37, ROOT)
URL_SAFE_ROOT_TEXT = base64.urlsafe_b64encode(b"\xff" * 32).decode()


def test_to_text_is_the_c2sp_body() -> None:
    assert CHECKPOINT.to_text() == f"example.com/log\n37\n{ROOT_TEXT}\n"
    with_extensions = replace(CHECKPOINT, extensions=("ext one", "two"))
    assert with_extensions.to_text() == f"example.com/log\n37\n{ROOT_TEXT}\next one\ntwo\n"


@pytest.mark.parametrize("extensions", [(), ("x",), ("one extension", "— another")])
def test_round_trip(extensions: tuple[str, ...]) -> None:
    checkpoint = replace(CHECKPOINT, extensions=extensions)
    assert parse_checkpoint(checkpoint.to_text()) == checkpoint


def test_parses_the_c2sp_example_body() -> None:
    text = "example.com/behind-the-sofa\n20852163\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n"
    checkpoint = parse_checkpoint(text)
    assert (checkpoint.origin, checkpoint.size) == ("example.com/behind-the-sofa", 20852163)
    assert len(checkpoint.root_hash) == 32


@pytest.mark.parametrize("origin", ["a", "Log 42 (test)", "example.com/a+b", "λ/ log"])
def test_any_non_empty_origin_is_accepted(origin: str) -> None:
    # C2SP: clients MUST NOT assume the origin follows the recommended URL format.
    assert parse_checkpoint(f"{origin}\n0\n{ROOT_TEXT}\n").origin == origin


def test_size_extremes_are_accepted() -> None:
    assert parse_checkpoint(f"o\n0\n{ROOT_TEXT}\n").size == 0
    assert parse_checkpoint(f"o\n{TREE_SIZE_MAX}\n{ROOT_TEXT}\n").size == 2**63 - 1


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (f"o\n1\n{ROOT_TEXT}", "does not end in a newline"),
        ("", "does not end in a newline"),
        ("o\n1\n", "missing lines: want origin, size and root hash, got 2"),
        ("\n", "missing lines: want origin, size and root hash, got 1"),
        (f"\n1\n{ROOT_TEXT}\n", "empty origin"),
        (f"{'o' * 257}\n1\n{ROOT_TEXT}\n", "origin over 256 characters"),
        (f"o\x07\n1\n{ROOT_TEXT}\n", "origin contains a newline or control character"),
        (f"o\n01\n{ROOT_TEXT}\n", "invalid size '01'"),
        (f"o\n00\n{ROOT_TEXT}\n", "invalid size '00'"),
        (f"o\n+1\n{ROOT_TEXT}\n", "invalid size '\\+1'"),
        (f"o\n-1\n{ROOT_TEXT}\n", "invalid size '-1'"),
        (f"o\n 1\n{ROOT_TEXT}\n", "invalid size ' 1'"),
        (f"o\n1 \n{ROOT_TEXT}\n", "invalid size '1 '"),
        (f"o\n\n{ROOT_TEXT}\n", "invalid size ''"),
        (f"o\n1_000\n{ROOT_TEXT}\n", "invalid size '1_000'"),
        (f"o\n0x10\n{ROOT_TEXT}\n", "invalid size '0x10'"),
        (f"o\n\u0661\n{ROOT_TEXT}\n", "invalid size"),  # ARABIC-INDIC DIGIT ONE: int() takes it
        (f"o\n{2**63}\n{ROOT_TEXT}\n", "size 9223372036854775808 out of range 0..2\\*\\*63-1"),
        (f"o\n{'9' * 5000}\n{ROOT_TEXT}\n", "size 9+ out of range"),
        ("o\n1\nnot base64!\n", "root hash is not standard base64"),
        (f"o\n1\n{ROOT_TEXT.rstrip('=')}\n", "root hash is not standard base64"),
        (f"o\n1\n{URL_SAFE_ROOT_TEXT}\n", "root hash is not standard base64"),
        ("o\n1\n\n", "root hash must be 32 bytes, got 0"),
        (f"o\n1\n{base64.b64encode(bytes(31)).decode()}\n", "root hash must be 32 bytes, got 31"),
        (f"o\n1\n{base64.b64encode(bytes(33)).decode()}\n", "root hash must be 32 bytes, got 33"),
        (f"o\n1\n{ROOT_TEXT}\n\n", "extension line 4 is empty"),
        (f"o\n1\n{ROOT_TEXT}\next\n\n", "extension line 5 is empty"),
        (f"o\n1\n{ROOT_TEXT}\nex\x00t\n", "extension line 4 contains a newline or control"),
    ],
)
def test_parse_rejects_each_malformation(text: str, message: str) -> None:
    with pytest.raises(InvalidArgument, match=f"malformed checkpoint: {message}"):
        parse_checkpoint(text)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"origin": ""}, "empty origin"),
        ({"origin": "a\nb"}, "origin contains a newline"),
        ({"size": -1}, "size -1 out of range"),
        ({"size": 2**63}, "size 9223372036854775808 out of range"),
        ({"root_hash": bytes(31)}, "root hash must be 32 bytes, got 31"),
        ({"extensions": ("",)}, "extension line 4 is empty"),
        ({"extensions": ("a", "b\nc")}, "extension line 5 contains a newline"),
    ],
)
def test_constructor_rejects_fields_that_cannot_be_a_checkpoint(
    fields: dict[str, object], message: str
) -> None:
    with pytest.raises(InvalidArgument, match=f"invalid checkpoint: {message}"):
        replace(CHECKPOINT, **fields)  # type: ignore[arg-type]


def test_sign_and_open() -> None:
    note = sign_checkpoint(CHECKPOINT, LOG)
    assert note.startswith((CHECKPOINT.to_text() + "\n\u2014 example.com/log ").encode())
    assert open_checkpoint(note, "example.com/log", [LOG.verifier()]) == CHECKPOINT


def test_open_accepts_a_witness_cosigned_checkpoint() -> None:
    note = sign_note(CHECKPOINT.to_text(), [LOG, WITNESS])
    assert open_checkpoint(note, "example.com/log", [LOG.verifier()]) == CHECKPOINT


def test_open_rejects_another_origin() -> None:
    note = sign_checkpoint(CHECKPOINT, LOG)
    with pytest.raises(OriginMismatchError, match=r"origin is 'example\.com/log', expected 'x/y'"):
        open_checkpoint(note, "x/y", [LOG.verifier()])


def test_open_rejects_an_untrusted_signer() -> None:
    with pytest.raises(UntrustedNoteError):
        open_checkpoint(sign_checkpoint(CHECKPOINT, WITNESS), "example.com/log", [LOG.verifier()])


def test_open_rejects_a_tampered_checkpoint() -> None:
    note = sign_checkpoint(CHECKPOINT, LOG).replace(b"\n37\n", b"\n38\n")
    with pytest.raises(NoteSignatureError):
        open_checkpoint(note, "example.com/log", [LOG.verifier()])


def test_open_rejects_a_signed_note_that_is_not_a_checkpoint() -> None:
    note = sign_note("example.com/log\nnot a size\n", [LOG])
    with pytest.raises(MalformedCheckpointError, match="missing lines"):
        open_checkpoint(note, "example.com/log", [LOG.verifier()])
    assert issubclass(MalformedCheckpointError, VerificationError)


ORIGINS = st.text(
    st.characters(blacklist_categories=("Cc", "Cs")), min_size=1, max_size=limits.origin_chars_max
)
EXTENSIONS = st.lists(
    st.text(st.characters(blacklist_categories=("Cc", "Cs")), min_size=1, max_size=20), max_size=3
)


@given(
    origin=ORIGINS,
    size=st.integers(0, TREE_SIZE_MAX),
    root_hash=st.binary(min_size=32, max_size=32),
    extensions=EXTENSIONS,
)
def test_format_parse_round_trip(
    origin: str, size: int, root_hash: bytes, extensions: list[str]
) -> None:
    checkpoint = Checkpoint(origin, size, root_hash, tuple(extensions))
    assert parse_checkpoint(checkpoint.to_text()) == checkpoint
    note = sign_checkpoint(checkpoint, LOG)
    assert open_checkpoint(note, origin, [LOG.verifier()]) == checkpoint
