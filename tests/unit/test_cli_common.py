"""What the client commands share (clients/cli_common.py): the log a command trusts, from its
``--log-verifier`` value."""

from __future__ import annotations

from pathlib import Path

import pytest

from clients.cli_common import trusted_log
from ledger.errors import InvalidArgument
from ledger.signing import generate_keypair


def test_the_trusted_log_comes_from_the_key_or_the_file_holding_it(tmp_path: Path) -> None:
    _, verifier_key = generate_keypair("ledger.example/log")
    key_file = tmp_path / "log.pub"
    key_file.write_text(verifier_key + "\n", encoding="utf-8")
    log = trusted_log(verifier_key)
    assert log.origin == "ledger.example/log"
    assert trusted_log(f"@{key_file}") == log
    with pytest.raises(InvalidArgument):
        trusted_log("not a key")
