"""The interceptor that records every answer carrying a person's data (issue 8, item 8).

For the methods of :data:`ACCESS_RULES`, after the authorization interceptor let the call in:
  (1) the request must state its purpose (``AccessPurpose``), else INVALID_ARGUMENT and
      nothing runs;
  (2) the servicer answers (a refusal records nothing: no data left the server);
  (3) the access record (caller SPIFFE ID, method, purpose, people, the answer's tree size) is
      stored; only then does the answer leave. If it cannot be stored, the call fails.
Servicers know nothing of this, as they know nothing of authorization.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import grpc

from ledger.clock import Clock
from ledger.coverage.projector import person_key
from ledger.errors import FieldViolation, InvalidArgument
from ledger.rpc.identity import current_caller
from ledger.rpc.status import abort
from ledger.storage.access_log import AccessLog, AccessRecord
from ledger.v1 import types_pb2

__all__ = ["ACCESS_RULES", "AccessRecordingInterceptor"]

_Context = grpc.aio.ServicerContext[Any, Any]
People = tuple[tuple[str, ...], str]
"""(person keys, subject) a request asks about."""


def _person(request: Any) -> People:
    return (person_key(request.person),), ""


def _household(request: Any) -> People:
    people = [person_key(request.sponsor)] if request.HasField("sponsor") else []
    people.extend(person_key(member.person) for member in request.members)
    return tuple(people), f"household of {people[0]}" if people else ""


def _policy(request: Any) -> People:
    return (), f"policy {request.insurer_id}/{request.policy_id}"


def _entries(request: Any) -> People:
    if request.WhichOneof("subject") == "person":
        return _person(request)
    return (), f"policy {request.policy_id}"


_SERVICE = "/ledger.v1.CoverageService/"
ACCESS_RULES: dict[str, Callable[[Any], People]] = {
    f"{_SERVICE}GetCoverage": _person,
    f"{_SERVICE}CheckHousehold": _household,
    f"{_SERVICE}ListPolicyHistory": _policy,
    f"{_SERVICE}FindEntries": _entries,
    f"{_SERVICE}GetCoverageCertificate": _person,
}
"""Every method whose answer carries a person's data, and whom a request asks about."""


class AccessRecordingInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[type-arg]
    """Require a purpose, and store an access record before each answer leaves."""

    def __init__(self, access_log: AccessLog, clock: Clock) -> None:
        self._access_log = access_log
        self._clock = clock

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Any]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Any:
        method = handler_call_details.method
        handler = await continuation(handler_call_details)
        people_of = ACCESS_RULES.get(method)
        if handler is None or people_of is None or handler.unary_unary is None:
            return handler
        inner = handler.unary_unary

        async def recorded(request: Any, context: _Context) -> Any:
            try:
                # (1)
                purpose = _purpose(request)
            except InvalidArgument as error:
                await abort(context, error)
            # (2)
            response = await inner(request, context)
            # (3)
            person_keys, subject = people_of(request)
            caller = current_caller()
            record = AccessRecord(
                recorded_at=self._clock.now(),
                caller=caller.spiffe_id if caller else "",
                method=method,
                purpose=purpose,
                person_keys=person_keys,
                subject=subject,
                tree_size=response.basis.tree_size,
            )
            try:
                await asyncio.to_thread(self._access_log.append, record)
            except Exception as error:  # no record, no answer
                await abort(context, error)
            return response

        return grpc.unary_unary_rpc_method_handler(
            recorded, handler.request_deserializer, handler.response_serializer
        )


def _purpose(request: Any) -> str:
    if request.purpose == types_pb2.ACCESS_PURPOSE_UNSPECIFIED:
        raise InvalidArgument(
            "a read of a person's data states its purpose (AccessPurpose)",
            reason="PURPOSE_MISSING",
            field_violations=[FieldViolation("purpose", "required")],
        )
    return types_pb2.AccessPurpose.Name(request.purpose).removeprefix("ACCESS_PURPOSE_")
