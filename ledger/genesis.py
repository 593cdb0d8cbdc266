"""The genesis entry: leaf 0 names the operator's first signing key.

Every other signature in the log is checked against keys the operator registered by events in the
log, and the operator's keys are registered the same way; the chain has to start somewhere. It
starts at leaf 0: a ``KeyRegistered`` of principal ``operator`` (role operator), signed not by an
operator key (none exists yet) but by the log's own key, which every auditor already trusts
(it signs the checkpoints). The server writes it when it starts on an empty log and is told the
operator's public key (``policy-ledger serve --operator-verifier KEY``); on a log that has one,
a key that is not a registered operator key is refused at start.

The first operator key is valid from :data:`GENESIS_VALID_FROM`, the earliest instant an event
may carry, so the operator can record licences whose events are dated before the log began.
"""

from __future__ import annotations

import datetime as dt

from ledger.dsse import Envelope, sign_envelope
from ledger.events import EVENT_PAYLOAD_TYPE
from ledger.keys import insurer_key_id, validate_public_key
from ledger.signers import OPERATOR_ID, SignerRole, role_to_proto
from ledger.signing import Signer
from ledger.v1 import events_pb2

__all__ = ["GENESIS_EVENT_ID", "GENESIS_VALID_FROM", "genesis_envelope", "genesis_event"]

GENESIS_EVENT_ID = "genesis"
GENESIS_VALID_FROM = dt.datetime(2000, 1, 1, tzinfo=dt.UTC)


def genesis_event(operator_public_key: bytes, now: dt.datetime) -> events_pb2.Event:
    """The KeyRegistered event of the operator's first key, integrated at ``now``."""
    validate_public_key(operator_public_key)
    event = events_pb2.Event(event_id=GENESIS_EVENT_ID, insurer_id=OPERATOR_ID)
    event.occurred_at.FromDatetime(now)
    body = event.key_registered
    body.principal_id = OPERATOR_ID
    body.role = role_to_proto(SignerRole.OPERATOR)
    body.public_key = operator_public_key
    body.valid_from.FromDatetime(GENESIS_VALID_FROM)
    return event


def genesis_envelope(operator_public_key: bytes, now: dt.datetime, log_signer: Signer) -> Envelope:
    """The genesis event, serialized once and signed by the log's key (keyid: its key id)."""
    payload = genesis_event(operator_public_key, now).SerializeToString(deterministic=True)
    return sign_envelope(
        EVENT_PAYLOAD_TYPE, payload, log_signer, insurer_key_id(log_signer.public_key)
    )
