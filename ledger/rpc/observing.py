"""The one interceptor that watches every call: per-RPC metrics and the call log.

It is the outermost of the chain (ledger/rpc/server.py), so it sees every call the server takes,
refusals of the authorization, fairness and validation layers included. For each call it counts
the start, and at the end the status code and the time taken (``ledger.metrics``); with the call
log on (``serve --log-format json``) it writes one line per call on the logger
``ledger.rpc.calls`` with the request id, the caller, the method, the code and the duration.

The request id is the caller's ``x-request-id`` metadata when it sends a usable one (printable
ASCII, at most ``limits.request_id_chars_max``), else one the server makes; an operator finds
a client's call in the logs by it. The caller is the SPIFFE ID the authorization layer set, or
``-`` for open methods and unauthenticated callers (the peer address is logged beside it).

With tracing on (``serve --trace-otlp-endpoint``, :mod:`ledger.tracing`) it also makes the
call's server span, current while the handler runs (admission and the wait for the sequencer are
its children), ended with the status code and the caller when the call is reported.

The wrapped handler is kept per method (as the other interceptors keep theirs): the inner
interceptors decide from the method name alone, never from one call's details.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeAlias

import grpc

from ledger import limits, tracing
from ledger.metrics import LedgerMetrics
from ledger.rpc.identity import current_caller, set_current_caller

__all__ = ["CallObservingInterceptor", "request_id_of"]

_Context: TypeAlias = "grpc.aio.ServicerContext[Any, Any]"
_Handler: TypeAlias = "grpc.RpcMethodHandler[Any, Any]"

REQUEST_ID_KEY = "x-request-id"
"""The metadata key of the caller's request id."""

call_log = logging.getLogger("ledger.rpc.calls")

if TYPE_CHECKING:
    _Interceptor = grpc.aio.ServerInterceptor[Any, Any]
else:
    _Interceptor = grpc.aio.ServerInterceptor


def request_id_of(context: _Context) -> str:
    """The caller's ``x-request-id`` if it is usable, else a new random one."""
    for key, value in context.invocation_metadata() or ():
        if key == REQUEST_ID_KEY and isinstance(value, str):
            usable = 0 < len(value) <= limits.request_id_chars_max
            if usable and value.isascii() and value.isprintable():
                return value
            break
    return uuid.uuid4().hex


def _code_name(context: _Context, error: BaseException | None) -> str:
    """The status the call ended with, as grpc's StatusCode name (``OK``, ``NOT_FOUND``)."""
    if isinstance(error, asyncio.CancelledError | GeneratorExit):
        return "CANCELLED"
    code = context.code()
    if code is None:
        # No abort and no set_code: OK when it returned, UNKNOWN when it raised (grpc's answer
        # to an exception it does not know).
        return "OK" if error is None else "UNKNOWN"
    if isinstance(code, grpc.StatusCode):
        return code.name
    return grpc.StatusCode(code).name if isinstance(code, tuple) else _by_number(int(code))


def _number_of(code: str) -> int:
    """The number of a status code's name (``NOT_FOUND`` is 5)."""
    status = grpc.StatusCode.__members__.get(code, grpc.StatusCode.UNKNOWN)
    return int(status.value[0])


def _by_number(number: int) -> str:
    for status in grpc.StatusCode:
        if status.value[0] == number:
            return status.name
    return "UNKNOWN"


class _Call:
    """One call under way: when it started, its request id, whether it was reported, and its
    span (None unless tracing is on)."""

    __slots__ = ("ended", "request_id", "span", "started")

    def __init__(self, request_id: str, span: tracing.ServerSpan | None) -> None:
        self.request_id = request_id
        self.started = time.perf_counter()
        self.ended = False
        self.span = span


_End = Callable[[_Call, _Context, str], None]


class _ObservedContext:
    """The call's context, reporting the call when it is aborted: ``abort`` sends the status
    to the client at once, before the exception unwinds to the interceptor, so the report goes
    first (a client that got its answer then finds the call in the metrics and the log)."""

    __slots__ = ("_call", "_context", "_end")

    def __init__(self, context: _Context, call: _Call, end: _End) -> None:
        self._context = context
        self._call = call
        self._end = end

    def __getattr__(self, name: str) -> Any:
        return getattr(self._context, name)

    async def abort(self, code: grpc.StatusCode, *args: Any, **kwargs: Any) -> None:
        self._end(self._call, self._context, code.name)
        await self._context.abort(code, *args, **kwargs)

    async def abort_with_status(self, status: Any) -> None:
        self._end(self._call, self._context, status.code.name)
        await self._context.abort_with_status(status)  # type: ignore[attr-defined]


class CallObservingInterceptor(_Interceptor):
    """Counts, times and (optionally) logs every call; see the module docstring."""

    def __init__(
        self, metrics: LedgerMetrics | None, *, log_calls: bool, trace: bool = False
    ) -> None:
        self._metrics = metrics
        self._log_calls = log_calls
        self._trace = trace
        self._handlers: dict[str, _Handler] = {}

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[_Handler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> _Handler:
        method = handler_call_details.method
        if method in self._handlers:
            return self._handlers[method]
        handler = await continuation(handler_call_details)
        if handler is None:  # an unknown method: grpc answers UNIMPLEMENTED itself
            return handler
        self._handlers[method] = wrapped = self._wrapped(method, handler)
        return wrapped

    def _wrapped(self, method: str, handler: _Handler) -> _Handler:
        build = {
            "unary_unary": grpc.unary_unary_rpc_method_handler,
            "unary_stream": grpc.unary_stream_rpc_method_handler,
            "stream_unary": grpc.stream_unary_rpc_method_handler,
            "stream_stream": grpc.stream_stream_rpc_method_handler,
        }
        for kind, make in build.items():
            behavior = getattr(handler, kind)
            if behavior is not None:
                observed = self._observed(method, kind, behavior)
                return make(observed, handler.request_deserializer, handler.response_serializer)
        return handler

    def _observed(self, method: str, kind: str, behavior: Callable[..., Any]) -> Callable[..., Any]:
        service, _, name = method.lstrip("/").rpartition("/")
        begin, end = self._begin_end(method, kind, service, name)
        if inspect.isasyncgenfunction(behavior):

            async def stream_out(request: Any, context: _Context) -> AsyncIterator[Any]:
                call = begin(context)
                try:
                    async for response in behavior(request, _ObservedContext(context, call, end)):
                        yield response
                except BaseException as error:
                    end(call, context, _code_name(context, error))
                    raise
                finally:
                    if call.span is not None:
                        call.span.detach()
                end(call, context, _code_name(context, None))

            return stream_out

        async def unary_out(request: Any, context: _Context) -> Any:
            call = begin(context)
            try:
                response = await behavior(request, _ObservedContext(context, call, end))
            except BaseException as error:
                end(call, context, _code_name(context, error))
                raise
            finally:
                if call.span is not None:
                    call.span.detach()
            end(call, context, _code_name(context, None))
            return response

        return unary_out

    def _begin_end(
        self, method: str, kind: str, service: str, name: str
    ) -> tuple[Callable[[_Context], _Call], _End]:
        metrics, log_calls, trace = self._metrics, self._log_calls, self._trace
        started_child = metrics.rpc_started.labels(kind, service, name) if metrics else None
        seconds_child = metrics.rpc_seconds.labels(kind, service, name) if metrics else None
        handled_children: dict[str, Any] = {}  # the counter's child by code, looked up once each

        def begin(context: _Context) -> _Call:
            set_current_caller(None)  # the authorization layer sets it for this call
            if started_child is not None:
                started_child.inc()
            span = (
                tracing.server_span(method, service, name, context.invocation_metadata())
                if trace
                else None
            )
            return _Call(request_id_of(context) if log_calls else "", span)

        def end(call: _Call, context: _Context, code: str) -> None:
            if call.ended:  # reported at abort; the exception unwinding is the same call
                return
            call.ended = True
            seconds = time.perf_counter() - call.started
            if metrics is not None and seconds_child is not None:
                seconds_child.observe(seconds)
                handled = handled_children.get(code)
                if handled is None:
                    handled = handled_children[code] = metrics.rpc_handled.labels(
                        kind, service, name, code
                    )
                handled.inc()
            if call.span is not None:
                traced = current_caller()
                call.span.end(code, _number_of(code), traced.spiffe_id if traced else "-")
            if log_calls:
                caller = current_caller()
                call_log.info(
                    "%s %s %.1f ms",
                    method,
                    code,
                    seconds * 1000,
                    extra={
                        "request_id": call.request_id,
                        "caller": caller.spiffe_id if caller else "-",
                        "peer": context.peer(),
                        "method": method,
                        "code": code,
                        "duration_ms": round(seconds * 1000, 3),
                    },
                )

        return begin, end
