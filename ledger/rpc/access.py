"""The interceptor that records every answer carrying a person's data (issue 8, item 8).

For the methods of :data:`ACCESS_RULES`, after the authorization interceptor let the call in:
  (1) the request must state its purpose (``AccessPurpose``), else INVALID_ARGUMENT and
      nothing runs;
  (2) the servicer answers (a refusal records nothing: no data left the server);
  (3) the access record (caller SPIFFE ID, method, purpose, people, the answer's tree size) is
      stored; only then does the answer leave. If it cannot be stored, the call fails.
People are recorded by person token (the identity vault's), never by identifier, so the access
log stays append-only through an erasure (docs/privacy.md); a person the vault does not know
(the ledger has nothing on them) is recorded as no one.
Servicers know nothing of this, as they know nothing of authorization, except that one
which has already found the people's tokens (CheckHousehold: in the answer's own snapshot) may
hand them over (:func:`note_person_tokens`), and the record then names the people by those
rather than asking the vault again; a person it did not hand over is looked up as before.

Records are stored by one writer per process (:class:`_RecordWriter`): the calls whose answers
are ready while it commits wait for its next transaction, which stores all their records at
once (group commit). Each answer still leaves only once its own record is durably stored; a
record that cannot be built fails its own call, a transaction that fails fails every call whose
record it held. On SQLite, whose one write lock every writer takes in turn, this is one
transaction per burst of answers rather than one per answer.
"""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from contextlib import suppress
from typing import Any

import grpc

from ledger.clock import Clock
from ledger.coverage.model import PersonRef
from ledger.coverage.projector import person_ref
from ledger.errors import FieldViolation, InvalidArgument
from ledger.rpc.identity import current_caller
from ledger.rpc.status import abort
from ledger.storage.access_log import AccessLog, AccessRecord
from ledger.storage.vault_store import VaultStore
from ledger.v1 import types_pb2

__all__ = ["ACCESS_RULES", "AccessRecordingInterceptor", "note_person_tokens"]

_Context = grpc.aio.ServicerContext[Any, Any]
People = tuple[tuple[PersonRef, ...], str]
"""(people, subject) a request asks about; a subject ``household of`` is completed with the
sponsor's token."""
_HOUSEHOLD_OF = "household of"
_BY_TOKEN = "token:"  # noqa: S105 (a prefix, not a secret)
"""Subject prefix of a request naming its one person by token (BeneficiaryService)."""


def _person(request: Any) -> People:
    return (person_ref(request.person),), ""


def _household(request: Any) -> People:
    people = [person_ref(request.sponsor)] if request.HasField("sponsor") else []
    people.extend(person_ref(member.person) for member in request.members)
    return tuple(people), _HOUSEHOLD_OF if people else ""


def _policy(request: Any) -> People:
    return (), f"policy {request.insurer_id}/{request.policy_id}"


_known_tokens: contextvars.ContextVar[dict[PersonRef, str | None] | None] = contextvars.ContextVar(
    "access_known_tokens", default=None
)
"""The tokens the servicer of the current recorded call found (None: not a recorded call)."""


def note_person_tokens(found: Iterable[tuple[PersonRef, str | None]]) -> None:
    """A servicer hands the access record the people's tokens it has found, each with the
    vault's token or None (the vault does not know them); outside a recorded call, nothing."""
    known = _known_tokens.get()
    if known is not None:
        known.update(found)


def _tokens_and_subject(
    vault: VaultStore, people: People, known: dict[PersonRef, str | None] | None = None
) -> tuple[tuple[str, ...], str]:
    """The people's tokens (the unknown ones left out) and the subject naming tokens only;
    ``known``: tokens already found (None: the vault does not know that person), the others
    are asked of the vault."""
    persons, subject = people
    if subject.startswith(_BY_TOKEN):  # a request that names its person by token already
        return (subject.removeprefix(_BY_TOKEN),), ""
    known = known or {}
    missing = [person for person in persons if person not in known]
    tokens = {person: token for person, token in known.items() if token is not None}
    if missing:
        tokens.update(vault.tokens_of(missing))
    if subject == _HOUSEHOLD_OF:
        sponsor = tokens.get(persons[0])
        subject = f"household of {sponsor}" if sponsor else "household of an unknown person"
    return tuple(tokens[person] for person in persons if person in tokens), subject


def _entries(request: Any) -> People:
    if request.WhichOneof("subject") == "person":
        return _person(request)
    return (), f"policy {request.policy_id}"


def _establishment(request: Any) -> People:
    return (), f"establishment {request.jurisdiction}/{request.establishment_number}"


def _watched(request: Any) -> People:
    """A watch (task C): recorded once, when it starts (before its first message leaves)."""
    kind = request.WhichOneof("subject")
    if kind == "person":
        return _person(request)
    if kind == "household_sponsor":
        return (person_ref(request.household_sponsor),), _HOUSEHOLD_OF
    organization = request.establishment
    return (), f"establishment {organization.country_code}:{organization.registration_number}"


def _card(request: Any) -> People:
    return (), f"card {request.card_number}"


_SERVICE = "/ledger.v1.CoverageService/"
ACCESS_RULES: dict[str, Callable[[Any], People]] = {
    f"{_SERVICE}GetCoverage": _person,
    f"{_SERVICE}CheckHousehold": _household,
    f"{_SERVICE}ListPolicyHistory": _policy,
    f"{_SERVICE}FindEntries": _entries,
    f"{_SERVICE}GetCoverageCertificate": _person,
    # Task A (issue 10): answers naming every person an establishment is responsible for.
    f"{_SERVICE}CheckEmployer": _establishment,
    "/ledger.v1.ComplianceService/ComputeArrears": _establishment,
    f"{_SERVICE}WatchCoverage": _watched,
    # Task E (cards).
    f"{_SERVICE}GetCard": _card,
    f"{_SERVICE}GetRegistrationCertificate": _person,
    # Task F (issue 11, item 4): a person's own record, asked for by token.
    "/ledger.v1.BeneficiaryService/GetPersonRecord": lambda request: (
        (),
        f"{_BY_TOKEN}{request.person_token}",
    ),
}
"""Every method whose answer carries a person's data, and whom a request asks about."""


class _RecordWriter:
    """Stores access records in group commits: :meth:`store` returns once its record is stored
    (or raises why it is not); one transaction at a time, holding every record that arrived
    while the one before it committed.

    The transactions run on a thread of the writer's own, which hands each group's outcome back
    to the loop in one callback (no task and no asyncio wrapper of an executor's future, which
    cost the loop two more callbacks a transaction)."""

    def __init__(self, access_log: AccessLog) -> None:
        self._access_log = access_log
        self._waiting: list[tuple[Callable[[], AccessRecord], asyncio.Future[None]]] = []
        self._writing = False
        self._executor = ThreadPoolExecutor(1, thread_name_prefix="access")

    def close(self) -> None:
        """Stop the writer's thread once what it was given is written (the server has stopped
        taking calls)."""
        self._executor.shutdown(wait=True)

    async def store(self, build: Callable[[], AccessRecord]) -> None:
        """Build (on the writer's thread: it may read the vault) and store one record."""
        loop = asyncio.get_running_loop()
        done: asyncio.Future[None] = loop.create_future()
        self._waiting.append((build, done))
        if not self._writing:
            self._start(loop)
        await done

    def _start(self, loop: asyncio.AbstractEventLoop) -> None:
        """Write every waiting record in one transaction (on the writer's thread)."""
        self._writing = True
        group, self._waiting = self._waiting, []

        def work() -> None:
            try:
                failures = self._write_group(group)
            except Exception as error:  # the transaction failed: no call gets an answer
                failures = [error] * len(group)
            with suppress(RuntimeError):  # the loop closed while it wrote: no one waits
                loop.call_soon_threadsafe(self._written, loop, group, failures)

        self._executor.submit(work)

    def _written(
        self,
        loop: asyncio.AbstractEventLoop,
        group: list[tuple[Callable[[], AccessRecord], asyncio.Future[None]]],
        failures: list[Exception | None],
    ) -> None:
        for (_, done), failure in zip(group, failures, strict=True):
            if done.done():  # the caller left (cancelled)
                continue
            if failure is None:
                done.set_result(None)
            else:
                done.set_exception(failure)
        if self._waiting:  # the records that arrived during this transaction: the next one
            self._start(loop)
        else:
            self._writing = False

    def _write_group(
        self, group: list[tuple[Callable[[], AccessRecord], asyncio.Future[None]]]
    ) -> list[Exception | None]:
        records: list[AccessRecord] = []
        failures: list[Exception | None] = []
        for build, _ in group:
            try:
                records.append(build())
                failures.append(None)
            except Exception as error:  # this call's record only
                failures.append(error)
        self._access_log.append_many(records)
        return failures


class AccessRecordingInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[type-arg]
    """Require a purpose, and store an access record before each answer leaves."""

    def __init__(self, access_log: AccessLog, vault: VaultStore, clock: Clock) -> None:
        self._access_log = access_log
        self._vault = vault
        self._clock = clock
        self._writer = _RecordWriter(access_log)

    def close(self) -> None:
        """Release the record writer's thread (:func:`ledger.rpc.server.run_stop_hooks`)."""
        self._writer.close()

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Any]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> Any:
        method = handler_call_details.method
        handler = await continuation(handler_call_details)
        people_of = ACCESS_RULES.get(method)
        if handler is None or people_of is None:
            return handler
        if handler.unary_stream is not None:
            return self._recorded_stream(method, handler, people_of)
        if handler.unary_unary is None:
            return handler
        inner = handler.unary_unary

        async def recorded(request: Any, context: _Context) -> Any:
            try:
                # (1)
                purpose = _purpose(request)
            except InvalidArgument as error:
                await abort(context, error)
            # (2)
            known: dict[PersonRef, str | None] = {}
            reset = _known_tokens.set(known)
            try:
                response = await inner(request, context)
            finally:
                _known_tokens.reset(reset)
            # (3)
            caller = current_caller()

            def build() -> AccessRecord:
                person_keys, subject = _tokens_and_subject(self._vault, people_of(request), known)
                return AccessRecord(
                    recorded_at=self._clock.now(),
                    caller=caller.spiffe_id if caller else "",
                    method=method,
                    purpose=purpose,
                    person_keys=person_keys,
                    subject=subject,
                    tree_size=response.basis.tree_size,
                )

            try:
                await self._writer.store(build)
            except Exception as error:  # no record, no answer
                await abort(context, error)
            return response

        return grpc.unary_unary_rpc_method_handler(
            recorded, handler.request_deserializer, handler.response_serializer
        )

    async def _store(self, method: str, purpose: str, people: People, tree_size: int) -> None:
        caller = current_caller()

        def build() -> AccessRecord:
            person_keys, subject = _tokens_and_subject(self._vault, people)
            return AccessRecord(
                recorded_at=self._clock.now(),
                caller=caller.spiffe_id if caller else "",
                method=method,
                purpose=purpose,
                person_keys=person_keys,
                subject=subject,
                tree_size=tree_size,
            )

        await self._writer.store(build)

    def _recorded_stream(
        self, method: str, handler: Any, people_of: Callable[[Any], People]
    ) -> Any:
        """A response stream (WatchCoverage): steps (1)-(3), recorded once, before the first
        message leaves, with that message's tree size."""
        inner = handler.unary_stream

        async def recorded(request: Any, context: _Context) -> AsyncIterator[Any]:
            try:
                purpose = _purpose(request)
            except InvalidArgument as error:
                await abort(context, error)
            first = True
            async for response in inner(request, context):
                if first:
                    first = False
                    try:
                        await self._store(method, purpose, people_of(request), response.tree_size)
                    except Exception as error:  # no record, no answer
                        await abort(context, error)
                yield response

        return grpc.unary_stream_rpc_method_handler(
            recorded, handler.request_deserializer, handler.response_serializer
        )


def _purpose(request: Any) -> str:
    if request.purpose == types_pb2.ACCESS_PURPOSE_UNSPECIFIED:
        raise InvalidArgument(
            "a read of a person's data states its purpose (AccessPurpose)",
            reason="PURPOSE_MISSING",
            field_violations=[FieldViolation("purpose", "required")],
        )
    return types_pb2.AccessPurpose.Name(request.purpose).removeprefix("ACCESS_PURPOSE_")
