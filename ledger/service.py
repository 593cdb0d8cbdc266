"""The ledger's use cases, independent of gRPC: admit a signed envelope, submit it, read the log.

Admission order matters (securesystemslib habit: verify before you parse):
  (1) envelope limits (size, counts) and payload type;
  (2) the signature, with the registered key its keyid names: nothing unsigned is parsed;
  (3) decode the event strictly and validate every field;
  (4) the key may sign for the event's insurer at this instant, and at the event's own time;
  (5) the key's role may sign this event type (:mod:`ledger.signers`, one table);
  (6) the caller may submit events of that signer (``signer_check``, owned by the
      authorization table: an insurer/<name> caller submits only events signed as <name>).
Every refusal raises a LedgerError and nothing is written; the sequencer re-checks the key at
commit time, so a key revoked while a submission waits is still refused.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import replace

from ledger import tracing
from ledger.clock import Clock
from ledger.dsse import Envelope, check_envelope_limits, verify_envelope_signature
from ledger.errors import (
    FieldViolation,
    InvalidArgument,
    LedgerError,
    Unauthenticated,
    VerificationError,
)
from ledger.events import EVENT_PAYLOAD_TYPE, decode_event, validate_event
from ledger.fair import CallerSlots
from ledger.keys import InsurerKey, check_key_at_event_time, check_key_usable
from ledger.sequencer import Sequencing, receipt_of
from ledger.signers import check_signer_role
from ledger.storage.append import Outcome, PendingEntry, Receipt
from ledger.storage.key_store import KeyStore

__all__ = ["KeyCache", "Ledger"]


class KeyCache:
    """Registered keys by id, cached for ``ttl_seconds`` (revocation is re-checked at commit;
    unknown ids are not cached)."""

    def __init__(self, store: KeyStore, ttl_seconds: float = 2.0) -> None:
        self._store = store
        self._ttl_seconds = ttl_seconds
        self._entries: dict[str, tuple[float, InsurerKey | None]] = {}
        self._lookups: dict[str, asyncio.Future[InsurerKey | None]] = {}
        self._generation = 0

    async def get(self, key_id: str) -> InsurerKey | None:
        """The key registered under ``key_id``, or None.

        Concurrent misses of one key share one lookup: when a busy caller's key expires from the
        cache, its thousand submissions under way do not queue a thousand lookups in front of
        everyone else's.
        """
        cached = self._entries.get(key_id)
        now = time.monotonic()
        if cached is not None and now - cached[0] < self._ttl_seconds:
            return cached[1]
        lookup = self._lookups.get(key_id)
        if lookup is None:
            lookup = asyncio.ensure_future(self._look_up(key_id, now, self._generation))
            self._lookups[key_id] = lookup
            lookup.add_done_callback(lambda done: self._lookup_done(key_id, done))
        return await asyncio.shield(lookup)

    def cached(self, key_id: str) -> tuple[bool, InsurerKey | None]:
        """``(True, key)`` when :meth:`get` would answer ``key`` from the cache now, without a
        lookup; ``(False, None)`` otherwise. Safe from any thread (one dictionary read)."""
        cached = self._entries.get(key_id)
        if cached is not None and time.monotonic() - cached[0] < self._ttl_seconds:
            return True, cached[1]
        return False, None

    def _lookup_done(self, key_id: str, done: asyncio.Future[InsurerKey | None]) -> None:
        if self._lookups.get(key_id) is done:
            del self._lookups[key_id]

    async def _look_up(self, key_id: str, now: float, generation: int) -> InsurerKey | None:
        key = await asyncio.to_thread(self._store.get, key_id)
        if key is None or generation != self._generation:
            # Not cached: a key the operator registers is usable as soon as its event commits;
            # a lookup that began before forget() may have read the registry as it was.
            return key
        if len(self._entries) > 10_000:
            self._entries.clear()
        self._entries[key_id] = (now, key)
        return key

    def forget(self) -> None:
        """Drop every cached key (after the registry changed in this process)."""
        self._entries.clear()
        self._lookups.clear()
        self._generation += 1


class Ledger:
    """Submission use case: admit (verify + validate) then sequence."""

    def __init__(
        self,
        keys: KeyCache,
        sequencer: Sequencing,
        clock: Clock,
        signer_check: Callable[[str], None] | None = None,
    ) -> None:
        self._keys = keys
        self._signer_check = signer_check
        self._sequencer = sequencer
        self._clock = clock
        self._admitting = CallerSlots()

    async def submit(self, envelope: Envelope) -> Receipt:
        """Admit ``envelope`` and return its receipt once durable."""
        return await receipt_of(self.enqueue(await self.admit(envelope)))

    def enqueue(self, item: PendingEntry) -> asyncio.Future[Outcome]:
        """Queue an admitted item for sequencing now; await the future for its outcome.

        With tracing on, a ``sequencer.wait`` span covers the wait, and the item carries its
        ``traceparent`` to the sequencer, whose batch span links to it (:mod:`ledger.tracing`).
        """
        waiting = tracing.wait_span()
        if waiting is None:
            return self._sequencer.enqueue(item)
        try:
            future = self._sequencer.enqueue(replace(item, trace_context=waiting.traceparent))
        except BaseException as error:
            waiting.refused(error)
            raise
        future.add_done_callback(waiting.outcome)
        return future

    async def admit(self, envelope: Envelope) -> PendingEntry:
        """Check ``envelope`` completely (see module doc); raise why it is refused.

        At most ``limits.caller_admissions_max`` of one caller's envelopes are checked at once
        (:class:`ledger.fair.CallerSlots`); the rest wait their turn.
        """
        async with self._admitting.slot():
            with tracing.span("ledger.admit"):
                return await self._admit(envelope)

    def admit_now(self, envelope: Envelope) -> PendingEntry | None:
        """:meth:`admit`, in the calling thread, when every key ``envelope``'s signatures name
        is in the key cache: the same checks in the same order, the same refusals. None, having
        checked nothing, when a key would have to be looked up (then await :meth:`admit`).

        For a part of the server that admits its own entries from a worker thread (the
        payments' recorder): it need not hop to the event loop and wait behind the calls there,
        nor take a caller's admission slot (it is not a gRPC caller's stream)."""
        keys: dict[str, InsurerKey | None] = {}
        for signature in envelope.signatures:
            hit, key = self._keys.cached(signature.keyid)
            if not hit:
                return None
            keys[signature.keyid] = key
        with tracing.span("ledger.admit"):
            self._check_envelope(envelope)
            verified: InsurerKey | None = None
            failure: LedgerError | None = None
            for position, signature in enumerate(envelope.signatures):
                verified, failure = _verify_one(
                    envelope, position, signature.keyid, keys[signature.keyid], failure
                )
                if verified is not None:
                    break
            return self._admitted(envelope, _verified_or_raise(verified, failure))

    @staticmethod
    def _check_envelope(envelope: Envelope) -> None:
        # (1)
        check_envelope_limits(envelope)
        if envelope.payload_type != EVENT_PAYLOAD_TYPE:
            raise InvalidArgument(
                f"payload type must be {EVENT_PAYLOAD_TYPE!r}, got {envelope.payload_type!r}",
                reason="PAYLOAD_TYPE_UNSUPPORTED",
                metadata={"supported": EVENT_PAYLOAD_TYPE},
                field_violations=[FieldViolation("envelope.payload_type", "unsupported")],
            )

    async def _admit(self, envelope: Envelope) -> PendingEntry:
        self._check_envelope(envelope)
        # (2)
        key = await self._verified_key(envelope)
        return self._admitted(envelope, key)

    def _admitted(self, envelope: Envelope, key: InsurerKey) -> PendingEntry:
        """Steps (3)-(6), given the key whose signature verified."""
        # (3)
        event = decode_event(envelope.payload)
        now = self._clock.now()
        summary = validate_event(event, now)
        # (4)
        check_key_usable(key, key.key_id, summary.insurer_id, now)
        check_key_at_event_time(key, key.key_id, summary.insurer_id, summary.occurred_at)
        # (5)
        check_signer_role(summary.kind, key.role, summary.insurer_id, key.key_id)
        # (6)
        if self._signer_check is not None:
            self._signer_check(summary.insurer_id)
        return PendingEntry(
            envelope=envelope,
            insurer_id=summary.insurer_id,
            event_id=summary.event_id,
            key_id=key.key_id,
            event=event,
        )

    async def _verified_key(self, envelope: Envelope) -> InsurerKey:
        """The registered key of the first signature that verifies; raise if none does."""
        verified: InsurerKey | None = None
        failure: LedgerError | None = None
        for position, signature in enumerate(envelope.signatures):
            key = await self._keys.get(signature.keyid)
            verified, failure = _verify_one(envelope, position, signature.keyid, key, failure)
            if verified is not None:
                break
        return _verified_or_raise(verified, failure)


def _verify_one(
    envelope: Envelope,
    position: int,
    key_id: str,
    key: InsurerKey | None,
    failure: LedgerError | None,
) -> tuple[InsurerKey | None, LedgerError | None]:
    """``(key, failure)`` if the signature at ``position`` verifies with ``key`` (the key its
    keyid names); else ``(None, why)``, keeping an unknown key's refusal behind an earlier one."""
    if key is None:
        return None, failure or Unauthenticated(
            f"unknown signing key {key_id!r}",
            reason="KEY_UNKNOWN",
            field_violations=[
                FieldViolation(f"envelope.signatures[{position}].keyid", "not registered")
            ],
            metadata={"key_id": key_id},
        )
    try:
        verify_envelope_signature(envelope, key_id, key.public_key)
    except VerificationError as error:
        return None, Unauthenticated(
            f"signature by {key_id!r} does not verify: {error}",
            reason="SIGNATURE_INVALID",
            field_violations=[
                FieldViolation(f"envelope.signatures[{position}].sig", "does not verify")
            ],
            metadata={"key_id": key_id},
        )
    return key, failure


def _verified_or_raise(verified: InsurerKey | None, failure: LedgerError | None) -> InsurerKey:
    if verified is not None:
        return verified
    if failure is None:
        raise Unauthenticated("the envelope has no signature", reason="SIGNATURE_MISSING")
    raise failure
