"""C2SP signed notes: signing, strict parsing, and verification against trusted keys.

This module owns the signed-note format (https://c2sp.org/signed-note), as implemented by
golang.org/x/mod/sumdb/note (``Sign`` and ``Open``)::

    <text, ending in a newline; it may contain empty lines>
    <blank line>
    — <key name> <base64(4-byte key id || signature)>
    ...

The text is separated from the signatures by the *last* blank line, so texts with empty lines
are valid notes (sigstore-python's parser splits at the first one and wrongly rejects them).

Parsing (:func:`parse_note`) raises InvalidArgument or ResourceExhausted, one message per
malformation. Opening (:func:`open_note`) is a verifier: every failure, a malformed note
included, raises a :class:`~ledger.errors.VerificationError`.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Sequence
from dataclasses import dataclass

from ledger import limits
from ledger.errors import (
    InvalidArgument,
    ResourceExhausted,
    VerificationError,
    check,
)
from ledger.signing import (
    Ed25519Verifier,
    SignatureError,
    Signer,
    b64decode_canonical,
    check_key_name,
    key_name_problem,
)

__all__ = [
    "MalformedNoteError",
    "Note",
    "NoteSignature",
    "NoteSignatureError",
    "UntrustedNoteError",
    "VerifiedNote",
    "open_note",
    "parse_note",
    "sign_note",
]

SIGNATURE_LINE_PREFIX = "\u2014 "
"""Every signature line starts with an em dash (U+2014) and a space."""

_KEY_ID_BYTES = 4
# Notes must not contain ASCII control characters other than newline (C2SP "Format").
_CONTROL_CHARACTER = re.compile(r"[\x00-\x09\x0b-\x1f]")


class NoteSignatureError(SignatureError):
    """A signature line from a trusted (name, key id) does not verify: the note is rejected."""


class UntrustedNoteError(VerificationError):
    """No trusted key signed the note."""


class MalformedNoteError(VerificationError):
    """A note handed to a verifier is not a well-formed signed note."""


@dataclass(frozen=True)
class NoteSignature:
    """One signature line: the key name, the 4-byte key id and the signature proper."""

    name: str
    key_id: bytes
    signature: bytes

    def line(self) -> str:
        """The signature line, newline included."""
        encoded = base64.b64encode(self.key_id + self.signature).decode("ascii")
        return f"{SIGNATURE_LINE_PREFIX}{self.name} {encoded}\n"


@dataclass(frozen=True)
class Note:
    """A parsed, not yet verified, note: its text must be ignored until :func:`open_note`."""

    text: str
    signatures: tuple[NoteSignature, ...]


@dataclass(frozen=True)
class VerifiedNote:
    """A note signed by at least one trusted key.

    ``verified`` has one signature per trusted key that signed; ``unverified`` has the lines from
    keys the caller did not name (witness cosignatures, rotated keys), kept but not checked.
    """

    text: str
    verified: tuple[NoteSignature, ...]
    unverified: tuple[NoteSignature, ...]


def sign_note(text: str | bytes, signers: Sequence[Signer]) -> bytes:
    """The signed note of ``text``, with one signature line per signer, in order.

    Requires a non-empty UTF-8 ``text`` ending in a newline, without control characters other
    than newline, and 1..``limits.note_signatures_max`` signers with distinct (name, key id).
    """
    text_bytes = _text_bytes(text)
    _check_text(text_bytes)
    _check_signers(signers)
    lines = [_sign_line(signer, text_bytes) for signer in signers]
    note = text_bytes + b"\n" + "".join(lines).encode("utf-8")
    if len(note) > limits.note_bytes_max:
        raise ResourceExhausted(
            f"signed note would be {len(note)} bytes, over {limits.note_bytes_max}",
            reason="NOTE_TOO_LARGE",
        )
    # Pair assertion: what we write must read back as exactly what we signed.
    check(parse_note(note).text.encode("utf-8") == text_bytes, "signed note does not round-trip")
    return note


def parse_note(data: bytes) -> Note:
    """Split a signed note into its text and signature lines, strictly; verify nothing.

    Signature lines of any key are kept. Raises InvalidArgument (ResourceExhausted for the size
    and signature-count limits) with a message naming the malformation.
    """
    if len(data) > limits.note_bytes_max:
        raise _resource(f"note is {len(data)} bytes, over {limits.note_bytes_max}")
    note = _decode(data)
    _check_no_control_characters(note)
    # The signatures follow the last blank line: the text itself may contain empty lines.
    split = note.rfind("\n\n")
    if split < 0:
        raise _malformed("no blank line before the signatures")
    text, block = note[: split + 1], note[split + 2 :]
    if not block:
        raise _malformed("no signatures after the blank line")
    if not block.endswith("\n"):
        raise _malformed("signature block does not end in a newline")
    lines = block[:-1].split("\n")
    if len(lines) > limits.note_signatures_max:
        raise _resource(f"{len(lines)} signatures, over {limits.note_signatures_max}")
    signatures = tuple(_parse_line(number, line) for number, line in enumerate(lines, 1))
    return Note(text=text, signatures=signatures)


def open_note(data: bytes, verifiers: Sequence[Ed25519Verifier]) -> VerifiedNote:
    """The note in ``data``, once a trusted key's signature on it is verified.

    (1) parse strictly; (2) ignore lines whose (name, key id) is not a trusted key, as C2SP
    requires, even if one of the two matches; (3) verify every line from a trusted key, and
    reject the note if one fails; (4) require at least one trusted signature.
    """
    trusted = _index_verifiers(verifiers)
    # (1)
    try:
        note = parse_note(data)
    except (InvalidArgument, ResourceExhausted) as error:
        raise MalformedNoteError(error.message, reason="NOTE_MALFORMED") from error
    text_bytes = note.text.encode("utf-8")
    verified: dict[tuple[str, bytes], NoteSignature] = {}
    unverified: list[NoteSignature] = []
    for signature in note.signatures:
        verifier = trusted.get((signature.name, signature.key_id))
        # (2)
        if verifier is None:
            unverified.append(signature)
            continue
        # (3)
        _verify_line(verifier, text_bytes, signature)
        verified.setdefault((signature.name, signature.key_id), signature)
    # (4)
    if not verified:
        raise _untrusted(trusted, unverified)
    return VerifiedNote(note.text, tuple(verified.values()), tuple(unverified))


def _text_bytes(text: str | bytes) -> bytes:
    if isinstance(text, bytes):
        return text
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidArgument(
            "invalid note text: not encodable as UTF-8", reason="NOTE_TEXT_INVALID"
        ) from None


def _check_text(text_bytes: bytes) -> None:
    """Raise unless ``text_bytes`` can be the text of a signed note."""
    if len(text_bytes) > limits.note_bytes_max:
        raise ResourceExhausted(
            f"note text is {len(text_bytes)} bytes, over {limits.note_bytes_max}",
            reason="NOTE_TOO_LARGE",
        )
    problem = _text_problem(text_bytes)
    if problem:
        raise InvalidArgument(f"invalid note text: {problem}", reason="NOTE_TEXT_INVALID")


def _text_problem(text_bytes: bytes) -> str:
    if not text_bytes:
        return "empty"
    if not text_bytes.endswith(b"\n"):
        return "does not end in a newline"
    try:
        text = text_bytes.decode("utf-8")
    except UnicodeDecodeError:
        return "not valid UTF-8"
    found = _CONTROL_CHARACTER.search(text)
    if found:
        return f"contains control character U+{ord(found.group()):04X}"
    return ""


def _check_signers(signers: Sequence[Signer]) -> None:
    if not signers:
        raise InvalidArgument("a note needs at least one signer", reason="NOTE_SIGNERS_INVALID")
    if len(signers) > limits.note_signatures_max:
        raise ResourceExhausted(
            f"{len(signers)} signers, over {limits.note_signatures_max}",
            reason="NOTE_TOO_MANY_SIGNATURES",
        )
    keys = [(signer.name, signer.key_id) for signer in signers]
    if len(set(keys)) != len(keys):
        raise InvalidArgument(
            "two signers share a key name and key id", reason="NOTE_SIGNERS_INVALID"
        )
    for signer in signers:
        check_key_name(signer.name, "signer name")


def _sign_line(signer: Signer, text_bytes: bytes) -> str:
    check(len(signer.key_id) == _KEY_ID_BYTES, f"signer {signer.name} has a malformed key id")
    signature = signer.sign(text_bytes)
    check(len(signature) == limits.ed25519_signature_bytes, "signer returned a malformed signature")
    return NoteSignature(signer.name, signer.key_id, signature).line()


def _decode(data: bytes) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise _malformed(f"not valid UTF-8 (at byte {error.start})") from None


def _check_no_control_characters(note: str) -> None:
    found = _CONTROL_CHARACTER.search(note)
    if found:
        raise _malformed(f"control character U+{ord(found.group()):04X} at {found.start()}")


def _parse_line(number: int, line: str) -> NoteSignature:
    """One signature line (without its newline): ``— <name> <base64(key id || signature)>``."""
    if not line.startswith(SIGNATURE_LINE_PREFIX):
        raise _malformed(f"signature line {number} does not start with an em dash and a space")
    name, space, encoded = line[len(SIGNATURE_LINE_PREFIX) :].partition(" ")
    if not space or not encoded:
        raise _malformed(f"signature line {number} has no signature after the key name")
    problem = key_name_problem(name)
    if problem:
        raise _malformed(f"signature line {number} has an invalid key name: {problem}")
    try:
        decoded = b64decode_canonical(encoded)
    except ValueError:
        raise _malformed(f"signature line {number} is not standard base64") from None
    if len(decoded) <= _KEY_ID_BYTES:
        raise _malformed(
            f"signature line {number} is too short: {len(decoded)} bytes, "
            f"need a {_KEY_ID_BYTES}-byte key id and a signature"
        )
    return NoteSignature(name, decoded[:_KEY_ID_BYTES], decoded[_KEY_ID_BYTES:])


def _index_verifiers(
    verifiers: Sequence[Ed25519Verifier],
) -> dict[tuple[str, bytes], Ed25519Verifier]:
    trusted: dict[tuple[str, bytes], Ed25519Verifier] = {}
    for verifier in verifiers:
        key = (verifier.name, verifier.key_id)
        if trusted.setdefault(key, verifier) != verifier:
            raise InvalidArgument(
                f"two trusted keys share name and key id {_key_label(*key)}",
                reason="NOTE_VERIFIERS_INVALID",
            )
    return trusted


def _verify_line(verifier: Ed25519Verifier, text_bytes: bytes, signature: NoteSignature) -> None:
    try:
        verifier.verify(text_bytes, signature.signature)
    except SignatureError as error:
        raise NoteSignatureError(
            f"note signature by trusted key {_key_label(verifier.name, verifier.key_id)} "
            "does not verify",
            reason="NOTE_SIGNATURE_INVALID",
            metadata={"key_name": verifier.name, "key_id": verifier.key_id.hex()},
        ) from error


def _untrusted(
    trusted: dict[tuple[str, bytes], Ed25519Verifier], found: list[NoteSignature]
) -> UntrustedNoteError:
    expected = ", ".join(_key_label(*key) for key in trusted) or "(no trusted keys given)"
    signed = ", ".join(_key_label(line.name, line.key_id) for line in found)
    return UntrustedNoteError(
        f"note is not signed by a trusted key: expected {expected}; signed by {signed}",
        reason="NOTE_UNTRUSTED",
        metadata={"expected": expected, "signed_by": signed},
    )


def _key_label(name: str, key_id: bytes) -> str:
    return f"{name}+{key_id.hex()}"


def _malformed(problem: str) -> InvalidArgument:
    return InvalidArgument(f"malformed note: {problem}", reason="NOTE_MALFORMED")


def _resource(problem: str) -> ResourceExhausted:
    return ResourceExhausted(f"malformed note: {problem}", reason="NOTE_TOO_LARGE")
