"""ledger.tracing: a no-op while off, spans and W3C context while on (an in-memory exporter)."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from ledger import limits, tracing
from ledger.config import ServerConfig
from ledger.errors import InvalidArgument, NotFound
from policy_ledger.cli import _parser, _server_config

ROOT = Path(__file__).resolve().parents[2]
TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


@pytest.fixture
def exporter() -> Iterator[InMemorySpanExporter]:
    """Tracing on, every span exported as it ends; off again after the test."""
    memory = InMemorySpanExporter()
    tracing.configure(memory)
    yield memory
    tracing.reset()


def test_off_by_default_every_entry_point_is_a_no_op() -> None:
    assert not tracing.enabled()
    with tracing.span("anything", {"a": 1}) as opened:
        assert opened is None
        assert tracing.current_traceparent() == ""

    def never_read() -> Iterator[str]:
        raise AssertionError("links_from read its argument while tracing is off")
        yield ""  # pragma: no cover

    assert tracing.links_from(never_read()) == []
    assert tracing.wait_span() is None
    assert tracing.server_span("/s.S/M", "s.S", "M", [("traceparent", TRACEPARENT)]) is None
    assert tracing.setup("") is False  # an empty endpoint keeps it off


def test_off_imports_no_opentelemetry_module() -> None:
    """The modules of the request path, used with tracing off, import no OpenTelemetry."""
    script = textwrap.dedent(
        """
        import sys
        from ledger import tracing
        import ledger.rpc.server, ledger.rpc.observing, ledger.service, ledger.sequencer
        with tracing.span("x"):
            tracing.current_traceparent()
        tracing.links_from(["00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"])
        tracing.setup("")
        print(sorted(name for name in sys.modules if name.startswith("opentelemetry")))
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]"


def test_spans_nest_and_their_traceparent_is_current(exporter: InMemorySpanExporter) -> None:
    with tracing.span("outer", {"entries": 2}) as outer:
        assert outer is not None
        outer_context = outer.get_span_context()
        assert tracing.current_traceparent() == (
            f"00-{outer_context.trace_id:032x}-{outer_context.span_id:016x}-"
            f"{outer_context.trace_flags:02x}"
        )
        with tracing.span("inner"):
            pass
    inner, finished = exporter.get_finished_spans()
    assert (inner.name, finished.name) == ("inner", "outer")
    assert inner.parent is not None and inner.parent.span_id == outer_context.span_id
    assert finished.attributes == {"entries": 2}
    assert finished.resource.attributes["service.name"] == tracing.DEFAULT_SERVICE_NAME


def test_service_name_comes_from_otel_service_name(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_SERVICE_NAME", "ledger-eu-1")
    memory = InMemorySpanExporter()
    tracing.configure(memory)
    try:
        with tracing.span("one"):
            pass
    finally:
        tracing.reset()
    (span,) = memory.get_finished_spans()
    assert span.resource.attributes["service.name"] == "ledger-eu-1"


def test_a_refusal_leaving_a_span_marks_it_failed_with_its_reason(
    exporter: InMemorySpanExporter,
) -> None:
    with pytest.raises(NotFound), tracing.span("lookup"):
        raise NotFound("no such entry", reason="ENTRY_UNKNOWN")
    (span,) = exporter.get_finished_spans()
    assert span.status.status_code == StatusCode.ERROR
    assert span.status.description == "NOT_FOUND"
    assert span.attributes is not None and span.attributes["ledger.reason"] == "ENTRY_UNKNOWN"


def test_links_from_traceparents_name_those_spans_and_skip_the_rest(
    exporter: InMemorySpanExporter,
) -> None:
    links = tracing.links_from([TRACEPARENT, "", "not-a-traceparent", "00-" + "0" * 32 + "-0"])
    assert [(link.context.trace_id, link.context.span_id) for link in links] == [
        (0x0AF7651916CD43DD8448EB211C80319C, 0xB7AD6B7169203331)
    ]
    with tracing.span("commit", links=links):
        pass
    (span,) = exporter.get_finished_spans()
    assert [link.context.span_id for link in span.links] == [0xB7AD6B7169203331]


def test_server_span_is_a_child_of_the_callers_traceparent(exporter: InMemorySpanExporter) -> None:
    metadata = [("x-request-id", "r1"), ("traceparent", TRACEPARENT)]
    call = tracing.server_span("/ledger.v1.LedgerService/GetEntry", "ledger.v1.LedgerService",
                               "GetEntry", metadata)  # fmt: skip
    assert call is not None
    with tracing.span("work"):
        pass
    call.end("NOT_FOUND", 5, "spiffe://policy-ledger.local/auditor/a")
    call.detach()
    assert tracing.current_traceparent() == ""  # the caller's context is current again
    work, server = exporter.get_finished_spans()
    assert server.name == "ledger.v1.LedgerService/GetEntry"
    assert server.kind == SpanKind.SERVER
    assert server.context is not None
    assert server.context.trace_id == 0x0AF7651916CD43DD8448EB211C80319C
    assert server.parent is not None and server.parent.span_id == 0xB7AD6B7169203331
    assert work.parent is not None and work.parent.span_id == server.context.span_id
    assert dict(server.attributes or {}) == {
        "rpc.system": "grpc",
        "rpc.service": "ledger.v1.LedgerService",
        "rpc.method": "GetEntry",
        "rpc.grpc.status_code": 5,
        "ledger.caller": "spiffe://policy-ledger.local/auditor/a",
    }
    assert server.status.status_code == StatusCode.ERROR


def test_a_malformed_traceparent_starts_a_new_trace(exporter: InMemorySpanExporter) -> None:
    call = tracing.server_span("/s.S/M", "s.S", "M", [("traceparent", "00-zz-yy-01")])
    assert call is not None
    call.end("OK", 0, "-")
    call.detach()
    (span,) = exporter.get_finished_spans()
    assert span.parent is None
    assert span.status.status_code == StatusCode.UNSET


def test_wait_span_carries_its_traceparent_and_ends_with_the_outcome(
    exporter: InMemorySpanExporter,
) -> None:
    async def scenario() -> str:
        with tracing.span("rpc"):
            waiting = tracing.wait_span()
            assert waiting is not None
            future: asyncio.Future[object] = asyncio.get_running_loop().create_future()
            future.add_done_callback(waiting.outcome)
            future.set_result(InvalidArgument("refused at commit", reason="KEY_REVOKED"))
            await asyncio.sleep(0)  # the done-callback runs on the next turn of the loop
            return waiting.traceparent

    traceparent = asyncio.run(scenario())
    wait, rpc = exporter.get_finished_spans()
    assert wait.name == "sequencer.wait"
    assert wait.context is not None and rpc.context is not None
    assert traceparent.startswith(f"00-{wait.context.trace_id:032x}-{wait.context.span_id:016x}-")
    assert wait.parent is not None and wait.parent.span_id == rpc.context.span_id
    assert wait.status.status_code == StatusCode.ERROR
    assert wait.attributes is not None and wait.attributes["ledger.reason"] == "KEY_REVOKED"


@pytest.mark.parametrize(
    ("url", "traces_url"),
    [
        ("http://127.0.0.1:4318", "http://127.0.0.1:4318/v1/traces"),
        ("https://collector.example/", "https://collector.example/v1/traces"),
        ("http://collector:4318/v1/traces", "http://collector:4318/v1/traces"),
    ],
)
def test_endpoint_is_the_collectors_base_url(url: str, traces_url: str) -> None:
    assert tracing.check_endpoint(url) == traces_url


@pytest.mark.parametrize(
    "url",
    [
        "collector:4318",
        "grpc://collector:4317",
        "http://",
        "http://collector:4318/?x=1",
        "http://collector/\n",
        "http://c/" + "a" * limits.trace_endpoint_chars_max,
    ],
)
def test_a_bad_endpoint_is_refused_and_tracing_stays_off(url: str) -> None:
    with pytest.raises(InvalidArgument) as refused:
        tracing.setup(url)
    assert refused.value.reason == "TRACE_ENDPOINT_INVALID"
    assert not tracing.enabled()


def test_endpoint_from_the_flag_or_the_standard_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://from-env:4318")
    assert ServerConfig.from_environment().trace_otlp_endpoint == "http://from-env:4318"
    assert _server_config(_parser().parse_args(["serve"])).trace_otlp_endpoint == (
        "http://from-env:4318"
    )
    flagged = _parser().parse_args(["serve", "--trace-otlp-endpoint", "http://flag:4318"])
    assert _server_config(flagged).trace_otlp_endpoint == "http://flag:4318"
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_ENDPOINT")
    assert ServerConfig.from_environment().trace_otlp_endpoint == ""
