"""One server per port and per SQLite file (issue 13 item 2), in process: whatever spelling of
the file or of the host, a second server is refused before it opens anything, and the first
one's stop frees both for the next."""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from ledger.errors import FailedPrecondition, InvalidArgument
from ledger.rpc.ports import refuse_address_in_use
from ledger.signing import Ed25519Signer
from ledger.storage.db import sqlite_url
from tests.conftest import ServerHandle, start_server_thread
from tests.leaks import open_files_under


@pytest.fixture
def listener() -> Iterator[int]:
    """Another process's listening socket on 127.0.0.1 (its port)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as held:
        held.bind(("127.0.0.1", 0))
        held.listen()
        yield int(held.getsockname()[1])


def test_a_second_server_on_the_same_sqlite_file_by_any_spelling_is_refused(
    tmp_path: Path, log_signer: Ed25519Signer
) -> None:
    folder = tmp_path / "data"
    folder.mkdir()
    database = folder / "ledger.db"
    (tmp_path / "alias").symlink_to(folder, target_is_directory=True)
    first = start_server_thread(sqlite_url(database), log_signer, tmp_path)
    try:
        before = database.stat().st_size, sorted(p.name for p in folder.iterdir())
        spellings = [
            sqlite_url(database),
            sqlite_url(tmp_path / "data" / ".." / "data" / "ledger.db"),
            sqlite_url(tmp_path / "alias" / "ledger.db"),
        ]
        for spelling in spellings:
            refused = _refuse_start(first, tmp_path, log_signer, spelling)
            assert refused.reason == "DATABASE_IN_USE"
            assert "already served by another server" in refused.message
        # Refused before the database was opened: the file and its folder are as they were.
        assert (database.stat().st_size, sorted(p.name for p in folder.iterdir())) == before
    finally:
        first.stop()
    # Stopped: the lock is released, the next server starts on the file.
    again = start_server_thread(sqlite_url(tmp_path / "alias" / "ledger.db"), log_signer, tmp_path)
    again.stop()
    # Its loop is closed too (its epoll and self-pipe were three descriptors left per server).
    assert again.loop.is_closed() and not again.thread.is_alive()


def _refuse_start(
    first: ServerHandle, tmp_path: Path, log_signer: Ed25519Signer, database_url: str
) -> FailedPrecondition:
    """Start a server on ``database_url`` (another port); return why it was refused."""
    with pytest.raises(FailedPrecondition) as refused:
        start_server_thread(database_url, log_signer, tmp_path)
    return refused.value


def test_a_port_held_on_any_address_of_the_host_is_refused(
    tmp_path: Path, log_signer: Ed25519Signer, listener: int
) -> None:
    # localhost is 127.0.0.1 and, where there is IPv6, ::1: gRPC alone would start on ::1.
    for listen in (f"127.0.0.1:{listener}", f"localhost:{listener}", f"0.0.0.0:{listener}"):
        with pytest.raises(FailedPrecondition) as refused:
            refuse_address_in_use(listen)
        assert refused.value.reason == "ADDRESS_IN_USE" and listen in refused.value.message
    refuse_address_in_use("127.0.0.1:0")  # port 0 picks a free one: nothing to refuse
    database = tmp_path / "ledger.db"
    with pytest.raises(FailedPrecondition) as refused:
        start_server_thread(
            sqlite_url(database),
            log_signer,
            tmp_path,
            config_changes={"listen": f"localhost:{listener}"},
        )
    assert refused.value.reason == "ADDRESS_IN_USE"
    assert not database.exists()  # refused before the database was opened


def test_the_metrics_port_in_use_is_refused_before_the_database_is_opened(
    tmp_path: Path, log_signer: Ed25519Signer, listener: int
) -> None:
    database = tmp_path / "ledger.db"
    with pytest.raises(FailedPrecondition) as refused:
        start_server_thread(
            sqlite_url(database), log_signer, tmp_path, config_changes={"metrics_port": listener}
        )
    assert refused.value.reason == "ADDRESS_IN_USE"
    assert f"metrics on port {listener}" in refused.value.message
    assert not database.exists()


def _server_loops() -> set[threading.Thread]:
    """The live threads of servers started by start_server_thread."""
    return {thread for thread in threading.enumerate() if thread.name == "server-loop"}


def test_a_start_refused_after_the_database_was_opened_closes_it_and_its_loop(
    tmp_path: Path, log_signer: Ed25519Signer
) -> None:
    # An empty log without the operator's key is refused once the database is open and
    # migrated: the refusal closes the engine's connections (the file, its -wal and -shm), as
    # the harness closes the refused server's loop; each used to stay open while the refusal
    # was referenced (here: by pytest.raises), in the test process for as long as it ran.
    folder = tmp_path / "data"
    folder.mkdir()
    loops = _server_loops()
    with pytest.raises(InvalidArgument) as refused:
        start_server_thread(
            sqlite_url(folder / "ledger.db"),
            log_signer,
            tmp_path,
            config_changes={"operator_verifier": ""},
        )
    assert refused.value.reason == "OPERATOR_KEY_REQUIRED"
    assert (folder / "ledger.db").exists()  # it was opened (and migrated) before the refusal
    assert open_files_under(folder) == []
    assert _server_loops() == loops
