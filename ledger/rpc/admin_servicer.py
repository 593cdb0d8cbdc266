"""ledger.v1.AdminService: the operator's reads of the key registry, and a person's allowance
of token resolutions.

Keys are registered and revoked by operator-signed KeyRegistered / KeyRevoked events submitted
through LedgerService.SubmitEvent; the registry this lists is their projection. A person's
resolutions and the operator's grants of more are
:class:`ledger.identity.resolution_grants.ResolutionGrants`' (docs/privacy.md).

Only the operator role may call them: the authorization table (ledger/rpc/authorization.py)
says so and the interceptor enforces it before this servicer runs.
"""

from __future__ import annotations

import asyncio
import datetime as dt

import grpc
from google.protobuf import timestamp_pb2

from ledger.clock import Clock
from ledger.errors import PermissionDenied
from ledger.identity.resolution_grants import ResolutionGrants
from ledger.keys import InsurerKey
from ledger.rpc.identity import current_caller
from ledger.rpc.status import abort
from ledger.service import KeyCache
from ledger.signers import role_to_proto
from ledger.storage.key_store import KeyStore
from ledger.storage.resolution_grants import BeneficiaryResolutions
from ledger.v1 import admin_service_pb2 as pb
from ledger.v1 import admin_service_pb2_grpc as pb_grpc

__all__ = ["AdminServicer", "key_to_proto", "resolutions_to_proto"]

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
        role=role_to_proto(key.role),
        jurisdiction=key.jurisdiction,
        registered_leaf_index=key.registered_leaf_index,
    )


def resolutions_to_proto(resolutions: BeneficiaryResolutions) -> pb.BeneficiaryResolutions:
    """The wire form of a person's resolutions and grants."""
    return pb.BeneficiaryResolutions(
        person_token=resolutions.person_token,
        resolved=resolutions.resolved,
        base_allowed=resolutions.base_allowed,
        granted=resolutions.granted,
        allowed=resolutions.allowed,
        grants=[
            pb.BeneficiaryResolutionGrant(
                additional=grant.additional,
                reason=grant.reason,
                granted_by=grant.granted_by,
                granted_at=_timestamp(grant.granted_at),
                request_id=grant.request_id or "",
            )
            for grant in resolutions.grants
        ],
        erased=resolutions.erased,
    )


class AdminServicer(pb_grpc.AdminServiceServicer):
    """Key registry reads and resolution grants for the operator."""

    def __init__(
        self, keys: KeyStore, cache: KeyCache, clock: Clock, grants: ResolutionGrants
    ) -> None:
        self._keys = keys
        self._cache = cache
        self._clock = clock
        self._grants = grants

    async def ListInsurerKeys(
        self, request: pb.ListInsurerKeysRequest, context: _Context
    ) -> pb.ListInsurerKeysResponse:
        """Every key of an insurer, or of all insurers."""
        try:
            keys = await asyncio.to_thread(self._keys.list, request.insurer_id)
        except Exception as error:
            await abort(context, error)
        return pb.ListInsurerKeysResponse(keys=[key_to_proto(key) for key in keys])

    async def GetBeneficiaryResolutions(
        self, request: pb.GetBeneficiaryResolutionsRequest, context: _Context
    ) -> pb.GetBeneficiaryResolutionsResponse:
        """A person's resolutions and allowance; writes nothing."""
        try:
            resolutions = await asyncio.to_thread(self._grants.resolutions, request.person_token)
        except Exception as error:
            await abort(context, error)
        return pb.GetBeneficiaryResolutionsResponse(resolutions=resolutions_to_proto(resolutions))

    async def GrantBeneficiaryResolutions(
        self, request: pb.GrantBeneficiaryResolutionsRequest, context: _Context
    ) -> pb.GrantBeneficiaryResolutionsResponse:
        """Grant a person more people to resolve, recorded with the caller's SPIFFE ID; once
        per request id."""
        try:
            caller = current_caller()
            if caller is None:  # the interceptor lets only the operator in: never, in a server
                raise PermissionDenied("a grant needs an authenticated caller", reason="NO_CALLER")
            resolutions = await asyncio.to_thread(
                self._grants.grant,
                request.person_token,
                request.additional,
                request.reason,
                request.request_id,
                caller.spiffe_id,
            )
        except Exception as error:
            await abort(context, error)
        return pb.GrantBeneficiaryResolutionsResponse(resolutions=resolutions_to_proto(resolutions))
