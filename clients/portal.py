"""The renewal portal's client: coverage, household checks and history, with verified answers.

Every answer carries the signed checkpoint it was computed at; the client verifies that
signature with the trusted log key before returning, so a portal never acts on an answer the
log did not sign for. (The entries an answer relied on can then be proven included at that
size with ``AuditorClient.verify_inclusion``.)

portal = PortalClient(channel, log=TrustedLog.from_verifier_key(LOG_VERIFIER_KEY))
answer = portal.check_household(sponsor, [(wife, RELATIONSHIP_SPOUSE)], through=date(2027, 6, 30))
if not answer.response.renewable:
    for member in answer.response.members: print(member.detail)
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import grpc

from clients.auditor import MIN_TREE_SIZE_METADATA, check_fresh
from clients.errors import from_rpc_error
from clients.verify import TrustedLog, verify_checkpoint
from ledger.checkpoint import Checkpoint
from ledger.events import civil_date
from ledger.v1 import coverage_service_pb2 as pb
from ledger.v1 import coverage_service_pb2_grpc as pb_grpc
from ledger.v1 import events_pb2, types_pb2

__all__ = ["PortalClient", "VerifiedAnswer", "WatchStream", "civil_date"]

_R = TypeVar("_R")


def _language(accept_language: str) -> tuple[tuple[str, str], ...]:
    return (("accept-language", accept_language),) if accept_language else ()


@dataclass(frozen=True)
class VerifiedAnswer(Generic[_R]):
    """A response whose checkpoint signature verified with the trusted log key."""

    response: _R
    checkpoint: Checkpoint
    """The verified checkpoint the answer was computed at."""


class PortalClient:
    """CoverageService calls; each answer's checkpoint is verified before it is returned.

    Every call states why it reads a person's data (``purpose``, recorded by the server with
    the access): a renewal portal's reason by default, another one per client or per call.
    """

    def __init__(
        self,
        channel: grpc.Channel,
        *,
        log: TrustedLog,
        timeout: float = 30.0,
        purpose: types_pb2.AccessPurpose.ValueType = types_pb2.ACCESS_PURPOSE_RESIDENCE_RENEWAL,
        min_tree_size: int = 0,
    ) -> None:
        """``min_tree_size``: never be answered from a tree smaller than this (a receipt's
        checkpoint size, sent as ``x-min-tree-size``: a server with a read standby then asks
        the primary when the standby is behind it); 0: any fresh-enough answer."""
        self._stub = pb_grpc.CoverageServiceStub(channel)
        self._log = log
        self._timeout = timeout
        self._purpose = purpose
        self.min_tree_size = min_tree_size
        # The last note whose signature verified, and its checkpoint: answers computed at the
        # same tree carry the same note byte for byte, which verifies the same way with the same
        # key, so it is not verified again (an Ed25519 verification, ~0.14 ms, per answer).
        # One attribute holding both, replaced whole: safe with the client shared by threads.
        self._last_verified: tuple[bytes, Checkpoint] | None = None

    def _metadata(self) -> tuple[tuple[str, str], ...]:
        if self.min_tree_size <= 0:
            return ()
        return ((MIN_TREE_SIZE_METADATA, str(self.min_tree_size)),)

    def _verified(self, response: _R, basis: pb.AnswerBasis) -> VerifiedAnswer[_R]:
        note = basis.checkpoint
        last = self._last_verified
        if last is not None and last[0] == note:
            checkpoint = last[1]
        else:
            checkpoint = verify_checkpoint(note, self._log)
            self._last_verified = (note, checkpoint)
        if checkpoint.size != basis.tree_size:
            raise ValueError(
                f"the answer names tree size {basis.tree_size}, its checkpoint {checkpoint.size}"
            )
        check_fresh(checkpoint.size, self.min_tree_size)
        return VerifiedAnswer(response, checkpoint)

    def get_coverage(
        self, person: types_pb2.PersonId, day: dt.date, *, include_fhir: bool = False
    ) -> VerifiedAnswer[pb.GetCoverageResponse]:
        """The coverages of ``person`` on ``day``."""
        request = pb.GetCoverageRequest(
            person=person, date=civil_date(day), include_fhir=include_fhir, purpose=self._purpose
        )
        try:
            response = self._stub.GetCoverage(
                request, timeout=self._timeout, metadata=self._metadata()
            )
        except grpc.RpcError as error:
            raise from_rpc_error(error) from None
        return self._verified(response, response.basis)

    def check_household(
        self,
        sponsor: types_pb2.PersonId,
        members: Sequence[tuple[types_pb2.PersonId, events_pb2.Relationship.ValueType]],
        *,
        through: dt.date,
        as_of: dt.date | None = None,
        include_fhir: bool = False,
        jurisdiction: str = "",
        accept_language: str = "",
    ) -> VerifiedAnswer[pb.CheckHouseholdResponse]:
        """Whether every member is covered from ``as_of`` (default: today) through ``through``.

        ``jurisdiction``: the state whose renewal this is for; a portal may ask for its own only.
        ``accept_language``: the language (and calendar) of the members' ``detail``, sent as the
        ``accept-language`` metadata, e.g. ``fr`` or ``ar-SA-u-ca-islamic-umalqura``
        (docs/i18n.md); empty: English with ISO dates.
        """
        request = pb.CheckHouseholdRequest(
            purpose=self._purpose,
            jurisdiction=jurisdiction,
            sponsor=sponsor,
            members=[
                pb.HouseholdMember(person=person, relationship=relationship)
                for person, relationship in members
            ],
            through_date=civil_date(through),
            include_fhir=include_fhir,
        )
        if as_of is not None:
            request.as_of_date.CopyFrom(civil_date(as_of))
        try:
            response = self._stub.CheckHousehold(
                request,
                timeout=self._timeout,
                metadata=(*_language(accept_language), *self._metadata()),
            )
        except grpc.RpcError as error:
            raise from_rpc_error(error) from None
        return self._verified(response, response.basis)

    def policy_history(
        self, insurer_id: str, policy_id: str, *, page_size: int = 0
    ) -> VerifiedAnswer[pb.ListPolicyHistoryResponse]:
        """The first page of a policy's entries (ask again with after_leaf_index for more)."""
        request = pb.ListPolicyHistoryRequest(
            insurer_id=insurer_id, policy_id=policy_id, page_size=page_size, purpose=self._purpose
        )
        try:
            response = self._stub.ListPolicyHistory(
                request, timeout=self._timeout, metadata=self._metadata()
            )
        except grpc.RpcError as error:
            raise from_rpc_error(error) from None
        return self._verified(response, response.basis)

    def find_entries(
        self,
        *,
        person: types_pb2.PersonId | None = None,
        policy_id: str | None = None,
        after_leaf_index: int | None = None,
        page_size: int = 0,
    ) -> VerifiedAnswer[pb.FindEntriesResponse]:
        """Entries naming ``person``, or about ``policy_id`` at any insurer."""
        request = pb.FindEntriesRequest(page_size=page_size, purpose=self._purpose)
        if person is not None:
            request.person.CopyFrom(person)
        if policy_id is not None:
            request.policy_id = policy_id
        if after_leaf_index is not None:
            request.after_leaf_index = after_leaf_index
        try:
            response = self._stub.FindEntries(
                request, timeout=self._timeout, metadata=self._metadata()
            )
        except grpc.RpcError as error:
            raise from_rpc_error(error) from None
        return self._verified(response, response.basis)

    # Task C (issue 10 item 9): the change feed.

    def watch(
        self,
        *,
        person: types_pb2.PersonId | None = None,
        household_sponsor: types_pb2.PersonId | None = None,
        establishment: types_pb2.Organization | None = None,
        from_tree_size: int = 0,
        heartbeat_seconds: int = 0,
        jurisdiction: str = "",
        deadline_seconds: float | None = None,
    ) -> WatchStream:
        """The changes of one subject (exactly one of ``person``, ``household_sponsor``,
        ``establishment``) from ``from_tree_size``, as the log sequences them.

        Every heartbeat's checkpoint is verified with the trusted log key (and its size checked)
        before it is returned. Keep the last ``tree_size`` received: watching again from it after
        a broken stream misses nothing and repeats nothing. The stream never ends by itself:
        ``cancel()`` it (or set ``deadline_seconds``) to leave; hearing nothing for longer than
        the heartbeat interval means the stream is dead.
        """
        request = pb.WatchCoverageRequest(
            from_tree_size=from_tree_size,
            heartbeat_seconds=heartbeat_seconds,
            jurisdiction=jurisdiction,
            purpose=self._purpose,
        )
        subjects = [
            (name, value)
            for name, value in (
                ("person", person),
                ("household_sponsor", household_sponsor),
                ("establishment", establishment),
            )
            if value is not None
        ]
        if len(subjects) != 1:
            raise ValueError("watch exactly one of person, household_sponsor, establishment")
        name, value = subjects[0]
        getattr(request, name).CopyFrom(value)
        call = self._stub.WatchCoverage(request, timeout=deadline_seconds)
        return WatchStream(call, self._log)


class WatchStream:
    """The responses of a watch, each heartbeat's checkpoint verified (an iterator); call
    :meth:`cancel` (from any thread) to leave. A refusal or the stream's end by the server is
    raised as a :class:`clients.errors.ClientError` (CANCELLED after :meth:`cancel`)."""

    def __init__(self, call: Any, log: TrustedLog) -> None:
        self._call = call
        self._log = log

    def __iter__(self) -> WatchStream:
        return self

    def __next__(self) -> pb.WatchCoverageResponse:
        try:
            response: pb.WatchCoverageResponse = next(self._call)
        except grpc.RpcError as error:
            raise from_rpc_error(error) from None
        if response.WhichOneof("kind") == "heartbeat":
            checkpoint = verify_checkpoint(response.heartbeat.checkpoint, self._log)
            if checkpoint.size != response.tree_size:
                raise ValueError(
                    f"the heartbeat names tree size {response.tree_size}, its checkpoint "
                    f"{checkpoint.size}"
                )
        return response

    def cancel(self) -> None:
        """End the watch (the server's side ends too)."""
        self._call.cancel()
