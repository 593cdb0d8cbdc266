"""The RenewalService's rows of the authorization table (see ledger/rpc/authorization.py).

A portal acts for one jurisdiction (``portal/KW``): it quotes for its own jurisdiction (the
request names it), and starts, completes and reads only payments of quotes it could have made
(the jurisdiction is read from the quote the request names). Refunds need the renewal
authority; the operator and auditors may read renewals.
"""

from __future__ import annotations

from sqlalchemy import Engine, select

from ledger.rpc.authorization import Grant, Limit, Rule
from payments.tables import payments, quotes
from payments.v1 import renewal_service_pb2 as pb

__all__ = ["renewal_rules"]

SERVICE = "payments.v1.RenewalService"


def _jurisdiction_resolver(engine: Engine) -> object:
    def jurisdiction_of(request: object) -> str | None:
        quote_id = getattr(request, "quote_id", "")
        payment_id = getattr(request, "payment_id", "")
        if isinstance(request, pb.GetRenewalRequest):
            which = request.WhichOneof("key")
            quote_id = request.quote_id if which == "quote_id" else ""
            payment_id = request.payment_id if which == "payment_id" else ""
        query = select(quotes.c.jurisdiction)
        if quote_id:
            query = query.where(quotes.c.quote_id == quote_id)
        elif payment_id:
            query = query.join(payments, payments.c.quote_id == quotes.c.quote_id).where(
                payments.c.payment_id == payment_id
            )
        else:
            return None
        with engine.connect() as connection:
            found = connection.execute(query).scalar()
        return str(found) if found is not None else None

    return jurisdiction_of


def renewal_rules(engine: Engine) -> list[Rule]:
    """Every RenewalService method's row."""
    resolver = _jurisdiction_resolver(engine)
    portal_own = Grant("portal", Limit.JURISDICTION, resolver=resolver)  # type: ignore[arg-type]
    readers = (Grant("authority"), Grant("operator"), Grant("auditor"))
    return [
        Rule(f"/{SERVICE}/QuoteRenewal", (Grant("portal", Limit.JURISDICTION),)),
        Rule(f"/{SERVICE}/StartPayment", (portal_own,)),
        Rule(f"/{SERVICE}/CompletePayment", (portal_own, Grant("authority"))),
        Rule(f"/{SERVICE}/GetRenewal", (portal_own, *readers)),
        Rule(f"/{SERVICE}/RefundPayment", (Grant("authority"),)),
    ]
