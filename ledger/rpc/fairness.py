"""Fairness between callers: a bound on the calls one caller may have under way at once.

Beyond ``limits.caller_calls_in_flight_max`` a call is answered RESOURCE_EXHAUSTED with a retry
hint (``google.rpc.RetryInfo``) before any work is done, so one caller's flood cannot take the
threads, database connections and sequencer slots that the others need. The transport limits
(streams per connection, idle and handshake timeouts) are server options: see
``ledger.rpc.server.connection_options``.

Callers are told apart by :func:`caller_of` (the SPIFFE ID of the caller's client certificate, as
the authorization interceptor, which runs first, found it; the connection's address for the open
methods, health and reflection): many connections of one caller share its limit, and one
connection cannot pass for many callers. The key is also set as :data:`ledger.fair.caller_key`
for the call, so the sequencer and the read pool take the waiting work of callers in turns.
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeAlias

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from ledger import limits
from ledger.fair import caller_key
from ledger.rpc.identity import current_caller
from ledger.rpc.status import ERROR_DOMAIN

__all__ = ["CallerLimitInterceptor", "caller_of", "overloaded_status", "peer_of"]

_Context: TypeAlias = "grpc.aio.ServicerContext[Any, Any]"
_Handler: TypeAlias = "grpc.RpcMethodHandler[Any, Any]"

REFUSED_STREAM_DRAIN_MAX = 16
"""Requests read from a refused stream before it is answered: a client still writing when the
server ends its call reports INTERNAL instead of the status, so short streams are let finish."""

if TYPE_CHECKING:
    _Interceptor = grpc.aio.ServerInterceptor[Any, Any]
else:
    _Interceptor = grpc.aio.ServerInterceptor


def peer_of(context: _Context) -> str:
    """The caller as the transport knows it (``ipv4:127.0.0.1:54321``)."""
    return str(context.peer())


def caller_of(context: _Context) -> str:
    """The caller's SPIFFE ID (set by the authorization interceptor), else its peer address."""
    caller = current_caller()
    return caller.spiffe_id if caller is not None else peer_of(context)


def overloaded_status(message: str, reason: str) -> status_pb2.Status:
    """RESOURCE_EXHAUSTED with ErrorInfo and a RetryInfo of ``limits.retry_after_ms``."""
    info = any_pb2.Any()
    info.Pack(error_details_pb2.ErrorInfo(reason=reason, domain=ERROR_DOMAIN))
    retry = any_pb2.Any()
    delay = duration_pb2.Duration()
    delay.FromMilliseconds(limits.retry_after_ms)
    retry.Pack(error_details_pb2.RetryInfo(retry_delay=delay))
    return status_pb2.Status(
        code=code_pb2.RESOURCE_EXHAUSTED, message=message, details=[info, retry]
    )


class _Counter:
    """Calls under way per caller (the server's one event loop needs no lock)."""

    def __init__(self, in_flight_max: int) -> None:
        self.in_flight_max = in_flight_max
        self._counts: dict[str, int] = {}

    def enter(self, caller: str) -> bool:
        count = self._counts.get(caller, 0)
        if count >= self.in_flight_max:
            return False
        self._counts[caller] = count + 1
        return True

    def leave(self, caller: str) -> None:
        count = self._counts[caller] - 1
        if count:
            self._counts[caller] = count
        else:
            del self._counts[caller]


class CallerLimitInterceptor(_Interceptor):
    """Refuses a caller's call beyond ``in_flight_max`` of its calls under way."""

    def __init__(
        self,
        in_flight_max: int = limits.caller_calls_in_flight_max,
        caller_of: Callable[[_Context], str] = caller_of,
    ) -> None:
        self._counter = _Counter(in_flight_max)
        self._caller_of = caller_of
        self._handlers: dict[str, _Handler] = {}

    async def _refuse(self, context: _Context, requests: AsyncIterator[Any] | None) -> None:
        if requests is not None:
            drained = 0
            async for _ in requests:
                drained += 1
                if drained >= REFUSED_STREAM_DRAIN_MAX:
                    break
        status = rpc_status.to_status(
            overloaded_status(
                f"more than {self._counter.in_flight_max} calls under way from this caller; "
                "retry after the delay in RetryInfo",
                "CALLER_CALLS_IN_FLIGHT",
            )
        )
        await context.abort(status.code, status.details, status.trailing_metadata)

    def _limited(self, behavior: Callable[..., Any], streams_requests: bool) -> Callable[..., Any]:
        counter, caller_of, refuse = self._counter, self._caller_of, self._refuse
        if inspect.isasyncgenfunction(behavior):

            async def stream_out(request: Any, context: _Context) -> AsyncIterator[Any]:
                caller = caller_of(context)
                caller_key.set(caller)
                if not counter.enter(caller):
                    await refuse(context, request if streams_requests else None)
                try:
                    async for response in behavior(request, context):
                        yield response
                finally:
                    counter.leave(caller)

            return stream_out

        async def unary_out(request: Any, context: _Context) -> Any:
            caller = caller_of(context)
            caller_key.set(caller)
            if not counter.enter(caller):
                await refuse(context, request if streams_requests else None)
            try:
                return await behavior(request, context)
            finally:
                counter.leave(caller)

        return unary_out

    def _wrapped(self, handler: _Handler) -> _Handler:
        build = {
            "unary_unary": grpc.unary_unary_rpc_method_handler,
            "unary_stream": grpc.unary_stream_rpc_method_handler,
            "stream_unary": grpc.stream_unary_rpc_method_handler,
            "stream_stream": grpc.stream_stream_rpc_method_handler,
        }
        for kind, make in build.items():
            behavior = getattr(handler, kind)
            if behavior is not None:
                limited = self._limited(behavior, streams_requests=kind.startswith("stream_"))
                return make(limited, handler.request_deserializer, handler.response_serializer)
        return handler

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
        self._handlers[method] = wrapped = self._wrapped(handler)
        return wrapped
