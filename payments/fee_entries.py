"""The ledger entries the renewal saga records, each built in one small function: the
``FeeCollected`` entry of a captured fee (which also issues the government coverage it buys) and
the ``FeeRefunded`` entry of a refund. Their event ids are derived from the payment and the
refund, so each is recorded at most once whatever crashes and retries happen."""

from __future__ import annotations

import datetime as dt
from typing import TYPE_CHECKING

from ledger.clock import Clock
from ledger.coverage.model import PersonRef
from ledger.coverage.projector import person_ref
from ledger.errors import FailedPrecondition, FieldViolation
from ledger.events import civil_date
from ledger.identity.vault import tokens_in_transaction
from ledger.storage.vault_store import tokens_of_in
from ledger.v1 import events_pb2, types_pb2
from payments import fees
from payments.erasure import is_redacted
from payments.gateway import GatewayResult
from payments.limits import REFERENCE_CHARS_MAX, REFUND_REASON_CHARS_MAX

if TYPE_CHECKING:
    from sqlalchemy import Connection

    from payments.quotes import QuoteRecord

__all__ = ["FeeEntries"]

_RELATIONSHIPS = {
    fees.Relationship.SELF: events_pb2.RELATIONSHIP_SELF,
    fees.Relationship.SPOUSE: events_pb2.RELATIONSHIP_SPOUSE,
    fees.Relationship.CHILD: events_pb2.RELATIONSHIP_CHILD,
    fees.Relationship.PARENT: events_pb2.RELATIONSHIP_PARENT,
    fees.Relationship.DOMESTIC_WORKER: events_pb2.RELATIONSHIP_DOMESTIC_WORKER,
    fees.Relationship.OTHER: events_pb2.RELATIONSHIP_OTHER,
}


def _people(quote: QuoteRecord) -> list[PersonRef]:
    """The people a quote's FeeCollected entry names (sponsor first, then each line's);
    FAILED_PRECONDITION when one of them was erased."""
    if any(is_redacted(p) for p in (quote.sponsor, *(line.person for line in quote.lines))):
        raise FailedPrecondition(
            f"quote {quote.quote_id!r} names a person who was erased: its fee cannot be "
            "recorded (ask a new quote)",
            reason="PERSON_ERASED",
            field_violations=[FieldViolation("quote_id", "names an erased person")],
        )
    return [person_ref(quote.sponsor), *(person_ref(line.person) for line in quote.lines)]


class FeeEntries:
    """Builds the entries the authority ``authority_id`` signs, dated by ``clock``."""

    def __init__(self, authority_id: str, clock: Clock) -> None:
        self._authority_id = authority_id
        self._clock = clock

    def fee_collected(
        self,
        connection: Connection,
        payment_id: str,
        quote: QuoteRecord,
        *,
        gateway: str,
        gateway_reference: str,
    ) -> events_pb2.Event:
        """The FeeCollected entry that records ``quote``'s fee (its event id is derived from the
        payment, so it is recorded at most once). It names people by the identity vault's
        tokens, resolved (issued for people new to the ledger) in ``connection``'s write
        transaction: the same household gives the same tokens, so a rebuilt event is the same."""
        now = self._clock.now()
        people = _people(quote)
        tokens = tokens_in_transaction(connection, people, now)
        return self._fee_collected(payment_id, quote, tokens, now, gateway, gateway_reference)

    def fee_collected_if_known(
        self,
        connection: Connection,
        payment_id: str,
        quote: QuoteRecord,
        *,
        gateway: str,
        gateway_reference: str,
    ) -> events_pb2.Event | None:
        """:meth:`fee_collected`, reading only: None when the vault would have to issue a
        token first (a person new to it), so that ``connection`` may be a read connection."""
        now = self._clock.now()
        people = _people(quote)
        known = tokens_of_in(connection, people)
        if any(person not in known for person in people):
            return None
        tokens = [known[person] for person in people]
        return self._fee_collected(payment_id, quote, tokens, now, gateway, gateway_reference)

    def fee_collected_again(
        self, checked: events_pb2.Event, quote: QuoteRecord, *, gateway_reference: str
    ) -> events_pb2.Event:
        """:meth:`fee_collected` for an entry already built and checked (``checked``, its
        gateway reference empty): the same entry with ``gateway_reference``, dated now, once
        ``quote`` (as stored now) names nobody erased since; no token is looked up again."""
        _people(quote)
        event = events_pb2.Event()
        event.CopyFrom(checked)
        event.occurred_at.FromDatetime(self._clock.now())
        event.fee_collected.gateway_reference = gateway_reference
        return event

    def _fee_collected(  # noqa: PLR0917 (the entry's facts)
        self,
        payment_id: str,
        quote: QuoteRecord,
        tokens: list[str],
        now: dt.datetime,
        gateway: str,
        gateway_reference: str,
    ) -> events_pb2.Event:
        sponsor_token, *line_tokens = tokens
        event = events_pb2.Event(event_id=f"fee-{payment_id}", insurer_id=self._authority_id)
        event.occurred_at.FromDatetime(now)
        body = event.fee_collected
        body.renewal_id = quote.quote_id
        body.sponsor_token = sponsor_token
        body.period_start.CopyFrom(civil_date(quote.period_start))
        body.period_end.CopyFrom(civil_date(quote.period_end))
        for line, token in zip(quote.lines, line_tokens, strict=True):
            body.lines.add(
                person_token=token,
                relationship=_RELATIONSHIPS[line.relationship],
                schedule_version=line.schedule_version,
                rule_id=line.rule_id,
                amount=types_pb2.Money(
                    currency_code=quote.currency, amount_minor=line.amount_minor
                ),
            )
        body.total.CopyFrom(
            types_pb2.Money(currency_code=quote.currency, amount_minor=quote.total_minor)
        )
        body.merchant_reference = payment_id
        body.gateway = gateway
        body.gateway_reference = gateway_reference
        return event

    def fee_refunded(
        self,
        refund_id: str,
        *,
        renewal_id: str,
        currency: str,
        amount_minor: int,
        reason: str,
        result: GatewayResult,
    ) -> events_pb2.Event:
        """The FeeRefunded entry of refund ``refund_id`` (its event id derived from it)."""
        event = events_pb2.Event(event_id=f"refund-{refund_id}", insurer_id=self._authority_id)
        event.occurred_at.FromDatetime(self._clock.now())
        body = event.fee_refunded
        body.renewal_id = renewal_id
        body.refund_reference = refund_id
        body.amount.CopyFrom(types_pb2.Money(currency_code=currency, amount_minor=amount_minor))
        body.reason = reason[:REFUND_REASON_CHARS_MAX]
        body.gateway_reference = result.gateway_reference[:REFERENCE_CHARS_MAX]
        return event
