"""The one error root of the ledger, and the ``check()`` helper for invariants.

Every error the ledger raises on purpose derives from :class:`LedgerError` and carries the name of
the gRPC status code it maps to (as python-api-core does), so the RPC layer converts errors with one
table and the pure core never imports grpc. Rich details (field violations, the reason, the
resource) travel with the error and become ``google.rpc`` details on the wire.

Operating errors (bad input, unknown key, conflict) are expected and handled. Invariant violations
are bugs: :func:`check` raises :class:`InvariantViolation`, and unlike ``assert`` it survives
``python -O``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from ledger import limits

__all__ = [
    "AlreadyExists",
    "FailedPrecondition",
    "FieldViolation",
    "InvalidArgument",
    "InvariantViolation",
    "LedgerError",
    "NotFound",
    "OutOfRange",
    "PermissionDenied",
    "ResourceExhausted",
    "Unauthenticated",
    "Unavailable",
    "VerificationError",
    "check",
    "refuse_violations",
]


@dataclass(frozen=True)
class FieldViolation:
    """One bad field of a request: ``field`` is a dotted path, ``description`` says what's wrong."""

    field: str
    description: str


@dataclass(frozen=True)
class ErrorDetails:
    """Machine-readable details attached to an error (become google.rpc details on the wire)."""

    reason: str = ""
    field_violations: tuple[FieldViolation, ...] = ()
    metadata: dict[str, str] = field(default_factory=dict)


class LedgerError(Exception):
    """Root of every error the ledger raises on purpose.

    ``code`` names the gRPC status code (``grpc.StatusCode[code]``) the error maps to.
    ``reason`` is a stable UPPER_SNAKE identifier clients can switch on.
    """

    code: ClassVar[str] = "UNKNOWN"

    def __init__(
        self,
        message: str,
        *,
        reason: str = "",
        field_violations: tuple[FieldViolation, ...] | list[FieldViolation] = (),
        metadata: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.details = ErrorDetails(
            reason=reason,
            field_violations=tuple(field_violations),
            metadata=dict(metadata or {}),
        )

    @property
    def reason(self) -> str:
        """The stable reason identifier (may be empty)."""
        return self.details.reason


class InvalidArgument(LedgerError):
    """The request is malformed or breaks a structural rule; retrying it unchanged cannot help."""

    code = "INVALID_ARGUMENT"


class ResourceExhausted(LedgerError):
    """The request is over a size or count limit (see ``ledger.limits``)."""

    code = "RESOURCE_EXHAUSTED"


class NotFound(LedgerError):
    """The thing asked for does not exist (yet)."""

    code = "NOT_FOUND"


class AlreadyExists(LedgerError):
    """A different thing already exists under the same identifier."""

    code = "ALREADY_EXISTS"


class FailedPrecondition(LedgerError):
    """The request is well formed but the current state does not allow it."""

    code = "FAILED_PRECONDITION"


class OutOfRange(LedgerError):
    """An index or size lies beyond what exists."""

    code = "OUT_OF_RANGE"


class PermissionDenied(LedgerError):
    """The caller (or the key that signed) may not do this."""

    code = "PERMISSION_DENIED"


class Unauthenticated(LedgerError):
    """No valid credential or signature was presented."""

    code = "UNAUTHENTICATED"


class Unavailable(LedgerError):
    """The service cannot take the request now (shutting down, overloaded, a storage fault).

    ``retry_delay_ms`` is how long a client should wait before retrying (a google.rpc RetryInfo
    on the wire).
    """

    code = "UNAVAILABLE"

    def __init__(
        self,
        message: str,
        *,
        reason: str = "",
        metadata: dict[str, str] | None = None,
        retry_delay_ms: int = limits.unavailable_retry_delay_ms,
    ) -> None:
        super().__init__(message, reason=reason, metadata=metadata)
        self.retry_delay_ms = retry_delay_ms


class VerificationError(LedgerError):
    """A proof, signature or note did not verify. Raised by the pure verifiers."""

    code = "FAILED_PRECONDITION"


class InvariantViolation(LedgerError):
    """An internal invariant does not hold: this is a bug, never the caller's fault."""

    code = "INTERNAL"


def check(condition: bool, message: str) -> None:
    """Raise :class:`InvariantViolation` with ``message`` unless ``condition`` holds.

    Use it for invariants (things that are true unless the code is wrong), not for input
    validation. Unlike ``assert``, it is not removed by ``python -O``.
    """
    if not condition:
        raise InvariantViolation(message, reason="INVARIANT_VIOLATION")


def refuse_violations(
    violations: list[FieldViolation], what: str = "request", reason: str = "REQUEST_INVALID"
) -> None:
    """Raise INVALID_ARGUMENT listing every violation (the first in the message), if any."""
    if violations:
        raise InvalidArgument(
            f"invalid {what}: {violations[0].field}: {violations[0].description}"
            + (f" (and {len(violations) - 1} more)" if len(violations) > 1 else ""),
            reason=reason,
            field_violations=violations,
        )
