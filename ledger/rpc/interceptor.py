"""The one server interceptor that authenticates every caller and enforces the table.

For every method but the open ones (health, reflection), before the servicer runs:
  (1) the caller: the SPIFFE ID of the client certificate (ledger/rpc/identity.py), else
      UNAUTHENTICATED;
  (2) the row of the method in the authorization table, else PERMISSION_DENIED (default deny);
  (3) the grant of the caller's role in that row, else PERMISSION_DENIED;
  (4) the grant's name limit: the request's jurisdiction now; the events' signer is checked
      after admission verified their signatures (authorization.check_signer);
  (5) the caller (and the signer limit) go in context variables for the call.
Refusals carry google.rpc.ErrorInfo (reason, domain, metadata: role, method) and write nothing.

The auth context is only reachable from the servicer context, so the interceptor wraps the
method's handler instead of deciding from the call details alone.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
from google.protobuf.message import Message

from ledger.errors import LedgerError, PermissionDenied, Unauthenticated
from ledger.rpc.authorization import (
    OPEN_METHOD_PREFIXES,
    AuthorizationTable,
    Grant,
    Limit,
    RememberingResolver,
    set_signer_required,
    signer_principal_required,
)
from ledger.rpc.identity import Caller, caller_from_certificate, set_current_caller
from ledger.rpc.status import abort

__all__ = ["AuthorizationInterceptor"]

log = logging.getLogger(__name__)

_Context = grpc.aio.ServicerContext[Any, Any]


def _with_metadata(error: LedgerError, caller: Caller | None, method: str) -> LedgerError:
    error.details.metadata.setdefault("method", method)
    if caller is not None:
        error.details.metadata.setdefault("role", caller.role)
        error.details.metadata.setdefault("caller", caller.spiffe_id)
    return error


class AuthorizationInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[type-arg]
    """Authenticate (SPIFFE ID) and authorize (the table) every call; see the module doc."""

    def __init__(self, table: AuthorizationTable, trust_domain: str) -> None:
        self._table = table
        self._trust_domain = trust_domain
        # One wrapped handler per method, made at its first call (the server's methods are a
        # fixed, small set, and the inner interceptors keep theirs per method too): a call does
        # not run the chain of ``intercept_service`` nor build its handler again.
        self._handlers: dict[str, Any] = {}

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Any]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Any:
        method = handler_call_details.method
        if method in self._handlers:
            return self._handlers[method]
        handler = await continuation(handler_call_details)
        if handler is None:  # an unknown method: grpc answers UNIMPLEMENTED itself
            return handler
        if not method.startswith(OPEN_METHOD_PREFIXES):
            handler = _wrapped(handler, functools.partial(self._admit, method))
        self._handlers[method] = handler
        return handler

    async def _admit(self, method: str, request: object, context: _Context) -> None:
        """Steps (1)-(5); raise a LedgerError to refuse."""
        caller: Caller | None = None
        if (open_rule := self._table.rule(method)) is not None and open_rule.without_certificate:
            return  # the enrolment port's one method: the one-time code is the credential
        try:
            # (1)
            caller = self._caller(context)
            set_current_caller(caller)  # authenticated: the call log names it, refused or not
            # (2)
            rule = self._table.rule(method)
            if rule is None:
                raise PermissionDenied(
                    f"{method} has no row in the authorization table: refused (default deny)",
                    reason="METHOD_NOT_IN_TABLE",
                )
            # (3)
            grant = rule.grant_for(caller)
            if grant is None:
                allowed = ", ".join(grant.role for grant in rule.grants)
                raise PermissionDenied(
                    f"role {caller.role!r} may not call {method} (allowed: {allowed})",
                    reason="ROLE_NOT_ALLOWED",
                )
            # (4)
            if grant.limit is Limit.JURISDICTION:
                await _check_jurisdiction(grant, caller, request)
            elif grant.limit is Limit.PERSON:
                await _check_person(grant, caller, request)
        except LedgerError as error:
            log.info("refused %s for %s: %s", method, caller and caller.spiffe_id, error.message)
            raise _with_metadata(error, caller, method) from None
        # (5)
        set_current_caller(caller)
        set_signer_required(signer_principal_required(caller, grant))

    def _caller(self, context: _Context) -> Caller:
        properties = context.auth_context()
        certificates = list(properties.get("x509_pem_cert") or ())
        if list(properties.get("transport_security_type", ())) != [b"ssl"] or not certificates:
            raise Unauthenticated(
                "this call needs a client certificate (mTLS); plaintext callers have no identity",
                reason="CLIENT_CERTIFICATE_MISSING",
            )
        return caller_from_certificate(certificates[0], self._trust_domain)


async def _check_jurisdiction(grant: Grant, caller: Caller, request: object) -> None:
    if request is not None and not isinstance(request, Message):
        # A body that did not parse: the request layer after this interceptor refuses it with
        # INVALID_ARGUMENT; it names no jurisdiction, so nothing of another one is at stake.
        return
    if request is None:
        raise PermissionDenied(
            "a jurisdiction-limited method cannot be streamed", reason="JURISDICTION_UNKNOWN"
        )
    if grant.resolver is not None:
        # Remembered already: decided here, with no thread and no database read.
        jurisdiction = (
            grant.resolver.known(request)
            if isinstance(grant.resolver, RememberingResolver)
            else None
        )
        if jurisdiction is None:
            jurisdiction = await asyncio.to_thread(grant.resolver, request)
        if jurisdiction is None:
            # The request names no quote or payment that exists: there is nothing of another
            # jurisdiction to protect, and the servicer refuses it with the precise reason.
            return
    else:
        jurisdiction = str(getattr(request, grant.jurisdiction_field, ""))
    if jurisdiction != caller.name:
        raise PermissionDenied(
            f"{caller.spiffe_id} acts for jurisdiction {caller.name!r} only; this request is "
            f"for {jurisdiction or 'no jurisdiction'!r}",
            reason="JURISDICTION_NOT_CALLER",
            metadata={"jurisdiction": jurisdiction or ""},
        )


async def _check_person(grant: Grant, caller: Caller, request: object) -> None:
    """Limit.PERSON: the request's person_token is the caller or one it may read."""
    if request is not None and not isinstance(request, Message):
        return  # unparsed: the request layer refuses it, and it names nobody
    if request is None or grant.people is None:
        raise PermissionDenied(
            "a person-limited method cannot be streamed", reason="PERSON_NOT_CALLER"
        )
    asked = str(getattr(request, "person_token", ""))
    readable = await asyncio.to_thread(grant.people, caller.name)
    if asked not in readable:
        raise PermissionDenied(
            f"{caller.spiffe_id} may read its own record and its accepted beneficiaries' only",
            reason="PERSON_NOT_CALLER",
            metadata={"person_token": asked},
        )


_Admit = Callable[[object, _Context], Awaitable[None]]


def _wrapped(handler: Any, admit: _Admit) -> Any:
    """The same handler, with ``admit`` run first (refusals become the call's status)."""
    if handler.unary_unary is not None:
        inner_unary = handler.unary_unary

        async def unary_unary(request: object, context: _Context) -> object:
            await _admitted(admit, request, context)
            return await inner_unary(request, context)

        return grpc.unary_unary_rpc_method_handler(
            unary_unary, handler.request_deserializer, handler.response_serializer
        )
    if handler.unary_stream is not None:
        inner_stream = handler.unary_stream

        async def unary_stream(request: object, context: _Context) -> AsyncIterator[object]:
            await _admitted(admit, request, context)
            async for response in inner_stream(request, context):
                yield response

        return grpc.unary_stream_rpc_method_handler(
            unary_stream, handler.request_deserializer, handler.response_serializer
        )
    if handler.stream_unary is not None:
        inner_collect = handler.stream_unary

        async def stream_unary(requests: object, context: _Context) -> object:
            await _admitted(admit, None, context)
            return await inner_collect(requests, context)

        return grpc.stream_unary_rpc_method_handler(
            stream_unary, handler.request_deserializer, handler.response_serializer
        )
    inner_both = handler.stream_stream

    async def stream_stream(requests: object, context: _Context) -> AsyncIterator[object]:
        await _admitted(admit, None, context)
        async for response in inner_both(requests, context):
            yield response

    return grpc.stream_stream_rpc_method_handler(
        stream_stream, handler.request_deserializer, handler.response_serializer
    )


async def _admitted(admit: _Admit, request: object, context: _Context) -> None:
    try:
        await admit(request, context)
    except LedgerError as error:
        await abort(context, error)
