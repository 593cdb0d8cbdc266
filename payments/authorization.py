"""The RenewalService's rows of the authorization table (see ledger/rpc/authorization.py).

A portal acts for one jurisdiction (``portal/KW``): it quotes for its own jurisdiction (the
request names it), and starts, completes and reads only payments of quotes it could have made
(the jurisdiction is read from the quote the request names). Refunds need the renewal
authority; the operator and auditors may read renewals.
"""

from __future__ import annotations

from sqlalchemy import Engine, bindparam, select

from ledger.rpc.authorization import Grant, Limit, RememberingResolver, Rule
from payments.limits import JURISDICTIONS_KEPT
from payments.tables import payments, quotes
from payments.v1 import renewal_service_pb2 as pb

__all__ = ["jurisdiction_resolver", "renewal_rules"]

SERVICE = "payments.v1.RenewalService"


_JURISDICTION_OF_QUOTE = select(quotes.c.jurisdiction).where(
    quotes.c.quote_id == bindparam("quote_id")
)
_JURISDICTION_OF_PAYMENT = (
    select(quotes.c.jurisdiction)
    .join(payments, payments.c.quote_id == quotes.c.quote_id)
    .where(payments.c.payment_id == bindparam("payment_id"))
)
"""Built once (their cache keys generated once)."""


def _named(request: object) -> tuple[str, str] | None:
    """("quote", id) or ("payment", id): what a renewal request names; None: neither."""
    quote_id = getattr(request, "quote_id", "")
    payment_id = getattr(request, "payment_id", "")
    if isinstance(request, pb.GetRenewalRequest):
        which = request.WhichOneof("key")
        quote_id = request.quote_id if which == "quote_id" else ""
        payment_id = request.payment_id if which == "payment_id" else ""
    if quote_id:
        return ("quote", quote_id)
    if payment_id:
        return ("payment", payment_id)
    return None


def jurisdiction_resolver(engine: Engine) -> RememberingResolver:
    """The jurisdiction of the quote or payment a request names, read from ``engine`` and
    remembered (a quote's jurisdiction, and a payment's quote, never change). The servicer
    also tells it a quote's when quoting and a payment's once the payment is saved, never
    before: a call naming a payment that does not exist yet is NOT_FOUND in every process."""

    def jurisdiction_of(request: object) -> str | None:
        named = _named(request)
        if named is None:
            return None
        kind, value = named
        query = _JURISDICTION_OF_QUOTE if kind == "quote" else _JURISDICTION_OF_PAYMENT
        with engine.connect() as connection:
            found = connection.execute(query, {f"{kind}_id": value}).scalar()
        return str(found) if found is not None else None

    return RememberingResolver(jurisdiction_of, _named, keep=JURISDICTIONS_KEPT)


def renewal_rules(resolver: RememberingResolver) -> list[Rule]:
    """Every RenewalService method's row (``resolver``: :func:`jurisdiction_resolver`)."""
    portal_own = Grant("portal", Limit.JURISDICTION, resolver=resolver)
    readers = (Grant("authority"), Grant("operator"), Grant("auditor"))
    return [
        Rule(f"/{SERVICE}/QuoteRenewal", (Grant("portal", Limit.JURISDICTION),)),
        Rule(f"/{SERVICE}/StartPayment", (portal_own,)),
        Rule(f"/{SERVICE}/CompletePayment", (portal_own, Grant("authority"))),
        Rule(f"/{SERVICE}/GetRenewal", (portal_own, *readers)),
        Rule(f"/{SERVICE}/RefundPayment", (Grant("authority"),)),
    ]
