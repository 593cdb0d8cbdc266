"""``serve --workers N`` on PostgreSQL opens no more connections than its configured totals
(ledger/config.py ``divide_database_pool``; docs/operations.md "Database connections").

A real supervisor with two workers and a sequencer process, given 6 kept connections and no
overflow in all (2 each). The test takes an exclusive lock on the log's tables, so every read
that reaches PostgreSQL waits there holding its connection, then sends 32 GetEntries calls on new
connections (the kernel spreads them over both workers), waits until the workers' metrics show
every call started and PostgreSQL shows reads waiting on the lock, and counts the server's
connections in ``pg_stat_activity`` (they carry the ``application_name`` of the server's URL):
each worker would hold one per read thread (4) if it could. Then the lock is released and every
call is answered. Before the pool was divided each process could open 8 + 8. The rule itself,
for any N: tests/unit/test_database_pool.py.
"""

from __future__ import annotations

import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from sqlalchemy import Connection, create_engine, make_url, text

from ledger.signing import Ed25519Signer, format_verifier_key
from ledger.v1 import ledger_service_pb2 as pb
from ledger.v1 import ledger_service_pb2_grpc as pb_grpc
from tests.durability.processes import ServerProcess, start_server_process
from tests.durability.test_crash import prepare_log
from tests.e2e.test_metrics import rpc, value
from tests.e2e.test_workers import WORKERS, new_connection, scrape

APPLICATION = "pool-division-test"
SIZE_TOTAL = 6
"""Kept connections of the whole server: 2 for each of its three processes."""
CALLS = 32
GET_ENTRIES = rpc("unary_stream", "GetEntries")


def _server_connections(connection: Connection, *, waiting: bool = False) -> int:
    """The server's connections to the test database (those waiting on a lock only)."""
    count = connection.execute(
        text(
            "SELECT count(*) FROM pg_stat_activity"
            " WHERE datname = current_database() AND application_name = :name"
            " AND (NOT :waiting OR wait_event_type = 'Lock')"
        ),
        {"name": APPLICATION, "waiting": waiting},
    ).scalar_one()
    connection.rollback()  # the next count sees a fresh snapshot of the statistics
    return int(count)


def _entries(server: ServerProcess) -> int:
    """GetEntries(0, 2) on a new connection; the entries answered."""
    with new_connection(server, "auditor", "pool") as channel:
        stub = pb_grpc.LedgerServiceStub(channel)
        request = pb.GetEntriesRequest(start_index=0, end_index=2)
        return sum(len(response.entries) for response in stub.GetEntries(request, timeout=120))


def _started_calls(server: ServerProcess) -> float:
    samples = scrape(server)
    return sum(
        value(samples, "grpc_server_started_total", **GET_ENTRIES, process=worker)
        for worker in WORKERS
    )


@pytest.mark.postgres
def test_two_workers_and_the_sequencer_stay_within_the_configured_connections(
    fresh_postgres_url: str,
    tmp_path: Path,
    log_signer: Ed25519Signer,
    insurer_signer: Ed25519Signer,
    operator_signer: Ed25519Signer,
) -> None:
    key_file, _ = prepare_log(
        fresh_postgres_url, tmp_path, log_signer, insurer_signer, operator_signer
    )
    named = make_url(fresh_postgres_url).update_query_dict({"application_name": APPLICATION})
    server = start_server_process(
        named.render_as_string(hide_password=False),
        key_file,
        tmp_path,
        workers=2,
        extra_arguments=[
            "--metrics-port", "0",
            "--database-pool-size", str(SIZE_TOTAL),
            "--database-pool-overflow", "0",
        ],
    )  # fmt: skip
    test_engine = create_engine(fresh_postgres_url, pool_size=2, max_overflow=0)
    try:
        with test_engine.connect() as locker, test_engine.connect() as counter:
            locking = locker.begin()
            locker.execute(
                text("LOCK TABLE log_entries, checkpoints, tree_nodes IN ACCESS EXCLUSIVE MODE")
            )
            with ThreadPoolExecutor(CALLS) as callers:
                answers = [callers.submit(_entries, server) for _ in range(CALLS)]
                while _started_calls(server) < CALLS:
                    assert not any(answer.done() for answer in answers)  # the lock holds them
                while _server_connections(counter, waiting=True) < len(WORKERS):
                    pass  # until reads wait on the lock, each holding its connection
                counts = [_server_connections(counter) for _ in range(20)]
                locking.rollback()  # the reads go on
                assert all(answer.result() == 2 for answer in answers)
        assert max(counts) <= SIZE_TOTAL, f"connections seen: {sorted(set(counts))}"
    finally:
        test_engine.dispose()
        server.stop()
    assert server.process.returncode == 0, server.log_tail()


def test_totals_too_small_for_the_processes_refuse_to_start_before_the_database_is_opened(
    tmp_path: Path,
) -> None:
    database = tmp_path / "never.db"
    refused = subprocess.run(
        [sys.executable, "-m", "policy_ledger.cli", "serve", "--database", f"sqlite:///{database}",
         "--listen", "127.0.0.1:0", "--insecure-plaintext", "--log-key-file",
         str(tmp_path / "log.key"), "--workers", "2", "--database-pool-size", "5",
         "--operator-verifier", format_verifier_key(Ed25519Signer.generate("operator"))],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert refused.returncode == 2, refused.stderr
    assert "--database-pool-size=5 is too small for 3 processes" in refused.stderr
    assert "set it to 6 or more" in refused.stderr
    assert "Traceback" not in refused.stderr
    assert not database.exists()
