"""Person tokens for a party that writes events about people (an insurer, an authority).

Signed events name people by the tokens the ledger's identity vault issues (docs/privacy.md).
This client asks IdentityService.GetPersonTokens in batches of at most
``limits.person_tokens_per_call_max`` and caches the answers: the vault gives the same person
the same token while not erased, so a cached token stays right until the person is erased (an
event naming an erased person is refused anyway).

tokens = PersonTokens(channel)
sponsor_token = tokens.token(person_id)         # one RPC the first time, none after
member_tokens = tokens.tokens([a, b, c])        # one RPC for the ones not cached
baby_token = tokens.tokens([baby], [born])[0]   # the vault keeps the birth date, not the log
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator, Sequence
from threading import Lock

import grpc
from google.protobuf.message import Message

from clients.errors import from_rpc_error
from ledger import limits
from ledger.v1 import events_pb2, types_pb2
from ledger.v1 import identity_service_pb2 as pb
from ledger.v1 import identity_service_pb2_grpc as pb_grpc

__all__ = [
    "BIRTH_SEPARATOR",
    "IDENTIFIER_PREFIX",
    "PersonTokens",
    "person_id_key",
    "tokenize_event",
]


def person_id_key(person: types_pb2.PersonId) -> tuple[int, str, str]:
    """The cache key of an identifier: (type, country, value)."""
    return (int(person.type), person.country_code, person.value)


class PersonTokens:
    """Tokens for identifiers, asked once each (thread-safe)."""

    def __init__(self, channel: grpc.Channel, *, timeout: float = 30.0) -> None:
        self._stub = pb_grpc.IdentityServiceStub(channel)
        self._timeout = timeout
        self._cache: dict[tuple[int, str, str], str] = {}
        self._lock = Lock()

    def token(self, person: types_pb2.PersonId) -> str:
        """The token of one person."""
        return self.tokens([person])[0]

    def tokens(
        self,
        people: Sequence[types_pb2.PersonId],
        birth_dates: Sequence[dt.date | None] = (),
    ) -> list[str]:
        """The token of each person, in order; raises a ClientError if the ledger refuses.

        ``birth_dates``: none, or one per person (None: unknown). The vault keeps a birth date
        with the token (never in a signed event); a person given one is asked again even when
        cached, so that the vault learns it.
        """
        if birth_dates and len(birth_dates) != len(people):
            raise ValueError(f"{len(birth_dates)} birth dates for {len(people)} people")
        births = list(birth_dates) if birth_dates else [None] * len(people)
        with self._lock:
            missing: dict[tuple[int, str, str], tuple[types_pb2.PersonId, dt.date | None]] = {}
            for person, birth in zip(people, births, strict=True):
                key = person_id_key(person)
                wanted = key not in self._cache or birth is not None
                if wanted and missing.get(key, (person, None))[1] is None:
                    missing[key] = (person, birth)
        pending = list(missing.values())
        step = limits.person_tokens_per_call_max
        for start in range(0, len(pending), step):
            batch = pending[start : start + step]
            request = pb.GetPersonTokensRequest(people=[person for person, _ in batch])
            if any(birth is not None for _, birth in batch):
                request.birth_dates.extend(
                    types_pb2.CivilDate()
                    if birth is None
                    else types_pb2.CivilDate(year=birth.year, month=birth.month, day=birth.day)
                    for _, birth in batch
                )
            try:
                answer = self._stub.GetPersonTokens(request, timeout=self._timeout)
            except grpc.RpcError as error:
                raise from_rpc_error(error) from error
            with self._lock:
                for (person, _), token in zip(batch, answer.person_tokens, strict=True):
                    self._cache[person_id_key(person)] = token
        with self._lock:
            return [self._cache[person_id_key(person)] for person in people]

    def forget(self, person: types_pb2.PersonId) -> None:
        """Drop a cached token (after the person was erased)."""
        with self._lock:
            self._cache.pop(person_id_key(person), None)


IDENTIFIER_PREFIX = "id:"
"""In an event file (examples/), a token field may name a person by identifier instead:
``"sponsorToken": "id:SA:RESIDENCE_ID:2000000014"``. :func:`tokenize_event` replaces each
with the person's token before the event is signed; the ledger only ever sees tokens. A birth
date may follow after ``@`` (``"id:SA:RESIDENCE_ID:2000000030@2019-08-21"``): it goes to the
identity vault with the token request, never into the event."""

BIRTH_SEPARATOR = "@"
"""Between an identifier and its holder's birth date in an ``id:`` field."""


def _identifier_fields(message: Message) -> Iterator[tuple[Message, str, str]]:
    """(message, field name, identifier text) of every ``*_token`` field holding ``id:...``."""
    for descriptor, value in message.ListFields():
        if descriptor.message_type is not None:
            children = value if getattr(descriptor, "is_repeated", False) else [value]
            for child in children:
                yield from _identifier_fields(child)
        elif (
            descriptor.name.endswith("_token")
            and isinstance(value, str)
            and value.startswith(IDENTIFIER_PREFIX)
        ):
            yield message, descriptor.name, value.removeprefix(IDENTIFIER_PREFIX)


def tokenize_event(event: events_pb2.Event, tokens: PersonTokens) -> None:
    """Replace every ``id:COUNTRY:TYPE:VALUE[@YYYY-MM-DD]`` in ``event``'s token fields by the
    person's token (one GetPersonTokens call for the ones not cached or given a birth date).
    Raises ValueError naming a malformed identifier or birth date; the ledger checks the
    identifiers themselves when it issues the tokens."""
    found = list(_identifier_fields(event))
    if event.insurer_id.startswith(IDENTIFIER_PREFIX):
        # A person signs for themselves (BeneficiariesDeclared): their principal is their token.
        found.append((event, "insurer_id", event.insurer_id.removeprefix(IDENTIFIER_PREFIX)))
    if not found:
        return
    people = [_person_id(text.partition(BIRTH_SEPARATOR)[0]) for _, _, text in found]
    births = [_birth_date(text) for _, _, text in found]
    answer = tokens.tokens(people, births if any(births) else ())
    for (message, name, _), token in zip(found, answer, strict=True):
        setattr(message, name, token)


def _birth_date(text: str) -> dt.date | None:
    _, separator, birth = text.partition(BIRTH_SEPARATOR)
    if not separator:
        return None
    try:
        return dt.date.fromisoformat(birth)
    except ValueError:
        raise ValueError(
            f"a birth date after {BIRTH_SEPARATOR} is YYYY-MM-DD, got id:{text}"
        ) from None


def _person_id(text: str) -> types_pb2.PersonId:
    country, _, rest = text.partition(":")
    kind, _, value = rest.partition(":")
    if not (country and kind and value):
        raise ValueError(f"a person is id:COUNTRY:TYPE:VALUE, got id:{text}") from None
    try:
        id_type = types_pb2.PersonIdType.Value(f"PERSON_ID_TYPE_{kind}")
    except ValueError:
        raise ValueError(f"unknown identifier type {kind!r} in id:{text}") from None
    return types_pb2.PersonId(type=id_type, value=value, country_code=country)
