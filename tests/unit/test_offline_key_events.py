"""The offline reader of key events (clients/offline/wire.py): what it understands, and the
malformed cases it refuses, each with its own message."""

from __future__ import annotations

import datetime as dt

import pytest

from clients.offline.merkle import VerificationFailure
from clients.offline.wire import decode_key_event
from clients.operator import key_registered, key_revoked
from clients.samples import sample_events
from ledger.signers import SignerRole, role_from_proto, role_to_proto
from ledger.signing import Ed25519Signer
from tests.builders import tokens

NOW = dt.datetime(2026, 11, 22, 12, 0, tzinfo=dt.UTC)
KEY = Ed25519Signer.generate("k").public_key


def test_a_registration_and_a_revocation_are_read_back() -> None:
    registered = key_registered(
        "kw-gov-health",
        KEY,
        role=SignerRole.AUTHORITY,
        valid_from=NOW,
        valid_until=NOW + dt.timedelta(days=1),
        jurisdiction="KW",
        occurred_at=NOW,
    )
    event = decode_key_event(registered.SerializeToString(deterministic=True))
    assert event is not None
    assert (event.signer, event.principal, event.role, event.public_key) == (
        "operator",
        "kw-gov-health",
        "authority",
        KEY,
    )
    assert event.valid_from == (int(NOW.timestamp()), 0)
    assert event.valid_until == (int(NOW.timestamp()) + 86400, 0)
    revoked = decode_key_event(
        key_revoked("ed25519:0011223344556677", reason="lost", occurred_at=NOW).SerializeToString()
    )
    assert revoked is not None and revoked.key_id == "ed25519:0011223344556677"
    assert revoked.revoked_from is None and not revoked.public_key


def test_other_events_are_not_key_events() -> None:
    assert (
        decode_key_event(
            next(sample_events(1, "gulf-health", NOW, tokens=tokens)).SerializeToString()
        )
        is None
    )


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda body: body.__setattr__("role", 99), "unknown KeyRegistered.role"),
        (lambda body: body.__setattr__("public_key", b"short"), "32-byte public key"),
        (lambda body: body.ClearField("valid_from"), "valid_from"),
    ],
)
def test_a_malformed_registration_is_refused(mutate: object, message: str) -> None:
    event = key_registered("x", KEY, role=SignerRole.INSURER, valid_from=NOW, occurred_at=NOW)
    mutate(event.key_registered)  # type: ignore[operator]
    with pytest.raises(VerificationFailure, match=message):
        decode_key_event(event.SerializeToString())


def test_an_unknown_field_inside_a_key_event_is_refused() -> None:
    event = key_registered("x", KEY, role=SignerRole.INSURER, valid_from=NOW, occurred_at=NOW)
    body = event.key_registered.SerializeToString() + bytes([0x3A, 0x01, 0x41])  # field 7
    payload = event.SerializeToString().replace(event.key_registered.SerializeToString(), body)
    payload = payload.replace(
        bytes([0xB2, 0x01, len(body) - 3]), bytes([0xB2, 0x01, len(body)])
    )  # field 22's length
    with pytest.raises(VerificationFailure, match="unknown KeyRegistered field 7"):
        decode_key_event(payload)


def test_roles_round_trip_through_the_wire_enum() -> None:
    for role in SignerRole:
        assert role_from_proto(role_to_proto(role)) == role
    assert role_from_proto(0) is None and role_from_proto(42) is None  # type: ignore[arg-type]
