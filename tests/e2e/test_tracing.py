"""OpenTelemetry tracing of a real server (docs/operations.md, "Tracing"): the RPC's span, its
admission and sequencer-wait children, the batch's commit span linked to each submission, the
caller's ``traceparent`` honoured; nothing of OpenTelemetry loaded while tracing is off; and
``serve --trace-otlp-endpoint`` exporting over OTLP/HTTP."""

from __future__ import annotations

import http.server
import os
import subprocess
import sys
import textwrap
import threading
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from clients.insurer import InsurerClient, sign_event
from clients.samples import policy_issued, sample_events
from clients.verify import TrustedLog, VerifiedReceipt
from ledger import tracing
from ledger.signing import Ed25519Signer, format_signer_key, format_verifier_key
from ledger.storage.db import sqlite_url
from ledger.v1 import enrolment_service_pb2, enrolment_service_pb2_grpc
from ledger.v1 import ledger_service_pb2 as pb
from ledger.v1 import ledger_service_pb2_grpc as pb_grpc
from tests import clock as test_clock
from tests.builders import tokens
from tests.conftest import ServerHandle, onboard, start_server_thread
from tests.durability.processes import start_server_process

INSURER = "gulf-health"
NOW = test_clock.now()
ROOT = Path(__file__).resolve().parents[2]
TRACE_ID = 0x0AF7651916CD43DD8448EB211C80319C
PARENT_SPAN_ID = 0xB7AD6B7169203331
TRACEPARENT = f"00-{TRACE_ID:032x}-{PARENT_SPAN_ID:016x}-01"


@pytest.fixture
def traced(
    database_url: str,
    log_signer: Ed25519Signer,
    operator_signer: Ed25519Signer,
    insurer_signer: Ed25519Signer,
    tmp_path: Path,
) -> Iterator[tuple[ServerHandle, InMemorySpanExporter]]:
    """A server started with tracing on (an in-memory exporter), an insurer onboarded, and the
    exporter emptied of the onboarding's spans."""
    exporter = InMemorySpanExporter()
    tracing.configure(exporter)
    try:
        server = start_server_thread(database_url, log_signer, tmp_path)
        try:
            onboard(server, operator_signer, INSURER, insurer_signer)
            exporter.clear()
            yield server, exporter
        finally:
            server.stop()
    finally:
        tracing.reset()


def insurer_client(
    server: ServerHandle, channel: grpc.Channel, signer: Ed25519Signer
) -> InsurerClient:
    return InsurerClient(
        channel, signer=signer, log=TrustedLog.from_verifier_key(server.log_verifier_key)
    )


def named(spans: tuple[ReadableSpan, ...], name: str) -> list[ReadableSpan]:
    return [span for span in spans if span.name == name]


def span_id(span: ReadableSpan) -> int:
    assert span.context is not None
    return span.context.span_id


def trace_id(span: ReadableSpan) -> int:
    assert span.context is not None
    return span.context.trace_id


def parent_id(span: ReadableSpan) -> int | None:
    return None if span.parent is None else span.parent.span_id


def test_a_submission_has_rpc_admission_wait_and_a_linked_commit_span(
    traced: tuple[ServerHandle, InMemorySpanExporter], insurer_signer: Ed25519Signer
) -> None:
    server, exporter = traced
    with server.channel("insurer", INSURER) as channel:
        insurer = insurer_client(server, channel, insurer_signer)
        receipt = insurer.submit(policy_issued(1, INSURER, NOW, tokens=tokens))
    # Every span ended before the answer was sent: no waiting for them.
    spans = exporter.get_finished_spans()
    (rpc,) = named(spans, "ledger.v1.LedgerService/SubmitEvent")
    (admit,) = named(spans, "ledger.admit")
    (wait,) = named(spans, "sequencer.wait")
    (commit,) = named(spans, "sequencer.commit")
    assert rpc.kind == SpanKind.SERVER
    assert rpc.parent is None  # the client sent no traceparent
    assert dict(rpc.attributes or {}) == {
        "rpc.system": "grpc",
        "rpc.service": "ledger.v1.LedgerService",
        "rpc.method": "SubmitEvent",
        "rpc.grpc.status_code": 0,
        "ledger.caller": f"spiffe://policy-ledger.local/insurer/{INSURER}",
    }
    assert rpc.status.status_code == StatusCode.UNSET
    for child in (admit, wait):
        assert trace_id(child) == trace_id(rpc)
        assert parent_id(child) == span_id(rpc)
    assert wait.attributes is not None
    assert wait.attributes["ledger.leaf_index"] == receipt.leaf_index
    # The batch has a trace of its own, linked to the submission it served.
    assert trace_id(commit) != trace_id(rpc)
    assert [(link.context.trace_id, link.context.span_id) for link in commit.links] == [
        (trace_id(wait), span_id(wait))
    ]
    assert dict(commit.attributes or {}) == {
        "entries": 1,
        "appended": 1,
        "tree_size": receipt.checkpoint.size,
    }
    assert receipt.checkpoint.size == receipt.leaf_index + 1


def test_a_stream_links_every_submission_to_the_batch_that_committed_it(
    traced: tuple[ServerHandle, InMemorySpanExporter], insurer_signer: Ed25519Signer
) -> None:
    server, exporter = traced
    with server.channel("insurer", INSURER) as channel:
        insurer = insurer_client(server, channel, insurer_signer)
        receipts = list(insurer.submit_stream(sample_events(3, INSURER, NOW, tokens=tokens)))
    assert all(isinstance(receipt, VerifiedReceipt) for receipt in receipts)
    spans = exporter.get_finished_spans()
    (rpc,) = named(spans, "ledger.v1.LedgerService/SubmitEvents")
    admits, waits = named(spans, "ledger.admit"), named(spans, "sequencer.wait")
    assert len(admits) == len(waits) == 3
    assert {parent_id(span) for span in admits + waits} == {span_id(rpc)}
    commits = named(spans, "sequencer.commit")
    linked = [(link.context.trace_id, link.context.span_id) for c in commits for link in c.links]
    assert sorted(linked) == sorted((trace_id(wait), span_id(wait)) for wait in waits)
    assert sum(int((c.attributes or {})["entries"]) for c in commits) == 3


def test_the_callers_traceparent_becomes_the_parent(
    traced: tuple[ServerHandle, InMemorySpanExporter], insurer_signer: Ed25519Signer
) -> None:
    server, exporter = traced
    with server.channel("insurer", INSURER) as channel:
        insurer = insurer_client(server, channel, insurer_signer)
        envelope = insurer.sign(policy_issued(2, INSURER, NOW, tokens=tokens))
        pb_grpc.LedgerServiceStub(channel).SubmitEvent(
            pb.SubmitEventRequest(envelope=envelope), metadata=(("traceparent", TRACEPARENT),)
        )
    spans = exporter.get_finished_spans()
    (rpc,) = named(spans, "ledger.v1.LedgerService/SubmitEvent")
    assert trace_id(rpc) == TRACE_ID
    assert parent_id(rpc) == PARENT_SPAN_ID
    assert rpc.parent is not None and rpc.parent.is_remote
    for name in ("ledger.admit", "sequencer.wait"):
        (child,) = named(spans, name)
        assert trace_id(child) == TRACE_ID
    (commit,) = named(spans, "sequencer.commit")
    assert [link.context.trace_id for link in commit.links] == [TRACE_ID]


def test_a_refused_call_records_its_status_and_nothing_is_sequenced(
    traced: tuple[ServerHandle, InMemorySpanExporter], insurer_signer: Ed25519Signer
) -> None:
    server, exporter = traced
    size_before = server.running.sequencer.tree_size
    envelope = sign_event(policy_issued(3, INSURER, NOW, tokens=tokens), insurer_signer)
    # Refused by the authorization layer: an auditor may not submit.
    with server.channel("auditor", "auditor") as channel, pytest.raises(grpc.RpcError) as denied:
        pb_grpc.LedgerServiceStub(channel).SubmitEvent(pb.SubmitEventRequest(envelope=envelope))
    assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED
    (refused,) = exporter.get_finished_spans()
    assert refused.name == "ledger.v1.LedgerService/SubmitEvent"
    assert refused.attributes is not None
    assert refused.attributes["rpc.grpc.status_code"] == grpc.StatusCode.PERMISSION_DENIED.value[0]
    assert refused.attributes["ledger.caller"] == "spiffe://policy-ledger.local/auditor/auditor"
    assert refused.status.status_code == StatusCode.ERROR
    assert refused.status.description == "PERMISSION_DENIED"
    exporter.clear()
    # Refused at admission: signed by a key nobody registered.
    stranger = Ed25519Signer.generate(INSURER)
    unsigned = sign_event(policy_issued(4, INSURER, NOW, tokens=tokens), stranger)
    with server.channel("insurer", INSURER) as channel, pytest.raises(grpc.RpcError) as unknown:
        pb_grpc.LedgerServiceStub(channel).SubmitEvent(pb.SubmitEventRequest(envelope=unsigned))
    assert unknown.value.code() == grpc.StatusCode.UNAUTHENTICATED
    spans = exporter.get_finished_spans()
    (rpc,) = named(spans, "ledger.v1.LedgerService/SubmitEvent")
    (admit,) = named(spans, "ledger.admit")
    assert rpc.status.description == "UNAUTHENTICATED"
    assert (rpc.attributes or {})["rpc.grpc.status_code"] == 16
    assert admit.status.status_code == StatusCode.ERROR
    assert (admit.attributes or {})["ledger.reason"] == "KEY_UNKNOWN"
    assert named(spans, "sequencer.wait") == named(spans, "sequencer.commit") == []
    assert server.running.sequencer.tree_size == size_before


def test_an_enrolment_call_is_traced_from_the_callers_traceparent(
    database_url: str, log_signer: Ed25519Signer, tmp_path: Path
) -> None:
    """The enrolment port observes its calls as the service port does: a refused Enrol (an empty
    request) is a server span under the caller's trace, with its status."""
    from tests.e2e.test_enrolment import start_enrolling_server

    exporter = InMemorySpanExporter()
    tracing.configure(exporter)
    try:
        server = start_enrolling_server(database_url, log_signer, tmp_path)
        try:
            with server.enrolment_channel() as channel, pytest.raises(grpc.RpcError) as refused:
                enrolment_service_pb2_grpc.EnrolmentServiceStub(channel).Enrol(
                    enrolment_service_pb2.EnrolRequest(), metadata=(("traceparent", TRACEPARENT),)
                )
        finally:
            server.stop()
    finally:
        tracing.reset()
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    (enrol,) = named(exporter.get_finished_spans(), "ledger.v1.EnrolmentService/Enrol")
    assert enrol.kind == SpanKind.SERVER
    assert trace_id(enrol) == TRACE_ID and parent_id(enrol) == PARENT_SPAN_ID
    assert enrol.status.description == "INVALID_ARGUMENT"


OFF_SCRIPT = """
import sys
from pathlib import Path
import tempfile

from clients.insurer import InsurerClient, sign_event
from clients.samples import policy_issued
from clients.verify import TrustedLog
from ledger.signing import Ed25519Signer
from ledger.storage.db import sqlite_url
from tests import clock as test_clock
from tests.builders import tokens
from tests.conftest import OPERATOR_SIGNER, onboard, start_server_thread

with tempfile.TemporaryDirectory() as directory:
    insurer = Ed25519Signer.generate("gulf-health")
    server = start_server_thread(
        sqlite_url(Path(directory) / "ledger.db"), Ed25519Signer.generate("log"), Path(directory),
        # The observing interceptor is installed (metrics and call log on): its path is run.
        config_changes={"metrics_port": 0, "log_format": "json"},
    )
    try:
        onboard(server, OPERATOR_SIGNER, "gulf-health", insurer)
        with server.channel("insurer", "gulf-health") as channel:
            trusted = TrustedLog.from_verifier_key(server.log_verifier_key)
            InsurerClient(channel, signer=insurer, log=trusted).submit(
                policy_issued(1, "gulf-health", test_clock.now(), tokens=tokens)
            )
    finally:
        server.stop()
print("loaded:", sorted(name for name in sys.modules if name.startswith("opentelemetry")))
"""


def test_with_tracing_off_a_serving_process_never_loads_opentelemetry() -> None:
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(OFF_SCRIPT)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    assert done.stdout.strip().splitlines()[-1] == "loaded: []"


class _Collector(http.server.BaseHTTPRequestHandler):
    """An OTLP/HTTP collector that keeps what it is sent."""

    received: list[tuple[str, bytes]]
    arrived: threading.Event

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        self.received.append((self.path, body))
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()
        self.arrived.set()

    def log_message(self, format: str, *args: object) -> None:
        pass


def test_serve_exports_spans_to_the_otlp_endpoint(
    tmp_path: Path, log_signer: Ed25519Signer, monkeypatch: pytest.MonkeyPatch
) -> None:
    _Collector.received, _Collector.arrived = [], threading.Event()
    collector = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Collector)
    threading.Thread(target=collector.serve_forever, daemon=True).start()
    key_file = tmp_path / "log.key"
    key_file.write_text(format_signer_key(log_signer) + "\n", encoding="utf-8")
    monkeypatch.setenv("OTEL_SERVICE_NAME", "ledger-under-test")
    endpoint = f"http://127.0.0.1:{collector.server_address[1]}"
    try:
        server = start_server_process(
            sqlite_url(tmp_path / "ledger.db"),
            key_file,
            tmp_path,
            extra_arguments=["--trace-otlp-endpoint", endpoint],
        )
        try:
            with server.channel("auditor", "auditor") as channel:
                pb_grpc.LedgerServiceStub(channel).GetCheckpoint(
                    pb.GetCheckpointRequest(), metadata=(("traceparent", TRACEPARENT),)
                )
        finally:
            server.stop()  # a clean stop exports what is still batched
        assert server.process.returncode == 0, server.log_tail()
        assert _Collector.arrived.wait(60), server.log_tail()
    finally:
        collector.shutdown()
    exported = [
        (resource.resource, span)
        for path, body in _Collector.received
        if path == "/v1/traces"
        for resource in ExportTraceServiceRequest.FromString(body).resource_spans
        for scope in resource.scope_spans
        for span in scope.spans
    ]
    calls = [(r, s) for r, s in exported if s.name == "ledger.v1.LedgerService/GetCheckpoint"]
    assert len(calls) == 1, [s.name for _, s in exported]
    resource, span = calls[0]
    assert span.trace_id == TRACE_ID.to_bytes(16, "big")
    assert span.parent_span_id == PARENT_SPAN_ID.to_bytes(8, "big")
    names = {a.key: a.value.string_value for a in resource.attributes}
    assert names["service.name"] == "ledger-under-test"


@pytest.mark.parametrize("where", ["flag", "environment"])
def test_serve_refuses_a_bad_endpoint_before_opening_the_database(
    tmp_path: Path, log_signer: Ed25519Signer, where: str
) -> None:
    key_file = tmp_path / "log.key"
    key_file.write_text(format_signer_key(log_signer) + "\n", encoding="utf-8")
    database = tmp_path / "ledger.db"
    bad = "grpc://collector:4317"
    environment = {**os.environ, "OTEL_EXPORTER_OTLP_ENDPOINT": bad}
    done = subprocess.run(
        [sys.executable, "-m", "policy_ledger.cli", "serve", "--database", sqlite_url(database),
         "--listen", "127.0.0.1:0", "--log-key-file", str(key_file), "--insecure-plaintext",
         "--operator-verifier", format_verifier_key(Ed25519Signer.generate("operator")),
         *(["--trace-otlp-endpoint", bad] if where == "flag" else [])],
        env=environment if where == "environment" else None,
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 2, done.stderr
    (line,) = done.stderr.strip().splitlines()
    assert line.startswith("error: trace endpoint 'grpc://collector:4317'"), line
    assert not database.exists()  # refused before the database was opened: nothing written
