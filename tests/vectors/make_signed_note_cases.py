"""Writes signed-note-cases.json: how every case of that table was made (run from the repo root:
``.venv/bin/python tests/vectors/make_signed_note_cases.py``). Ed25519 is deterministic, so the
output is the same on every run; the JSON is committed and the tests read only the JSON."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

from ledger.signing import Ed25519Signer, format_verifier_key

LOG = Ed25519Signer("example.com/log", bytes(range(32)))
OTHER = Ed25519Signer("example.com/other", bytes(range(1, 33)))
SAME_NAME = Ed25519Signer("example.com/log", bytes(range(2, 34)))
ROOT = base64.b64encode(bytes(range(32))).decode()
CHECKPOINT = f"example.com/log\n12\n{ROOT}\n"


def line(signer: Ed25519Signer, text: bytes) -> bytes:
    payload = signer.key_id + signer.sign(text)
    return f"\u2014 {signer.name} {base64.b64encode(payload).decode()}\n".encode()


def raw_line(name: str, payload: bytes) -> bytes:
    return f"\u2014 {name} {base64.b64encode(payload).decode()}\n".encode()


def signed(text: str | bytes, *signers: Ed25519Signer) -> bytes:
    body = text.encode() if isinstance(text, str) else text
    return body + b"\n" + b"".join(line(signer, body) for signer in signers)


def case(desc: str, note: bytes, want: str, checkpoint: str = "ok") -> dict[str, Any]:
    """``want``: ok | malformed | bad_signature | untrusted (trusting the LOG key only);
    ``checkpoint``: for notes that open, whether the text is a checkpoint (ok | malformed)."""
    return {
        "desc": desc,
        "note_base64": base64.b64encode(note).decode(),
        "want": want,
        "want_checkpoint": checkpoint if want == "ok" else want,
    }


def cases() -> list[dict[str, Any]]:
    good = signed(CHECKPOINT, LOG)
    text = CHECKPOINT.encode()
    return [
        case("a checkpoint signed by the log key", good, "ok"),
        case(
            "a text with empty lines: split at the LAST blank line",
            signed("a\n\nb\n", LOG),
            "ok",
            "malformed",
        ),
        case("a text that is one newline", signed("\n", LOG), "ok", "malformed"),
        case(
            "DEL (U+007F) is not a C2SP control character",
            signed(f"example.com/log\n12\n{ROOT}\next\x7f\n", LOG),
            "ok",
        ),
        case(
            "a control character U+0001 in the text",
            signed(f"example.com/log\n12\n{ROOT}\nx\x01\n", LOG),
            "malformed",
        ),
        case("a tab in the text", signed(f"example.com/log\n12\n{ROOT}\nx\ty\n", LOG), "malformed"),
        case(
            "a carriage return before a newline",
            signed(f"example.com/log\r\n12\n{ROOT}\n", LOG),
            "malformed",
        ),
        case("not UTF-8", signed(text + b"\xff\n", LOG), "malformed"),
        case("no blank line before the signatures", text + line(LOG, text), "malformed"),
        case("a blank line and no signature lines", text + b"\n", "malformed"),
        case("the signature block does not end in a newline", good[:-1], "malformed"),
        case(
            "a signature line without the em dash",
            good.replace("\u2014".encode(), b"-"),
            "malformed",
        ),
        case("two spaces after the key name", good.replace(b"log ", b"log  "), "malformed"),
        case("an empty key name", text + b"\n" + raw_line("", LOG.key_id + bytes(64)), "malformed"),
        case(
            "non-canonical base64 (stray bits)",
            text
            + b"\n"
            + raw_line("example.com/log", LOG.key_id + bytes(64)).replace(b"AA=\n", b"AB=\n"),
            "malformed",
        ),
        case("unpadded base64", good.replace(b"=\n", b"\n"), "malformed"),
        case(
            "a signature of the key id alone",
            text + b"\n" + raw_line("example.com/log", LOG.key_id),
            "malformed",
        ),
        case(
            "the trusted key's name and id with a 10-byte signature",
            text + b"\n" + raw_line("example.com/log", LOG.key_id + bytes(10)) + line(LOG, text),
            "bad_signature",
        ),
        case(
            "the trusted key's name and id with a wrong 64-byte signature",
            good + raw_line("example.com/log", LOG.key_id + bytes(64)),
            "bad_signature",
        ),
        case(
            "a signature over another text by the trusted key",
            text + b"\n" + line(LOG, b"other\n"),
            "bad_signature",
        ),
        case(
            "a line with the trusted name but another key id is ignored",
            signed(CHECKPOINT, SAME_NAME, LOG),
            "ok",
        ),
        case(
            "a line with the trusted key id but another name is ignored",
            good + raw_line("example.com/other", LOG.key_id + bytes(64)),
            "ok",
        ),
        case("signed by an unknown key only", signed(CHECKPOINT, OTHER), "untrusted"),
        case("the same trusted signature twice", good + line(LOG, text), "ok"),
        case(
            "16 unknown signatures and the log's (C2SP: accept at least 16)",
            good + b"".join(raw_line(f"w{i}.example", bytes(68)) for i in range(16)),
            "ok",
        ),
        case(
            "33 signature lines, over the limit of 32",
            good + b"".join(raw_line(f"w{i}.example", bytes(68)) for i in range(32)),
            "malformed",
        ),
        case(
            "over 16 KiB",
            signed(f"example.com/log\n12\n{ROOT}\n" + "x" * 16384 + "\n", LOG),
            "malformed",
        ),
        case(
            "a tree size in Arabic-Indic digits",
            signed(f"example.com/log\n\u0661\u0662\n{ROOT}\n", LOG),
            "ok",
            "malformed",
        ),
        case(
            "a tree size with a leading zero",
            signed(f"example.com/log\n012\n{ROOT}\n", LOG),
            "ok",
            "malformed",
        ),
        case(
            "a tree size with a sign",
            signed(f"example.com/log\n+12\n{ROOT}\n", LOG),
            "ok",
            "malformed",
        ),
        case(
            "a tree size over 2**63-1",
            signed(f"example.com/log\n9223372036854775808\n{ROOT}\n", LOG),
            "ok",
            "malformed",
        ),
        case(
            "a root hash of 31 bytes",
            signed(f"example.com/log\n12\n{base64.b64encode(bytes(31)).decode()}\n", LOG),
            "ok",
            "malformed",
        ),
        case(
            "an empty extension line",
            signed(f"example.com/log\n12\n{ROOT}\n\next\n", LOG),
            "ok",
            "malformed",
        ),
    ]


def main() -> None:
    document = {
        "source": "tests/vectors/make_signed_note_cases.py: C2SP signed-note and tlog-checkpoint "
        "cases (issue 12), each run through every parser and entry point that takes a note",
        "trusted_key": format_verifier_key(LOG),
        "origin": "example.com/log",
        "cases": cases(),
    }
    path = Path(__file__).parent / "signed-note-cases.json"
    path.write_text(json.dumps(document, indent=2, ensure_ascii=True) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
