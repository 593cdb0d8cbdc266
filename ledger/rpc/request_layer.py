"""The decode-and-validation interceptor: every request of every service passes one gate.

gRPC calls a method's request deserializer before the servicer runs; when the body does not
parse, grpc answers UNKNOWN "Unexpected <class DecodeError>". This interceptor wraps each
method handler the server has (ours, the extensions', health and reflection) so that:

1. the deserializer never raises: a body that does not parse becomes an :class:`_Undecodable`
   marker, which step 2 refuses with INVALID_ARGUMENT;
2. each request is checked by :func:`ledger.rpc.validation.check_request` before the servicer
   sees it: a refusal is answered with its status and details, and the servicer never runs
   (nothing is written). In a request stream each message is checked as it is read, and the
   first bad one ends the call (what the messages before it did stands).

Servicers therefore never see a request that breaks a generic rule, and need no code for it.
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any, TypeAlias, cast

import grpc
from google.protobuf.message import Message

from ledger.errors import FieldViolation, InvalidArgument, check
from ledger.rpc.status import abort
from ledger.rpc.validation import check_request

__all__ = ["RequestValidationInterceptor"]

_Context = grpc.aio.ServicerContext[Any, Any]
_Handler: TypeAlias = "grpc.RpcMethodHandler[Any, Any]"


class _Undecodable:
    """What the deserializer returns for a body that does not parse as its message."""

    def __init__(self, message_name: str, error: Exception) -> None:
        self.message_name = message_name
        self.error = error


def _safe_deserializer(deserializer: Callable[[bytes], Any] | None) -> Callable[[bytes], Any]:
    def decode(data: bytes) -> Any:
        if deserializer is None:
            return data
        try:
            return deserializer(data)
        except Exception as error:  # DecodeError, or the parser's own limits: the body's fault
            owner = getattr(deserializer, "__self__", None)
            name = getattr(getattr(owner, "DESCRIPTOR", None), "full_name", "the request message")
            return _Undecodable(name, error)

    return decode


def _check(request: Any) -> None:
    """Raise the refusal of ``request`` (a LedgerError), if any."""
    if isinstance(request, _Undecodable):
        raise InvalidArgument(
            f"the request body does not parse as {request.message_name}: {request.error}",
            reason="REQUEST_UNPARSABLE",
            field_violations=[FieldViolation("", f"not a valid {request.message_name}")],
        )
    if isinstance(request, Message):
        check_request(request)


async def _checked_or_abort(request: Any, context: _Context) -> None:
    try:
        _check(request)
    except Exception as error:
        await abort(context, error)


class _StreamRefused(Exception):
    """A bad message in a request stream, carried out of the servicer to the wrapper."""

    def __init__(self, error: Exception) -> None:
        super().__init__(str(error))
        self.error = error


async def _checked_stream(requests: AsyncIterator[Any]) -> AsyncIterator[Any]:
    # The first bad message ends the call. The servicer may read the stream from a task of its
    # own while it writes responses, so the refusal travels out through the servicer and the
    # wrapper aborts from the handler itself (an abort from another task collides with a write).
    async for request in requests:
        try:
            _check(request)
        except Exception as error:
            raise _StreamRefused(error) from error
        yield request


def _wrap_unary_request(behavior: Callable[..., Any]) -> Callable[..., Any]:
    if inspect.isasyncgenfunction(behavior):

        async def stream_out(request: Any, context: _Context) -> AsyncIterator[Any]:
            await _checked_or_abort(request, context)
            async for response in behavior(request, context):
                yield response

        return stream_out

    async def unary_out(request: Any, context: _Context) -> Any:
        await _checked_or_abort(request, context)
        return await behavior(request, context)

    return unary_out


def _wrap_stream_request(behavior: Callable[..., Any]) -> Callable[..., Any]:
    if inspect.isasyncgenfunction(behavior):

        async def stream_out(requests: AsyncIterator[Any], context: _Context) -> AsyncIterator[Any]:
            try:
                async for response in behavior(_checked_stream(requests), context):
                    yield response
            except _StreamRefused as refused:
                await abort(context, refused.error)

        return stream_out

    async def unary_out(requests: AsyncIterator[Any], context: _Context) -> Any:
        try:
            return await behavior(_checked_stream(requests), context)
        except _StreamRefused as refused:
            await abort(context, refused.error)

    return unary_out


def checked_handler(handler: _Handler) -> _Handler:
    """``handler`` with a deserializer that never raises and every request checked first."""
    deserializer = _safe_deserializer(handler.request_deserializer)
    serializer = handler.response_serializer
    if handler.unary_unary is not None:
        return grpc.unary_unary_rpc_method_handler(
            _wrap_unary_request(handler.unary_unary), deserializer, serializer
        )
    if handler.unary_stream is not None:
        return grpc.unary_stream_rpc_method_handler(
            _wrap_unary_request(handler.unary_stream), deserializer, serializer
        )
    if handler.stream_unary is not None:
        return grpc.stream_unary_rpc_method_handler(
            _wrap_stream_request(handler.stream_unary), deserializer, serializer
        )
    check(handler.stream_stream is not None, "a method handler without a behavior")
    return grpc.stream_stream_rpc_method_handler(
        _wrap_stream_request(cast(Callable[..., Any], handler.stream_stream)),
        deserializer,
        serializer,
    )


if TYPE_CHECKING:
    _Interceptor = grpc.aio.ServerInterceptor[Any, Any]
else:
    _Interceptor = grpc.aio.ServerInterceptor


class RequestValidationInterceptor(_Interceptor):
    """Installs :func:`checked_handler` on every method of the server."""

    def __init__(self) -> None:
        # One wrapped handler per method (the server's methods are a fixed, small set).
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
        self._handlers[method] = checked = checked_handler(handler)
        return checked
