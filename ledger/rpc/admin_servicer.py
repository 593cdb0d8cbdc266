"""ledger.v1.AdminService: the operator's key registry calls.

Only the operator role may call them: the authorization table (ledger/rpc/authorization.py)
says so and the interceptor enforces it before this servicer runs.
"""

from __future__ import annotations

import asyncio
import datetime as dt

import grpc
from google.protobuf import timestamp_pb2

from ledger.clock import Clock
from ledger.errors import FieldViolation, InvalidArgument
from ledger.events import check_identifier
from ledger.keys import InsurerKey
from ledger.rpc.status import abort
from ledger.service import KeyCache
from ledger.storage.key_store import KeyStore
from ledger.v1 import admin_service_pb2 as pb
from ledger.v1 import admin_service_pb2_grpc as pb_grpc

__all__ = ["AdminServicer", "key_to_proto"]

_Context = grpc.aio.ServicerContext[object, object]


def _timestamp(instant: dt.datetime | None) -> timestamp_pb2.Timestamp | None:
    if instant is None:
        return None
    stamp = timestamp_pb2.Timestamp()
    stamp.FromDatetime(instant)
    return stamp


def key_to_proto(key: InsurerKey) -> pb.InsurerKey:
    """The wire form of a registered key."""
    return pb.InsurerKey(
        insurer_id=key.insurer_id,
        key_id=key.key_id,
        public_key=key.public_key,
        valid_from=_timestamp(key.valid_from),
        valid_until=_timestamp(key.valid_until),
        revoked_at=_timestamp(key.revoked_at),
    )


def _instant(
    stamp: timestamp_pb2.Timestamp, present: bool, default: dt.datetime | None
) -> dt.datetime | None:
    return stamp.ToDatetime(tzinfo=dt.UTC) if present else default


class AdminServicer(pb_grpc.AdminServiceServicer):
    """Key registry calls for the operator."""

    def __init__(self, keys: KeyStore, cache: KeyCache, clock: Clock) -> None:
        self._keys = keys
        self._cache = cache
        self._clock = clock

    async def RegisterInsurerKey(
        self, request: pb.RegisterInsurerKeyRequest, context: _Context
    ) -> pb.RegisterInsurerKeyResponse:
        """Register an insurer's public key (idempotent)."""
        try:
            _check_insurer_id(request.insurer_id)
            now = self._clock.now()
            key = await asyncio.to_thread(
                lambda: self._keys.register(
                    insurer_id=request.insurer_id,
                    public_key=request.public_key,
                    valid_from=_instant(request.valid_from, request.HasField("valid_from"), None),
                    valid_until=_instant(
                        request.valid_until, request.HasField("valid_until"), None
                    ),
                    now=now,
                )
            )
        except Exception as error:
            await abort(context, error)
        self._cache.forget()
        return pb.RegisterInsurerKeyResponse(key=key_to_proto(key))

    async def RevokeInsurerKey(
        self, request: pb.RevokeInsurerKeyRequest, context: _Context
    ) -> pb.RevokeInsurerKeyResponse:
        """Revoke a key from an instant on (default: now)."""
        try:
            now = self._clock.now()
            revoked_at = _instant(request.revoked_at, request.HasField("revoked_at"), now) or now
            key = await asyncio.to_thread(self._keys.revoke, request.key_id, revoked_at)
        except Exception as error:
            await abort(context, error)
        self._cache.forget()
        return pb.RevokeInsurerKeyResponse(key=key_to_proto(key))

    async def ListInsurerKeys(
        self, request: pb.ListInsurerKeysRequest, context: _Context
    ) -> pb.ListInsurerKeysResponse:
        """Every key of an insurer, or of all insurers."""
        try:
            keys = await asyncio.to_thread(self._keys.list, request.insurer_id)
        except Exception as error:
            await abort(context, error)
        return pb.ListInsurerKeysResponse(keys=[key_to_proto(key) for key in keys])


def _check_insurer_id(insurer_id: str) -> None:
    # The same rule as an event's insurer_id, so every registered key can sign something.
    violations: list[FieldViolation] = []
    check_identifier(violations, "insurer_id", insurer_id)
    if violations:
        raise InvalidArgument(
            f"invalid insurer_id: {violations[0].description}",
            reason="INSURER_ID_INVALID",
            field_violations=violations,
        )
