"""Storage faults injected into a real server process with libfiu (issue 15, item 4).

The server runs under ``fiu-run -x`` (libfiu's POSIX preload); ``fiu-ctrl`` switches faults on
and off in windows: EIO on pread, EIO and ENOSPC on pwrite, EIO on fsync and fdatasync, the
calls SQLite makes. Inside a window every call is answered either OK or UNAVAILABLE with a retry
hint and a reason that says what happened to the submission, never INTERNAL or UNKNOWN. Once the
faults stop, and again after a restart, every acknowledged receipt is at its index with its hash,
the audit passes, and every refused event can be resubmitted safely.

Needs ``fiu-run`` and ``fiu-ctrl`` (Debian's fiu-utils; ``make test`` installs it where it can);
skipped with the reason elsewhere. POLICY_LEDGER_FAULT_WINDOWS sets the number of windows.
"""

from __future__ import annotations

import os
import random
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from clients.auditor import AuditorClient
from clients.insurer import sign_event
from clients.samples import policy_issued
from clients.verify import verify_receipt
from ledger.signing import Ed25519Signer
from ledger.storage.db import sqlite_url
from ledger.v1 import ledger_service_pb2 as pb
from ledger.v1 import ledger_service_pb2_grpc as pb_grpc
from tests.builders import tokens
from tests.durability.processes import ServerProcess, start_server_process
from tests.durability.test_crash import INSURER, prepare_log
from tests.durability.workload import (
    OCCURRED_AT,
    Ledger,
    Recorded,
    check_checkpoints_consistent,
    check_nothing_acknowledged_is_lost,
    resubmit_unacknowledged,
)

WINDOWS = int(os.environ.get("POLICY_LEDGER_FAULT_WINDOWS", "8"))
CALLS_PER_WINDOW = 24
SEED = int(os.environ.get("POLICY_LEDGER_FAULT_SEED", "15"))
EIO, ENOSPC = 5, 28
FAULTS = [
    f"enable_random name=posix/io/rw/pread,probability=0.2,failinfo={EIO}",
    f"enable_random name=posix/io/rw/pwrite,probability=0.3,failinfo={EIO}",
    f"enable_random name=posix/io/rw/pwrite,probability=0.3,failinfo={ENOSPC}",
    f"enable_random name=posix/io/sync/fdatasync,probability=0.5,failinfo={EIO}",
    f"enable_random name=posix/io/sync/fsync,probability=0.5,failinfo={EIO}",
]
HONEST_REASONS = {"STORAGE_UNAVAILABLE", "COMMIT_OUTCOME_UNKNOWN", "RECEIPT_UNAVAILABLE"}
RECOVERY_ATTEMPTS_MAX = 10
"""Calls a client may need, once faults stop, before one succeeds (connections that saw a fault
are discarded one by one)."""

pytestmark = pytest.mark.skipif(
    not (shutil.which("fiu-run") and shutil.which("fiu-ctrl")),
    reason="fiu-run/fiu-ctrl not installed (Debian package fiu-utils; `make test` installs it "
    "with apt-get where it can)",
)


@dataclass(frozen=True)
class Answer:
    code: grpc.StatusCode
    reason: str
    retry_hint: bool


def _answer_of(error: grpc.RpcError) -> Answer:
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    reason, retry_hint = "", False
    for detail in status.details if status is not None else ():
        info, retry = error_details_pb2.ErrorInfo(), error_details_pb2.RetryInfo()
        if detail.Unpack(info):
            reason = info.reason
        elif detail.Unpack(retry):
            retry_hint = retry.retry_delay.ToMilliseconds() > 0
    return Answer(error.code(), reason, retry_hint)


class Caller:
    """Submits and reads with the raw stub, so every status and its details can be checked."""

    def __init__(
        self,
        channel: grpc.Channel,
        reader_channel: grpc.Channel,
        ledger: Ledger,
        recorded: Recorded,
    ) -> None:
        self._stub = pb_grpc.LedgerServiceStub(channel)
        self._reader = pb_grpc.LedgerServiceStub(reader_channel)  # reading entries: an auditor
        self._ledger = ledger
        self._recorded = recorded
        self.answers: list[Answer] = []

    def submit(self, number: int) -> bool:
        event = policy_issued(number, INSURER, OCCURRED_AT, tokens=tokens)
        envelope = sign_event(event, self._ledger.insurer_signer)
        self._recorded.signed(event.event_id, envelope)
        try:
            response = self._stub.SubmitEvent(pb.SubmitEventRequest(envelope=envelope))
        except grpc.RpcError as error:
            self.answers.append(_answer_of(error))
            return False
        self._recorded.receipt(verify_receipt(response.receipt, self._ledger.log, envelope.payload))
        return True

    def read(self) -> bool:
        try:
            size = self._reader.GetCheckpoint(pb.GetCheckpointRequest()).checkpoint.count(b"\n")
            list(self._reader.GetEntries(pb.GetEntriesRequest(start_index=0, end_index=1)))
            list(self._reader.GetEntries(pb.GetEntriesRequest(start_index=0, end_index=size)))
        except grpc.RpcError as error:
            self.answers.append(_answer_of(error))
            return False
        return True


def _fiu_control(server: ServerProcess, command: str) -> None:
    subprocess.run(["fiu-ctrl", "-c", command, str(server.process.pid)], check=True)


def test_injected_storage_faults_answer_honestly_and_lose_nothing(
    tmp_path: Path,
    log_signer: Ed25519Signer,
    insurer_signer: Ed25519Signer,
    operator_signer: Ed25519Signer,
) -> None:
    database_url = sqlite_url(tmp_path / "ledger.db")
    key_file, ledger = prepare_log(
        database_url, tmp_path, log_signer, insurer_signer, operator_signer
    )
    recorded = Recorded()
    rng = random.Random(SEED)
    numbers = iter(range(10**6))
    server = start_server_process(database_url, key_file, tmp_path, wrapper=("fiu-run", "-x"))
    try:
        with (
            server.channel("insurer", INSURER) as channel,
            server.channel("auditor", "fault-test") as reader_channel,
        ):
            caller = Caller(channel, reader_channel, ledger, recorded)
            for _ in range(WINDOWS):
                fault = rng.choice(FAULTS)
                _fiu_control(server, fault)
                for _ in range(CALLS_PER_WINDOW):
                    caller.submit(next(numbers)) if rng.random() < 0.7 else caller.read()
                _fiu_control(server, "disable name=" + fault.split("name=")[1].split(",")[0])
                # Recovered: once the faults stop, a submission and a read succeed again.
                assert any(caller.submit(next(numbers)) for _ in range(RECOVERY_ATTEMPTS_MAX))
                assert any(caller.read() for _ in range(RECOVERY_ATTEMPTS_MAX))
        dishonest = [a for a in caller.answers if a.code != grpc.StatusCode.UNAVAILABLE]
        assert not dishonest, f"storage faults answered {dishonest[:5]}"
        assert all(a.reason in HONEST_REASONS and a.retry_hint for a in caller.answers), {
            a.reason for a in caller.answers
        }
        _check(server, ledger, recorded)
        server.kill()
        server = start_server_process(database_url, key_file, tmp_path)
        _check(server, ledger, recorded)
    finally:
        server.stop()
    print(
        f"{WINDOWS} fault windows: {len(recorded.receipts)} receipts, "
        f"{len(caller.answers)} UNAVAILABLE answers by reason "
        f"{ {r: sum(a.reason == r for a in caller.answers) for r in HONEST_REASONS} }"
    )


def _check(server: ServerProcess, ledger: Ledger, recorded: Recorded) -> None:
    with (
        server.channel("auditor", "fault-test") as channel,
        server.channel("insurer", ledger.insurer_id) as insurer_channel,
    ):
        auditor = AuditorClient(channel, log=ledger.log)
        check_nothing_acknowledged_is_lost(auditor, recorded)
        resubmit_unacknowledged(insurer_channel, ledger, recorded)
        latest = check_nothing_acknowledged_is_lost(auditor, recorded)
        check_checkpoints_consistent(auditor, [*recorded.checkpoints, latest])
        assert auditor.audit(ledger.insurer_keys(), checkpoint=latest).entries_checked
