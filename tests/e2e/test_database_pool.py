"""``serve --workers N`` on PostgreSQL opens no more connections than its configured totals
(ledger/config.py ``divide_database_pool``; docs/operations.md "Database connections").

A real supervisor with two workers and a sequencer process, given 6 kept connections and no
overflow in all (2 each): while callers on new connections (so both workers take some) submit
events and read their inclusion proofs, a connection of the test's own counts the server's
connections in ``pg_stat_activity`` (they carry the ``application_name`` of the server's URL)
until the load is over. Before the pool was divided, each process could open 8 + 8. The rule
itself, for any N: tests/unit/test_database_pool.py.
"""

from __future__ import annotations

import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from sqlalchemy import create_engine, make_url, text

from ledger.signing import Ed25519Signer, format_verifier_key
from tests.durability.processes import start_server_process
from tests.durability.test_crash import prepare_log
from tests.e2e.test_workers import submit_once, submit_until_both_workers_answered

APPLICATION = "pool-division-test"
SIZE_TOTAL = 6
"""Kept connections of the whole server: 2 for each of its three processes."""
CALLERS = 16
SUBMISSIONS = 64


@pytest.mark.postgres
def test_two_workers_and_the_sequencer_stay_within_the_configured_connections(
    fresh_postgres_url: str,
    tmp_path: Path,
    log_signer: Ed25519Signer,
    insurer_signer: Ed25519Signer,
    operator_signer: Ed25519Signer,
) -> None:
    key_file, ledger = prepare_log(
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
    counter = create_engine(fresh_postgres_url, pool_size=1, max_overflow=0)
    counts: list[int] = []
    load_over = threading.Event()

    def count_connections() -> None:
        with counter.connect() as connection:
            while not load_over.is_set():
                counts.append(
                    connection.execute(
                        text(
                            "SELECT count(*) FROM pg_stat_activity"
                            " WHERE datname = current_database() AND application_name = :name"
                        ),
                        {"name": APPLICATION},
                    ).scalar_one()
                )
                connection.rollback()  # a fresh snapshot of the statistics each time

    sampler = threading.Thread(target=count_connections)
    try:
        submit_until_both_workers_answered(server, ledger)
        sampler.start()
        with ThreadPoolExecutor(CALLERS) as callers:
            receipts = list(callers.map(lambda _: submit_once(server, ledger), range(SUBMISSIONS)))
        load_over.set()
        sampler.join()
        assert len({receipt.leaf_index for receipt in receipts}) == SUBMISSIONS
        assert counts, "the sampler counted nothing"
        assert max(counts) <= SIZE_TOTAL, f"connections seen: {sorted(set(counts))}"
        # Every process used the database (the sequencer appended, each worker read proofs)
        # and keeps its kept connections: the count is of real connections.
        assert counts[-1] >= 3
    finally:
        load_over.set()
        if sampler.is_alive():
            sampler.join()
        counter.dispose()
        server.stop()
    assert server.process.returncode == 0, server.log_tail()


def test_totals_too_small_for_the_processes_refuse_to_start_before_the_database_is_opened(
    tmp_path: Path,
) -> None:
    database = tmp_path / "never.db"
    refused = subprocess.run(
        [sys.executable, "-m", "ledger.cli", "serve", "--database", f"sqlite:///{database}",
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
