"""Ledger.admit_now: the admission in the calling thread (the payments' recorder uses it)
answers exactly as ``admit`` -- the same entry, the same refusals -- and only from the key
cache: a key it would have to look up leaves it undecided (None), having asked nothing."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
from collections.abc import Callable

import pytest

from ledger.clock import FixedClock
from ledger.dsse import Envelope, EnvelopeSignature, sign_envelope
from ledger.errors import LedgerError
from ledger.events import EVENT_PAYLOAD_TYPE
from ledger.keys import InsurerKey, insurer_key_id
from ledger.service import KeyCache, Ledger
from ledger.signers import SignerRole
from ledger.signing import Ed25519Signer
from ledger.storage.append import PendingEntry
from ledger.v1 import events_pb2
from tests.builders import OCCURRED, issued, person

NOW = OCCURRED + dt.timedelta(days=1)
SIGNER = Ed25519Signer.generate("test/admit-now")
KEY_ID = insurer_key_id(SIGNER.public_key)
KEY = InsurerKey(
    key_id=KEY_ID,
    insurer_id="ins-a",
    public_key=SIGNER.public_key,
    valid_from=dt.datetime(2020, 1, 1, tzinfo=dt.UTC),
    valid_until=None,
    revoked_at=None,
    registered_at=dt.datetime(2020, 1, 1, tzinfo=dt.UTC),
    role=SignerRole.INSURER,
)


class _Store:
    """A key registry that counts its lookups."""

    def __init__(self, keys: dict[str, InsurerKey]) -> None:
        self.keys = keys
        self.lookups = 0

    def get(self, key_id: str) -> InsurerKey | None:
        self.lookups += 1
        return self.keys.get(key_id)


def _event(insurer_id: str = "ins-a") -> events_pb2.Event:
    return issued(
        insurer_id, "pol-1", person(1), [(person(1), 1)], OCCURRED.date(), OCCURRED.date()
    )


def _signed(event: events_pb2.Event) -> Envelope:
    return sign_envelope(
        EVENT_PAYLOAD_TYPE, event.SerializeToString(deterministic=True), SIGNER, KEY_ID
    )


def _tampered(envelope: Envelope) -> Envelope:
    [signature] = envelope.signatures
    flipped = bytes([signature.sig[0] ^ 1]) + signature.sig[1:]
    return dataclasses.replace(envelope, signatures=(EnvelopeSignature(KEY_ID, flipped),))


def _ledger(key: InsurerKey, *, cached: bool = False) -> tuple[Ledger, _Store]:
    """A ledger whose registry holds ``key`` (in its cache already when ``cached``)."""
    store = _Store({key.key_id: key})
    keys = KeyCache(store)  # type: ignore[arg-type]
    if cached:
        assert asyncio.run(keys.get(key.key_id)) == key
    return Ledger(keys, sequencer=None, clock=FixedClock(NOW)), store  # type: ignore[arg-type]


def _outcome(run: Callable[[], PendingEntry | None]) -> PendingEntry | tuple[str, str] | None:
    try:
        return run()
    except LedgerError as error:
        return type(error).__name__, error.details.reason


def _both(key: InsurerKey, envelope: Envelope) -> tuple[object, object]:
    """(admit's answer, admit_now's answer), the key in the cache."""
    ledger, store = _ledger(key, cached=True)
    awaited = _outcome(lambda: asyncio.run(ledger.admit(envelope)))
    now = _outcome(lambda: ledger.admit_now(envelope))
    assert store.lookups == 1  # the cache's one lookup: neither asked the registry again
    return awaited, now


def test_an_admissible_envelope_gives_the_same_entry() -> None:
    envelope = _signed(_event())
    awaited, now = _both(KEY, envelope)
    assert isinstance(awaited, PendingEntry)
    assert now == awaited
    assert awaited.key_id == KEY_ID and awaited.insurer_id == "ins-a"


@pytest.mark.parametrize(
    ("key", "envelope", "reason"),
    [
        (KEY, _tampered(_signed(_event())), "SIGNATURE_INVALID"),
        (KEY, _signed(_event("ins-b")), "KEY_WRONG_INSURER"),
        (dataclasses.replace(KEY, revoked_at=OCCURRED), _signed(_event()), "KEY_REVOKED"),
        (
            dataclasses.replace(KEY, role=SignerRole.AUTHORITY),
            _signed(_event()),
            "SIGNER_ROLE_NOT_ALLOWED",
        ),
        (KEY, _signed(events_pb2.Event(insurer_id="ins-a")), "EVENT_INVALID"),
        (
            KEY,
            dataclasses.replace(_signed(_event()), payload_type="text/plain"),
            "PAYLOAD_TYPE_UNSUPPORTED",
        ),
    ],
    ids=["bad-signature", "other-insurer", "revoked", "role", "malformed", "payload-type"],
)
def test_a_refused_envelope_is_refused_alike(
    key: InsurerKey, envelope: Envelope, reason: str
) -> None:
    awaited, now = _both(key, envelope)
    assert isinstance(awaited, tuple), awaited  # refused
    assert awaited[1] == reason
    assert now == awaited


def test_a_key_not_in_the_cache_leaves_it_undecided_without_a_lookup() -> None:
    ledger, store = _ledger(KEY)
    assert ledger.admit_now(_signed(_event())) is None
    assert store.lookups == 0
    unknown = Ed25519Signer.generate("test/unknown")
    envelope = sign_envelope(
        EVENT_PAYLOAD_TYPE,
        _event().SerializeToString(deterministic=True),
        unknown,
        insurer_key_id(unknown.public_key),
    )
    refused = _outcome(lambda: asyncio.run(ledger.admit(envelope)))
    assert refused == ("Unauthenticated", "KEY_UNKNOWN")
    assert ledger.admit_now(envelope) is None  # an unknown key is never cached: admit asks again


def test_an_expired_cache_entry_leaves_it_undecided() -> None:
    store = _Store({KEY_ID: KEY})
    keys = KeyCache(store, ttl_seconds=0.0)  # type: ignore[arg-type]
    ledger = Ledger(keys, sequencer=None, clock=FixedClock(NOW))  # type: ignore[arg-type]
    asyncio.run(ledger.admit(_signed(_event())))
    assert ledger.admit_now(_signed(_event())) is None
    assert store.lookups == 1
