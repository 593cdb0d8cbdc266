"""The harness of server processes leaves nothing open in the test process once a server is
stopped or killed: a full run starts hundreds, and a descriptor left per server added up (a
worker process passed 1,024 open descriptors)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from ledger.signing import Ed25519Signer, format_signer_key
from ledger.storage.db import sqlite_url
from tests.durability.processes import ServerProcess, start_server_process
from tests.leaks import open_files_under


@pytest.mark.parametrize("end", [ServerProcess.stop, ServerProcess.kill], ids=["stop", "kill"])
def test_an_ended_server_process_leaves_no_descriptor_behind(
    tmp_path: Path, log_signer: Ed25519Signer, end: Callable[[ServerProcess], None]
) -> None:
    key_file = tmp_path / "log.key"
    key_file.write_text(format_signer_key(log_signer) + "\n", encoding="utf-8")
    workdir = tmp_path / "work"
    server = start_server_process(sqlite_url(tmp_path / "ledger.db"), key_file, workdir)
    end(server)
    assert server.process.returncode is not None
    # Its log file is not held (mkstemp's descriptor was never closed). Its stdout's pipe stays
    # open for the test to read what it printed last (tests/e2e/test_workers.py does); it is
    # closed with the Popen when the test lets go of it.
    assert open_files_under(workdir) == []
