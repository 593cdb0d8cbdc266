"""The insurer's client: sign events as DSSE envelopes, submit them, verify every receipt.

signer = parse_signer_key(open("insurer.key").read())
client = InsurerClient(grpc.insecure_channel("127.0.0.1:50051"), signer=signer,
                       log=TrustedLog.from_verifier_key(LOG_VERIFIER_KEY))
sponsor = client.tokens.token(person_id)  # events name people by the ledger's person tokens
receipt = client.submit(event)            # raises a clients.errors.ClientError if refused
for result in client.submit_stream(events):   # one VerifiedReceipt or ClientError each, in
    ...                                       # order; up to 8 events per request message
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator
from threading import Lock

import grpc

from clients.errors import ClientError, from_rpc_error, from_status
from clients.person_tokens import PersonTokens
from clients.verify import TrustedLog, VerifiedReceipt, verify_receipt
from ledger import limits
from ledger.dsse import sign_envelope
from ledger.entry import envelope_to_proto
from ledger.events import EVENT_PAYLOAD_TYPE
from ledger.keys import insurer_key_id
from ledger.signing import Signer
from ledger.v1 import events_pb2, types_pb2
from ledger.v1 import ledger_service_pb2 as pb
from ledger.v1 import ledger_service_pb2_grpc as pb_grpc

__all__ = ["InsurerClient", "sign_event"]


def sign_event(event: events_pb2.Event, signer: Signer) -> types_pb2.Envelope:
    """Serialize ``event`` once and sign it: the DSSE envelope to submit."""
    payload = event.SerializeToString(deterministic=True)
    envelope = sign_envelope(EVENT_PAYLOAD_TYPE, payload, signer, insurer_key_id(signer.public_key))
    return envelope_to_proto(envelope)


class InsurerClient:
    """Submits an insurer's signed events; every receipt is verified before it is returned."""

    def __init__(self, channel: grpc.Channel, *, signer: Signer, log: TrustedLog) -> None:
        self._stub = pb_grpc.LedgerServiceStub(channel)
        self.tokens = PersonTokens(channel)
        """Person tokens for the identifiers this insurer's events name (asked once each)."""
        self._signer = signer
        self._log = log
        self._verified_notes: dict[bytes, object] = {}
        self._lock = Lock()

    @property
    def public_key(self) -> bytes:
        """The raw Ed25519 public key this client signs with."""
        return self._signer.public_key

    @property
    def key_id(self) -> str:
        """The DSSE key id of this insurer's signing key."""
        return insurer_key_id(self._signer.public_key)

    def sign(self, event: events_pb2.Event) -> types_pb2.Envelope:
        """The signed envelope of ``event``."""
        return sign_event(event, self._signer)

    def submit(self, event: events_pb2.Event, *, timeout: float = 30.0) -> VerifiedReceipt:
        """Submit one event; return its verified receipt or raise a ClientError."""
        return self.submit_envelope(self.sign(event), timeout=timeout)

    def submit_envelope(
        self, envelope: types_pb2.Envelope, *, timeout: float = 30.0
    ) -> VerifiedReceipt:
        """Submit an already signed envelope; return its verified receipt."""
        try:
            response = self._stub.SubmitEvent(
                pb.SubmitEventRequest(envelope=envelope), timeout=timeout
            )
        except grpc.RpcError as error:
            raise from_rpc_error(error) from None
        return verify_receipt(response.receipt, self._log, envelope.payload)

    def submit_stream(
        self,
        events: Iterable[events_pb2.Event],
        *,
        timeout: float | None = None,
        per_message: int = limits.submit_message_envelopes_default,
    ) -> Iterator[VerifiedReceipt | ClientError]:
        """Submit events on one stream; yield, in order, a verified receipt or the refusal.

        Up to ``per_message`` events travel in one request message (see
        :meth:`submit_envelopes`)."""
        return self.submit_envelopes(
            (self.sign(event) for event in events), timeout=timeout, per_message=per_message
        )

    def submit_envelopes(
        self,
        envelopes: Iterable[types_pb2.Envelope],
        *,
        timeout: float | None = None,
        per_message: int = limits.submit_message_envelopes_default,
    ) -> Iterator[VerifiedReceipt | ClientError]:
        """Submit signed envelopes on one stream; yield one result each, in order.

        Up to ``per_message`` envelopes (1..``limits.submit_message_envelopes_max``) are sent in
        one request message, which amortises gRPC's cost per message; the server answers them
        in one response. A message is sent once ``per_message`` envelopes are taken from
        ``envelopes`` (or it ends): a producer that waits for results before it yields more
        must pass a ``per_message`` no larger than what it yields ahead (1 always works).
        """
        if not 1 <= per_message <= limits.submit_message_envelopes_max:
            raise ValueError(f"per_message must be in 1..{limits.submit_message_envelopes_max}")
        sent: list[bytes] = []

        def requests() -> Iterator[pb.SubmitEventsRequest]:
            source = iter(envelopes)
            while group := list(itertools.islice(source, per_message)):
                with self._lock:
                    sent.extend(envelope.payload for envelope in group)
                if len(group) == 1:
                    yield pb.SubmitEventsRequest(envelope=group[0])
                else:
                    yield pb.SubmitEventsRequest(envelopes=group)

        try:
            for response in self._stub.SubmitEvents(requests(), timeout=timeout):
                if not response.results:
                    with self._lock:
                        payload = sent[response.sequence]
                    if response.WhichOneof("result") == "error":
                        yield from_status(response.error)
                    else:
                        yield verify_receipt(response.receipt, self._log, payload)
                    continue
                with self._lock:
                    payloads = sent[response.sequence : response.sequence + len(response.results)]
                for result, payload in zip(response.results, payloads, strict=True):
                    if result.WhichOneof("result") == "error":
                        yield from_status(result.error)
                    else:
                        yield verify_receipt(result.receipt, self._log, payload)
        except grpc.RpcError as error:
            raise from_rpc_error(error) from None
