"""The gRPC status a caller gets for a LedgerError, its details unpacked: for tests that check
that an error crosses a boundary (the hand-off, a process) unchanged."""

from __future__ import annotations

from google.rpc import error_details_pb2

from ledger.errors import LedgerError
from ledger.rpc.status import status_of

DETAIL_KINDS = (
    error_details_pb2.ErrorInfo,
    error_details_pb2.BadRequest,
    error_details_pb2.RetryInfo,
)


def unpacked_status(error: LedgerError) -> tuple[int, str, list[object]]:
    """Code, message and every detail of ``error``'s status (map order is not part of it)."""
    status = status_of(error)
    details: list[object] = []
    for packed in status.details:
        for kind in DETAIL_KINDS:
            if packed.Is(kind.DESCRIPTOR):
                message = kind()
                packed.Unpack(message)
                details.append(message)
    assert len(details) == len(status.details), "a detail of an unknown kind"
    return status.code, status.message, details
