"""The identity vault's use cases: tokenize identifiers, resolve tokens, look a person up.

Storage is :class:`ledger.storage.vault_store.VaultStore`; this module checks what callers ask
(every identifier valid, each at most once, at most ``limits.person_tokens_per_call_max``) and
holds the in-process helpers other parts of the server use to work by ID (the renewal builder
resolves a household's identifiers to tokens here, without an RPC).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

from sqlalchemy import Connection

from ledger import limits
from ledger.coverage.model import PersonRef
from ledger.errors import FieldViolation, refuse_violations
from ledger.storage.vault_store import VaultStore, tokens_for_in

__all__ = ["IdentityVault", "tokens_in_transaction"]


def tokens_in_transaction(
    connection: Connection,
    people: Sequence[PersonRef],
    now: dt.datetime,
    birth_dates: Sequence[dt.date | None] = (),
) -> list[str]:
    """The token of each person, issuing new ones, in the caller's write transaction: for a
    part of the server that builds events about people itself (the renewal saga's FeeCollected),
    so that the tokens and what it writes commit together. ``birth_dates`` (none, or one per
    person) fill the vault's where it holds none; a stored one is kept (the fee is paid: a
    differing date must not stop it being recorded)."""
    return tokens_for_in(connection, people, now, birth_dates, keep_stored_birth_date=True)


class IdentityVault:
    """Person tokens for identifiers, and back."""

    def __init__(self, store: VaultStore) -> None:
        self._store = store

    def tokens_for(
        self,
        people: Sequence[PersonRef],
        now: dt.datetime,
        birth_dates: Sequence[dt.date | None] = (),
        *,
        beneficiary: str | None = None,
    ) -> list[str]:
        """The token of each person, in order (new ones issued); refuse a bad batch whole.
        ``birth_dates``: none, or one per person (None: unknown), kept with the tokens; one
        after ``now`` is refused, and so is one differing from the date the vault holds.

        ``beneficiary``: the caller is this person (their token). Then every identifier needs
        its birth date (INVALID_ARGUMENT ``BIRTH_DATE_REQUIRED``, a violation per position),
        checked against the vault's and not stored, and the distinct people they may ever
        resolve are bounded (``limits.beneficiary_people_resolved_max`` plus the operator's
        grants, :mod:`ledger.identity.resolution_grants`; see
        :func:`ledger.storage.vault_store.tokens_for_in`).

        The identifiers themselves are checked by the caller (they arrive as wire PersonIds,
        checked by ``ledger.events.check_person``); here the batch: its size and duplicates.
        """
        violations: list[FieldViolation] = []
        if not people:
            violations.append(FieldViolation("people", "at least one identifier is required"))
        if len(people) > limits.person_tokens_per_call_max:
            violations.append(
                FieldViolation(
                    "people",
                    f"{len(people)} identifiers, over the limit of "
                    f"{limits.person_tokens_per_call_max} per call",
                )
            )
        seen: set[PersonRef] = set()
        for position, person in enumerate(people):
            if person in seen:
                violations.append(FieldViolation(f"people[{position}]", "listed twice"))
            seen.add(person)
        if birth_dates and len(birth_dates) != len(people):
            violations.append(
                FieldViolation(
                    "birth_dates",
                    f"{len(birth_dates)} birth dates for {len(people)} identifiers: "
                    "give none, or one per identifier",
                )
            )
        for position, birth in enumerate(birth_dates):
            if birth is not None and birth > now.date():
                violations.append(FieldViolation(f"birth_dates[{position}]", "in the future"))
        refuse_violations(violations, "request", "PERSON_TOKENS_REQUEST_INVALID")
        if beneficiary is not None:
            missing = [
                FieldViolation(
                    f"birth_dates[{position}]",
                    "a person asking for tokens gives each person's birth date",
                )
                for position in range(len(people))
                if not birth_dates or birth_dates[position] is None
            ]
            refuse_violations(missing, "request", "BIRTH_DATE_REQUIRED")
        return self._store.tokens_for(people, now, birth_dates, beneficiary=beneficiary)

    def token_of(self, person: PersonRef) -> str | None:
        """The person's token; None when the vault never saw them or they were erased."""
        return self._store.token_of(person)

    def tokens_of(self, people: Sequence[PersonRef]) -> dict[PersonRef, str]:
        """The tokens of the people the vault knows."""
        return self._store.tokens_of(people)
