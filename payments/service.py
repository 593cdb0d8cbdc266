"""payments.v1.RenewalService, and its installation into the ledger's server.

:func:`install` is the server extension (entry-point group ``policy_ledger.server_extensions``).
It is configured by environment variables, and installs nothing when no authority key is set:

``POLICY_LEDGER_PAYMENTS_AUTHORITY_KEY``
    path of the collecting authority's signer key (``policy-ledger keygen``); its public key
    must be registered, and the authority licensed, by the operator like an insurer's;
``POLICY_LEDGER_PAYMENTS_AUTHORITY_ID``
    the authority's principal id (default ``gov-health``);
``POLICY_LEDGER_PAYMENTS_GATEWAYS``
    path of a JSON file ``{"<gateway>": {"<setting>": "<value>", ...}, ...}`` naming the
    adapters to load (entry-point group ``policy_ledger.payment_gateways``); default: only
    ``simulated``, with no faults;
``POLICY_LEDGER_PAYMENTS_NOTIFY_LISTEN`` / ``POLICY_LEDGER_PAYMENTS_NOTIFY_URL``
    ``host:port`` of the HTTP receiver of gateways' server-to-server results
    (:mod:`payments.notifications`; KNET needs it), and the public base URL gateways reach it
    at (default: the receiver's own address).

The saga itself is :mod:`payments.renewal` (synchronous; run here in worker threads). Its
recorder signs each event with the authority key and submits it through the ledger's own
admission and sequencer, with the payment's state change attached to the same transaction.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
import os
import threading
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

import grpc
from sqlalchemy import Connection, Engine

from ledger.clock import Clock
from ledger.coverage.reader import CoverageReader
from ledger.dsse import sign_envelope
from ledger.errors import FieldViolation, LedgerError, Unavailable, refuse_violations
from ledger.events import (
    EVENT_PAYLOAD_TYPE,
    check_date,
    check_identifier,
    check_person,
    civil_date,
    validate_event,
)
from ledger.keys import check_key_at_event_time, check_key_usable, insurer_key_id
from ledger.merkle import leaf_hash
from ledger.rpc.authorization import RememberingResolver
from ledger.rpc.coverage_servicer import household_response
from ledger.rpc.server import ServerContext
from ledger.rpc.status import abort
from ledger.sequencer import receipt_of
from ledger.service import Ledger
from ledger.signing import Signer, parse_signer_key
from ledger.storage.append import Appender, PendingEntry, Receipt
from ledger.storage.key_store import KeyStore
from ledger.storage.log_store import LogStore
from ledger.v1 import events_pb2, ledger_service_pb2, types_pb2
from payments import fees
from payments.authorization import jurisdiction_resolver, renewal_rules
from payments.contribution_service import SERVICE_NAME as CONTRIBUTION_SERVICE_NAME
from payments.contribution_service import ContributionServicer, contribution_rules
from payments.erasure import redact_person
from payments.gateway import PaymentGateway, load_gateway
from payments.limits import (
    GATEWAY_RESULT_BYTES_MAX,
    RECEIPTS_KEPT,
    RECORD_TIMEOUT_SECONDS,
    RENEWAL_DAYS_MAX,
    URL_CHARS_MAX,
)
from payments.metrics import PaymentStateCollector
from payments.notifications import (
    NOTIFY_LISTEN_ENVIRONMENT,
    NOTIFY_URL_ENVIRONMENT,
    NotificationReceiver,
)
from payments.quotes import PRIVATE_INSURANCE_JURISDICTIONS
from payments.renewal import (
    MemberInput,
    PaymentRecord,
    QuoteRecord,
    QuoteRequest,
    Recorder,
    Renewals,
)
from payments.v1 import contribution_service_pb2_grpc
from payments.v1 import renewal_service_pb2 as pb
from payments.v1 import renewal_service_pb2_grpc as pb_grpc

__all__ = [
    "AppenderRecorder",
    "LedgerRecorder",
    "RenewalServicer",
    "authority_signer_from_environment",
    "install",
    "renewals_from_environment",
]

log = logging.getLogger(__name__)
_T = TypeVar("_T")
_Context = grpc.aio.ServicerContext[object, object]

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["RenewalService"].full_name


class LedgerRecorder:
    """Signs an event with the authority key and appends it through admission and the
    sequencer, with ``on_append`` in the batch transaction. Called from worker threads."""

    def __init__(
        self,
        ledger: Ledger,
        loop: asyncio.AbstractEventLoop,
        signer: Signer,
        *,
        timeout_seconds: float = RECORD_TIMEOUT_SECONDS,
    ) -> None:
        self._timeout = timeout_seconds
        self._ledger = ledger
        self._loop = loop
        self._signer = signer
        self._key_id = insurer_key_id(signer.public_key)
        self._receipts: OrderedDict[int, Receipt] = OrderedDict()
        """The receipts of entries this process appended, by leaf, until the answer that
        carries one takes it (:meth:`take_receipt`); the oldest go past
        :data:`RECEIPTS_KEPT`."""
        self._receipts_lock = threading.Lock()

    def __call__(
        self, event: events_pb2.Event, on_append: Callable[[Connection, int], None]
    ) -> Receipt:
        payload = event.SerializeToString(deterministic=True)
        envelope = sign_envelope(EVENT_PAYLOAD_TYPE, payload, self._signer, self._key_id)

        admitted = self._ledger.admit_now(envelope)  # in this thread when the key is cached

        async def submit() -> Receipt:
            item = admitted if admitted is not None else await self._ledger.admit(envelope)
            return await receipt_of(
                self._ledger.enqueue(dataclasses.replace(item, on_append=on_append))
            )

        future = asyncio.run_coroutine_threadsafe(submit(), self._loop)
        try:
            receipt = future.result(timeout=self._timeout)
        except TimeoutError as error:
            # The submission goes on (the sequencer may still append it): the outcome is
            # unknown, so this is UNAVAILABLE, never a failure. The saga keeps the payment
            # ``recording`` and resolves it by the entry's event id.
            raise Unavailable(
                f"the ledger did not answer within {self._timeout} s; the entry may "
                "still be appended",
                reason="RECORD_OUTCOME_UNKNOWN",
                metadata={"event_id": event.event_id},
            ) from error
        if not receipt.duplicate:
            with self._receipts_lock:
                self._receipts[receipt.leaf_index] = receipt
                while len(self._receipts) > RECEIPTS_KEPT:
                    self._receipts.popitem(last=False)
        return receipt

    def take_receipt(self, leaf_index: int) -> Receipt | None:
        """The receipt the sequencer gave for the entry at ``leaf_index`` when this process
        appended it (once: it is then forgotten), or None: read it from the log."""
        with self._receipts_lock:
            return self._receipts.pop(leaf_index, None)

    def check(self, event: events_pb2.Event) -> None:
        """Run the ledger's admission (signature, key valid now and at the event's time, event
        well-formed) on ``event`` signed now; nothing is queued. In the calling thread when the
        authority's key is in the ledger's key cache (the saga may call this inside its write
        transaction: it then neither waits for the event loop nor needs a connection); else on
        the loop, which looks the key up."""
        payload = event.SerializeToString(deterministic=True)
        envelope = sign_envelope(EVENT_PAYLOAD_TYPE, payload, self._signer, self._key_id)
        if self._ledger.admit_now(envelope) is not None:
            return
        future = asyncio.run_coroutine_threadsafe(self._ledger.admit(envelope), self._loop)
        try:
            future.result(timeout=self._timeout)
        except TimeoutError as error:
            raise Unavailable(
                f"the ledger's admission did not answer within {self._timeout} s; "
                "nothing was charged: retry",
                reason="ADMISSION_TIMEOUT",
            ) from error


def authority_signer_from_environment() -> tuple[str, Signer] | None:
    """(authority id, signer) from the environment, or None when no key is configured."""
    key_path = os.environ.get("POLICY_LEDGER_PAYMENTS_AUTHORITY_KEY", "")
    if not key_path:
        return None
    signer = parse_signer_key(Path(key_path).read_text(encoding="utf-8").strip())
    return os.environ.get("POLICY_LEDGER_PAYMENTS_AUTHORITY_ID", "gov-health"), signer


def renewals_from_environment(
    engine: Engine, recorder: Recorder, clock: Clock, authority_id: str
) -> Renewals:
    """The saga with the gateways the environment names (see module doc)."""
    gateways_path = os.environ.get("POLICY_LEDGER_PAYMENTS_GATEWAYS", "")
    gateway_settings: dict[str, dict[str, str]] = (
        json.loads(Path(gateways_path).read_text(encoding="utf-8"))
        if gateways_path
        else {"simulated": {}}
    )
    gateways: dict[str, PaymentGateway] = {
        name: load_gateway(name, settings) for name, settings in gateway_settings.items()
    }
    renewals = Renewals(
        engine, gateways, recorder, CoverageReader(engine), clock, authority_id=authority_id
    )
    for gateway in gateways.values():
        if hasattr(gateway, "amount_lookup"):  # KNET's inquiry needs the original amount
            gateway.amount_lookup = renewals.amount_of
    return renewals


class AppenderRecorder:
    """A recorder that appends directly (``policy-ledger payments reconcile``): the appender
    takes the database's write lock, so it is safe beside a running server."""

    def __init__(
        self, appender: Appender, signer: Signer, clock: Clock, keys: KeyStore | None = None
    ) -> None:
        self._appender = appender
        self.use_signer(signer)
        self._clock = clock
        self._keys = keys

    def use_signer(self, signer: Signer) -> None:
        """Sign with ``signer`` from now on (the authority's key was rotated)."""
        self._signer = signer
        self._key_id = insurer_key_id(signer.public_key)

    def check(self, event: events_pb2.Event) -> None:
        """The admission checks the server runs: the event well-formed and, given the key
        store, the authority's key valid now and at the event's time."""
        now = self._clock.now()
        summary = validate_event(event, now)
        if self._keys is not None:
            key = self._keys.get(self._key_id)
            check_key_usable(key, self._key_id, summary.insurer_id, now)
            check_key_at_event_time(key, self._key_id, summary.insurer_id, summary.occurred_at)

    def __call__(
        self, event: events_pb2.Event, on_append: Callable[[Connection, int], None]
    ) -> Receipt:
        self.check(event)
        payload = event.SerializeToString(deterministic=True)
        item = PendingEntry(
            envelope=sign_envelope(EVENT_PAYLOAD_TYPE, payload, self._signer, self._key_id),
            insurer_id=event.insurer_id,
            event_id=event.event_id,
            key_id=self._key_id,
            event=event,
            on_append=on_append,
        )
        [outcome] = self._appender.append_batch([item], self._clock.now())
        if isinstance(outcome, LedgerError):
            raise outcome
        return outcome


def install(context: ServerContext) -> tuple[str, ...]:
    """Add the RenewalService when the environment configures an authority key."""
    configured = authority_signer_from_environment()
    if configured is None:
        log.info("RenewalService not installed: POLICY_LEDGER_PAYMENTS_AUTHORITY_KEY is unset")
        return ()
    authority_id, signer = configured
    recorder = LedgerRecorder(context.ledger, context.loop, signer)
    jurisdictions = jurisdiction_resolver(context.engine)
    renewals = renewals_from_environment(context.engine, recorder, context.clock, authority_id)
    listen = os.environ.get(NOTIFY_LISTEN_ENVIRONMENT, "")
    if listen:
        host, _, port = listen.rpartition(":")
        receiver = NotificationReceiver(
            renewals,
            context.engine,
            renewals.gateways,
            context.clock,
            host=host or "127.0.0.1",
            port=int(port),
        ).start()
        context.on_stop.append(receiver.stop)  # after its confirmations under way are done
        renewals.notification_base_url = os.environ.get(NOTIFY_URL_ENVIRONMENT, receiver.base_url)
        log.info("gateway notifications on %s", receiver.base_url)
    elif os.environ.get(NOTIFY_URL_ENVIRONMENT):
        # A worker of `serve --workers N`: the receiver listens in the sequencer process (one
        # port), and the workers are told its URL (notifications.place_receiver).
        renewals.notification_base_url = os.environ[NOTIFY_URL_ENVIRONMENT]
    servicer = RenewalServicer(
        renewals,
        LogStore(context.engine),
        context.clock,
        receipts=recorder.take_receipt,
        jurisdictions=jurisdictions,
    )
    pb_grpc.add_RenewalServiceServicer_to_server(servicer, context.server)
    context.on_stop.append(servicer.close)
    context.authorization.add(renewal_rules(jurisdictions))
    # Task F (issue 11, item 5): contribution status, settled through this same saga.
    contribution_service_pb2_grpc.add_ContributionServiceServicer_to_server(
        ContributionServicer(context.engine, context.clock), context.server
    )
    context.authorization.add(contribution_rules(context.engine))
    context.erasure_hooks.add(redact_person)
    if context.metrics is not None:
        context.metrics.register(PaymentStateCollector(context.engine))
    log.info("RenewalService installed: authority %s", authority_id)
    return (SERVICE_NAME, CONTRIBUTION_SERVICE_NAME)


def parse_quote_request(request: pb.QuoteRenewalRequest) -> QuoteRequest:
    """The saga's QuoteRequest, or INVALID_ARGUMENT naming every bad field."""
    violations: list[FieldViolation] = []
    fee_jurisdictions = fees.default_schedules().jurisdictions
    if request.jurisdiction not in {*fee_jurisdictions, *PRIVATE_INSURANCE_JURISDICTIONS}:
        supported = ", ".join(
            [f"{j} (fee)" for j in fee_jurisdictions]
            + [f"{j} (private insurance)" for j in sorted(PRIVATE_INSURANCE_JURISDICTIONS)]
        )
        violations.append(FieldViolation("jurisdiction", f"supported: {supported}"))
    if request.HasField("sponsor"):
        check_person(violations, "sponsor", request.sponsor)
    else:
        violations.append(FieldViolation("sponsor", "required"))
    if not request.members:
        violations.append(FieldViolation("members", "at least one member is required"))
    members = [
        parsed
        for position, member in enumerate(request.members)
        if (parsed := _parse_member(violations, f"members[{position}]", member, request))
        is not None
    ]
    start = check_date(
        violations, "period_start", request.period_start, present=request.HasField("period_start")
    )
    end = check_date(
        violations, "period_end", request.period_end, present=request.HasField("period_end")
    )
    if start is not None and end is not None:
        if end < start:
            violations.append(FieldViolation("period_end", "before period_start"))
        elif (end - start).days + 1 > RENEWAL_DAYS_MAX:
            violations.append(FieldViolation("period_end", f"more than {RENEWAL_DAYS_MAX} days"))
    refuse_violations(violations)
    assert start is not None and end is not None  # refused above otherwise
    return QuoteRequest(
        jurisdiction=request.jurisdiction,
        sponsor=request.sponsor,
        sponsor_is_kuwaiti=request.sponsor_is_citizen,
        members=tuple(members),
        period_start=start,
        period_end=end,
    )


def _parse_member(
    violations: list[FieldViolation],
    field: str,
    member: pb.RenewalMember,
    request: pb.QuoteRenewalRequest,
) -> MemberInput | None:
    if member.HasField("person"):
        check_person(violations, f"{field}.person", member.person)
    else:
        violations.append(FieldViolation(f"{field}.person", "required"))
    relationship = events_pb2.Relationship.Name(member.relationship).removeprefix("RELATIONSHIP_")
    if relationship == "UNSPECIFIED":
        violations.append(FieldViolation(f"{field}.relationship", "required"))
        return None
    category = pb.ResidenceCategory.Name(member.residence_category).removeprefix(
        "RESIDENCE_CATEGORY_"
    )
    if category == "UNSPECIFIED":
        if request.jurisdiction == "KW":
            violations.append(FieldViolation(f"{field}.residence_category", "required"))
            return None
        category = "OTHER"
    birth = (
        check_date(violations, f"{field}.birth_date", member.birth_date, present=True)
        if member.HasField("birth_date")
        else None
    )
    return MemberInput(
        person=member.person,
        relationship=fees.Relationship[relationship],
        residence_category=fees.ResidenceCategory[category],
        birth_date=birth,
        domestic_worker_ordinal=member.domestic_worker_ordinal or None,
    )


def quote_proto(record: QuoteRecord) -> pb.Quote:
    """The wire form of a stored quote."""
    quote = pb.Quote(
        quote_id=record.quote_id,
        jurisdiction=record.jurisdiction,
        total=types_pb2.Money(currency_code=record.currency, amount_minor=record.total_minor),
        schedule_version=record.schedule_version,
        period_start=civil_date(record.period_start),
        period_end=civil_date(record.period_end),
        payable=record.payable,
    )
    quote.expires_at.FromDatetime(record.expires_at)
    for line in record.lines:
        quote.lines.add(
            person=line.person,
            schedule_version=line.schedule_version,
            rule_id=line.rule_id,
            description=line.description,
            amount=types_pb2.Money(currency_code=record.currency, amount_minor=line.amount_minor),
        )
    return quote


class RenewalServicer(pb_grpc.RenewalServiceServicer):
    """Thin: validate, run the saga in a thread, convert."""

    def __init__(
        self,
        renewals: Renewals,
        log_store: LogStore,
        clock: Clock,
        *,
        workers: int = 32,
        receipts: Callable[[int], Receipt | None] | None = None,
        jurisdictions: RememberingResolver | None = None,
    ) -> None:
        self._renewals = renewals
        self._log = log_store
        self._clock = clock
        self._receipts = receipts
        """Where the receipt of an entry this process just appended is taken from, rather than
        read back from the log (:meth:`LedgerRecorder.take_receipt`)."""
        self._jurisdictions = jurisdictions
        """Told each new quote's jurisdiction, and each started payment's once it is saved, so
        that the authorization of the calls naming them need not read it back
        (:func:`jurisdiction_resolver`). Never a payment's before it exists: a call naming it
        is answered NOT_FOUND then, by every process alike, whatever each remembers."""
        # Its own threads: a renewal waits on the gateway and on the ledger, whose admission
        # uses the loop's default executor; sharing that executor could starve it (deadlock).
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="renewal")

    def close(self) -> None:
        """Release the renewal threads (the server has stopped taking calls)."""
        self._executor.shutdown(wait=True)

    async def _run(self, context: _Context, work: Callable[[], _T]) -> _T:
        try:
            return await asyncio.get_running_loop().run_in_executor(self._executor, work)
        except Exception as error:  # every failure becomes a status; bugs are logged there
            await abort(context, error)

    def _payment(self, record: PaymentRecord) -> pb.Payment:
        payment = pb.Payment(
            payment_id=record.payment_id,
            quote_id=record.quote_id,
            gateway=record.gateway,
            state=pb.PaymentState.Value(f"PAYMENT_STATE_{record.state.upper()}"),
            amount=types_pb2.Money(currency_code=record.currency, amount_minor=record.amount_minor),
            captured_minor=record.captured_minor,
            refunded_minor=record.refunded_minor,
            redirect_url=record.redirect_url,
            message=record.message,
        )
        if record.leaf_index is None:
            return payment
        kept = None if self._receipts is None else self._receipts(record.leaf_index)
        if kept is not None:  # the sequencer's own, at the checkpoint of its batch
            checkpoint, entry, proof = kept.checkpoint, kept.entry, list(kept.inclusion_proof)
        else:
            head, entry, proof = self._log.entry_with_proof(record.leaf_index)
            checkpoint = head.note_bytes
        payment.receipt.CopyFrom(
            ledger_service_pb2.Receipt(
                event_id=f"fee-{record.payment_id}",
                leaf_index=record.leaf_index,
                leaf_hash=leaf_hash(entry),
                checkpoint=checkpoint,
                inclusion_proof=proof,
                entry=entry,
            )
        )
        return payment

    async def QuoteRenewal(
        self, request: pb.QuoteRenewalRequest, context: _Context
    ) -> pb.QuoteRenewalResponse:
        """Price the renewal, or check the household (private-insurance states)."""

        def work() -> pb.QuoteRenewalResponse:
            record = self._renewals.quote(parse_quote_request(request))
            if self._jurisdictions is not None:
                self._jurisdictions.remember(("quote", record.quote_id), record.jurisdiction)
            response = pb.QuoteRenewalResponse(quote=quote_proto(record))
            if record.household is not None:
                response.household.CopyFrom(household_response(record.household))
            return response

        return await self._run(context, work)

    async def StartPayment(
        self, request: pb.StartPaymentRequest, context: _Context
    ) -> pb.StartPaymentResponse:
        """Start collecting a quote's fee."""

        def work() -> pb.StartPaymentResponse:
            violations: list[FieldViolation] = []
            check_identifier(violations, "quote_id", request.quote_id)
            check_identifier(violations, "gateway", request.gateway)
            if len(request.return_url) > URL_CHARS_MAX:
                violations.append(
                    FieldViolation("return_url", f"at most {URL_CHARS_MAX} characters")
                )
            refuse_violations(violations)
            record = self._renewals.start_payment(
                request.quote_id, request.idempotency_key, request.gateway, request.return_url
            )
            self._remember_payment(request, record)
            return pb.StartPaymentResponse(payment=self._payment(record))

        return await self._run(context, work)

    def _remember_payment(self, request: pb.StartPaymentRequest, record: PaymentRecord) -> None:
        """Tell the resolver the jurisdiction of a payment now saved: its quote's, which the
        authorization of this call just found (unless forgotten since: then the first call
        naming the payment reads it back)."""
        if self._jurisdictions is None:
            return
        jurisdiction = self._jurisdictions.known(request)
        if jurisdiction is not None:
            self._jurisdictions.remember(("payment", record.payment_id), jurisdiction)

    async def CompletePayment(
        self, request: pb.CompletePaymentRequest, context: _Context
    ) -> pb.CompletePaymentResponse:
        """Confirm with the gateway; record once when captured."""

        def work() -> pb.CompletePaymentResponse:
            violations: list[FieldViolation] = []
            check_identifier(violations, "payment_id", request.payment_id)
            if len(request.gateway_result) > GATEWAY_RESULT_BYTES_MAX:
                violations.append(
                    FieldViolation("gateway_result", f"at most {GATEWAY_RESULT_BYTES_MAX} bytes")
                )
            refuse_violations(violations)
            if request.gateway_result:
                self._renewals.store_portal_hint(request.payment_id, request.gateway_result)
            record = self._renewals.complete_payment(request.payment_id)
            return pb.CompletePaymentResponse(payment=self._payment(record))

        return await self._run(context, work)

    async def GetRenewal(
        self, request: pb.GetRenewalRequest, context: _Context
    ) -> pb.GetRenewalResponse:
        """A renewal's quote and payment."""

        def work() -> pb.GetRenewalResponse:
            key = request.WhichOneof("key")
            violations: list[FieldViolation] = []
            if key is None:
                violations.append(FieldViolation("key", "a payment_id or a quote_id is required"))
            else:
                check_identifier(violations, key, getattr(request, key))
            refuse_violations(violations)
            payment_id, quote_id = self._renewals.ids_of(
                payment_id=request.payment_id or None, quote_id=request.quote_id or None
            )
            response = pb.GetRenewalResponse(quote=quote_proto(self._renewals.get_quote(quote_id)))
            if payment_id is not None:
                response.payment.CopyFrom(self._payment(self._renewals.get_payment(payment_id)))
            return response

        return await self._run(context, work)

    async def RefundPayment(
        self, request: pb.RefundPaymentRequest, context: _Context
    ) -> pb.RefundPaymentResponse:
        """Refund part or all of a recorded fee."""

        def work() -> pb.RefundPaymentResponse:
            violations: list[FieldViolation] = []
            check_identifier(violations, "payment_id", request.payment_id)
            if request.amount_minor <= 0:
                violations.append(FieldViolation("amount_minor", "must be positive"))
            refuse_violations(violations)
            record = self._renewals.refund(
                request.payment_id, request.amount_minor, request.idempotency_key, request.reason
            )
            return pb.RefundPaymentResponse(payment=self._payment(record))

        return await self._run(context, work)
