"""The ledger operator's client: register signing keys, license and suspend insurers.

The operator is a principal of the ledger like an insurer: its Ed25519 keys are registered under
the reserved id ``operator``, and it signs InsurerLicensed / InsurerSuspended events, which go
into the log like any other event (so who was licensed when is verifiable). Key registration
uses the AdminService, over a channel that presents an operator certificate (mTLS).

operator = OperatorClient(channel, signer=operator_signer, log=trusted)
operator.register_key("operator", operator_signer.public_key, valid_from=...)
operator.register_key("gulf-health", insurer_public_key, valid_from=...)
operator.license_insurer("gulf-health", name="Gulf Health", licence_number="CCHI-0042",
                         effective=date(2026, 1, 1))
"""

from __future__ import annotations

import datetime as dt

import grpc

from clients.errors import from_rpc_error
from clients.insurer import InsurerClient
from clients.verify import TrustedLog, VerifiedReceipt
from ledger.events import civil_date
from ledger.signing import Signer
from ledger.v1 import admin_service_pb2, admin_service_pb2_grpc, events_pb2

__all__ = ["OPERATOR_ID", "OperatorClient", "insurer_licensed", "insurer_suspended"]

OPERATOR_ID = "operator"
"""The reserved principal whose keys sign insurer licensing events."""


def insurer_licensed(
    insurer_id: str,
    *,
    name: str,
    licence_number: str,
    effective: dt.date,
    occurred_at: dt.datetime,
    event_id: str | None = None,
) -> events_pb2.Event:
    """The operator's event licensing ``insurer_id`` from ``effective``."""
    event = events_pb2.Event(
        event_id=event_id or f"licence-{insurer_id}-{effective.isoformat()}",
        insurer_id=OPERATOR_ID,
    )
    event.occurred_at.FromDatetime(occurred_at)
    body = event.insurer_licensed
    body.licensed_insurer_id = insurer_id
    body.name = name
    body.licence_number = licence_number
    body.effective_date.CopyFrom(civil_date(effective))
    return event


def insurer_suspended(
    insurer_id: str,
    *,
    effective: dt.date,
    reason: str,
    occurred_at: dt.datetime,
    event_id: str | None = None,
) -> events_pb2.Event:
    """The operator's event suspending ``insurer_id`` from ``effective``."""
    event = events_pb2.Event(
        event_id=event_id or f"suspension-{insurer_id}-{effective.isoformat()}",
        insurer_id=OPERATOR_ID,
    )
    event.occurred_at.FromDatetime(occurred_at)
    body = event.insurer_suspended
    body.suspended_insurer_id = insurer_id
    body.effective_date.CopyFrom(civil_date(effective))
    body.reason = reason
    return event


class OperatorClient:
    """Key registration (AdminService) and signed licensing events (LedgerService)."""

    def __init__(self, channel: grpc.Channel, *, signer: Signer, log: TrustedLog) -> None:
        # The channel must present an operator certificate: AdminService is operator-only.
        self._admin = admin_service_pb2_grpc.AdminServiceStub(channel)
        self._events = InsurerClient(channel, signer=signer, log=log)

    def register_key(
        self,
        principal_id: str,
        public_key: bytes,
        *,
        valid_from: dt.datetime | None = None,
        valid_until: dt.datetime | None = None,
    ) -> admin_service_pb2.InsurerKey:
        """Register an Ed25519 key of an insurer (or of ``operator``); idempotent."""
        request = admin_service_pb2.RegisterInsurerKeyRequest(
            insurer_id=principal_id, public_key=public_key
        )
        if valid_from is not None:
            request.valid_from.FromDatetime(valid_from)
        if valid_until is not None:
            request.valid_until.FromDatetime(valid_until)
        try:
            return self._admin.RegisterInsurerKey(request).key
        except grpc.RpcError as error:
            raise from_rpc_error(error) from None

    def license_insurer(
        self,
        insurer_id: str,
        *,
        name: str,
        licence_number: str,
        effective: dt.date,
        occurred_at: dt.datetime | None = None,
    ) -> VerifiedReceipt:
        """Sign and submit the licensing of ``insurer_id``; return the verified receipt."""
        return self._events.submit(
            insurer_licensed(
                insurer_id,
                name=name,
                licence_number=licence_number,
                effective=effective,
                occurred_at=occurred_at or dt.datetime.now(dt.UTC),
            )
        )

    def onboard(
        self,
        principal_id: str,
        public_key: bytes,
        *,
        name: str,
        licence_number: str,
        valid_from: dt.datetime,
        occurred_at: dt.datetime | None = None,
    ) -> tuple[admin_service_pb2.InsurerKey, VerifiedReceipt]:
        """Register this operator's own key and ``principal_id``'s key, both valid from
        ``valid_from`` (a key signs only what happened while it was valid), then license the
        principal from that day. Idempotent with a fixed ``occurred_at``."""
        self.register_key(OPERATOR_ID, self._events.public_key, valid_from=valid_from)
        key = self.register_key(principal_id, public_key, valid_from=valid_from)
        receipt = self.license_insurer(
            principal_id,
            name=name,
            licence_number=licence_number,
            effective=valid_from.date(),
            occurred_at=occurred_at,
        )
        return key, receipt

    def suspend_insurer(
        self,
        insurer_id: str,
        *,
        effective: dt.date,
        reason: str,
        occurred_at: dt.datetime | None = None,
    ) -> VerifiedReceipt:
        """Sign and submit the suspension of ``insurer_id``; return the verified receipt."""
        return self._events.submit(
            insurer_suspended(
                insurer_id,
                effective=effective,
                reason=reason,
                occurred_at=occurred_at or dt.datetime.now(dt.UTC),
            )
        )
