"""OpenTelemetry tracing of calls and of the hand-off to the sequencer; off unless configured.

Off by default. ``serve --trace-otlp-endpoint URL`` (or ``OTEL_EXPORTER_OTLP_ENDPOINT``) turns it
on: spans go to an OTLP/HTTP collector in batches, from a background thread, with the resource's
``service.name`` from ``OTEL_SERVICE_NAME`` (default ``policy-ledger``). docs/operations.md
("Tracing") lists the spans and their attributes:

* one server span per RPC (the call-observing interceptor, ``ledger.rpc.observing``), a child of
  the caller's W3C ``traceparent`` metadata when it sends one;
* its children ``ledger.admit`` (verify the signature, decode and check the event) and
  ``sequencer.wait`` (from queueing an admitted entry to its outcome);
* one ``sequencer.commit`` span per batch, in a trace of its own (a batch serves many callers),
  with a *link* to the ``sequencer.wait`` span of each of its submissions.

The hand-off crosses the sequencer's queue, and in a multi-process server a process boundary, so
the wait span's context travels inside the entry itself, as its W3C ``traceparent`` text
(``PendingEntry.trace_context``): the commit span's links are built from those strings alone,
the same whether the entry came from this process or another.

Nothing is paid while tracing is off: no OpenTelemetry module is imported (each is imported here,
lazily, when tracing is configured), :func:`span` hands back one shared no-op context manager,
and the interceptor is not installed for tracing's sake. Tracing is one per process (the
OpenTelemetry context is), so its state lives in this module; tests turn it on with an in-memory
exporter (:func:`configure`) and off again (:func:`reset`).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from ledger import limits
from ledger.errors import InvalidArgument, LedgerError

if TYPE_CHECKING:
    import asyncio

    from opentelemetry.context import Context
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SpanExporter
    from opentelemetry.trace import Link, Span, Tracer

__all__ = [
    "DEFAULT_SERVICE_NAME",
    "ServerSpan",
    "WaitSpan",
    "check_endpoint",
    "configure",
    "current_traceparent",
    "enabled",
    "links_from",
    "reset",
    "server_span",
    "setup",
    "span",
    "wait_span",
]

DEFAULT_SERVICE_NAME = "policy-ledger"
"""The resource's ``service.name`` when ``OTEL_SERVICE_NAME`` is not set."""

TRACES_PATH = "/v1/traces"
"""Appended to a collector's base URL, as OpenTelemetry's OTLP/HTTP exporter does for
``OTEL_EXPORTER_OTLP_ENDPOINT``."""

TRACEPARENT = "traceparent"
"""The W3C Trace Context header (and gRPC metadata key) that carries a span's context."""


class _State:
    """The process's tracer, or None while tracing is off."""

    tracer: Tracer | None = None
    provider: TracerProvider | None = None


_state = _State()
_OFF: contextlib.nullcontext[None] = contextlib.nullcontext()


def enabled() -> bool:
    """Whether spans are being made (checked when a server builds its interceptors)."""
    return _state.tracer is not None


def check_endpoint(url: str) -> str:
    """The OTLP/HTTP traces URL for a collector at ``url``; InvalidArgument if it is not one.

    ``url`` is the collector's base URL (``http://collector:4318``), to which ``/v1/traces`` is
    appended, or already the traces URL.
    """
    parts = urlsplit(url)
    if (
        len(url) > limits.trace_endpoint_chars_max
        or parts.scheme not in ("http", "https")
        or not parts.hostname
        or parts.query
        or parts.fragment
        or not url.isprintable()
    ):
        raise InvalidArgument(
            f"trace endpoint {url!r} (--trace-otlp-endpoint or OTEL_EXPORTER_OTLP_ENDPOINT): "
            "an http:// or https:// URL of an OTLP/HTTP collector (such as "
            f"http://127.0.0.1:4318), at most {limits.trace_endpoint_chars_max} characters",
            reason="TRACE_ENDPOINT_INVALID",
        )
    if parts.path.rstrip("/").endswith(TRACES_PATH):
        return url
    return url.rstrip("/") + TRACES_PATH


def setup(endpoint: str) -> bool:
    """Turn tracing on when ``endpoint`` (``ServerConfig.trace_otlp_endpoint``) names a collector.

    An empty endpoint leaves tracing as it is (off, unless a test configured it). Returns whether
    tracing is on. A bad URL is refused before anything is imported or started.
    """
    if not endpoint:
        return enabled()
    traces_url = check_endpoint(endpoint)
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    configure(OTLPSpanExporter(endpoint=traces_url), batch=True)
    return True


def configure(
    exporter: SpanExporter, *, batch: bool = False, service_name: str | None = None
) -> None:
    """Make spans from now on and hand them to ``exporter``, replacing any earlier set-up.

    ``batch``: export from a background thread in batches (a server; the provider flushes at
    exit); else each span is exported as it ends (tests read an in-memory exporter).
    """
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor

    reset()
    name = service_name or os.environ.get("OTEL_SERVICE_NAME") or DEFAULT_SERVICE_NAME
    # Not the global provider: OpenTelemetry lets that be set once per process, and tests
    # configure tracing several times.
    provider = TracerProvider(resource=Resource.create({"service.name": name}))
    processor = BatchSpanProcessor(exporter) if batch else SimpleSpanProcessor(exporter)
    provider.add_span_processor(processor)
    _state.provider = provider
    _state.tracer = provider.get_tracer("ledger")


def reset() -> None:
    """Turn tracing off, exporting what was not exported yet."""
    provider, _state.provider, _state.tracer = _state.provider, None, None
    if provider is not None:
        provider.shutdown()


def span(
    name: str,
    attributes: Mapping[str, str | int] | None = None,
    links: Sequence[Link] = (),
) -> contextlib.AbstractContextManager[Span | None]:
    """A span, current in the block (so spans begun in it are its children); a no-op when off.

    An exception leaving the block marks the span as failed, with the ``reason`` of a
    LedgerError.
    """
    tracer = _state.tracer
    if tracer is None:
        return _OFF
    return _current_span(tracer, name, attributes, links)


@contextlib.contextmanager
def _current_span(
    tracer: Tracer,
    name: str,
    attributes: Mapping[str, str | int] | None,
    links: Sequence[Link],
) -> Iterator[Span]:
    with tracer.start_as_current_span(
        name,
        attributes=attributes,
        links=links,
        record_exception=False,
        set_status_on_exception=False,  # _record_failure says it, with the status code's name
    ) as opened:
        try:
            yield opened
        except BaseException as error:
            _record_failure(opened, error)
            raise


def current_traceparent() -> str:
    """The W3C ``traceparent`` of the current span; empty when off or outside any span."""
    if _state.tracer is None:
        return ""
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    carrier: dict[str, str] = {}
    TraceContextTextMapPropagator().inject(carrier)
    return carrier.get(TRACEPARENT, "")


def links_from(traceparents: Iterable[str]) -> list[Link]:
    """Links to the spans these ``traceparent`` texts name (empty and invalid ones skipped);
    none when off, without reading ``traceparents``."""
    if _state.tracer is None:
        return []
    from opentelemetry.trace import Link

    links: list[Link] = []
    for traceparent in traceparents:
        context = _span_context_of(traceparent) if traceparent else None
        if context is not None:
            links.append(Link(context))
    return links


def _span_context_of(traceparent: str) -> Any:
    """The remote span context a ``traceparent`` names, or None if it names none."""
    from opentelemetry import trace
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    extracted = TraceContextTextMapPropagator().extract({TRACEPARENT: traceparent})
    context = trace.get_current_span(extracted).get_span_context()
    return context if context.is_valid else None


def _record_failure(opened: Span, error: BaseException, code_name: str = "") -> None:
    from opentelemetry.trace import Status, StatusCode

    if isinstance(error, LedgerError):
        opened.set_attribute("ledger.reason", error.reason)
        code_name = code_name or error.code
    description = code_name or type(error).__name__
    opened.set_status(Status(StatusCode.ERROR, description))


class ServerSpan:
    """The span of one RPC: current from :func:`server_span` until :meth:`detach`."""

    __slots__ = ("_span", "_token")

    def __init__(self, opened: Span, token: object) -> None:
        self._span = opened
        self._token = token

    def end(self, code_name: str, number: int, caller: str) -> None:
        """Record the call's status and caller, and end the span (before the answer is sent)."""
        self._span.set_attribute("rpc.grpc.status_code", number)
        self._span.set_attribute("ledger.caller", caller)
        if code_name != "OK":
            from opentelemetry.trace import Status, StatusCode

            self._span.set_status(Status(StatusCode.ERROR, code_name))
        self._span.end()

    def detach(self) -> None:
        """Make the caller's context current again (when the handler is done)."""
        from opentelemetry import context

        context.detach(self._token)  # type: ignore[arg-type]


def server_span(
    method: str, service: str, name: str, metadata: Iterable[tuple[str, Any]] | None
) -> ServerSpan | None:
    """Begin the span of an RPC ``method``, a child of the caller's ``traceparent`` metadata
    when it sent a valid one, and make it current; None when off."""
    tracer = _state.tracer
    if tracer is None:
        return None
    from opentelemetry import context, trace
    from opentelemetry.trace import SpanKind

    parent: Context | None = None
    for key, value in metadata or ():
        if key == TRACEPARENT and isinstance(value, str):
            remote = _span_context_of(value)
            if remote is not None:
                parent = trace.set_span_in_context(trace.NonRecordingSpan(remote))
            break
    opened = tracer.start_span(
        method.lstrip("/"),
        context=parent,
        kind=SpanKind.SERVER,
        attributes={"rpc.system": "grpc", "rpc.service": service, "rpc.method": name},
    )
    token = context.attach(trace.set_span_in_context(opened, parent))
    return ServerSpan(opened, token)


class WaitSpan:
    """The ``sequencer.wait`` span of one queued entry: from enqueue to its outcome."""

    __slots__ = ("_span", "traceparent")

    def __init__(self, opened: Span, traceparent: str) -> None:
        self._span = opened
        self.traceparent = traceparent
        """Its W3C ``traceparent``, for ``PendingEntry.trace_context``."""

    def refused(self, error: BaseException) -> None:
        """End it: the entry was not queued (the queue is full, or the server stops)."""
        _record_failure(self._span, error)
        self._span.end()

    def outcome(self, future: asyncio.Future[Any]) -> None:
        """End it with the entry's outcome (a done-callback of the entry's future)."""
        if future.cancelled():
            self._span.set_attribute("ledger.outcome", "cancelled")
        else:
            outcome = future.exception() or future.result()
            if isinstance(outcome, BaseException):
                _record_failure(self._span, outcome)
            else:
                self._span.set_attribute("ledger.leaf_index", int(outcome.leaf_index))
                self._span.set_attribute("ledger.duplicate", bool(outcome.duplicate))
        self._span.end()


def wait_span() -> WaitSpan | None:
    """Begin the ``sequencer.wait`` span of an entry about to be queued (a child of the current
    span, not made current: it ends in a callback); None when off."""
    tracer = _state.tracer
    if tracer is None:
        return None
    from opentelemetry import trace
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    opened = tracer.start_span("sequencer.wait")
    carrier: dict[str, str] = {}
    TraceContextTextMapPropagator().inject(carrier, context=trace.set_span_in_context(opened))
    return WaitSpan(opened, carrier.get(TRACEPARENT, ""))
