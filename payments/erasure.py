"""Erasure in the payments extension: when the ledger erases a person, redact the quotes that
name them, in the erasure's transaction (registered on ``ServerContext.erasure_hooks``).

A quote keeps its household by identifier (``quotes.sponsor_key`` and ``quotes.quote_json``).
Redaction replaces each identifier of the erased person by their person token (the token the log
already names them by) and keeps everything else: amounts, currency, rules, schedule version,
period, references. Money records stay; only the link to the person goes. A redacted quote can
no longer be paid (the ledger refuses events naming an erased person anyway).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from sqlalchemy import Connection, or_, select, update

from ledger.identity.erasure import ErasedPerson
from ledger.v1 import types_pb2
from payments.tables import quotes

__all__ = ["REDACTED", "is_redacted", "redact_person", "stored_person"]

REDACTED = "person_token"
"""The key a redacted person's stored form holds instead of type, value and country."""


def stored_person(stored: Mapping[str, Any]) -> types_pb2.PersonId:
    """A person as a quote stores them; an erased one (redacted to their token by
    :func:`redact_person`) is an empty PersonId (see :func:`is_redacted`)."""
    if REDACTED in stored:
        return types_pb2.PersonId()
    return types_pb2.PersonId(**stored)


def is_redacted(person: types_pb2.PersonId) -> bool:
    """True for a person :func:`stored_person` read as erased."""
    return person.type == types_pb2.PERSON_ID_TYPE_UNSPECIFIED


def _names(stored: Any, erased: ErasedPerson) -> bool:
    person = erased.person
    return (
        isinstance(stored, dict)
        and stored.get("value") == person.value
        and stored.get("country_code") == person.country
    )


def redact_person(connection: Connection, erased: ErasedPerson) -> None:
    """Replace ``erased.person``'s identifier by their token in every quote naming them."""
    key = erased.person.key
    pattern = f"%{erased.person.value}%"
    rows = connection.execute(
        select(quotes.c.quote_id, quotes.c.sponsor_key, quotes.c.quote_json).where(
            or_(quotes.c.sponsor_key == key, quotes.c.quote_json.like(pattern))
        )
    ).all()
    for row in rows:
        stored = json.loads(row.quote_json)
        changed = row.sponsor_key == key
        if _names(stored.get("sponsor"), erased):
            stored["sponsor"] = {REDACTED: erased.token}
            changed = True
        for line in stored.get("lines", []):
            if _names(line.get("person"), erased) or line.get("person_key") == key:
                line["person"] = {REDACTED: erased.token}
                line["person_key"] = erased.token
                changed = True
        if changed:
            connection.execute(
                update(quotes)
                .where(quotes.c.quote_id == row.quote_id)
                .values(
                    sponsor_key=erased.token if row.sponsor_key == key else row.sponsor_key,
                    quote_json=json.dumps(stored, sort_keys=True),
                )
            )
