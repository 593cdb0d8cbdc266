"""The identity vault in the database: person tokens and the identifiers they stand for.

Three tables (migrations 0009, 0018):

- ``person_tokens``: every token ever issued, the country that issued the person's identifier
  (a renewal authority collects fees for its own country's residents only) and, once the
  person is erased, when. A token's row is never deleted: it holds no personal data, and the
  log's entries naming the token stay replayable (``rebuild``) after erasure;
- ``person_identities``: token -> (type, country, value), unique per identifier, so that the
  same person always gets the same token while not erased. Erasure deletes the row; nothing
  else in the database links the token to the identifier (docs/privacy.md);
- ``beneficiary_resolutions``: which people (by token) each beneficiary (a person, by their
  token) has obtained the token of, so that the number of distinct people one person may ever
  resolve is bounded (``limits.beneficiary_people_resolved_max``) across restarts and workers.
  Tokens only: erasure keeps its rows, like the access records' (the count must not go down).

A fourth, ``beneficiary_resolution_grants`` (migrations 0019, 0020, 0021,
:mod:`ledger.storage.resolution_grants`), raises one person's bound by the operator's grants;
this store reads it under the same per-person lock as the count, and writes it, once per
request id. Erasure keeps its rows but clears their reasons (the operator's text about the
person), under that lock too (:func:`erase_token`).
"""

from __future__ import annotations

import datetime as dt
import hashlib
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
    PrimaryKeyConstraint,
    Row,
    String,
    Table,
    bindparam,
    insert,
    select,
    text,
)
from sqlalchemy.exc import IntegrityError

from ledger import limits
from ledger.clock import to_micros
from ledger.coverage.model import PersonRef
from ledger.errors import (
    AlreadyExists,
    FailedPrecondition,
    FieldViolation,
    InvariantViolation,
    NotFound,
    ResourceExhausted,
)
from ledger.identity.tokens import new_person_token
from ledger.storage.db import WRITE_LOCK_OPTION, is_sqlite
from ledger.storage.resolution_grants import (
    ERASED_REASON,
    BeneficiaryResolutions,
    ResolutionGrant,
    allowed_for,
    erase_grant_reasons,
    grant_of_request,
    grants_of,
    record_grant,
)
from ledger.storage.row_match import any_row
from ledger.storage.tables import metadata

__all__ = [
    "TokenState",
    "VaultStore",
    "beneficiary_resolutions",
    "birth_dates_of",
    "erase_token",
    "grant_resolutions_in",
    "identity_of",
    "people_resolved_by",
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

beneficiary_resolutions = Table(
    "beneficiary_resolutions",
    metadata,
    Column("beneficiary_token", String(40), nullable=False),
    Column("person_token", String(40), nullable=False),
    Column("resolved_at_us", BigInteger, nullable=False),
    PrimaryKeyConstraint("beneficiary_token", "person_token", name="pk_beneficiary_resolutions"),
)

_ATTEMPTS_MAX = 3
"""Tries of a tokenizing transaction that lost a race for a new identifier (PostgreSQL), or of
a grant that lost the race for its request id (the retry finds the winner's grant)."""

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
    """Delete the token's identifier, clear the reasons of the operator's grants to the person
    (:func:`ledger.storage.resolution_grants.erase_grant_reasons`: the grants stay, the
    operator's text about the person goes) and date the erasure, in the caller's transaction
    (the appender's, with the PersonErased entry that records it: all commit together or not
    at all). ``identifier=False``: only date it (a replay's scratch database has no
    identifiers and no grants).

    The reasons are cleared under the person's lock (:func:`_lock_beneficiary`, PostgreSQL; on
    SQLite the one writer's lock): a grant being made meanwhile, which found the person not
    erased, commits first and has its reason cleared here; one made after sees the erasure and
    is refused."""
    if identifier:
        connection.execute(person_identities.delete().where(person_identities.c.token == token))
        if not is_sqlite(connection):
            _lock_beneficiary(connection, token)
        erase_grant_reasons(connection, token)
    connection.execute(
        person_tokens.update()
        .where(person_tokens.c.token == token, person_tokens.c.erased_at_us.is_(None))
        .values(erased_at_us=to_micros(now))
    )


class VaultStore:
    """Issue, look up and resolve person tokens; a person's resolutions and grants."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def tokens_for(
        self,
        people: Sequence[PersonRef],
        now: dt.datetime,
        birth_dates: Sequence[dt.date | None] = (),
        *,
        beneficiary: str | None = None,
    ) -> list[str]:
        """The token of each person, in order, issuing new ones for people not yet known;
        ``birth_dates`` (none, or one per person) are stored with the tokens (see
        :func:`tokens_for_in`); ``beneficiary``: the caller is this person (their token), whose
        resolutions are bounded (see :func:`tokens_for_in`).

        One transaction: either every new token is stored or none is. Two callers racing to
        tokenize the same new person on PostgreSQL: the loser's insert violates the unique
        identifier index, and it retries, then finding the winner's token.
        """
        for attempt in range(_ATTEMPTS_MAX):
            try:
                return self._tokens_for_once(people, now, birth_dates, beneficiary)
            except IntegrityError:
                if attempt == _ATTEMPTS_MAX - 1:
                    raise
        raise AssertionError("unreachable")  # pragma: no cover

    def _tokens_for_once(
        self,
        people: Sequence[PersonRef],
        now: dt.datetime,
        birth_dates: Sequence[dt.date | None],
        beneficiary: str | None,
    ) -> list[str]:
        write = self._engine.execution_options(**{WRITE_LOCK_OPTION: True})
        with write.begin() as connection:
            return tokens_for_in(connection, people, now, birth_dates, beneficiary=beneficiary)

    def people_resolved_by(self, beneficiary: str) -> int:
        """How many distinct people (their own token aside) ``beneficiary`` has resolved."""
        with self._engine.connect() as connection:
            return people_resolved_by(connection, beneficiary)

    def resolutions(self, person_token: str) -> BeneficiaryResolutions:
        """How many people ``person_token`` resolved and may resolve (their grants included).
        NOT_FOUND ``PERSON_TOKEN_UNKNOWN`` for a token the vault never issued; an erased
        person's are answered (their rows are kept)."""
        with self._engine.connect() as connection:
            erased = _issued_token_erased(connection, person_token)
            return _resolutions(connection, person_token, erased=erased)

    def grant_resolutions(
        self, person_token: str, grant: ResolutionGrant
    ) -> BeneficiaryResolutions:
        """Store ``grant`` for ``person_token`` in a transaction of its own (see
        :func:`grant_resolutions_in`), once per request id; their resolutions with it.

        Two calls with one request id at once: the person's lock serializes them when they
        name the same person, and the second finds the first's grant. Should the first commit
        after the second looked (another person's token, so another lock; or the lock missed),
        the second's insert violates the unique request id, and it retries, then answering as
        a repeat or refusing the reuse."""
        for attempt in range(_ATTEMPTS_MAX):
            try:
                return self._grant_resolutions_once(person_token, grant)
            except IntegrityError:
                if attempt == _ATTEMPTS_MAX - 1:
                    raise
        raise AssertionError("unreachable")  # pragma: no cover

    def _grant_resolutions_once(
        self, person_token: str, grant: ResolutionGrant
    ) -> BeneficiaryResolutions:
        write = self._engine.execution_options(**{WRITE_LOCK_OPTION: True})
        with write.begin() as connection:
            return grant_resolutions_in(connection, person_token, grant)

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
    beneficiary: str | None = None,
) -> list[str]:
    """:meth:`VaultStore.tokens_for` in the caller's write transaction (the renewal saga's).

    ``birth_dates``: none, or one per person (None: unknown). A birth date is stored with the
    token when the vault holds none yet; a different one than the vault holds is refused
    (FAILED_PRECONDITION ``BIRTH_DATE_CONFLICT``, before anything is written) unless
    ``keep_stored_birth_date`` (the renewal saga, recording a fee already paid: the stored
    date stays).

    ``beneficiary``: the caller is this person (role beneficiary, named by their token). Their
    birth dates are only checked against the vault's, never stored (a person's word about
    someone else is not the vault's to keep: a date planted on a stranger would bind the
    stranger's admission rules and refuse their insurer's true date). The distinct people
    they resolve, themselves aside, are recorded in ``beneficiary_resolutions`` and bounded by
    ``limits.beneficiary_people_resolved_max``: a call that would pass the bound is refused
    (RESOURCE_EXHAUSTED ``BENEFICIARY_PEOPLE_LIMIT``) before anything is written. The check and
    the record are serialized per beneficiary: on SQLite by the transaction's write lock (it
    must have begun with BEGIN IMMEDIATE, :data:`WRITE_LOCK_OPTION`), on PostgreSQL by a
    transaction-scoped advisory lock of the beneficiary taken first.

    Steps: (1) a beneficiary's lock, (2) the vault's rows, (3) birth dates, (4) a beneficiary's
    bound, (5) the tokens (issued where new), (6) a beneficiary's new resolutions recorded.
    """
    if birth_dates and len(birth_dates) != len(people):
        raise ValueError(f"{len(birth_dates)} birth dates for {len(people)} people")
    births = list(birth_dates) if birth_dates else [None] * len(people)
    if beneficiary is not None:  # (1) one beneficiary's calls take turns from here
        _lock_beneficiary(connection, beneficiary)
    known = _known(connection, people)  # (2) the vault's rows of these people
    violations = [  # (3) no birth date other than the vault's
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
    if beneficiary is None:
        return _issue(connection, people, births, known, now)[0]
    first_time = _check_beneficiary_bound(connection, beneficiary, people, known)  # (4)
    tokens, issued = _issue(connection, people, [None] * len(people), known, now)  # (5)
    _record_resolutions(connection, beneficiary, first_time | issued, now)  # (6)
    return tokens


def _record_resolutions(
    connection: Connection, beneficiary: str, people: set[str], now: dt.datetime
) -> None:
    """Record that ``beneficiary`` resolved ``people`` (tokens they had not resolved before)."""
    if people:
        connection.execute(
            beneficiary_resolutions.insert(),
            [
                {
                    "beneficiary_token": beneficiary,
                    "person_token": token,
                    "resolved_at_us": to_micros(now),
                }
                for token in sorted(people)
            ],
        )


def _issue(
    connection: Connection,
    people: Sequence[PersonRef],
    births: Sequence[dt.date | None],
    known: dict[PersonRef, tuple[str, dt.date | None]],
    now: dt.datetime,
) -> tuple[list[str], set[str]]:
    """Each person's token, issuing one for each person not in ``known`` (with their birth
    date) and filling in a birth date the vault lacks; the tokens in order, and those issued."""
    tokens: list[str] = []
    issued: set[str] = set()
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
            issued.add(token)
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
    return tokens, issued


_BENEFICIARY_LOCK_SPACE = 0x62656E66
"""First key of the PostgreSQL advisory lock (two 32-bit keys) that serializes one
beneficiary's resolutions: "benf". The ledger's write lock (ledger/storage/append.py) is a
single 64-bit key, a separate key space."""


def _lock_beneficiary(connection: Connection, beneficiary: str) -> None:
    """Serialize ``beneficiary``'s resolutions until the transaction ends, so that two calls
    at once cannot both pass the bound from the same count."""
    if is_sqlite(connection):
        if not connection.get_execution_options().get(WRITE_LOCK_OPTION, False):
            raise ValueError("a beneficiary's tokens need a BEGIN IMMEDIATE transaction")
        return  # BEGIN IMMEDIATE: the database's one writer until the transaction ends
    key = int.from_bytes(hashlib.sha256(beneficiary.encode()).digest()[:4], "big", signed=True)
    connection.execute(
        text("SELECT pg_advisory_xact_lock(CAST(:space AS integer), CAST(:key AS integer))"),
        {"space": _BENEFICIARY_LOCK_SPACE, "key": key},
    )


_RESOLVED_BY = select(beneficiary_resolutions.c.person_token).where(
    beneficiary_resolutions.c.beneficiary_token == bindparam("beneficiary")
)
"""The people a beneficiary resolved (at most the bound: a few dozen rows, one index range)."""


def people_resolved_by(connection: Connection, beneficiary: str) -> int:
    """How many distinct people (their own token aside) ``beneficiary`` has resolved."""
    return len(_resolved_by(connection, beneficiary))


def _resolved_by(connection: Connection, beneficiary: str) -> set[str]:
    return set(connection.execute(_RESOLVED_BY, {"beneficiary": beneficiary}).scalars())


def _check_beneficiary_bound(
    connection: Connection,
    beneficiary: str,
    people: Sequence[PersonRef],
    known: dict[PersonRef, tuple[str, dt.date | None]],
) -> set[str]:
    """The known tokens of ``people`` that ``beneficiary`` resolves for the first time (to
    record); raise RESOURCE_EXHAUSTED if those and the people the vault does not know yet (a
    new token each) would take them past the bound: the base one and the operator's grants
    (:func:`ledger.storage.resolution_grants.allowed_for`). Their own token never counts."""
    resolved = _resolved_by(connection, beneficiary)
    first_time = {known[p][0] for p in people if p in known} - resolved - {beneficiary}
    adding = len(first_time) + sum(1 for person in people if person not in known)
    limit = limits.beneficiary_people_resolved_max
    if len(resolved) + adding > limit:
        # Past the base bound only are the grants read: a grant only raises it. Reading them
        # on every call cost 60 (SQLite) to 140 (PostgreSQL) us of CPU, 8-9% of a call.
        limit = allowed_for(connection, beneficiary)
    if len(resolved) + adding > limit:
        raise ResourceExhausted(
            f"this person may obtain the tokens of at most {limit} people other than "
            f"themselves; {len(resolved)} already, this call would add {adding} (the operator "
            "may grant more: AdminService.GrantBeneficiaryResolutions)",
            reason="BENEFICIARY_PEOPLE_LIMIT",
            metadata={
                "limit": str(limit),
                "resolved": str(len(resolved)),
                "requested_new": str(adding),
            },
        )
    return first_time


def grant_resolutions_in(
    connection: Connection, person_token: str, grant: ResolutionGrant
) -> BeneficiaryResolutions:
    """Store ``grant`` for ``person_token`` in the caller's write transaction (on SQLite begun
    with BEGIN IMMEDIATE, :data:`WRITE_LOCK_OPTION`), unless its request id made a grant
    already; their resolutions with it.

    Steps: (1) the person's lock (the one :func:`tokens_for_in` takes: a grant and their
    bound check take turns, and two grants cannot both pass the total), (2) the request id:
    one that made a grant already is a repeat (:func:`_repeat_of`: answered, or refused when
    it asked something else), before any other check, so that the retry of a grant that was
    made is answered whatever happened since (the person erased, the total reached), (3) the
    token was issued (NOT_FOUND ``PERSON_TOKEN_UNKNOWN``) and the person not erased
    (FAILED_PRECONDITION ``PERSON_ERASED``), (4) their grants with this one stay within
    ``limits.beneficiary_resolutions_granted_max`` (RESOURCE_EXHAUSTED
    ``BENEFICIARY_GRANTS_LIMIT``), (5) the grant stored (IntegrityError should a call with the
    same request id have committed since (2): see :meth:`VaultStore.grant_resolutions`), (6)
    read back. A refusal or a repeat writes nothing. Whether the token is a beneficiary
    principal is not asked: the token is the key, and a grant made before the person enrols
    applies once they do.
    """
    request_id = grant.request_id
    if not request_id:  # a bug: ResolutionGrants.grant checked the request
        raise InvariantViolation(
            "a new grant carries the request id of its call", reason="INVARIANT_VIOLATION"
        )
    _lock_beneficiary(connection, person_token)  # (1)
    repeated = _repeat_of(connection, person_token, grant, request_id)  # (2)
    if repeated is not None:
        return repeated
    if _issued_token_erased(connection, person_token):  # (3)
        raise FailedPrecondition(
            "the person was erased from the identity vault: no grant is accepted",
            reason="PERSON_ERASED",
            field_violations=[FieldViolation("person_token", "the person was erased")],
            metadata={"person_token": person_token},
        )
    grants = grants_of(connection, person_token)  # (4)
    _check_granted_total(grants, grant.additional)
    record_grant(connection, person_token, grant, len(grants))  # (5)
    return _resolutions(connection, person_token, erased=False)  # (6)


def _repeat_of(
    connection: Connection, person_token: str, grant: ResolutionGrant, request_id: str
) -> BeneficiaryResolutions | None:
    """None if no grant was made with ``request_id`` (``grant``'s). If one was, for the same
    person, ``additional`` and ``reason``: the person's resolutions as they are now (that
    grant among them, with any later grants and resolutions: a retry learns where the person
    stands; the reason is not compared once the person's erasure cleared it). For anything
    else: ALREADY_EXISTS ``REQUEST_ID_REUSED`` naming each field that differs (as payments'
    reused idempotency key). Who calls is not compared: another
    operator retrying the same request repeats it."""
    made = grant_of_request(connection, request_id)
    if made is None:
        return None
    asked = {"person_token": person_token, "additional": grant.additional, "reason": grant.reason}
    first = {
        "person_token": made.person_token,
        "additional": made.grant.additional,
        "reason": made.grant.reason,
    }
    if made.grant.reason == ERASED_REASON:
        # The person was erased and the reason with them: it cannot be compared, the person
        # and the amount are (a retry after the erasure is still answered).
        del asked["reason"], first["reason"]
    differing = [name for name in asked if asked[name] != first[name]]
    if differing:
        raise AlreadyExists(
            f"request id already used for another grant ({', '.join(differing)} differ): "
            "a new grant needs a new request id",
            reason="REQUEST_ID_REUSED",
            field_violations=[
                FieldViolation(name, "differs from the first request") for name in differing
            ],
            metadata={"request_id": request_id},
        )
    erased = _issued_token_erased(connection, person_token)
    return _resolutions(connection, person_token, erased=erased)


def _issued_token_erased(connection: Connection, token: str) -> bool:
    """Whether the person ``token`` stands for was erased; NOT_FOUND if it was never issued."""
    state = token_states(connection, [token]).get(token)
    if state is None:
        raise NotFound(
            "the identity vault never issued this person token",
            reason="PERSON_TOKEN_UNKNOWN",
            field_violations=[FieldViolation("person_token", "unknown person token")],
            metadata={"person_token": token},
        )
    return state.erased


def _check_granted_total(grants: Sequence[ResolutionGrant], additional: int) -> None:
    """Raise RESOURCE_EXHAUSTED if ``additional`` more would take a person's grants past
    ``limits.beneficiary_resolutions_granted_max``."""
    granted = sum(grant.additional for grant in grants)
    total_max = limits.beneficiary_resolutions_granted_max
    if granted + additional > total_max:
        raise ResourceExhausted(
            f"a person's grants may add at most {total_max} people in all; {granted} granted "
            f"already, this grant would add {additional}",
            reason="BENEFICIARY_GRANTS_LIMIT",
            field_violations=[
                FieldViolation("additional", f"at most {total_max - granted} more may be granted")
            ],
            metadata={
                "granted_max": str(total_max),
                "granted": str(granted),
                "additional": str(additional),
            },
        )


def _resolutions(
    connection: Connection, person_token: str, *, erased: bool
) -> BeneficiaryResolutions:
    return BeneficiaryResolutions(
        person_token=person_token,
        resolved=people_resolved_by(connection, person_token),
        base_allowed=limits.beneficiary_people_resolved_max,
        grants=grants_of(connection, person_token),
        erased=erased,
    )


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
