"""The identity vault in the database: person tokens and the identifiers they stand for.

Two tables (migration 0009):

- ``person_tokens``: every token ever issued, the country that issued the person's identifier
  (a renewal authority collects fees for its own country's residents only) and, once the
  person is erased, when. A token's row is never deleted: it holds no personal data, and the
  log's entries naming the token stay replayable (``rebuild``) after erasure;
- ``person_identities``: token -> (type, country, value), unique per identifier, so that the
  same person always gets the same token while not erased. Erasure deletes the row; nothing
  else in the database links the token to the identifier (docs/privacy.md).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    Connection,
    Date,
    Engine,
    Index,
    Row,
    String,
    Table,
    bindparam,
    insert,
    select,
)
from sqlalchemy.exc import IntegrityError

from ledger.clock import to_micros
from ledger.coverage.model import PersonRef
from ledger.errors import FailedPrecondition, FieldViolation
from ledger.identity.tokens import new_person_token
from ledger.storage.db import WRITE_LOCK_OPTION
from ledger.storage.row_match import any_row
from ledger.storage.tables import metadata

__all__ = [
    "TokenState",
    "VaultStore",
    "birth_dates_of",
    "erase_token",
    "identity_of",
    "person_identities",
    "person_tokens",
    "token_states",
    "tokens_for_in",
    "tokens_of_in",
]

person_tokens = Table(
    "person_tokens",
    metadata,
    Column("token", String(40), primary_key=True),
    Column("country", String(2), nullable=False),
    Column("issued_at_us", BigInteger, nullable=False),
    Column("erased_at_us", BigInteger, nullable=True),
)
person_identities = Table(
    "person_identities",
    metadata,
    Column("token", String(40), primary_key=True),
    Column("id_type", String(20), nullable=False),
    Column("country", String(2), nullable=False),
    Column("value", String(32), nullable=False),
    Column("birth_date", Date, nullable=True),
    Index("person_identities_by_identifier", "country", "id_type", "value", unique=True),
)

_ATTEMPTS_MAX = 3
"""Tries of a tokenizing transaction that lost a race for a new identifier (PostgreSQL)."""

_SELECT_TOKEN = select(person_identities.c.token).where(
    person_identities.c.country == bindparam("country"),
    person_identities.c.id_type == bindparam("id_type"),
    person_identities.c.value == bindparam("value"),
)


def _identifier(person: PersonRef) -> dict[str, str]:
    return {"country": person.country, "id_type": person.id_type, "value": person.value}


@dataclass(frozen=True)
class TokenState:
    """What the vault says of an issued token, without the person: their identifier's country
    and whether they were erased."""

    country: str
    erased: bool


# Built once: the sequencer asks it every batch, and building the statement cost more than
# running it.
_SELECT_TOKEN_STATES = select(
    person_tokens.c.token, person_tokens.c.country, person_tokens.c.erased_at_us
).where(person_tokens.c.token.in_(bindparam("tokens", expanding=True)))


def token_states(connection: Connection, tokens: Iterable[str]) -> dict[str, TokenState]:
    """The state of each token the vault issued (an unknown token is absent)."""
    wanted = sorted(set(tokens))
    if not wanted:
        return {}
    rows = connection.execute(_SELECT_TOKEN_STATES, {"tokens": wanted})
    return {
        row.token: TokenState(country=row.country, erased=row.erased_at_us is not None)
        for row in rows
    }


def erase_token(
    connection: Connection, token: str, now: dt.datetime, *, identifier: bool = True
) -> None:
    """Delete the token's identifier and date its erasure, in the caller's transaction (the
    appender's, with the PersonErased entry that records it). ``identifier=False``: only date
    it (a replay's scratch database has no identifiers)."""
    if identifier:
        connection.execute(person_identities.delete().where(person_identities.c.token == token))
    connection.execute(
        person_tokens.update()
        .where(person_tokens.c.token == token, person_tokens.c.erased_at_us.is_(None))
        .values(erased_at_us=to_micros(now))
    )


class VaultStore:
    """Issue, look up and resolve person tokens."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def tokens_for(
        self,
        people: Sequence[PersonRef],
        now: dt.datetime,
        birth_dates: Sequence[dt.date | None] = (),
    ) -> list[str]:
        """The token of each person, in order, issuing new ones for people not yet known;
        ``birth_dates`` (none, or one per person) are stored with the tokens (see
        :func:`tokens_for_in`).

        One transaction: either every new token is stored or none is. Two callers racing to
        tokenize the same new person on PostgreSQL: the loser's insert violates the unique
        identifier index, and it retries, then finding the winner's token.
        """
        for attempt in range(_ATTEMPTS_MAX):
            try:
                return self._tokens_for_once(people, now, birth_dates)
            except IntegrityError:
                if attempt == _ATTEMPTS_MAX - 1:
                    raise
        raise AssertionError("unreachable")  # pragma: no cover

    def _tokens_for_once(
        self, people: Sequence[PersonRef], now: dt.datetime, birth_dates: Sequence[dt.date | None]
    ) -> list[str]:
        write = self._engine.execution_options(**{WRITE_LOCK_OPTION: True})
        with write.begin() as connection:
            return tokens_for_in(connection, people, now, birth_dates)

    def token_of(self, person: PersonRef) -> str | None:
        """The person's token, or None: never tokenized, or erased."""
        with self._engine.connect() as connection:
            return connection.execute(_SELECT_TOKEN, _identifier(person)).scalar_one_or_none()

    def tokens_of(self, people: Iterable[PersonRef]) -> dict[PersonRef, str]:
        """The tokens of the people the vault knows (the others are absent)."""
        with self._engine.connect() as connection:
            return _tokens_of(connection, people)


_ISSUE_TOKEN = insert(person_tokens)
"""A new token's row (built once, its cache key generated once: the renewal saga issues a
household's tokens inside its write transaction)."""
_ISSUE_IDENTITY = insert(person_identities)


def tokens_for_in(
    connection: Connection,
    people: Sequence[PersonRef],
    now: dt.datetime,
    birth_dates: Sequence[dt.date | None] = (),
    *,
    keep_stored_birth_date: bool = False,
) -> list[str]:
    """:meth:`VaultStore.tokens_for` in the caller's write transaction (the renewal saga's).

    ``birth_dates``: none, or one per person (None: unknown). A birth date is stored with the
    token when the vault holds none yet; a different one than the vault holds is refused
    (FAILED_PRECONDITION ``BIRTH_DATE_CONFLICT``, before anything is written) unless
    ``keep_stored_birth_date`` (the renewal saga, recording a fee already paid: the stored
    date stays).
    """
    if birth_dates and len(birth_dates) != len(people):
        raise ValueError(f"{len(birth_dates)} birth dates for {len(people)} people")
    births = list(birth_dates) if birth_dates else [None] * len(people)
    known = _known(connection, people)
    violations = [
        FieldViolation(
            f"birth_dates[{position}]",
            f"the identity vault holds another birth date for this person ({stored[1]})",
        )
        for position, (person, birth) in enumerate(zip(people, births, strict=True))
        if (stored := known.get(person)) is not None
        and birth is not None
        and stored[1] is not None
        and stored[1] != birth
    ]
    if violations and not keep_stored_birth_date:
        raise FailedPrecondition(
            "a birth date differs from the one the identity vault holds",
            reason="BIRTH_DATE_CONFLICT",
            field_violations=violations,
        )
    tokens: list[str] = []
    for person, birth in zip(people, births, strict=True):
        entry = known.get(person)
        if entry is None:
            token = new_person_token()
            connection.execute(
                _ISSUE_TOKEN,
                {"token": token, "country": person.country, "issued_at_us": to_micros(now)},
            )
            connection.execute(
                _ISSUE_IDENTITY, {"token": token, "birth_date": birth, **_identifier(person)}
            )
            known[person] = (token, birth)
        else:
            token = entry[0]
            if birth is not None and entry[1] is None:
                connection.execute(
                    person_identities.update()
                    .where(person_identities.c.token == token)
                    .values(birth_date=birth)
                )
                known[person] = (token, birth)
        tokens.append(token)
    return tokens


def birth_dates_of(connection: Connection, tokens: Iterable[str]) -> dict[str, dt.date]:
    """The birth dates the vault holds for ``tokens`` (an erased person's, or an unknown one,
    is absent)."""
    wanted = sorted(set(tokens))
    if not wanted:
        return {}
    rows = connection.execute(
        select(person_identities.c.token, person_identities.c.birth_date).where(
            person_identities.c.token.in_(wanted), person_identities.c.birth_date.is_not(None)
        )
    )
    return {row.token: row.birth_date for row in rows}


def identity_of(connection: Connection, token: str) -> PersonRef | None:
    """The identifier behind ``token`` (None: unknown, or erased)."""
    row = connection.execute(
        select(person_identities).where(person_identities.c.token == token)
    ).first()
    if row is None:
        return None
    return PersonRef(id_type=row.id_type, value=row.value, country=row.country)


def _known(
    connection: Connection, people: Iterable[PersonRef]
) -> dict[PersonRef, tuple[str, dt.date | None]]:
    return {
        PersonRef(id_type=row.id_type, value=row.value, country=row.country): (
            row.token,
            row.birth_date,
        )
        for row in _identity_rows(connection, people)
    }


_IDENTITY_ROW = select(person_identities).where(
    person_identities.c.country == bindparam("country"),
    person_identities.c.id_type == bindparam("id_type"),
    person_identities.c.value == bindparam("value"),
)
"""One person's vault row (built once: its cache key is generated once)."""

IDENTITY_ROWS_ONE_BY_ONE_MAX = 8
"""Up to this many people, :func:`_identity_rows` looks each one up with
:data:`_IDENTITY_ROW` (a household: the renewal saga does it three times a renewal); beyond,
one statement per ``row_match`` chunk. Building and hashing a statement of several OR terms
costs more CPU than a few executions of one built once (about 270 against 75 us for three
people, SQLite); for a batch of hundreds the one statement is cheaper."""


def _identity_rows(connection: Connection, people: Iterable[PersonRef]) -> Iterator[Row[Any]]:
    """The vault's rows of ``people`` (by identifier; an index search each, row_match)."""
    wanted = [(person.country, person.id_type, person.value) for person in sorted(set(people))]
    if len(wanted) <= IDENTITY_ROWS_ONE_BY_ONE_MAX:
        for country, id_type, value in wanted:
            yield from connection.execute(
                _IDENTITY_ROW, {"country": country, "id_type": id_type, "value": value}
            )
        return
    key = (person_identities.c.country, person_identities.c.id_type, person_identities.c.value)
    for condition in any_row(key, wanted):
        yield from connection.execute(select(person_identities).where(condition))


def tokens_of_in(connection: Connection, people: Iterable[PersonRef]) -> dict[PersonRef, str]:
    """:meth:`VaultStore.tokens_of` in the caller's transaction (a read's snapshot)."""
    return _tokens_of(connection, people)


def _tokens_of(connection: Connection, people: Iterable[PersonRef]) -> dict[PersonRef, str]:
    return {
        PersonRef(id_type=row.id_type, value=row.value, country=row.country): row.token
        for row in _identity_rows(connection, people)
    }
