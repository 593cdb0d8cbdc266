"""Typed client errors: a gRPC failure becomes an exception carrying the google.rpc details."""

from __future__ import annotations

from dataclasses import dataclass, field

import grpc
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

__all__ = [
    "AlreadyExistsError",
    "ClientError",
    "FailedPreconditionError",
    "FieldViolation",
    "InvalidArgumentError",
    "NotFoundError",
    "OutOfRangeError",
    "PermissionDeniedError",
    "ResourceExhaustedError",
    "UnauthenticatedError",
    "UnavailableError",
    "from_rpc_error",
    "from_status",
]


@dataclass(frozen=True)
class FieldViolation:
    """A bad request field named by the server."""

    field: str
    description: str


@dataclass
class ClientError(Exception):
    """A call the server refused, with its status code and details."""

    code: grpc.StatusCode
    message: str
    reason: str = ""
    metadata: dict[str, str] = field(default_factory=dict)
    field_violations: tuple[FieldViolation, ...] = ()

    def __str__(self) -> str:
        fields = "; ".join(f"{v.field}: {v.description}" for v in self.field_violations)
        return f"{self.code.name} {self.reason}: {self.message}" + (
            f" [{fields}]" if fields else ""
        )


class InvalidArgumentError(ClientError):
    """INVALID_ARGUMENT."""


class AlreadyExistsError(ClientError):
    """ALREADY_EXISTS."""


class UnauthenticatedError(ClientError):
    """UNAUTHENTICATED."""


class PermissionDeniedError(ClientError):
    """PERMISSION_DENIED."""


class NotFoundError(ClientError):
    """NOT_FOUND."""


class OutOfRangeError(ClientError):
    """OUT_OF_RANGE."""


class ResourceExhaustedError(ClientError):
    """RESOURCE_EXHAUSTED."""


class FailedPreconditionError(ClientError):
    """FAILED_PRECONDITION."""


class UnavailableError(ClientError):
    """UNAVAILABLE: retry later (submissions are idempotent by event id)."""


_BY_CODE: dict[grpc.StatusCode, type[ClientError]] = {
    grpc.StatusCode.INVALID_ARGUMENT: InvalidArgumentError,
    grpc.StatusCode.ALREADY_EXISTS: AlreadyExistsError,
    grpc.StatusCode.UNAUTHENTICATED: UnauthenticatedError,
    grpc.StatusCode.PERMISSION_DENIED: PermissionDeniedError,
    grpc.StatusCode.NOT_FOUND: NotFoundError,
    grpc.StatusCode.OUT_OF_RANGE: OutOfRangeError,
    grpc.StatusCode.RESOURCE_EXHAUSTED: ResourceExhaustedError,
    grpc.StatusCode.FAILED_PRECONDITION: FailedPreconditionError,
    grpc.StatusCode.UNAVAILABLE: UnavailableError,
}
_CODE_BY_NUMBER = {code.value[0]: code for code in grpc.StatusCode}


def from_status(status: status_pb2.Status) -> ClientError:
    """The typed error of a google.rpc.Status (as streamed per item by SubmitEvents)."""
    code = _CODE_BY_NUMBER.get(status.code, grpc.StatusCode.UNKNOWN)
    reason = ""
    metadata: dict[str, str] = {}
    violations: list[FieldViolation] = []
    for detail in status.details:
        info = error_details_pb2.ErrorInfo()
        request = error_details_pb2.BadRequest()
        if detail.Unpack(info):
            reason, metadata = info.reason, dict(info.metadata)
        elif detail.Unpack(request):
            violations.extend(
                FieldViolation(v.field, v.description) for v in request.field_violations
            )
    kind = _BY_CODE.get(code, ClientError)
    return kind(code, status.message, reason, metadata, tuple(violations))


def from_rpc_error(error: grpc.RpcError) -> ClientError:
    """The typed error of a failed call, details included when the server sent them."""
    status = rpc_status.from_call(error)  # type: ignore[arg-type]
    if status is None:
        code = error.code()
        return _BY_CODE.get(code, ClientError)(code, error.details() or "")
    return from_status(status)
