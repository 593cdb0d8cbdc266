"""The ledger operator's client: register and revoke signing keys, license and suspend insurers,
grant a person more people to resolve.

The operator is a principal of the ledger like an insurer: its Ed25519 keys are registered under
the reserved id ``operator`` (the first one by the log's genesis entry), and it signs
KeyRegistered / KeyRevoked / InsurerLicensed / InsurerSuspended events, which go into the log like
any other event, so an auditor learns who could sign what, and when, from the log alone.

operator = OperatorClient(channel, signer=operator_signer, log=trusted)
operator.register_key("gulf-health", insurer_public_key, role=SignerRole.INSURER, valid_from=...)
operator.license_insurer("gulf-health", name="Gulf Health", licence_number="CCHI-0042",
                         effective=date(2026, 1, 1))
operator.revoke_key("ed25519:0123abcd4567ef89", reason="rotated")
operator.grant_beneficiary_resolutions("pt_...", 8, reason="ticket 4411: slots spent on typos",
                                       request_id=str(uuid.uuid4()))  # kept, to retry with
"""

from __future__ import annotations

import datetime as dt

import grpc

from clients.errors import from_rpc_error
from clients.insurer import InsurerClient
from clients.verify import TrustedLog, VerifiedReceipt
from ledger.events import civil_date
from ledger.keys import insurer_key_id
from ledger.signers import OPERATOR_ID, SignerRole, role_to_proto
from ledger.signing import Signer
from ledger.v1 import (
    admin_service_pb2,
    admin_service_pb2_grpc,
    events_pb2,
    identity_service_pb2,
    identity_service_pb2_grpc,
    types_pb2,
)

__all__ = [
    "OPERATOR_ID",
    "AdminClient",
    "OperatorClient",
    "insurer_licensed",
    "insurer_suspended",
    "key_registered",
    "key_revoked",
    "person_erased",
]


def key_registered(
    principal_id: str,
    public_key: bytes,
    *,
    role: SignerRole,
    valid_from: dt.datetime,
    occurred_at: dt.datetime,
    valid_until: dt.datetime | None = None,
    jurisdiction: str = "",
    event_id: str | None = None,
) -> events_pb2.Event:
    """The operator's event registering ``public_key`` for ``principal_id`` in ``role``."""
    event = events_pb2.Event(
        event_id=event_id or f"key-{insurer_key_id(public_key)}", insurer_id=OPERATOR_ID
    )
    event.occurred_at.FromDatetime(occurred_at)
    body = event.key_registered
    body.principal_id = principal_id
    body.role = role_to_proto(role)
    body.public_key = public_key
    body.valid_from.FromDatetime(valid_from)
    if valid_until is not None:
        body.valid_until.FromDatetime(valid_until)
    body.jurisdiction = jurisdiction
    return event


def key_revoked(
    key_id: str,
    *,
    reason: str,
    occurred_at: dt.datetime,
    revoked_from: dt.datetime | None = None,
    event_id: str | None = None,
) -> events_pb2.Event:
    """The operator's event revoking ``key_id`` (from ``revoked_from``, default: its entry)."""
    # The instant is in the id: a second revocation of a key is then refused as such
    # (KEY_ALREADY_REVOKED), while a retry of this very event stays idempotent.
    stamp = occurred_at.strftime("%Y%m%dT%H%M%S.%fZ")
    event = events_pb2.Event(
        event_id=event_id or f"revoke-{key_id}-{stamp}", insurer_id=OPERATOR_ID
    )
    event.occurred_at.FromDatetime(occurred_at)
    body = event.key_revoked
    body.key_id = key_id
    body.reason = reason
    if revoked_from is not None:
        body.revoked_from.FromDatetime(revoked_from)
    return event


def person_erased(person_token: str, *, basis: str, occurred_at: dt.datetime) -> events_pb2.Event:
    """The operator's event erasing the person of ``person_token`` from the identity vault."""
    event = events_pb2.Event(event_id=f"erase-{person_token}", insurer_id=OPERATOR_ID)
    event.occurred_at.FromDatetime(occurred_at)
    event.person_erased.person_token = person_token
    event.person_erased.basis = basis
    return event


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


class AdminClient:
    """The operator's calls that sign nothing: reads of the key registry, a person's token, a
    person's resolutions and grants of more (AdminService, IdentityService)."""

    def __init__(self, channel: grpc.Channel) -> None:
        # The channel must present an operator certificate: AdminService is operator-only.
        self._admin = admin_service_pb2_grpc.AdminServiceStub(channel)
        self._identity = identity_service_pb2_grpc.IdentityServiceStub(channel)

    def list_keys(self, principal_id: str = "") -> list[admin_service_pb2.InsurerKey]:
        """The registered keys of ``principal_id`` (or of all principals), from the projection."""
        request = admin_service_pb2.ListInsurerKeysRequest(insurer_id=principal_id)
        try:
            return list(self._admin.ListInsurerKeys(request).keys)
        except grpc.RpcError as error:
            raise from_rpc_error(error) from None

    def person_token(self, person: types_pb2.PersonId) -> str:
        """The token of ``person`` (IdentityService.LookUpPersonToken: issues none; NOT_FOUND
        when the vault does not know them)."""
        request = identity_service_pb2.LookUpPersonTokenRequest(person=person)
        try:
            return self._identity.LookUpPersonToken(request, timeout=30).person_token
        except grpc.RpcError as error:
            raise from_rpc_error(error) from error

    def beneficiary_resolutions(
        self, person_token: str
    ) -> admin_service_pb2.BeneficiaryResolutions:
        """How many people the person resolved through GetPersonTokens and how many they may
        (the base bound plus every grant, each listed; an erased person's grants with an empty
        reason: the erasure cleared it)."""
        request = admin_service_pb2.GetBeneficiaryResolutionsRequest(person_token=person_token)
        try:
            return self._admin.GetBeneficiaryResolutions(request, timeout=30).resolutions
        except grpc.RpcError as error:
            raise from_rpc_error(error) from error

    def grant_beneficiary_resolutions(
        self, person_token: str, additional: int, *, reason: str, request_id: str
    ) -> admin_service_pb2.BeneficiaryResolutions:
        """Grant the person ``additional`` more people to resolve, for ``reason`` (kept until
        the person is erased, which clears it: name no one in it); their resolutions with the
        grant. Idempotent by
        ``request_id`` (8 to 128 printable characters, e.g. a fresh UUID): after a lost answer
        (a timeout, a dropped connection), call again with the same request id and the same
        fields, which grants once and answers the resolutions as they are then (after the
        person's erasure the reason is not compared: it was cleared); the same request id with
        other fields is refused (ALREADY_EXISTS REQUEST_ID_REUSED). The request id is kept
        with the grant after the person's erasure too: put no personal data in it."""
        request = admin_service_pb2.GrantBeneficiaryResolutionsRequest(
            person_token=person_token, additional=additional, reason=reason, request_id=request_id
        )
        try:
            return self._admin.GrantBeneficiaryResolutions(request, timeout=30).resolutions
        except grpc.RpcError as error:
            raise from_rpc_error(error) from error


class OperatorClient(AdminClient):
    """Signed operator events (LedgerService), and every :class:`AdminClient` call."""

    def __init__(self, channel: grpc.Channel, *, signer: Signer, log: TrustedLog) -> None:
        super().__init__(channel)
        self._events = InsurerClient(channel, signer=signer, log=log)

    def submit(self, event: events_pb2.Event) -> VerifiedReceipt:
        """Sign and submit one operator event (e.g. :func:`person_erased`)."""
        return self._events.submit(event)

    def erase_person(
        self, person: types_pb2.PersonId, *, basis: str, occurred_at: dt.datetime | None = None
    ) -> tuple[str, VerifiedReceipt]:
        """Erase ``person`` from the identity vault: (1) look their token up (issuing none),
        (2) sign and submit PersonErased naming only the token and ``basis``. The ledger deletes
        the identifier in the transaction that appends the entry. Returns (token, receipt)."""
        token = self.person_token(person)  # (1)
        event = person_erased(  # (2)
            token, basis=basis, occurred_at=occurred_at or dt.datetime.now(dt.UTC)
        )
        return token, self._events.submit(event)

    def register_key(
        self,
        principal_id: str,
        public_key: bytes,
        *,
        role: SignerRole = SignerRole.INSURER,
        valid_from: dt.datetime | None = None,
        valid_until: dt.datetime | None = None,
        jurisdiction: str = "",
        occurred_at: dt.datetime | None = None,
    ) -> VerifiedReceipt:
        """Sign and submit a KeyRegistered event; return its verified receipt. Idempotent with
        a fixed ``occurred_at`` and ``valid_from`` (the event id is derived from the key)."""
        now = dt.datetime.now(dt.UTC)
        return self._events.submit(
            key_registered(
                principal_id,
                public_key,
                role=role,
                valid_from=valid_from or now,
                valid_until=valid_until,
                jurisdiction=jurisdiction,
                occurred_at=occurred_at or now,
            )
        )

    def revoke_key(
        self,
        key_id: str,
        *,
        reason: str,
        revoked_from: dt.datetime | None = None,
        occurred_at: dt.datetime | None = None,
    ) -> VerifiedReceipt:
        """Sign and submit a KeyRevoked event; return its verified receipt."""
        return self._events.submit(
            key_revoked(
                key_id,
                reason=reason,
                revoked_from=revoked_from,
                occurred_at=occurred_at or dt.datetime.now(dt.UTC),
            )
        )

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
        role: SignerRole = SignerRole.INSURER,
        jurisdiction: str = "",
    ) -> tuple[VerifiedReceipt, VerifiedReceipt | None]:
        """Register ``principal_id``'s key in ``role``, valid from ``valid_from`` (a key signs
        only what happened while it was valid); an insurer is then licensed from that day (an
        authority needs no licence: its role lets it collect fees). Returns the receipts of the
        KeyRegistered and InsurerLicensed events. Idempotent with a fixed ``occurred_at``."""
        key = self.register_key(
            principal_id,
            public_key,
            role=role,
            valid_from=valid_from,
            jurisdiction=jurisdiction,
            occurred_at=occurred_at or valid_from,
        )
        if role != SignerRole.INSURER:
            return key, None
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
