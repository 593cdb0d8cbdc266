"""Crash durability (issue 15, item 5): SIGKILL under load, restart, and lose nothing acknowledged.

Each cycle starts streaming and unary submitters, waits for a seeded random number of receipts
(the moment is chosen by events, not by a clock), then SIGKILLs the `policy-ledger serve`
process, or the test's own PostgreSQL, and restarts it. After every cycle: every acknowledged
receipt is at its index with its hash, every checkpoint seen is consistent with the next, the
full audit passes, and resubmitting the unacknowledged events gets receipts, never a conflict.

The workers variant runs the same cycles against `serve --workers 2`, SIGKILLing the sequencer
process or the workers instead of the whole server. A few cycles run in `make test`; `make crash`
runs many (POLICY_LEDGER_CRASH_CYCLES, and
POLICY_LEDGER_CRASH_SEED to replay a run).
"""

from __future__ import annotations

import collections
import datetime as dt
import itertools
import os
import random
import signal
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest

from clients.auditor import AuditorClient
from clients.verify import TrustedLog
from ledger import limits
from ledger.signing import Ed25519Signer, format_signer_key, format_verifier_key
from ledger.storage.append import Appender
from ledger.storage.db import create_ledger_engine, sqlite_url
from ledger.storage.migrate import upgrade
from tests.builders import use_vault
from tests.conftest import onboard_directly
from tests.durability.processes import (
    PostgresInstance,
    ServerProcess,
    postgres_binaries,
    postgres_instance,
    start_server_process,
)
from tests.durability.workload import (
    Ledger,
    Load,
    Recorded,
    check_checkpoints_consistent,
    check_nothing_acknowledged_is_lost,
    resubmit_unacknowledged,
)

CYCLES = int(os.environ.get("POLICY_LEDGER_CRASH_CYCLES", "2"))
SEED = int(os.environ.get("POLICY_LEDGER_CRASH_SEED", "15"))
RECEIPTS_BEFORE_KILL_MAX = 60
"""A kill comes after 1..this many new receipts (seeded), while submitters are in flight."""
STREAMS = 2
UNARY_CALLERS = 2
INSURER = "gulf-health"


def prepare_log(
    database_url: str,
    workdir: Path,
    log_signer: Ed25519Signer,
    insurer_signer: Ed25519Signer,
    operator_signer: Ed25519Signer,
) -> tuple[Path, Ledger]:
    """Migrate, license INSURER on the database, and write the log key the server reads."""
    engine = create_ledger_engine(database_url)
    try:
        upgrade(engine)
        appender = Appender(engine, log_signer, log_signer.name)
        now = dt.datetime.now(dt.UTC)
        appender.initialize(now)
        onboard_directly(engine, appender, operator_signer, INSURER, insurer_signer, now)
    finally:
        engine.dispose()
    # The workload's events name people by tokens this process issues straight into the vault
    # (as GetPersonTokens would): a token call to a server being killed would muddle what the
    # crash test counts.
    use_vault(create_ledger_engine(database_url))
    workdir.mkdir(parents=True, exist_ok=True)
    key_file = workdir / "log.key"
    key_file.write_text(format_signer_key(log_signer) + "\n", encoding="utf-8")
    trusted = TrustedLog.from_verifier_key(format_verifier_key(log_signer))
    return key_file, Ledger(trusted, INSURER, insurer_signer, operator_signer, log_signer)


def check_log(server: ServerProcess, ledger: Ledger, recorded: Recorded) -> None:
    """The four checks of a cycle, against the restarted server."""
    with (
        server.channel("auditor", "crash-test") as channel,
        server.channel("insurer", ledger.insurer_id) as insurer_channel,
    ):
        auditor = AuditorClient(channel, log=ledger.log)
        check_nothing_acknowledged_is_lost(auditor, recorded)
        resubmit_unacknowledged(insurer_channel, ledger, recorded)
        latest = check_nothing_acknowledged_is_lost(auditor, recorded)
        check_checkpoints_consistent(auditor, [*recorded.checkpoints, latest])
        report = auditor.audit(ledger.insurer_keys(), checkpoint=latest)
        assert report.entries_checked == latest.size >= len(recorded.receipts)


def run_cycles(
    start: Iterator[ServerProcess],
    kill_and_restart: object,
    ledger: Ledger,
    between: Callable[[ServerProcess], ServerProcess] | None = None,
) -> Recorded:
    """Load, kill at a seeded moment, restart, check; ``CYCLES`` times. ``between``: called
    with the server after each cycle's checks, with no load running; returns the server to
    go on with."""
    rng = random.Random(SEED)
    recorded = Recorded()
    server = next(start)
    try:
        for cycle in range(CYCLES):
            with server.channel("insurer", INSURER) as channel:
                load = Load(ledger, recorded, first_block=cycle * (STREAMS + UNARY_CALLERS))
                load.start(channel, STREAMS, UNARY_CALLERS)
                target = len(recorded.receipts) + rng.randint(1, RECEIPTS_BEFORE_KILL_MAX)
                recorded.wait_for_receipts(target, load.stopped)
                server = kill_and_restart(server)  # type: ignore[operator]
                load.join()
            check_log(server, ledger, recorded)
            if between is not None:
                server = between(server)
    finally:
        server.stop()
    for refusal in recorded.refusals:
        assert refusal.code == grpc.StatusCode.UNAVAILABLE, str(refusal)
    return recorded


def _servers(database_url: str, key_file: Path, workdir: Path) -> Iterator[ServerProcess]:
    while True:
        yield start_server_process(database_url, key_file, workdir)


@pytest.mark.parametrize(
    "engine_name", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
def test_a_killed_server_loses_nothing_it_acknowledged(
    request: pytest.FixtureRequest,
    engine_name: str,
    tmp_path: Path,
    log_signer: Ed25519Signer,
    insurer_signer: Ed25519Signer,
    operator_signer: Ed25519Signer,
) -> None:
    if engine_name == "sqlite":
        database_url = sqlite_url(tmp_path / "ledger.db")
    else:
        database_url = str(request.getfixturevalue("fresh_postgres_url"))
    key_file, ledger = prepare_log(
        database_url, tmp_path, log_signer, insurer_signer, operator_signer
    )
    servers = _servers(database_url, key_file, tmp_path)

    def kill_and_restart(server: ServerProcess) -> ServerProcess:
        server.kill()
        return next(servers)

    recorded = run_cycles(servers, kill_and_restart, ledger)
    assert recorded.receipts


@pytest.mark.postgres
def test_a_killed_postgres_loses_nothing_the_server_acknowledged(
    tmp_path: Path,
    log_signer: Ed25519Signer,
    insurer_signer: Ed25519Signer,
    operator_signer: Ed25519Signer,
) -> None:
    if postgres_binaries() is None:
        pytest.skip("no initdb/postgres binaries (PATH or /usr/lib/postgresql/*/bin)")
    with postgres_instance() as postgres:
        key_file, ledger = prepare_log(
            postgres.url, tmp_path, log_signer, insurer_signer, operator_signer
        )
        servers = _servers(postgres.url, key_file, tmp_path)

        def kill_and_restart(server: ServerProcess) -> ServerProcess:
            _restart(postgres)
            return server  # the ledger server stays up and must recover on its own

        recorded = run_cycles(servers, kill_and_restart, ledger)
    assert recorded.receipts


def _restart(postgres: PostgresInstance) -> None:
    postgres.kill()
    postgres.start()


WORKERS = 2
"""Workers of the supervised variant (``serve --workers``)."""


@pytest.mark.parametrize(
    "engine_name", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]
)
def test_a_killed_sequencer_or_worker_process_loses_nothing_acknowledged(
    request: pytest.FixtureRequest,
    engine_name: str,
    tmp_path: Path,
    log_signer: Ed25519Signer,
    insurer_signer: Ed25519Signer,
    operator_signer: Ed25519Signer,
) -> None:
    """``serve --workers 2``: the cycles SIGKILL the sequencer process, then every worker, in
    turn; the supervisor restarts them and the same server answers the checks. Every refusal
    the load saw is UNAVAILABLE (run_cycles), never INTERNAL or a wrong answer."""
    if engine_name == "sqlite":
        database_url = sqlite_url(tmp_path / "ledger.db")
    else:
        database_url = str(request.getfixturevalue("fresh_postgres_url"))
    key_file, ledger = prepare_log(
        database_url, tmp_path, log_signer, insurer_signer, operator_signer
    )
    workers = [f"worker-{number}" for number in range(1, WORKERS + 1)]
    victims = itertools.cycle([["sequencer"], workers])

    def supervised() -> Iterator[ServerProcess]:
        while True:
            yield start_server_process(database_url, key_file, tmp_path, workers=WORKERS)

    kills: collections.Counter[str] = collections.Counter()

    def kill_and_restart(server: ServerProcess) -> ServerProcess:
        names = next(victims)
        for name in names:
            os.kill(server.pids[name], signal.SIGKILL)
            kills[name] += 1
        server.wait_for_restarts(*names)
        return server  # the supervisor stays up; its restarted processes answer the checks

    def between(server: ServerProcess) -> ServerProcess:
        # The supervisor gives up on a process that dies that often within a minute (by
        # design): before the next kill would reach that, and with no load running, a new
        # supervisor starts with a clean count (no test waits a minute).
        if max(kills.values(), default=0) + 1 < limits.process_restarts_per_minute_max:
            return server
        server.stop()
        kills.clear()
        return next(server_processes)

    server_processes = supervised()
    recorded = run_cycles(server_processes, kill_and_restart, ledger, between)
    assert recorded.receipts
