"""ledger.v1.IdentityService: person tokens for the callers that write events about people.

Parse each identifier (structure, then its type's rules in its country), delegate to the vault
(:class:`ledger.identity.vault.IdentityVault`), convert. Who may call it is the authorization
table's business (ledger/rpc/authorization.py): insurers, renewal authorities, the operator,
the regulator, funders and beneficiaries. A beneficiary (a person, named by their token) must
give each person's birth date and may resolve a bounded number of people
(``limits.beneficiary_people_resolved_max``, plus what the operator grants them through
AdminService): the vault enforces both, knowing the caller.
A refused call issues no token.
"""

from __future__ import annotations

import asyncio
import functools

import grpc

from ledger.clock import Clock
from ledger.coverage.projector import person_ref
from ledger.errors import FieldViolation, NotFound, refuse_violations
from ledger.events import check_date, check_person
from ledger.identity.vault import IdentityVault
from ledger.rpc.identity import current_caller
from ledger.rpc.status import abort
from ledger.v1 import identity_service_pb2 as pb
from ledger.v1 import identity_service_pb2_grpc as pb_grpc
from ledger.v1 import types_pb2

__all__ = ["IdentityServicer"]

_Context = grpc.aio.ServicerContext[object, object]

_UNKNOWN_DATE = types_pb2.CivilDate()
"""A birth date left all zero: unknown."""


class IdentityServicer(pb_grpc.IdentityServiceServicer):
    """Tokens for identifiers."""

    def __init__(self, vault: IdentityVault, clock: Clock) -> None:
        self._vault = vault
        self._clock = clock

    async def GetPersonTokens(
        self, request: pb.GetPersonTokensRequest, context: _Context
    ) -> pb.GetPersonTokensResponse:
        """(1) every identifier and birth date valid, (2) the batch (size, duplicates, one birth
        date per identifier or none, none in the future; a beneficiary's: one for each), (3) the
        tokens (a birth date differing from the vault's is refused there, and a beneficiary's
        call past their bound, writing nothing)."""
        try:
            violations: list[FieldViolation] = []
            for position, person in enumerate(request.people):  # (1)
                check_person(violations, f"people[{position}]", person)
            births = [
                None
                if birth == _UNKNOWN_DATE
                else check_date(violations, f"birth_dates[{position}]", birth, present=True)
                for position, birth in enumerate(request.birth_dates)
            ]
            refuse_violations(violations, "request", "PERSON_ID_INVALID")
            people = [person_ref(person) for person in request.people]
            caller = current_caller()
            tokens = await asyncio.to_thread(  # (2), (3)
                functools.partial(
                    self._vault.tokens_for,
                    people,
                    self._clock.now(),
                    births,
                    beneficiary=(
                        caller.name if caller is not None and caller.role == "beneficiary" else None
                    ),
                )
            )
        except Exception as error:
            await abort(context, error)
        return pb.GetPersonTokensResponse(person_tokens=tokens)

    async def LookUpPersonToken(
        self, request: pb.LookUpPersonTokenRequest, context: _Context
    ) -> pb.LookUpPersonTokenResponse:
        """The token of one identifier, or NOT_FOUND; issues none."""
        try:
            violations: list[FieldViolation] = []
            check_person(violations, "person", request.person)
            refuse_violations(violations, "request", "PERSON_ID_INVALID")
            token = await asyncio.to_thread(self._vault.token_of, person_ref(request.person))
            if token is None:
                raise NotFound(
                    "the identity vault does not know this person (never tokenized, or erased)",
                    reason="PERSON_NOT_IN_VAULT",
                    field_violations=[FieldViolation("person", "not in the identity vault")],
                )
        except Exception as error:
            await abort(context, error)
        return pb.LookUpPersonTokenResponse(person_token=token)
