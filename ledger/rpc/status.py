"""LedgerError -> google.rpc.Status: the one table that turns domain errors into gRPC statuses.

Each LedgerError names its code; details travel as ``google.rpc.ErrorInfo`` (reason, domain,
metadata) and ``google.rpc.BadRequest`` (field violations) in the ``grpc-status-details-bin``
trailer, as python-api-core and every Google API do. Anything that is not a LedgerError is a bug:
it is logged with its traceback and answered INTERNAL without leaking the exception text.
"""

from __future__ import annotations

import logging
from typing import NoReturn

import grpc
from google.protobuf import any_pb2, duration_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

from ledger.errors import LedgerError, Unavailable
from ledger.fair import Overloaded
from ledger.storage.faults import is_storage_fault, storage_unavailable

__all__ = ["ERROR_DOMAIN", "abort", "status_of"]

ERROR_DOMAIN = "policy-ledger"
"""The ``google.rpc.ErrorInfo.domain`` of every error this service reports."""

log = logging.getLogger(__name__)


def status_of(error: BaseException) -> status_pb2.Status:
    """The google.rpc.Status that reports ``error`` to a client."""
    if is_storage_fault(error):
        # An I/O error, a full disk, a lost connection or a lock held too long, outside a
        # write batch (the appender reports those itself): a read, or admission before anything
        # was queued. Nothing was written, and a retry may succeed. Logged, since it is rare.
        log.warning("storage unavailable: %s", error)
        error = storage_unavailable()
    if not isinstance(error, LedgerError):
        log.error("unexpected error", exc_info=error)
        return status_pb2.Status(code=code_pb2.INTERNAL, message="internal error")
    code = grpc.StatusCode[error.code]
    info = error_details_pb2.ErrorInfo(
        reason=error.details.reason or error.code,
        domain=ERROR_DOMAIN,
        metadata=error.details.metadata,
    )
    details = [_packed(info)]
    if error.details.field_violations:
        request = error_details_pb2.BadRequest(
            field_violations=[
                error_details_pb2.BadRequest.FieldViolation(
                    field=violation.field, description=violation.description
                )
                for violation in error.details.field_violations
            ]
        )
        details.append(_packed(request))
    if isinstance(error, Unavailable | Overloaded):
        delay = duration_pb2.Duration()
        delay.FromMilliseconds(error.retry_delay_ms)
        details.append(_packed(error_details_pb2.RetryInfo(retry_delay=delay)))
    return status_pb2.Status(code=code.value[0], message=error.message, details=details)


def _packed(message: object) -> any_pb2.Any:
    packed = any_pb2.Any()
    packed.Pack(message)  # type: ignore[arg-type]
    return packed


async def abort(
    context: grpc.aio.ServicerContext[object, object], error: BaseException
) -> NoReturn:
    """End the call with the status of ``error`` (details included)."""
    status = rpc_status.to_status(status_of(error))
    # abort() with the status details in the trailers is what abort_with_status() does; the
    # aio context's type stubs lack abort_with_status.
    await context.abort(status.code, status.details, status.trailing_metadata)
    raise AssertionError("abort returned")  # pragma: no cover
