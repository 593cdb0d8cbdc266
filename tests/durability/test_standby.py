"""Reads from a real streaming-replication hot standby (issue 13 item 4, ``serve --read-database``).

The tests own both PostgreSQL servers (``tests/durability/standby.py``): a primary initdb'd with
``wal_level=replica`` and a ``pg_basebackup -R`` of it running as a hot standby on another port.
Which database answered is proven by content, not timing: with the standby's replay paused
(``pg_wal_replay_pause()``), a write acknowledged by the primary is absent from the standby, so
an answer without it (and at the older tree size) came from the standby, and one with it from the
primary. The server's standby metrics must say the same.

Then the crash check of ``tests/durability/test_crash.py`` with the standby in the read path: a
`serve` subprocess SIGKILLed under load loses no acknowledged entry, history stays linear and
every checkpoint is consistent with every earlier one, all read through the routed server with
the receipts' tree size as ``x-min-tree-size``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import random
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from clients.audit_cli import _watch
from clients.auditor import AuditorClient
from clients.insurer import InsurerClient
from clients.portal import PortalClient
from clients.samples import household, policy_issued
from clients.verify import VerifiedReceipt
from ledger.signing import Ed25519Signer
from ledger.v1 import ledger_service_pb2 as pb
from ledger.v1 import ledger_service_pb2_grpc as pb_grpc
from tests.builders import tokens
from tests.conftest import ServerHandle, start_server_thread
from tests.durability.processes import ServerProcess, start_server_process
from tests.durability.standby import StandbyPair, standby_pair, standby_unavailable
from tests.durability.test_crash import INSURER, RECEIPTS_BEFORE_KILL_MAX, SEED, prepare_log
from tests.durability.workload import (
    OCCURRED_AT,
    Ledger,
    Load,
    Recorded,
    check_checkpoints_consistent,
    check_nothing_acknowledged_is_lost,
    resubmit_unacknowledged,
)

pytestmark = pytest.mark.postgres

CYCLES = 2
"""Kill cycles of the crash check here (``make crash`` runs the long ones without a standby)."""
ON_DAY = OCCURRED_AT.date() + dt.timedelta(days=10)


@pytest.fixture(scope="module")
def pair() -> Iterator[StandbyPair]:
    reason = standby_unavailable()
    if reason is not None:
        pytest.skip(f"no read standby can be started: {reason}")
    with standby_pair() as started:
        yield started


def _sample(name: str, handle: ServerHandle, **labels: str) -> float:
    metrics = handle.running.metrics
    assert metrics is not None
    value = metrics.registry.get_sample_value(name, labels)
    return 0.0 if value is None else value


def _issue(handle: ServerHandle, ledger: Ledger, number: int) -> VerifiedReceipt:
    with handle.channel("insurer", INSURER) as channel:
        client = InsurerClient(channel, signer=ledger.insurer_signer, log=ledger.log)
        return client.submit(policy_issued(number, INSURER, OCCURRED_AT, tokens=tokens))


def _covered(
    handle: ServerHandle, ledger: Ledger, number: int, min_size: int = 0
) -> tuple[bool, int]:
    """Whether household ``number``'s sponsor is covered on ON_DAY, and the answer's size."""
    with handle.channel("auditor", "standby-test") as channel:
        portal = PortalClient(channel, log=ledger.log, min_tree_size=min_size)
        answer = portal.get_coverage(household(number)[0], ON_DAY)
    return bool(answer.response.coverages), answer.checkpoint.size


def _household_size(handle: ServerHandle, ledger: Ledger, number: int, min_size: int) -> int:
    with handle.channel("auditor", "standby-test") as channel:
        portal = PortalClient(channel, log=ledger.log, min_tree_size=min_size)
        answer = portal.check_household(household(number)[0], [], through=ON_DAY, as_of=ON_DAY)
    return answer.checkpoint.size


def _watch_args(server: ServerHandle, state: Path) -> argparse.Namespace:
    return argparse.Namespace(
        server=server.address,
        credentials=str(server.pki.directory),
        identity=f"auditor-{server.pki.client('auditor', 'auditor') and 'auditor'}",
        insecure_plaintext=False,
        log_verifier=server.log_verifier_key,
        state=str(state),
        interval=0.01,
        iterations=1,
    )


def _start(
    primary_url: str,
    standby_url: str,
    ledger_signer: Ed25519Signer,
    tmp_path: Path,
    **changes: object,
) -> ServerHandle:
    tmp_path.mkdir(parents=True, exist_ok=True)
    return start_server_thread(
        primary_url,
        ledger_signer,
        tmp_path,
        config_changes={"read_database_url": standby_url, "metrics_port": 0, **changes},
    )


def test_reads_come_from_a_fresh_standby_and_never_from_before_a_receipt(
    pair: StandbyPair,
    tmp_path: Path,
    log_signer: Ed25519Signer,
    insurer_signer: Ed25519Signer,
    operator_signer: Ed25519Signer,
) -> None:
    primary_url, standby_url = pair.database()
    _, ledger = prepare_log(primary_url, tmp_path, log_signer, insurer_signer, operator_signer)
    handle = _start(primary_url, standby_url, log_signer, tmp_path)
    try:
        first = _issue(handle, ledger, 1)
        pair.caught_up()
        # Fresh: the standby answers, at the primary's size.
        assert _covered(handle, ledger, 1) == (True, first.checkpoint.size)
        assert _sample("policy_ledger_standby_reads_total", handle) == 1
        assert _sample("policy_ledger_standby_lag_entries", handle) == 0

        pair.pause_replay()
        second = _issue(handle, ledger, 2)  # acknowledged: durable on the primary
        assert second.checkpoint.size == first.checkpoint.size + 1
        # Within the lag bound and no receipt presented: the standby answers, without the new
        # policy, at the size it has replayed (the answer says so).
        assert _covered(handle, ledger, 2) == (False, first.checkpoint.size)
        assert _sample("policy_ledger_standby_reads_total", handle) == 2
        assert _sample("policy_ledger_standby_lag_entries", handle) == 1
        # The receipt's size presented: never an answer from before it (the primary answers).
        receipt_size = second.checkpoint.size
        assert _covered(handle, ledger, 2, receipt_size) == (True, receipt_size)
        assert _household_size(handle, ledger, 2, receipt_size) == receipt_size
        with handle.channel("auditor", "standby-test") as channel:
            auditor = AuditorClient(channel, log=ledger.log, min_tree_size=receipt_size)
            assert auditor.checkpoint().size == receipt_size
            assert auditor.verify_inclusion(second.leaf_index, second.checkpoint)
            # Entries the standby lacks are read from the primary even without a receipt, and
            # the answer carries the size it was read at.
            stub = pb_grpc.LedgerServiceStub(channel)
            [chunk] = stub.GetEntries(
                pb.GetEntriesRequest(start_index=second.leaf_index, end_index=receipt_size)
            )
            assert (chunk.start_index, len(chunk.entries)) == (second.leaf_index, 1)
            assert chunk.tree_size == receipt_size
            # A leaf the standby has not replayed, asked for by hash: the standby cannot find
            # it, so the primary answers (no NOT_FOUND for an acknowledged entry).
            proof = stub.GetInclusionProof(pb.GetInclusionProofRequest(leaf_hash=second.leaf_hash))
            assert (proof.leaf_index, proof.tree_size) == (second.leaf_index, receipt_size)
            failed = _sample(
                "policy_ledger_standby_bypassed_total", handle, reason="standby_failed"
            )
            assert failed == 1
        bypassed = _sample(
            "policy_ledger_standby_bypassed_total", handle, reason="behind_min_tree_size"
        )
        assert bypassed == 6  # coverage, household, checkpoint, entry + proof, entries
        # `audit watch` that has seen the newest checkpoint presents its size: the stale
        # standby is no rollback to it.
        with handle.channel("auditor", "standby-test") as channel:
            note = (
                pb_grpc.LedgerServiceStub(channel)
                .GetCheckpoint(
                    pb.GetCheckpointRequest(), metadata=(("x-min-tree-size", str(receipt_size)),)
                )
                .checkpoint
            )
        state = tmp_path / "watch.json"
        state.write_text(json.dumps({"checkpoints": [note.decode()]}), encoding="utf-8")
        assert _watch(_watch_args(handle, state)) == 0
        assert (
            _sample("policy_ledger_standby_bypassed_total", handle, reason="behind_min_tree_size")
            == 8
        )
        assert _sample("policy_ledger_standby_reads_total", handle) == 2

        # A server whose bound the lag exceeds bypasses the standby: the new entry is there.
        strict = _start(
            primary_url, standby_url, log_signer, tmp_path / "strict", read_lag_entries_max=0
        )
        try:
            assert _covered(strict, ledger, 2) == (True, receipt_size)
            assert _sample("policy_ledger_standby_bypassed_total", strict, reason="lagging") == 1
            assert _sample("policy_ledger_standby_reads_total", strict) == 0
        finally:
            strict.stop()

        # Replay resumed and caught up: the standby answers again, with the new policy.
        pair.caught_up()
        assert _covered(handle, ledger, 2) == (True, receipt_size)
        assert _sample("policy_ledger_standby_reads_total", handle) == 3
    finally:
        pair.caught_up()
        handle.stop()


def test_a_standby_that_does_not_answer_is_bypassed(
    pair: StandbyPair,
    tmp_path: Path,
    log_signer: Ed25519Signer,
    insurer_signer: Ed25519Signer,
    operator_signer: Ed25519Signer,
) -> None:
    primary_url, standby_url = pair.database()
    _, ledger = prepare_log(primary_url, tmp_path, log_signer, insurer_signer, operator_signer)
    unreachable = standby_url.rsplit("/", 1)[0] + "/no_such_database"
    handle = _start(primary_url, unreachable, log_signer, tmp_path)
    try:
        receipt = _issue(handle, ledger, 3)
        assert _covered(handle, ledger, 3) == (True, receipt.checkpoint.size)
        failed = _sample("policy_ledger_standby_bypassed_total", handle, reason="standby_failed")
        assert failed == 1
    finally:
        handle.stop()


def _check_log(server: ServerProcess, ledger: Ledger, recorded: Recorded) -> None:
    """test_crash's checks, read through the routed server with the receipts' size presented."""
    min_size = max((checkpoint.size for checkpoint in recorded.checkpoints), default=0)
    with (
        server.channel("auditor", "standby-crash-test") as channel,
        server.channel("insurer", ledger.insurer_id) as insurer_channel,
    ):
        auditor = AuditorClient(channel, log=ledger.log, min_tree_size=min_size)
        check_nothing_acknowledged_is_lost(auditor, recorded)
        resubmit_unacknowledged(insurer_channel, ledger, recorded)
        auditor.min_tree_size = max(checkpoint.size for checkpoint in recorded.checkpoints)
        latest = check_nothing_acknowledged_is_lost(auditor, recorded)
        check_checkpoints_consistent(auditor, [*recorded.checkpoints, latest])
        report = auditor.audit(ledger.insurer_keys(), checkpoint=latest)
        assert report.entries_checked == latest.size >= len(recorded.receipts)


def test_a_killed_server_reading_from_a_standby_loses_nothing_it_acknowledged(
    pair: StandbyPair,
    tmp_path: Path,
    log_signer: Ed25519Signer,
    insurer_signer: Ed25519Signer,
    operator_signer: Ed25519Signer,
) -> None:
    primary_url, standby_url = pair.database()
    key_file, ledger = prepare_log(
        primary_url, tmp_path, log_signer, insurer_signer, operator_signer
    )

    def start() -> ServerProcess:
        return start_server_process(
            primary_url, key_file, tmp_path, extra_arguments=["--read-database", standby_url]
        )

    rng = random.Random(SEED)
    recorded = Recorded()
    server = start()
    try:
        for cycle in range(CYCLES):
            with server.channel("insurer", INSURER) as channel:
                load = Load(ledger, recorded, first_block=cycle * 4)
                load.start(channel, streams=2, unary=2)
                target = len(recorded.receipts) + rng.randint(1, RECEIPTS_BEFORE_KILL_MAX)
                recorded.wait_for_receipts(target, load.stopped)
                server.kill()  # SIGKILL mid-load
                server = start()
                load.join()
            _check_log(server, ledger, recorded)
    finally:
        server.stop()
    assert recorded.receipts
    for refusal in recorded.refusals:
        assert refusal.code == grpc.StatusCode.UNAVAILABLE, str(refusal)
