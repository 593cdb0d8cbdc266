"""Residence permits and the obligations to insure they create (issue 10, task A).

The residence authority (signer role ``authority``) signs ``PermitIssued``, ``PermitRenewed``
and ``PermitEnded``. From them this module keeps two projections (``permits`` and
``obligations``, :mod:`ledger.storage.tables`): **who must be insured, from when to when, and
who is responsible**. The rules (docs/compliance.md "Obligations", each with its source):

* the holder (a resident) must be insured from the entry date (CHI Law art. 2, Implementing
  Regulations art. 4: coverage of a resident starts at entry);
* a dependent from the day they became one (a newborn: birth), never before the holder's entry
  date (same; the council's employer-compliance policy, 2025);
* everyone until the permit's last day, or the day before an early end (PermitEnded);
* the responsible party is the permit's sponsor: an employer, by establishment number, or a
  person (the council's employer-compliance policy: the employer insures its workers and their
  dependents).

Pure rule functions first (no SQL); then :class:`PermitProjection`, which the coverage
projector calls for the three event types (one dispatch hook in
:mod:`ledger.coverage.projector`). It checks every rule before it writes, so a refused event
writes nothing.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Connection, and_, insert, select, update

from ledger import limits
from ledger.errors import AlreadyExists, FailedPrecondition, FieldViolation, NotFound
from ledger.storage.tables import obligations, permits
from ledger.v1 import events_pb2, types_pb2

__all__ = [
    "SELF",
    "PermitProjection",
    "member_obligated_from",
    "obligation_until",
    "responsible_key",
]

SELF = "self"
"""The relationship of a permit's holder in ``obligations``."""
_ONE_DAY = dt.timedelta(days=1)

EventHandler = Callable[[events_pb2.Event, int], None]
Indexer = Callable[[int, Iterable[str]], None]


def member_obligated_from(entry_date: dt.date, dependent_since: dt.date) -> dt.date:
    """A dependent must be insured from the day they became one, not before the entry date."""
    return max(entry_date, dependent_since)


def obligation_until(permit_last_day: dt.date, ended_from: dt.date | None) -> dt.date:
    """The last day of an obligation: the permit's last day, or the day before it ended."""
    if ended_from is None:
        return permit_last_day
    return min(permit_last_day, ended_from - _ONE_DAY)


def responsible_key(sponsor: events_pb2.PartyRef) -> str:
    """``org:<country>:<establishment number>`` or ``person:<person token>`` (the same form as
    ``policies.holder_key``, so an employer's own policies are found by it)."""
    if sponsor.WhichOneof("kind") == "person_token":
        return f"person:{sponsor.person_token}"
    return f"org:{sponsor.organization.country_code}:{sponsor.organization.registration_number}"


def _date(civil: types_pb2.CivilDate) -> dt.date:
    return dt.date(civil.year, civil.month, civil.day)


def _relationship(value: events_pb2.Relationship.ValueType) -> str:
    return events_pb2.Relationship.Name(value).removeprefix("RELATIONSHIP_").lower()


def _leaves(text: str, leaf_index: int) -> str:
    return f"{text},{leaf_index}"


@dataclass(frozen=True)
class _Field:
    """The field paths of one event type, for refusals."""

    body: str

    def __call__(self, name: str) -> str:
        return f"event.{self.body}.{name}"


class PermitProjection:
    """Checks and applies permit events on the projector's connection (inside its batch)."""

    def __init__(self, connection: Connection, index: Indexer) -> None:
        """``index``: records which subjects an entry names (the projector's subject index)."""
        self._connection = connection
        self._index = index

    def handlers(self) -> dict[str, EventHandler]:
        """The ``Event.body`` field -> handler table the projector dispatches on."""
        return {
            "permit_issued": self._permit_issued,
            "permit_renewed": self._permit_renewed,
            "permit_ended": self._permit_ended,
        }

    def _permit(self, authority_id: str, permit_id: str) -> Any:
        return self._connection.execute(
            select(permits).where(
                permits.c.authority_id == authority_id, permits.c.permit_id == permit_id
            )
        ).first()

    def _open_permit(self, authority_id: str, permit_id: str, field: str) -> Any:
        permit = self._permit(authority_id, permit_id)
        if permit is None:
            raise NotFound(
                f"authority {authority_id!r} has no permit {permit_id!r}",
                reason="PERMIT_NOT_FOUND",
                field_violations=[FieldViolation(field, "no such permit of this authority")],
                metadata={"authority_id": authority_id, "permit_id": permit_id},
            )
        if permit.ended_from is not None:
            raise FailedPrecondition(
                f"permit {permit_id!r} ended from {permit.ended_from} ({permit.end_reason})",
                reason="PERMIT_ENDED",
                field_violations=[FieldViolation(field, "ended")],
                metadata={"permit_id": permit_id, "ended_from": permit.ended_from.isoformat()},
            )
        return permit

    def _permit_issued(self, event: events_pb2.Event, leaf_index: int) -> None:
        body = event.permit_issued
        field = _Field("permit_issued")
        authority_id = event.insurer_id
        if self._permit(authority_id, body.permit_id) is not None:
            raise AlreadyExists(
                f"authority {authority_id!r} already issued permit {body.permit_id!r}",
                reason="PERMIT_EXISTS",
                field_violations=[FieldViolation(field("permit_id"), "already issued")],
                metadata={"authority_id": authority_id, "permit_id": body.permit_id},
            )
        entry, end = _date(body.entry_date), _date(body.end_date)
        sponsor = responsible_key(body.sponsor)
        self._connection.execute(
            insert(permits),
            {
                "authority_id": authority_id,
                "permit_id": body.permit_id,
                "holder_token": body.holder_token,
                "sponsor_key": sponsor,
                "entry_date": entry,
                "start_date": _date(body.start_date),
                "end_date": end,
                "ended_from": None,
                "end_reason": None,
                "leaf_indexes": str(leaf_index),
            },
        )
        rows = [
            _obligation(authority_id, body.permit_id, body.holder_token, SELF, entry, end, sponsor)
        ]
        rows.extend(
            _obligation(
                authority_id,
                body.permit_id,
                member.person_token,
                _relationship(member.relationship),
                member_obligated_from(entry, _date(member.dependent_since)),
                end,
                sponsor,
            )
            for member in body.members
        )
        for row in rows:
            row["leaf_indexes"] = str(leaf_index)
        self._connection.execute(insert(obligations), rows)
        self._index(
            leaf_index,
            [
                f"permit:{authority_id}:{body.permit_id}",
                sponsor,
                *(f"person:{row['person_token']}" for row in rows),
            ],
        )

    def _permit_renewed(self, event: events_pb2.Event, leaf_index: int) -> None:
        body = event.permit_renewed
        field = _Field("permit_renewed")
        authority_id = event.insurer_id
        permit = self._open_permit(authority_id, body.permit_id, field("permit_id"))
        end = _date(body.end_date)
        if end < permit.end_date:
            raise FailedPrecondition(
                f"a renewal may not shorten permit {body.permit_id!r}: its last day is "
                f"{permit.end_date}, the renewal says {end}",
                reason="PERMIT_RENEWAL_SHORTENS",
                field_violations=[
                    FieldViolation(field("end_date"), f"must be on or after {permit.end_date}")
                ],
                metadata={"permit_id": body.permit_id},
            )
        extension_days = (end - permit.end_date).days
        if extension_days > limits.permit_term_days_max:
            raise FailedPrecondition(
                f"a renewal extends a permit by at most {limits.permit_term_days_max} days, "
                f"not {extension_days}",
                reason="PERMIT_RENEWAL_TOO_LONG",
                field_violations=[FieldViolation(field("end_date"), "too far after the last")],
                metadata={"permit_id": body.permit_id},
            )
        current = self._members(authority_id, body.permit_id)
        for position, member in enumerate(body.added_members):
            if member.person_token in current:
                raise FailedPrecondition(
                    f"{member.person_token} is already on permit {body.permit_id!r}",
                    reason="PERMIT_MEMBER_EXISTS",
                    field_violations=[
                        FieldViolation(
                            field(f"added_members[{position}].person_token"), "already on it"
                        )
                    ],
                    metadata={"permit_id": body.permit_id},
                )
        self._write_renewal(permit, body, end, leaf_index)

    def _write_renewal(
        self, permit: Any, body: events_pb2.PermitRenewed, end: dt.date, leaf_index: int
    ) -> None:
        key = _permit_is(permit.authority_id, permit.permit_id)
        self._connection.execute(
            update(permits)
            .where(key)
            .values(end_date=end, leaf_indexes=_leaves(permit.leaf_indexes, leaf_index))
        )
        for row in self._connection.execute(
            select(obligations).where(_obligations_of(permit.authority_id, permit.permit_id))
        ).all():
            self._connection.execute(
                update(obligations)
                .where(
                    _obligations_of(permit.authority_id, permit.permit_id),
                    obligations.c.person_token == row.person_token,
                )
                .values(obligated_until=end, leaf_indexes=_leaves(row.leaf_indexes, leaf_index))
            )
        added = [
            _obligation(
                permit.authority_id,
                permit.permit_id,
                member.person_token,
                _relationship(member.relationship),
                member_obligated_from(permit.entry_date, _date(member.dependent_since)),
                end,
                permit.sponsor_key,
            )
            | {"leaf_indexes": str(leaf_index)}
            for member in body.added_members
        ]
        if added:
            self._connection.execute(insert(obligations), added)
        self._index(
            leaf_index,
            [
                f"permit:{permit.authority_id}:{permit.permit_id}",
                permit.sponsor_key,
                f"person:{permit.holder_token}",
                *(f"person:{row['person_token']}" for row in added),
            ],
        )

    def _permit_ended(self, event: events_pb2.Event, leaf_index: int) -> None:
        body = event.permit_ended
        field = _Field("permit_ended")
        authority_id = event.insurer_id
        permit = self._open_permit(authority_id, body.permit_id, field("permit_id"))
        effective = _date(body.effective_date)
        last = permit.end_date + _ONE_DAY
        if not permit.start_date <= effective <= last:
            raise FailedPrecondition(
                f"a permit's end effective {effective} must lie within permit "
                f"{body.permit_id!r} ({permit.start_date}..{last})",
                reason="DATE_OUTSIDE_PERMIT",
                field_violations=[
                    FieldViolation(
                        field("effective_date"), f"must be within {permit.start_date}..{last}"
                    )
                ],
                metadata={"permit_id": body.permit_id},
            )
        reason = events_pb2.PermitEndReason.Name(body.reason).removeprefix("PERMIT_END_REASON_")
        key = _permit_is(authority_id, body.permit_id)
        self._connection.execute(
            update(permits)
            .where(key)
            .values(
                ended_from=effective,
                end_reason=reason,
                leaf_indexes=_leaves(permit.leaf_indexes, leaf_index),
            )
        )
        people = []
        for row in self._connection.execute(
            select(obligations).where(_obligations_of(authority_id, body.permit_id))
        ).all():
            people.append(row.person_token)
            self._connection.execute(
                update(obligations)
                .where(
                    _obligations_of(authority_id, body.permit_id),
                    obligations.c.person_token == row.person_token,
                )
                .values(
                    obligated_until=obligation_until(row.obligated_until, effective),
                    leaf_indexes=_leaves(row.leaf_indexes, leaf_index),
                )
            )
        self._index(
            leaf_index,
            [
                f"permit:{authority_id}:{body.permit_id}",
                permit.sponsor_key,
                *(f"person:{token}" for token in people),
            ],
        )

    def _members(self, authority_id: str, permit_id: str) -> set[str]:
        return set(
            self._connection.execute(
                select(obligations.c.person_token).where(_obligations_of(authority_id, permit_id))
            ).scalars()
        )


def _obligation(  # noqa: PLR0917 (a private helper; both callers name every value in order)
    authority_id: str,
    permit_id: str,
    person_token: str,
    relationship: str,
    obligated_from: dt.date,
    obligated_until: dt.date,
    responsible: str,
) -> dict[str, Any]:
    return {
        "authority_id": authority_id,
        "permit_id": permit_id,
        "person_token": person_token,
        "relationship": relationship,
        "obligated_from": obligated_from,
        "obligated_until": obligated_until,
        "responsible_key": responsible,
        "leaf_indexes": "",
    }


def _permit_is(authority_id: str, permit_id: str) -> Any:
    return and_(permits.c.authority_id == authority_id, permits.c.permit_id == permit_id)


def _obligations_of(authority_id: str, permit_id: str) -> Any:
    return and_(obligations.c.authority_id == authority_id, obligations.c.permit_id == permit_id)
