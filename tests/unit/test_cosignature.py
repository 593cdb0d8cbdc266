"""The server's side of cosignatures (ledger/cosignature.py): witness options and keys are
checked before the server starts, and its verifier agrees with the witness's cosignatures."""

from __future__ import annotations

import asyncio
from dataclasses import replace
from pathlib import Path

import pytest

from clients.witness.keys import WitnessKey
from ledger import limits
from ledger.config import ServerConfig
from ledger.cosignature import CosignatureVerifier, parse_witness_option
from ledger.errors import InvalidArgument
from ledger.rpc.server import parse_witnesses, start_server
from ledger.signing import Ed25519Signer, SignatureError, format_signer_key, format_verifier_key
from ledger.storage.db import sqlite_url

WITNESS = WitnessKey("witness.example/w1", bytes([5]) * 32)
TEXT = "example.com/log\n1\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n"


def test_the_server_verifies_what_the_witness_signs() -> None:
    verifier = CosignatureVerifier.parse(WITNESS.verifier_key.encode())
    assert verifier.key_id == WITNESS.verifier_key.key_id
    assert verifier.encode() == WITNESS.verifier_key.encode()
    line = WITNESS.cosign(TEXT, 1_700_000_000)
    verifier.verify(TEXT.encode(), line.signature)
    with pytest.raises(SignatureError, match="does not verify"):
        verifier.verify(TEXT.replace("1\n", "2\n", 1).encode(), line.signature)
    with pytest.raises(SignatureError, match="not 72 bytes"):
        verifier.verify(TEXT.encode(), line.signature[:-1])


@pytest.mark.parametrize(
    ("option", "message"),
    [
        (f"witness.example={WITNESS.verifier_key.encode()}", "http"),
        (f"ftp://witness.example={WITNESS.verifier_key.encode()}", "http"),
        ("http://witness.example", "URL=VERIFIERKEY"),
        (
            "http://witness.example="
            + format_verifier_key(Ed25519Signer("witness.example/w1", bytes(32))),
            "type 0x04",
        ),
        (f"http://w.example={WITNESS.verifier_key.encode()[:-4]}AAA=", "type 0x04"),
        (
            "http://w.example=" + WITNESS.verifier_key.encode().replace("+", "+0", 1)[:-1],
            "not a cosignature/v1|does not match",
        ),
    ],
)
def test_bad_witness_options_are_refused(option: str, message: str) -> None:
    with pytest.raises(InvalidArgument, match=message):
        parse_witness_option(option)


def test_too_many_witnesses_are_refused_before_anything_starts() -> None:
    option = f"http://witness.example={WITNESS.verifier_key.encode()}"
    assert len(parse_witnesses([option] * limits.witnesses_max)) == limits.witnesses_max
    with pytest.raises(InvalidArgument, match="over 16"):
        parse_witnesses([option] * (limits.witnesses_max + 1))


def test_a_server_with_a_bad_witness_option_refuses_to_start_and_writes_nothing(
    tmp_path: Path,
) -> None:
    key_file = tmp_path / "log.key"
    key_file.write_text(format_signer_key(Ed25519Signer("example.com/log", bytes(32))) + "\n")
    database = tmp_path / "ledger.db"
    config = replace(
        ServerConfig(),
        database_url=sqlite_url(database),
        listen="127.0.0.1:0",
        log_key_path=key_file,
        insecure_plaintext=True,  # TLS settings are checked first; this test is about witnesses
        witnesses=("not-a-url=key",),
    )
    with pytest.raises(InvalidArgument, match="URL=VERIFIERKEY"):
        asyncio.run(start_server(config))
    assert not database.exists()
