"""`serve --workers N` (issue 13 items 1, 2 and 11): a supervisor, one sequencer process and N
workers on one port, as real processes.

Submissions and reads go through both workers (each connection is a new one: the kernel spreads
them), the supervisor's metrics endpoint shows every child's series with a ``process`` label and
its restart counter, a killed worker or sequencer is restarted while the service goes on
(submissions answer UNAVAILABLE while the sequencer is down, reads do not stop), SIGTERM drains
the workers before the sequencer, killing the supervisor takes its children with it, and a
second supervisor on the port is refused, and a corruption only the sequencer process's writes
find turns every worker's health NOT_SERVING, for good (restarts included). Every wait is for an
event (a printed line, a health status, a process's exit), never for time.
"""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from clients.auditor import AuditorClient
from clients.errors import ClientError
from clients.insurer import InsurerClient
from clients.samples import policy_issued
from clients.verify import VerifiedReceipt
from ledger.errors import FailedPrecondition
from ledger.rpc.supervisor import hold_listen_address
from ledger.signing import Ed25519Signer, format_verifier_key
from ledger.storage.db import sqlite_url
from tests.builders import tokens
from tests.durability.processes import ServerProcess, exited_within, start_server_process
from tests.durability.test_crash import INSURER, prepare_log
from tests.durability.workload import OCCURRED_AT, Ledger
from tests.e2e.test_metrics import Samples, rpc, samples_of, scrape_text, value
from tests.sqlite_pages import damage_root_page

WORKERS = ("worker-1", "worker-2")
CONNECTIONS_MAX = 64
"""New connections opened at most until both workers answered one (the kernel spreads them at
random: 64 landing on one worker is a 1 in 2**63 event)."""
_numbers = itertools.count()


@pytest.fixture
def prepared(
    tmp_path: Path,
    log_signer: Ed25519Signer,
    insurer_signer: Ed25519Signer,
    operator_signer: Ed25519Signer,
) -> tuple[str, Path, Ledger]:
    """A migrated SQLite log with INSURER licensed, and the log key file."""
    database_url = sqlite_url(tmp_path / "ledger.db")
    key_file, ledger = prepare_log(
        database_url, tmp_path, log_signer, insurer_signer, operator_signer
    )
    return database_url, key_file, ledger


@pytest.fixture
def supervised(prepared: tuple[str, Path, Ledger], tmp_path: Path) -> Iterator[ServerProcess]:
    """`serve --workers 2 --metrics-port 0` on the prepared log."""
    database_url, key_file, _ = prepared
    server = start_server_process(
        database_url, key_file, tmp_path, workers=2, extra_arguments=["--metrics-port", "0"]
    )
    yield server
    if server.process.poll() is None:
        server.kill()


def new_connection(server: ServerProcess, role: str, name: str) -> grpc.Channel:
    """A channel with a connection of its own (not shared through gRPC's subchannel pool), so
    the kernel picks a worker for it anew."""
    from tests.conftest import session_pki

    credentials = session_pki().credentials(role, name).channel_credentials()
    return grpc.secure_channel(
        server.address, credentials, options=[("grpc.use_local_subchannel_pool", 1)]
    )


def submit_once(server: ServerProcess, ledger: Ledger) -> VerifiedReceipt:
    """Submit one new event on a new connection; its verified receipt (the client checks its
    inclusion proof: a read, on the same worker)."""
    with new_connection(server, "insurer", INSURER) as channel:
        insurer = InsurerClient(channel, signer=ledger.insurer_signer, log=ledger.log)
        event = policy_issued(next(_numbers), INSURER, OCCURRED_AT, tokens=tokens)
        return insurer.submit(event)


def metrics_port(server: ServerProcess) -> int:
    line = next(line for line in server.announced if line.startswith("metrics on port "))
    return int(line.split()[-1])


def scrape(server: ServerProcess) -> Samples:
    return samples_of(scrape_text(metrics_port(server)))


SUBMIT = rpc("unary_unary", "SubmitEvent")


def submit_until_both_workers_answered(
    server: ServerProcess, ledger: Ledger
) -> list[VerifiedReceipt]:
    receipts = []
    for _ in range(CONNECTIONS_MAX):
        receipts.append(submit_once(server, ledger))
        samples = scrape(server)
        answered = {
            worker
            for worker in WORKERS
            if value(samples, "grpc_server_handled_total", **SUBMIT, grpc_code="OK", process=worker)
        }
        if answered == set(WORKERS):
            return receipts
    raise AssertionError(f"{CONNECTIONS_MAX} connections, and not every worker answered one")


def stop_and_check_drained(server: ServerProcess) -> None:
    """SIGTERM: exit 0, "stopped cleanly", the workers stopped before the sequencer, no child
    left."""
    server.stop()
    assert server.process.returncode == 0, server.log_tail()
    assert server.process.stdout is not None
    assert "policy-ledger stopped cleanly" in server.process.stdout.read()
    log = server.log_path.read_text(encoding="utf-8")
    sequencer_stopped = log.index("sequencer process stopped")
    for worker in WORKERS:
        assert log.index(f"worker {worker} stopped") < sequencer_stopped
    for pid in server.pids.values():
        assert not _alive(pid)


def _alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie, dead and not yet reaped, does not)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def test_both_workers_answer_and_the_supervisor_shows_every_process_s_series(
    supervised: ServerProcess, prepared: tuple[str, Path, Ledger]
) -> None:
    _, _, ledger = prepared
    receipts = submit_until_both_workers_answered(supervised, ledger)
    assert len({receipt.leaf_index for receipt in receipts}) == len(receipts)
    samples = scrape(supervised)
    for worker in WORKERS:
        assert value(samples, "grpc_server_handling_seconds_count", **SUBMIT, process=worker) > 0
        assert value(samples, "grpc_server_started_total", **SUBMIT, process=worker) > 0
    total = sum(
        value(samples, "grpc_server_handled_total", **SUBMIT, grpc_code="OK", process=worker)
        for worker in WORKERS
    )
    assert total == len(receipts)
    sequencer = {"process": "sequencer"}
    assert value(samples, "policy_ledger_entries_appended_total", **sequencer) == len(receipts)
    assert value(samples, "policy_ledger_sequencer_batch_entries_sum", **sequencer) == len(receipts)
    batches = value(
        samples, "policy_ledger_sequencer_batches_total", outcome="committed", **sequencer
    )
    assert 1 <= batches <= len(receipts)
    assert value(samples, "policy_ledger_sequencer_commit_seconds_count", **sequencer) == batches
    assert value(samples, "policy_ledger_sequencer_queue_entries", **sequencer) == 0
    last = max(receipt.leaf_index for receipt in receipts) + 1
    assert value(samples, "policy_ledger_tree_size", **sequencer) == last
    assert value(samples, "policy_ledger_worker_restarts_total", process="worker") == 0
    assert value(samples, "policy_ledger_worker_restarts_total", process="sequencer") == 0
    for process in ("sequencer", *WORKERS):
        assert value(samples, "policy_ledger_process_up", process=process) == 1
    stop_and_check_drained(supervised)


def test_a_killed_worker_is_restarted_and_counted_and_service_goes_on(
    supervised: ServerProcess, prepared: tuple[str, Path, Ledger]
) -> None:
    _, _, ledger = prepared
    old = supervised.pids["worker-1"]
    os.kill(old, signal.SIGKILL)
    supervised.wait_for_restarts("worker-1")
    assert supervised.pids["worker-1"] != old
    samples = scrape(supervised)
    assert value(samples, "policy_ledger_worker_restarts_total", process="worker") == 1
    assert value(samples, "policy_ledger_worker_restarts_total", process="sequencer") == 0
    submit_until_both_workers_answered(supervised, ledger)  # the new worker-1 answers too
    stop_and_check_drained(supervised)


def test_while_the_sequencer_is_down_submissions_are_unavailable_and_reads_go_on(
    supervised: ServerProcess, prepared: tuple[str, Path, Ledger]
) -> None:
    _, _, ledger = prepared
    before = submit_once(supervised, ledger)
    # The supervisor is stopped first, so the sequencer stays down until it is continued.
    os.kill(supervised.process.pid, signal.SIGSTOP)
    try:
        os.kill(supervised.pids["sequencer"], signal.SIGKILL)
        with new_connection(supervised, "auditor", "workers") as channel:
            _wait_for_health(channel, health_pb2.HealthCheckResponse.NOT_SERVING)
            checkpoint = AuditorClient(channel, log=ledger.log).checkpoint()  # verified
        assert checkpoint.size >= before.leaf_index + 1
        event = policy_issued(next(_numbers), INSURER, OCCURRED_AT, tokens=tokens)
        with new_connection(supervised, "insurer", INSURER) as channel:
            insurer = InsurerClient(channel, signer=ledger.insurer_signer, log=ledger.log)
            with pytest.raises(ClientError) as refused:
                insurer.submit(event)
        assert refused.value.code == grpc.StatusCode.UNAVAILABLE, str(refused.value)
    finally:
        os.kill(supervised.process.pid, signal.SIGCONT)
    supervised.wait_for_restarts("sequencer")
    samples = scrape(supervised)
    assert value(samples, "policy_ledger_worker_restarts_total", process="sequencer") == 1
    with new_connection(supervised, "insurer", INSURER) as channel:
        insurer = InsurerClient(channel, signer=ledger.insurer_signer, log=ledger.log)
        again = insurer.submit(event)  # retry-safe: the event id is idempotent
    assert again.leaf_index > before.leaf_index
    stop_and_check_drained(supervised)


HEALTH_CHECK = rpc("unary_unary", "Check", "grpc.health.v1.Health")


def _wait_until_every_worker_says(
    server: ServerProcess, status: int, *, already: bool = False
) -> None:
    """Return once each worker answered a health check with ``status`` (each check on a new
    connection, which the kernel gives to a worker at random; the supervisor's metrics say
    which worker answered it). Bounded: a worker that never says it fails the test; with
    ``already``, so does any other answer."""
    said: set[str] = set()

    def checks() -> dict[str, float]:
        samples = scrape(server)
        handled = "grpc_server_handled_total"
        return {
            w: value(samples, handled, **HEALTH_CHECK, grpc_code="OK", process=w) for w in WORKERS
        }

    before = checks()
    for _ in range(4 * CONNECTIONS_MAX):
        with new_connection(server, "auditor", "health") as channel:
            answer = health_pb2_grpc.HealthStub(channel).Check(
                health_pb2.HealthCheckRequest(), timeout=30
            )
        after = checks()
        (worker,) = (w for w in WORKERS if after[w] != before[w])
        before = after
        assert answer.status == status or not already, f"{worker} said {answer.status}"
        if answer.status == status:
            said.add(worker)
            if said == set(WORKERS):
                return
    raise AssertionError(f"only {sorted(said)} answered {status}")


def test_a_corruption_the_sequencer_confirms_turns_every_worker_not_serving_for_good(
    prepared: tuple[str, Path, Ledger], tmp_path: Path
) -> None:
    database_url, key_file, ledger = prepared
    # The leaf-hash index's root: an append writes it, no worker's read or startup touches it,
    # so only the sequencer process finds the damage (its check confirms it) and the workers'
    # own watches see nothing.
    damage_root_page(tmp_path / "ledger.db", "ix_log_entries_leaf_hash")
    server = start_server_process(
        database_url, key_file, tmp_path, workers=2, extra_arguments=["--metrics-port", "0"]
    )
    try:
        with new_connection(server, "auditor", "workers") as channel:
            size = AuditorClient(channel, log=ledger.log).checkpoint().size
        with new_connection(server, "insurer", INSURER) as channel:
            insurer = InsurerClient(channel, signer=ledger.insurer_signer, log=ledger.log)
            event = policy_issued(next(_numbers), INSURER, OCCURRED_AT, tokens=tokens)
            with pytest.raises(ClientError) as refused:
                insurer.submit(event)
        assert refused.value.code == grpc.StatusCode.UNAVAILABLE, str(refused.value)
        assert refused.value.reason == "STORAGE_CORRUPT", str(refused.value)

        _wait_until_every_worker_says(server, health_pb2.HealthCheckResponse.NOT_SERVING)
        samples = scrape(server)
        for process in ("sequencer", *WORKERS):
            assert value(samples, "policy_ledger_storage_corrupt", process=process) == 1
        log = server.log_path.read_text(encoding="utf-8")
        assert log.count("STORAGE CORRUPT: the database") == 1  # the sequencer's check
        assert log.count("STORAGE CORRUPT: the sequencer process confirmed") == len(WORKERS)
        with new_connection(server, "auditor", "workers") as channel:
            assert AuditorClient(channel, log=ledger.log).checkpoint().size == size  # reads go on

        # A restarted sequencer, which the workers reconnect to, does not undo it: the
        # supervisor passes it the finding, so its gauge is 1 from its start and the write that
        # meets the damage again answers STORAGE_CORRUPT with no check of its own.
        os.kill(server.pids["sequencer"], signal.SIGKILL)
        server.wait_for_restarts("sequencer")  # once every worker said it reconnected
        samples = scrape(server)
        assert value(samples, "policy_ledger_storage_corrupt", process="sequencer") == 1
        _wait_until_every_worker_says(
            server, health_pb2.HealthCheckResponse.NOT_SERVING, already=True
        )
        with new_connection(server, "insurer", INSURER) as channel:
            insurer = InsurerClient(channel, signer=ledger.insurer_signer, log=ledger.log)
            with pytest.raises(ClientError) as refused:
                insurer.submit(event)
        assert refused.value.code == grpc.StatusCode.UNAVAILABLE, str(refused.value)
        assert refused.value.reason == "STORAGE_CORRUPT", str(refused.value)
        log = server.log_path.read_text(encoding="utf-8")
        assert log.count("STORAGE CORRUPT: the database") == 1  # no new round of checks
        assert log.count("the sequencer process before this one's restart confirmed") == 1
        # A worker started after it (a restart) is told by the supervisor at its start (the
        # finding is its argument) and never answers SERVING, not even its first check.
        os.kill(server.pids["worker-1"], signal.SIGKILL)
        server.wait_for_restarts("worker-1")
        _wait_until_every_worker_says(
            server, health_pb2.HealthCheckResponse.NOT_SERVING, already=True
        )
        samples = scrape(server)
        for worker in WORKERS:
            assert value(samples, "policy_ledger_storage_corrupt", process=worker) == 1
        stop_and_check_drained(server)
    finally:
        if server.process.poll() is None:
            server.kill()


def _wait_for_health(channel: grpc.Channel, status: int) -> None:
    """Return once the health service (of the worker this connection reached) says ``status``."""
    for answer in health_pb2_grpc.HealthStub(channel).Watch(
        health_pb2.HealthCheckRequest(), timeout=120
    ):
        if answer.status == status:
            return


def test_killing_the_supervisor_takes_every_child_with_it(supervised: ServerProcess) -> None:
    children = list(supervised.pids.values())
    assert len(children) == 3
    supervised.kill()
    for pid in children:
        assert exited_within(pid, 120), f"child {pid} outlived its supervisor"
        assert not _alive(pid)


def test_a_second_supervisor_on_the_port_or_the_sqlite_file_is_refused(
    supervised: ServerProcess, prepared: tuple[str, Path, Ledger], tmp_path: Path
) -> None:
    database_url, key_file, _ = prepared

    def second(database: str, listen: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "policy_ledger.cli", "serve", "--database", database,
             "--listen", listen, "--log-key-file", str(key_file), "--insecure-plaintext",
             "--workers", "1",
             "--operator-verifier", format_verifier_key(Ed25519Signer.generate("operator"))],
            capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip

    on_the_port = second(sqlite_url(tmp_path / "other.db"), supervised.address)
    assert on_the_port.returncode == 2, on_the_port.stderr
    assert f"cannot listen on {supervised.address}" in on_the_port.stderr
    assert "Traceback" not in on_the_port.stderr
    assert not (tmp_path / "other.db").exists()  # refused before the database was opened
    on_the_file = second(database_url, "127.0.0.1:0")
    assert on_the_file.returncode == 2, on_the_file.stderr
    assert "already served by another server" in on_the_file.stderr
    assert supervised.process.poll() is None
    stop_and_check_drained(supervised)


def test_the_listen_lock_refuses_a_second_holder_even_where_so_reuseport_would_let_it_bind() -> (
    None
):
    # The placeholder binds with SO_REUSEPORT, so a second bind of the same user would succeed:
    # the lock is what refuses it.
    held = hold_listen_address("127.0.0.1:0")
    try:
        with pytest.raises(FailedPrecondition) as refused:
            hold_listen_address(f"127.0.0.1:{held.port}")
        assert refused.value.reason == "ADDRESS_IN_USE"
        assert "another policy-ledger supervisor" in refused.value.message
    finally:
        held.close()
    again = hold_listen_address(f"127.0.0.1:{held.port}")  # released: free again
    again.close()
