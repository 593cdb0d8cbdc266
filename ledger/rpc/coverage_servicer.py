"""ledger.v1.CoverageService: validate the request, ask the projections, convert the answer."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator, Callable
from typing import TypeVar

import grpc

from ledger import i18n, limits
from ledger.cards.reader import CardReader
from ledger.clock import Clock
from ledger.compliance.employer import (
    EmployerReader,
    decode_page_token,
    employer_key,
    encode_page_token,
)
from ledger.coverage.certificate import certificate_messages, sign_certificate
from ledger.coverage.fhir import coverage_resource, eligibility_response, to_json
from ledger.coverage.model import CoverageRecord, HouseholdVerdict, PersonRef, Relationship
from ledger.coverage.projector import person_ref
from ledger.coverage.reader import CoverageReader, HistoryPage
from ledger.coverage.watch import ChangeKind
from ledger.coverage.watching import EntryChanges, Heartbeat, WatchHub, WatchRequest, watch_request
from ledger.errors import FieldViolation, NotFound, Unavailable, check, refuse_violations
from ledger.events import check_date, check_identifier, check_person, civil_date
from ledger.fair import ReadPool
from ledger.merkle import leaf_hash
from ledger.rpc.access import note_person_tokens
from ledger.rpc.cards_servicer import CardMethods
from ledger.rpc.compliance_servicer import basis_of, obligation_proto, parse_employer_range
from ledger.rpc.fairness import caller_of
from ledger.rpc.reads import min_tree_size_of
from ledger.rpc.status import abort
from ledger.signing import Signer
from ledger.storage.log_store import LogStore, StoredCheckpoint
from ledger.storage.read_routing import ReadRouter
from ledger.v1 import coverage_service_pb2 as pb
from ledger.v1 import coverage_service_pb2_grpc as pb_grpc
from ledger.v1 import events_pb2, types_pb2

__all__ = ["CoverageServicer", "answer_language", "household_response", "presentation_of"]

_T = TypeVar("_T")
_Context = grpc.aio.ServicerContext[object, object]

_VERDICTS = {
    "covered": pb.COVERAGE_VERDICT_COVERED,
    "no_policy": pb.COVERAGE_VERDICT_NO_POLICY,
    "ends_before": pb.COVERAGE_VERDICT_ENDS_BEFORE,
    "cancelled": pb.COVERAGE_VERDICT_CANCELLED,
    "gap": pb.COVERAGE_VERDICT_GAP,
    "insurer_suspended": pb.COVERAGE_VERDICT_INSURER_SUSPENDED,
    "non_payment": pb.COVERAGE_VERDICT_NON_PAYMENT,
    "transfer_gap": pb.COVERAGE_VERDICT_TRANSFER_GAP,
}


_PERSON_ID_TYPES = {
    name.removeprefix("PERSON_ID_TYPE_"): number for name, number in types_pb2.PersonIdType.items()
}
_RELATIONSHIPS = {
    name.removeprefix("RELATIONSHIP_"): number for name, number in events_pb2.Relationship.items()
}
"""Enum numbers by name without the prefix, looked up once (every answer names people)."""


def _person_proto(person: PersonRef) -> types_pb2.PersonId:
    number = _PERSON_ID_TYPES.get(person.id_type)
    return types_pb2.PersonId(
        type=(
            types_pb2.PersonIdType.Value(f"PERSON_ID_TYPE_{person.id_type}")  # raises
            if number is None
            else number
        ),
        value=person.value,
        country_code=person.country,
    )


def _relationship_proto(relationship: Relationship) -> events_pb2.Relationship.ValueType:
    number = _RELATIONSHIPS.get(relationship.name)
    if number is None:
        return events_pb2.Relationship.Value(f"RELATIONSHIP_{relationship.name}")  # raises
    return number


def _coverage_proto(record: CoverageRecord) -> pb.Coverage:
    return pb.Coverage(
        person=_person_proto(record.person),
        sponsor=_person_proto(record.sponsor),
        relationship=_relationship_proto(record.relationship),
        insurer_id=record.insurer_id,
        policy_id=record.policy_id,
        plan=record.plan,
        start_date=civil_date(record.start),
        end_date=civil_date(record.end),
        cancelled=record.cancelled,
        end_reason=record.end_reason,
        leaf_indexes=list(record.leaf_indexes),
        not_counting=record.not_counting,
        funder_id=record.funder_id,
    )


def _basis(head: StoredCheckpoint, leaves: list[int] | tuple[int, ...]) -> pb.AnswerBasis:
    return pb.AnswerBasis(
        tree_size=head.tree_size, checkpoint=head.note_bytes, leaf_indexes=sorted(set(leaves))
    )


def _page_size(violations: list[FieldViolation], requested: int) -> int:
    if requested == 0:
        return limits.history_page_default
    if requested > limits.history_page_max:
        violations.append(FieldViolation("page_size", f"at most {limits.history_page_max}"))
    return requested


def _history_entries(page: HistoryPage) -> list[pb.HistoryEntry]:
    return [pb.HistoryEntry(leaf_index=leaf, entry=entry) for leaf, entry in page.entries]


def _person_and_date(
    request: pb.GetCoverageRequest | pb.GetCoverageCertificateRequest,
) -> Callable[[], tuple[PersonRef, dt.date]]:
    """The check of a request naming a person and a date (INVALID_ARGUMENT per bad field)."""

    def parse() -> tuple[PersonRef, dt.date]:
        violations: list[FieldViolation] = []
        if request.HasField("person"):
            check_person(violations, "person", request.person)
        else:
            violations.append(FieldViolation("person", "required"))
        day = check_date(violations, "date", request.date, present=request.HasField("date"))
        refuse_violations(violations)
        assert day is not None
        return person_ref(request.person), day

    return parse


def presentation_of(context: _Context) -> i18n.Presentation:
    """How the caller wants human texts: the ``accept-language`` metadata (repeated values are
    one list, as HTTP joins repeated headers); INVALID_ARGUMENT when it cannot be read."""
    values = [
        str(value)
        for key, value in (context.invocation_metadata() or ())
        if key.lower() == i18n.METADATA_KEY
    ]
    return i18n.presentation_from_accept_language(", ".join(values) or None)


async def answer_language(context: _Context, presentation: i18n.Presentation) -> None:
    """Say which language and calendar the human texts are in (``content-language``)."""
    await context.send_initial_metadata((("content-language", presentation.tag),))


def household_response(
    verdict: HouseholdVerdict, presentation: i18n.Presentation = i18n.DEFAULT
) -> pb.CheckHouseholdResponse:
    """The wire form of a household verdict (also used by the renewal service), its details
    in the presentation's language and calendar."""
    response = pb.CheckHouseholdResponse(
        renewable=verdict.renewable,
        as_of_date=civil_date(verdict.as_of),
        through_date=civil_date(verdict.through),
        basis=pb.AnswerBasis(
            tree_size=verdict.tree_size,
            checkpoint=verdict.checkpoint,
            leaf_indexes=list(verdict.leaf_indexes),
        ),
    )
    for member in verdict.members:
        answer = response.members.add(
            person=_person_proto(member.person),
            relationship=_relationship_proto(member.relationship),
            covered=member.covered,
            verdict=_VERDICTS[member.reason.value],
            detail=(i18n.render(member.message, presentation) if member.message else member.detail),
            coverages=[_coverage_proto(record) for record in member.coverages],
        )
        if member.covered_until is not None:
            answer.covered_until.CopyFrom(civil_date(member.covered_until))
    return response


class CoverageServicer(CardMethods, pb_grpc.CoverageServiceServicer):
    """Coverage, household checks and history, from the projections."""

    def __init__(
        self,
        reader: CoverageReader,
        clock: Clock,
        log_store: LogStore,
        signer: Signer,
        reads: ReadPool | None = None,
        *,
        employers: EmployerReader,
        watches: WatchHub | None = None,
        standby: tuple[CoverageReader, LogStore] | None = None,
        router: ReadRouter | None = None,
    ) -> None:
        """``log_store`` reads the proofs and entries of certificates; ``signer`` is the log key,
        which signs them (as it signs checkpoints); ``reads`` runs the reads (the server's one
        read pool); ``employers`` answers CheckEmployer; ``watches`` serves WatchCoverage
        (None: UNAVAILABLE); ``standby`` reads the read standby, which ``router`` chooses per
        read (``serve --read-database``)."""
        self._employers = employers
        self._watches = watches
        self._reads = reads or ReadPool()
        self._reader = reader
        self._clock = clock
        self._log_store = log_store
        self._signer = signer
        self._standby = standby or (reader, log_store)
        self._router = router or ReadRouter(None)
        self._cards = CardReader(reader.engine)  # Task E (cards): ledger/rpc/cards_servicer.py

    def _served_basis(
        self, head: StoredCheckpoint, leaves: list[int], log_store: LogStore | None = None
    ) -> pb.AnswerBasis:
        """The basis with the checkpoint as served (with its witness cosignatures) by
        ``log_store``: the store the answer was read from (default: the primary's)."""
        basis = _basis(head, leaves)
        basis.checkpoint = (log_store or self._log_store).served_note(head)
        return basis

    async def _routed(
        self,
        context: _Context,
        work: Callable[[CoverageReader, LogStore], _T],
        size_of: Callable[[_T], int],
    ) -> _T:
        """``work`` on the standby or the primary (:class:`ReadRouter`), never answered at a
        tree smaller than the caller's ``x-min-tree-size``."""

        def run() -> _T:
            primary = (self._reader, self._log_store)
            return self._router.read(
                lambda on_standby: work(*(self._standby if on_standby else primary)),
                min_tree_size_of(context),
                size_of,
            )

        return await self._read(context, run)

    def _presentation(self, context: _Context) -> i18n.Presentation:
        return presentation_of(context)

    async def _answer_language(self, context: _Context, presentation: i18n.Presentation) -> None:
        await answer_language(context, presentation)

    async def _read(self, context: _Context, function: Callable[[], _T]) -> _T:
        try:
            return await self._reads.run(function)
        except Exception as error:  # every failure becomes a status; bugs are logged there
            await abort(context, error)

    async def _checked(self, context: _Context, check: Callable[[], _T]) -> _T:
        try:
            return check()
        except Exception as error:
            await abort(context, error)

    async def GetCoverage(
        self, request: pb.GetCoverageRequest, context: _Context
    ) -> pb.GetCoverageResponse:
        """The coverages of a person on a date."""
        person, day = await self._checked(context, _person_and_date(request))
        records, head = await self._routed(
            context, lambda reader, _: reader.coverage_on(person, day), lambda a: a[1].tree_size
        )
        return pb.GetCoverageResponse(
            coverages=[_coverage_proto(record) for record in records],
            basis=_basis(head, [leaf for record in records for leaf in record.leaf_indexes]),
            fhir_coverages=(
                [to_json(coverage_resource(record)) for record in records]
                if request.include_fhir
                else []
            ),
        )

    async def GetCoverageCertificate(
        self, request: pb.GetCoverageCertificateRequest, context: _Context
    ) -> pb.GetCoverageCertificateResponse:
        """A certificate per coverage of a person on a date; NOT_FOUND when there is none."""
        presentation = await self._checked(context, lambda: presentation_of(context))
        person, day = await self._checked(context, _person_and_date(request))
        response = await self._routed(
            context,
            lambda reader, log_store: self._certificates(
                person, day, presentation, reader, log_store
            ),
            lambda answer: answer.basis.tree_size,
        )
        await answer_language(context, presentation)
        return response

    def _certificates(
        self,
        person: PersonRef,
        day: dt.date,
        presentation: i18n.Presentation,
        reader: CoverageReader,
        log_store: LogStore,
    ) -> pb.GetCoverageCertificateResponse:
        """Runs in a worker thread: read coverage, proofs and entries, and sign."""
        # A suspended insurer's policies, and a policy unpaid past its grace, stop counting: no
        # certificate for them.
        records, head = reader.coverage_on(person, day, counting_suspension=True)
        if not records:
            raise NotFound(
                f"{person.key} has no coverage on {day.isoformat()}",
                reason="COVERAGE_NOT_FOUND",
                metadata={"person": person.key, "date": day.isoformat()},
            )
        certificates: list[pb.CoverageCertificate] = []
        for record in records:
            # The entry that created the coverage (issuance, member added, fee collected).
            leaf = record.leaf_indexes[0]
            _, [entry] = log_store.entries(leaf, leaf + 1)
            size, proof = log_store.inclusion_proof(leaf, head.tree_size)
            check(size == head.tree_size, "inclusion proof at another tree size")
            note = sign_certificate(
                record,
                day,
                leaf_index=leaf,
                leaf_hash=leaf_hash(entry),
                tree_size=head.tree_size,
                root_hash=head.root_hash,
                proof=proof,
                signer=self._signer,
            )
            certificates.append(
                pb.CoverageCertificate(
                    certificate=note,
                    coverage=_coverage_proto(record),
                    leaf_index=leaf,
                    entry=entry,
                    human_text=" ".join(
                        i18n.render(message, presentation)
                        for message in certificate_messages(record, day, tree_size=head.tree_size)
                    ),
                )
            )
        return pb.GetCoverageCertificateResponse(
            certificates=certificates,
            basis=self._served_basis(head, [c.leaf_index for c in certificates], log_store),
        )

    async def CheckHousehold(
        self, request: pb.CheckHouseholdRequest, context: _Context
    ) -> pb.CheckHouseholdResponse:
        """Whether every member is covered through the date, and why not."""
        today = self._clock.now().date()

        def parse() -> tuple[
            PersonRef, list[tuple[PersonRef, Relationship | None]], dt.date, dt.date
        ]:
            violations: list[FieldViolation] = []
            if request.HasField("sponsor"):
                check_person(violations, "sponsor", request.sponsor)
            else:
                violations.append(FieldViolation("sponsor", "required"))
            members: list[tuple[PersonRef, Relationship | None]] = []
            seen: set[PersonRef] = set()
            for position, member in enumerate(request.members):
                field = f"members[{position}]"
                if not member.HasField("person"):
                    violations.append(FieldViolation(f"{field}.person", "required"))
                    continue
                check_person(violations, f"{field}.person", member.person)
                person = person_ref(member.person)
                if person in seen:
                    violations.append(FieldViolation(f"{field}.person", "listed twice"))
                seen.add(person)
                relationship: Relationship | None = None
                if member.relationship != events_pb2.RELATIONSHIP_UNSPECIFIED:
                    # The request layer has refused unknown enum values.
                    name = events_pb2.Relationship.Name(member.relationship)
                    relationship = Relationship[name.removeprefix("RELATIONSHIP_")]
                members.append((person, relationship))
            as_of = (
                check_date(violations, "as_of_date", request.as_of_date, present=True)
                if request.HasField("as_of_date")
                else today
            )
            through = check_date(
                violations,
                "through_date",
                request.through_date,
                present=request.HasField("through_date"),
            )
            if as_of is not None and through is not None:
                if through < as_of:
                    violations.append(FieldViolation("through_date", "before as_of_date"))
                elif (through - as_of).days + 1 > limits.household_days_max:
                    violations.append(
                        FieldViolation(
                            "through_date", f"more than {limits.household_days_max} days ahead"
                        )
                    )
            refuse_violations(violations)
            assert as_of is not None and through is not None
            return person_ref(request.sponsor), members, as_of, through

        presentation = await self._checked(context, lambda: presentation_of(context))
        sponsor, members, as_of, through = await self._checked(context, parse)
        verdict = await self._routed(
            context,
            lambda reader, _: reader.check_household(sponsor, members, as_of, through),
            lambda answer: answer.tree_size,
        )
        note_person_tokens(verdict.person_tokens)  # for the access record
        await answer_language(context, presentation)
        return self._household_response(
            verdict, include_fhir=request.include_fhir, presentation=presentation
        )

    def _household_response(
        self,
        verdict: HouseholdVerdict,
        *,
        include_fhir: bool,
        presentation: i18n.Presentation = i18n.DEFAULT,
    ) -> pb.CheckHouseholdResponse:
        response = household_response(verdict, presentation)
        if include_fhir:
            response.fhir_eligibility_response = to_json(
                eligibility_response(verdict, created=self._clock.now())
            )
        return response

    async def ListPolicyHistory(
        self, request: pb.ListPolicyHistoryRequest, context: _Context
    ) -> pb.ListPolicyHistoryResponse:
        """The entries of one policy, oldest first."""

        def parse() -> tuple[str, int]:
            violations: list[FieldViolation] = []
            check_identifier(violations, "insurer_id", request.insurer_id)
            check_identifier(violations, "policy_id", request.policy_id, limits.policy_id_chars_max)
            size = _page_size(violations, request.page_size)
            refuse_violations(violations)
            return f"policy:{request.insurer_id}:{request.policy_id}", size

        subject, size = await self._checked(context, parse)
        after = request.after_leaf_index if request.HasField("after_leaf_index") else None
        page = await self._routed(
            context,
            lambda reader, _: reader.history(subject, after, size),
            lambda answer: answer.checkpoint.tree_size,
        )
        return pb.ListPolicyHistoryResponse(
            entries=_history_entries(page),
            more=page.more,
            basis=_basis(page.checkpoint, [leaf for leaf, _ in page.entries]),
        )

    async def FindEntries(
        self, request: pb.FindEntriesRequest, context: _Context
    ) -> pb.FindEntriesResponse:
        """The entries naming a person, or a policy id at any insurer, oldest first."""

        def parse() -> tuple[str | PersonRef, int]:
            violations: list[FieldViolation] = []
            kind = request.WhichOneof("subject")
            subject: str | PersonRef = ""
            if kind == "person":
                check_person(violations, "person", request.person)
                subject = person_ref(request.person)  # the reader finds its token
            elif kind == "policy_id":
                check_identifier(
                    violations, "policy_id", request.policy_id, limits.policy_id_chars_max
                )
                subject = f"policy-id:{request.policy_id}"
            else:
                violations.append(FieldViolation("subject", "a person or a policy_id is required"))
            size = _page_size(violations, request.page_size)
            refuse_violations(violations)
            return subject, size

        subject, size = await self._checked(context, parse)
        after = request.after_leaf_index if request.HasField("after_leaf_index") else None
        page = await self._routed(
            context,
            lambda reader, _: reader.history(subject, after, size),
            lambda answer: answer.checkpoint.tree_size,
        )
        return pb.FindEntriesResponse(
            entries=_history_entries(page),
            more=page.more,
            basis=_basis(page.checkpoint, [leaf for leaf, _ in page.entries]),
        )

    # Task A (issue 10): CheckEmployer.

    async def CheckEmployer(
        self, request: pb.CheckEmployerRequest, context: _Context
    ) -> pb.CheckEmployerResponse:
        """Every worker and dependent an establishment is responsible for, with intervals."""

        def parse() -> tuple[str, dt.date, dt.date, int, tuple[str, str, str] | None]:
            violations: list[FieldViolation] = []
            found = parse_employer_range(request, violations)
            size = request.page_size or limits.employer_page_default
            if size > limits.employer_page_max:
                violations.append(
                    FieldViolation("page_size", f"at most {limits.employer_page_max}")
                )
            refuse_violations(violations)
            assert found is not None
            after = decode_page_token(request.page_token) if request.page_token else None
            key = employer_key(found.jurisdiction, found.establishment_number)
            return key, found.first, found.last, size, after

        employers = self._employers
        responsible, first, last, size, after = await self._checked(context, parse)
        page = await self._read(
            context, lambda: employers.check_employer(responsible, first, last, size, after)
        )
        leaves = {leaf for person in page.people for leaf in person.leaf_indexes}
        basis = basis_of(page.checkpoint, leaves)
        basis.checkpoint = self._log_store.served_note(page.checkpoint)
        return pb.CheckEmployerResponse(
            people=[obligation_proto(person) for person in page.people],
            next_page_token="" if page.next_page is None else encode_page_token(page.next_page),
            basis=basis,
        )

    # Task C (issue 10 item 9): the change feed.

    async def WatchCoverage(
        self, request: pb.WatchCoverageRequest, context: _Context
    ) -> AsyncIterator[pb.WatchCoverageResponse]:
        """The changes of a person, household or establishment as they are sequenced."""
        watch = await self._checked(context, lambda: _watch_request(request))
        if self._watches is None:
            await abort(context, Unavailable("this server has no change feed", reason="NO_FEED"))
        assert self._watches is not None
        try:
            async for item in self._watches.watch(caller_of(context), watch):
                yield _watch_response(item)
        except Exception as error:  # every failure becomes a status; bugs are logged there
            await abort(context, error)


def _watch_request(request: pb.WatchCoverageRequest) -> WatchRequest:
    """The checked request (INVALID_ARGUMENT per bad field)."""
    violations: list[FieldViolation] = []
    kind = request.WhichOneof("subject")
    if kind in {"person", "household_sponsor"}:
        check_person(violations, kind, getattr(request, kind))
    elif kind == "establishment":
        check_identifier(
            violations,
            "establishment.registration_number",
            request.establishment.registration_number,
            limits.reference_chars_max,
        )
        if not (len(code := request.establishment.country_code) == 2 and code.isupper()):
            violations.append(
                FieldViolation("establishment.country_code", "ISO 3166-1 alpha-2 code")
            )
        elif request.jurisdiction and code != request.jurisdiction:
            # A portal acts for its own state: it follows the establishments registered there.
            violations.append(
                FieldViolation(
                    "establishment.country_code",
                    f"registered in {code}, not in the jurisdiction {request.jurisdiction}",
                )
            )
    else:
        violations.append(
            FieldViolation("subject", "a person, a household_sponsor or an establishment")
        )
    seconds = request.heartbeat_seconds or limits.watch_heartbeat_seconds_default
    if seconds > limits.watch_heartbeat_seconds_max:
        violations.append(
            FieldViolation("heartbeat_seconds", f"at most {limits.watch_heartbeat_seconds_max}")
        )
    refuse_violations(violations)
    return watch_request(
        kind or "",
        person=(
            person_ref(request.household_sponsor if kind == "household_sponsor" else request.person)
        ),
        establishment=(
            f"org:{request.establishment.country_code}:{request.establishment.registration_number}"
        ),
        from_tree_size=request.from_tree_size,
        heartbeat_seconds=seconds,
    )


_CHANGE_KINDS = {
    kind: pb.CoverageChangeKind.Value(f"COVERAGE_CHANGE_KIND_{kind.value}") for kind in ChangeKind
}


def _watch_response(item: EntryChanges | Heartbeat) -> pb.WatchCoverageResponse:
    if isinstance(item, Heartbeat):
        return pb.WatchCoverageResponse(
            tree_size=item.tree_size, heartbeat=pb.WatchHeartbeat(checkpoint=item.checkpoint)
        )
    return pb.WatchCoverageResponse(
        tree_size=item.leaf_index + 1,
        entry=pb.WatchedEntry(
            leaf_index=item.leaf_index,
            checkpoint_tree_size=item.tree_size,
            changes=[
                pb.CoverageChange(
                    kind=_CHANGE_KINDS[change.kind],
                    insurer_id=change.insurer_id,
                    policy_id=change.policy_id,
                    people=[_person_proto(person) for person in people],
                    effective_date=civil_date(change.effective),
                    detail=change.detail,
                )
                for change, people in item.changes
            ],
        ),
    )
