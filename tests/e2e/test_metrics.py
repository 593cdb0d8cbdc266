"""`serve --metrics-port` and `--log-format json`: a real server is scraped before and after
calls, and every named series moves by what the calls did (docs/operations.md, "Metrics")."""

from __future__ import annotations

import asyncio
import json
import logging
import re
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from clients.insurer import InsurerClient
from clients.samples import policy_issued, sample_events
from clients.verify import TrustedLog, VerifiedReceipt
from ledger.cosignature import CosignatureVerifier, WitnessEndpoint
from ledger.metrics import LedgerMetrics
from ledger.rpc.supervisor import PROCESS_UP_SERIES, RESTARTS_SERIES
from ledger.signing import Ed25519Signer, format_signer_key, format_verifier_key
from ledger.storage.db import sqlite_url
from ledger.v1 import ledger_service_pb2 as pb
from ledger.v1 import ledger_service_pb2_grpc as pb_grpc
from ledger.witnessing import WitnessSubmitter
from payments.metrics import PaymentStateCollector
from payments.states import PaymentState, RefundState
from tests import clock as test_clock
from tests.builders import tokens
from tests.conftest import ServerHandle, onboard
from tests.durability.processes import start_server_process
from tests.payments.support import Stack, family_request
from tests.stack import start_full_server

INSURER = "gulf-health"
NOW = test_clock.now()
OPERATIONS = Path(__file__).resolve().parents[2] / "docs" / "operations.md"
LEDGER = "ledger.v1.LedgerService"

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape_text(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=30) as answer:
        return str(answer.read().decode("utf-8"))


def samples_of(text: str) -> Samples:
    """Every sample of an exposition, by (sample name, sorted labels)."""
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def scrape(server: ServerHandle) -> Samples:
    metrics = server.running.metrics
    assert metrics is not None and metrics.endpoint is not None
    return samples_of(scrape_text(metrics.endpoint.port))


def value(samples: Samples, name: str, **labels: str) -> float:
    """A sample's value; 0 for a labelled child that has not been created yet."""
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def rpc(kind: str, method: str, service: str = LEDGER) -> dict[str, str]:
    return {"grpc_type": kind, "grpc_service": service, "grpc_method": method}


@pytest.fixture
def observed(
    database_url: str,
    log_signer: Ed25519Signer,
    operator_signer: Ed25519Signer,
    insurer_signer: Ed25519Signer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> Iterator[ServerHandle]:
    """A server with every service and metrics on (port 0), the call log on, and an insurer."""
    server = start_full_server(
        database_url,
        log_signer,
        operator_signer,
        tmp_path,
        monkeypatch,
        config_changes={"metrics_port": 0, "log_format": "json"},
    )
    onboard(server, operator_signer, INSURER, insurer_signer)
    yield server
    server.stop()


def test_rpc_sequencer_tree_and_payment_series_move_with_the_calls(
    observed: ServerHandle, insurer_signer: Ed25519Signer
) -> None:
    before = scrape(observed)
    trusted = TrustedLog.from_verifier_key(observed.log_verifier_key)
    with observed.channel("insurer", INSURER) as channel:
        insurer = InsurerClient(channel, signer=insurer_signer, log=trusted)
        receipts = list(insurer.submit_stream(sample_events(3, INSURER, NOW, tokens=tokens)))
        with pytest.raises(grpc.RpcError) as missing:
            pb_grpc.LedgerServiceStub(channel).GetCheckpoint(
                pb.GetCheckpointRequest(tree_size=10**9)
            )
    with observed.channel("auditor", "auditor") as channel, pytest.raises(grpc.RpcError) as denied:
        pb_grpc.LedgerServiceStub(channel).SubmitEvent(pb.SubmitEventRequest())
    assert all(isinstance(receipt, VerifiedReceipt) for receipt in receipts)
    assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED
    missing_code = missing.value.code().name
    assert missing_code != "OK"
    after = scrape(observed)

    def moved(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    stream = rpc("stream_stream", "SubmitEvents")
    assert moved("grpc_server_started_total", **stream) == 1
    assert moved("grpc_server_handled_total", **stream, grpc_code="OK") == 1
    assert moved("grpc_server_handling_seconds_count", **stream) == 1
    assert moved("grpc_server_handling_seconds_sum", **stream) > 0
    checkpoint = rpc("unary_unary", "GetCheckpoint")
    assert moved("grpc_server_handled_total", **checkpoint, grpc_code=missing_code) == 1
    assert moved("grpc_server_handled_total", **checkpoint, grpc_code="OK") == 0
    # Refused by the authorization layer, before any servicer: still counted, with its code.
    submit = rpc("unary_unary", "SubmitEvent")
    assert moved("grpc_server_handled_total", **submit, grpc_code="PERMISSION_DENIED") == 1
    assert moved("grpc_server_handling_seconds_count", **submit) == 1

    assert moved("policy_ledger_entries_appended_total") == 3
    assert moved("policy_ledger_sequencer_batch_entries_sum") == 3
    batches = moved("policy_ledger_sequencer_batches_total", outcome="committed")
    assert 1 <= batches <= 3
    assert moved("policy_ledger_sequencer_batch_entries_count") == batches
    assert moved("policy_ledger_sequencer_commit_seconds_count") == batches
    assert value(after, "policy_ledger_sequencer_batches_total", outcome="failed") == 0
    last = receipts[-1]
    assert isinstance(last, VerifiedReceipt)
    assert value(after, "policy_ledger_tree_size") == last.checkpoint.size == last.leaf_index + 1
    assert value(after, "policy_ledger_sequencer_queue_entries") == 0
    # The payments extension registered its own series: every state, none started yet.
    for state in PaymentState:
        assert value(after, "policy_ledger_payments", state=state.value) == 0
    for refund_state in RefundState:
        assert ("policy_ledger_refunds", (("state", refund_state.value),)) in after
    assert value(after, "process_cpu_seconds_total") > 0
    # SQLite's WAL (ledger.storage.wal): shown on either engine, fed by SQLite's checkpointer.
    assert ("policy_ledger_wal_pages", (("kind", "total"),)) in after
    assert ("policy_ledger_wal_checkpoint_seconds_count", ()) in after
    for mode in ("passive", "truncate"):
        labels = {"mode": mode, "outcome": "partial"}
        assert value(after, "policy_ledger_wal_checkpoints_total", **labels) == 0


def test_handled_calls_are_counted_under_each_code_of_one_method_every_time(
    observed: ServerHandle,
) -> None:
    """The handled counter's series are looked up once per method and code: calls of one
    method alternating between two codes each count under their own code, every time."""
    before = scrape(observed)
    codes: list[str] = []
    with observed.channel("insurer", INSURER) as channel:
        stub = pb_grpc.LedgerServiceStub(channel)
        for _ in range(3):
            stub.GetCheckpoint(pb.GetCheckpointRequest())
            codes.append("OK")
            with pytest.raises(grpc.RpcError) as missing:
                stub.GetCheckpoint(pb.GetCheckpointRequest(tree_size=10**9))
            codes.append(missing.value.code().name)
    after = scrape(observed)
    checkpoint = rpc("unary_unary", "GetCheckpoint")
    assert codes[1] != "OK"
    for code in ("OK", codes[1]):
        moved = value(after, "grpc_server_handled_total", **checkpoint, grpc_code=code) - value(
            before, "grpc_server_handled_total", **checkpoint, grpc_code=code
        )
        assert moved == 3
    assert (
        value(after, "grpc_server_started_total", **checkpoint)
        - value(before, "grpc_server_started_total", **checkpoint)
        == 6
    )


def test_queue_depth_and_batch_size_are_what_the_sequencer_holds(
    observed: ServerHandle, insurer_signer: Ed25519Signer
) -> None:
    sequencer = observed.running.sequencer
    trusted = TrustedLog.from_verifier_key(observed.log_verifier_key)
    before = scrape(observed)
    observed.loop.call_soon_threadsafe(sequencer.hold)
    with observed.channel("insurer", INSURER) as channel, ThreadPoolExecutor(4) as pool:
        insurer = InsurerClient(channel, signer=insurer_signer, log=trusted)
        events = [policy_issued(number, INSURER, NOW, tokens=tokens) for number in range(4)]
        submitted = [pool.submit(insurer.submit, event) for event in events]
        asyncio.run_coroutine_threadsafe(sequencer.wait_waiting(4), observed.loop).result(60)
        held = scrape(observed)
        observed.loop.call_soon_threadsafe(sequencer.release)
        receipts = [future.result(timeout=60) for future in submitted]
    after = scrape(observed)
    assert value(held, "policy_ledger_sequencer_queue_entries") == 4
    assert value(after, "policy_ledger_sequencer_queue_entries") == 0

    def moved(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    # The four were queued while the sequencer was held: one batch of four.
    assert moved("policy_ledger_sequencer_batch_entries_count") == 1
    assert moved("policy_ledger_sequencer_batch_entries_sum") == 4
    assert moved("policy_ledger_sequencer_batch_entries_bucket", le="2.0") == 0
    assert moved("policy_ledger_sequencer_batch_entries_bucket", le="4.0") == 1
    assert value(after, "policy_ledger_tree_size") == max(r.leaf_index for r in receipts) + 1


def test_one_json_line_per_call_with_request_id_and_caller(
    observed: ServerHandle, insurer_signer: Ed25519Signer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="ledger.rpc.calls")
    with observed.channel("insurer", INSURER) as channel:
        stub = pb_grpc.LedgerServiceStub(channel)
        stub.GetCheckpoint(pb.GetCheckpointRequest(), metadata=(("x-request-id", "trace-42"),))
        stub.GetCheckpoint(pb.GetCheckpointRequest())
        stub.GetCheckpoint(pb.GetCheckpointRequest(), metadata=(("x-request-id", "x" * 65),))
    with observed.channel("auditor", "auditor") as channel, pytest.raises(grpc.RpcError):
        pb_grpc.LedgerServiceStub(channel).SubmitEvent(
            pb.SubmitEventRequest(), metadata=(("x-request-id", "denied-1"),)
        )
    calls = [r for r in caplog.records if r.name == "ledger.rpc.calls"]
    assert len(calls) == 4, [r.getMessage() for r in calls]
    first, second, third, refused = calls
    assert first.request_id == "trace-42"  # type: ignore[attr-defined]
    assert first.caller == f"spiffe://policy-ledger.local/insurer/{INSURER}"  # type: ignore[attr-defined]
    assert first.code == "OK" and first.method == f"/{LEDGER}/GetCheckpoint"  # type: ignore[attr-defined]
    # No id, or one too long to take: the server makes one (32 hex digits), each its own.
    made = {second.request_id, third.request_id}  # type: ignore[attr-defined]
    assert len(made) == 2 and all(re.fullmatch("[0-9a-f]{32}", rid) for rid in made)
    # A refused call is logged too, with who was refused.
    assert refused.request_id == "denied-1" and refused.code == "PERMISSION_DENIED"  # type: ignore[attr-defined]
    assert refused.caller == "spiffe://policy-ledger.local/auditor/auditor"  # type: ignore[attr-defined]


def test_witness_lag_is_reported_per_witness() -> None:
    verifier = CosignatureVerifier("witness.example/w", bytes(32))
    endpoint = WitnessEndpoint("http://127.0.0.1:9/w", verifier)
    submitter = WitnessSubmitter([endpoint], source=None, sink=None, clock=None)  # type: ignore[arg-type]
    metrics = LedgerMetrics()
    metrics.watch_witnesses(submitter)
    progress = submitter.progress[0]
    progress.log_size, progress.cosigned_size, progress.failures = 120, 100, 3
    samples = samples_of(_exposition(metrics.registry))
    witness = {"witness": "witness.example/w"}
    assert value(samples, "policy_ledger_witness_lag_entries", **witness) == 20
    assert value(samples, "policy_ledger_witness_cosigned_size", **witness) == 100
    assert value(samples, "policy_ledger_witness_failures_total", **witness) == 3
    progress.cosigned_size = 120
    samples = samples_of(_exposition(metrics.registry))
    assert value(samples, "policy_ledger_witness_lag_entries", **witness) == 0


def test_payment_state_counts_are_the_database_s(tmp_path: Path) -> None:
    stack = Stack(tmp_path)
    registry = CollectorRegistry()
    registry.register(PaymentStateCollector(stack.engine))
    before = samples_of(_exposition(registry))
    assert all(value(before, "policy_ledger_payments", state=s.value) == 0 for s in PaymentState)
    for number in range(2):
        quote = stack.renewals.quote(family_request(number, 2))
        stack.renewals.start_payment(quote.quote_id, f"metrics-key-{number}", "simulated")
    after = samples_of(_exposition(registry))
    assert value(after, "policy_ledger_payments", state="recorded") == 2
    assert sum(value(after, "policy_ledger_payments", state=s.value) for s in PaymentState) == 2


def _exposition(registry: CollectorRegistry) -> str:
    from prometheus_client import generate_latest

    return generate_latest(registry).decode("utf-8")


def documented_series() -> set[str]:
    """The series docs/operations.md lists in its "Metrics" section (first column)."""
    text = OPERATIONS.read_text(encoding="utf-8")
    section = text.split("\n## Metrics\n", 1)[1].split("\n## ", 1)[0]
    return set(re.findall(r"^\| `([a-z_]+)`", section, flags=re.MULTILINE))


def test_the_operations_guide_lists_every_series(observed: ServerHandle) -> None:
    assert observed.running.metrics is not None
    registry = observed.running.metrics.registry
    submitter = WitnessSubmitter([], source=None, sink=None, clock=None)  # type: ignore[arg-type]
    observed.running.metrics.watch_witnesses(submitter)
    served = set()
    for family in registry.collect():
        if family.name.startswith(("process_", "python_")):
            continue  # prometheus_client's own; the guide names them together
        suffix = "_total" if family.type == "counter" else ""
        served.add(family.name + suffix)
    # The supervisor of `serve --workers N` adds its own (tests/e2e/test_workers.py scrapes it).
    served |= {f"{RESTARTS_SERIES}_total", PROCESS_UP_SERIES}
    assert served == documented_series()


def test_serve_flags_json_log_and_a_metrics_port_in_use(
    tmp_path: Path, log_signer: Ed25519Signer
) -> None:
    key_file = tmp_path / "log.key"
    key_file.write_text(format_signer_key(log_signer) + "\n", encoding="utf-8")
    database = sqlite_url(tmp_path / "ledger.db")
    server = start_server_process(
        database,
        key_file,
        tmp_path,
        extra_arguments=["--metrics-port", "0", "--log-format", "json"],
    )
    try:
        assert server.process.stdout is not None
        line = server.process.stdout.readline()
        assert line.startswith("metrics on port "), line
        metrics_port = int(line.split()[-1])
        with server.channel("auditor", "auditor") as channel:
            pb_grpc.LedgerServiceStub(channel).GetCheckpoint(
                pb.GetCheckpointRequest(), metadata=(("x-request-id", "cli-7"),)
            )
        samples = samples_of(scrape_text(metrics_port))
        checkpoint = rpc("unary_unary", "GetCheckpoint")
        assert value(samples, "grpc_server_handled_total", **checkpoint, grpc_code="OK") == 1
        # A second server asking for the same metrics port refuses to start, and says why.
        other = subprocess.run(
            [sys.executable, "-m", "policy_ledger.cli", "serve", "--database",
             sqlite_url(tmp_path / "other.db"), "--listen", "127.0.0.1:0",
             "--log-key-file", str(key_file), "--insecure-plaintext",
             "--operator-verifier", format_verifier_key(Ed25519Signer.generate("operator")),
             "--metrics-port", str(metrics_port)],
            capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
        assert other.returncode == 2, other.stderr
        assert f"cannot serve metrics on port {metrics_port}" in other.stderr
        assert "Traceback" not in other.stderr
        assert not (tmp_path / "other.db").exists()  # refused before the database was opened
    finally:
        server.stop()
    lines = [json.loads(text) for text in server.log_path.read_text().splitlines() if text]
    calls = [line for line in lines if line.get("request_id") == "cli-7"]
    assert len(calls) == 1, lines[-5:]
    assert calls[0]["caller"] == "spiffe://policy-ledger.local/auditor/auditor"
    assert calls[0]["code"] == "OK" and calls[0]["logger"] == "ledger.rpc.calls"
    assert {"timestamp", "level", "message", "duration_ms"} <= set(calls[0])
