"""The policy rules and the projections they maintain, applied entry by entry.

:class:`Projector` is called by the appender inside the batch transaction, once per new entry, in
log order: it first checks the event against the rules and the state the projections hold
(including the effects of earlier entries of the same batch, which it wrote on the same
connection), raising a :class:`~ledger.errors.LedgerError` that names the rule, and only then
writes. A refused event therefore writes nothing, and the projections always equal what the
entries committed with them imply. ``policy-ledger rebuild`` runs the same code over the log
alone (see :mod:`ledger.coverage.rebuild`).

Rules (ARCHITECTURE.md section 5; docs/coverage.md explains each with its source):

* every entry but the genesis (leaf 0, see :mod:`ledger.genesis`) is signed by a registered key
  usable at the entry's integration time and at the event's own time, whose principal's role may
  sign that event type (:mod:`ledger.signers`): checked here, in the batch transaction, so a key
  revoked earlier in the same batch, or while a submission waited, is refused;
* policy events only by a licensed, unsuspended insurer, and only about its own policies (policy
  ids are per insurer, so another insurer's policy is simply not found); fee events only by a
  renewal authority, in its jurisdiction when it has one;
* a key is registered once, a principal keeps one role, a key is revoked once and never by
  itself, and a revocation never reaches back before its own entry;
* a policy id is issued once; the same insurer may not cover the same person twice on one day
  (different insurers may overlap: a person is covered when any policy covers the day);
* a cancellation is effective on or after the start and at most one day after the end, once,
  and not before its entry's ledger date except reasons that are facts of the past, within a
  bounded window; with reason INSURER_CHANGE it needs an InsurerChangeNotified entry 30 days
  before (these are pure functions in :mod:`ledger.coverage.rules`);
* members change only on a policy that is not cancelled, within its period;
* a premium's currency is the policy's, and its period lies within the policy's; it counts
  from its ledger date against the instalments the policy states (the reader applies the
  non-payment rule, :func:`ledger.coverage.rules.non_payment_periods`);
* penalty decisions and their deadlines are checked and recorded by their own module,
  :mod:`ledger.compliance.decision_store` (task B), from the entry's ledger date.
"""

from __future__ import annotations

import datetime as dt
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

from sqlalchemy import Connection, Row, and_, bindparam, func, insert, select, update

from ledger.cards.projection import card_handlers
from ledger.clock import to_micros
from ledger.compliance import decision_store
from ledger.compliance.obligations import PermitProjection
from ledger.coverage import declarations, rules
from ledger.coverage.model import PersonRef
from ledger.errors import (
    AlreadyExists,
    FailedPrecondition,
    FieldViolation,
    NotFound,
    PermissionDenied,
)
from ledger.events import person_tokens_of
from ledger.funds.projection import FundProjector
from ledger.identity.erasure import ErasedPerson, ErasureHooks
from ledger.keys import InsurerKey, check_key_at_event_time, check_key_usable, insurer_key_id
from ledger.signers import (
    GENESIS_LEAF_INDEX,
    OPERATOR_ID,
    SignerRole,
    check_signer_role,
    role_from_proto,
)
from ledger.storage.key_store import keys_by_id
from ledger.storage.rows import insert_rows
from ledger.storage.tables import (
    coverages,
    fee_refunds,
    insurer_change_notices,
    insurer_keys,
    insurers,
    policies,
    premium_instalments,
    premiums,
    subject_entries,
    transfer_gaps,
)
from ledger.storage.vault_store import (
    TokenState,
    birth_dates_of,
    erase_token,
    identity_of,
    token_states,
)
from ledger.v1 import events_pb2, types_pb2

__all__ = [
    "FEE_REFUNDED",
    "OPERATOR_ID",
    "PERIOD_END",
    "Projector",
    "SignedBy",
    "check_fee_collected",
    "party_key",
    "person_ref",
    "to_date",
]

PERIOD_END = "PERIOD_END"
FEE_REFUNDED = "FEE_REFUNDED"
"""The end (and cancellation) reason of government coverage whose whole fee was refunded."""
GOVERNMENT_PLAN = "GOVERNMENT-HEALTH"
"""The plan of the government coverage a collected renewal fee buys."""
"""``coverages.end_reason`` of a coverage that runs to its policy's stated end."""

_ONE_DAY = dt.timedelta(days=1)
_TOKENS_PER_QUERY_MAX = 500
"""Values one prefetch query asks for (SQLite and PostgreSQL bound a statement's parameters)."""


def to_date(civil: types_pb2.CivilDate) -> dt.date:
    """The date of an already validated CivilDate."""
    return dt.date(civil.year, civil.month, civil.day)


def person_ref(person: types_pb2.PersonId) -> PersonRef:
    """The model's PersonRef of a wire PersonId (a request's; events carry tokens)."""
    return PersonRef(
        id_type=types_pb2.PersonIdType.Name(person.type).removeprefix("PERSON_ID_TYPE_"),
        value=person.value,
        country=person.country_code,
    )


def party_key(party: events_pb2.PartyRef) -> str:
    """``person:<person token>`` or ``org:<country>:<registration number>``."""
    if party.WhichOneof("kind") == "person_token":
        return f"person:{party.person_token}"
    return f"org:{party.organization.country_code}:{party.organization.registration_number}"


def _relationship(value: events_pb2.Relationship.ValueType) -> str:
    return events_pb2.Relationship.Name(value).removeprefix("RELATIONSHIP_").lower()


def _reason(value: events_pb2.CancellationReason.ValueType) -> str:
    return events_pb2.CancellationReason.Name(value).removeprefix("CANCELLATION_REASON_")


def _leaves(text: str, leaf_index: int) -> str:
    return f"{text},{leaf_index}" if text else str(leaf_index)


# Statements built once: SQLAlchemy then compiles each once and reuses it (building a statement
# per event cost more than running it).
_SELECT_INSURER = select(insurers).where(insurers.c.insurer_id == bindparam("insurer_id"))
_SELECT_POLICY = select(policies).where(
    policies.c.insurer_id == bindparam("insurer_id"),
    policies.c.policy_id == bindparam("policy_id"),
)
_SELECT_CURRENT_COVERAGE = select(coverages).where(
    coverages.c.insurer_id == bindparam("insurer_id"),
    coverages.c.policy_id == bindparam("policy_id"),
    coverages.c.person_key == bindparam("person_key"),
    coverages.c.end_reason == PERIOD_END,
)
_SELECT_CLASH = select(
    coverages.c.person_key,
    coverages.c.policy_id,
    coverages.c.start_date,
    coverages.c.end_date,
).where(
    coverages.c.person_key.in_(bindparam("person_keys", expanding=True)),
    coverages.c.insurer_id == bindparam("insurer_id"),
    coverages.c.start_date <= bindparam("last_day"),
    coverages.c.end_date >= bindparam("first_day"),
    coverages.c.end_date >= coverages.c.start_date,
)
"""Unordered: which clash is named is chosen in Python (:func:`_first_clash`), not by an ORDER BY
whose text order is the database's collation (PostgreSQL's locale)."""
_SELECT_LATEST_NOTICE = (
    select(insurer_change_notices.c.leaf_index, insurer_change_notices.c.notified_on)
    .where(
        insurer_change_notices.c.insurer_id == bindparam("insurer_id"),
        insurer_change_notices.c.policy_id == bindparam("policy_id"),
    )
    .order_by(insurer_change_notices.c.leaf_index.desc())
    .limit(1)
)
_SELECT_COVERAGES_ENDING_FROM = select(coverages).where(
    coverages.c.insurer_id == bindparam("insurer_id"),
    coverages.c.policy_id == bindparam("policy_id"),
    coverages.c.end_date >= bindparam("first_day"),
)
_SELECT_STORED_POLICY_IDS = select(policies.c.policy_id).where(
    policies.c.insurer_id == bindparam("insurer_id"),
    policies.c.policy_id.in_(bindparam("keys", expanding=True)),
)
_SELECT_COVERED_PERSON_KEYS = (
    select(coverages.c.person_key)
    .where(
        coverages.c.person_key.in_(bindparam("keys", expanding=True)),
        coverages.c.insurer_id == bindparam("insurer_id"),
    )
    .distinct()
)


@dataclass(frozen=True)
class _ClashCandidates:
    """A person's stored coverage rows of one insurer (``_SELECT_CLASH``'s columns) over the
    days ``first_day..last_day``, read by :meth:`Projector.prefetch`."""

    first_day: dt.date
    last_day: dt.date
    rows: list[Any]


def _first_clash(rows: Iterable[Any], start: dt.date, end: dt.date) -> Any:
    """The stored coverage row named when ``rows`` (``_SELECT_CLASH``'s, read over ``start..end``
    or a window holding it) clash with ``start..end``: the first by person key, in code point
    order, then by start day; None when none clashes.

    The same whether the rows were read for this entry or prefetched for its batch, and on
    either engine: SQLite orders text by code point, PostgreSQL by the database's collation
    (under some locales, e.g. Danish, "aa" sorts after "z"), so the choice is not left to SQL.
    A person's rows of one insurer never overlap (this check refuses it), so two rows clashing
    never share person and start day; the policy id breaks such a tie all the same."""
    clashes = [
        row
        for row in rows
        if row.start_date <= end and row.end_date >= start and row.end_date >= row.start_date
    ]
    return min(
        clashes, key=lambda row: (row.person_key, row.start_date, row.policy_id), default=None
    )


@dataclass(frozen=True)
class _Issue:
    """What issuing a policy writes (PolicyIssued, or the coverage a FeeCollected buys)."""

    insurer_id: str
    policy_id: str
    sponsor_key: str
    holder_key: str
    plan: str
    start: dt.date
    end: dt.date
    premium: types_pb2.Money
    members: list[tuple[str, events_pb2.Relationship.ValueType]]
    leaf_index: int
    instalments: int = 0
    """How many instalments its premium schedule states."""


@dataclass(frozen=True)
class SignedBy:
    """Who signed an entry, and when the log integrated it (what the signer checks need)."""

    key_id: str
    """The keyid of the envelope signature admission verified."""
    integrated_at: dt.datetime
    genesis: bool = False
    """The genesis entry (leaf 0), signed by the log's key rather than a registered one."""


class Projector:
    """Checks and applies events to the projections on one connection (inside its transaction)."""

    def __init__(
        self,
        connection: Connection,
        *,
        replay: bool = False,
        erasure_hooks: ErasureHooks | None = None,
        keys: dict[str, InsurerKey | None] | None = None,
    ) -> None:
        """``replay``: the entries were admitted once (``rebuild``): a token erased since is
        still accepted, and erasing one touches no identifier (the scratch database has none).
        ``erasure_hooks``: what the server's extensions redact when a person is erased (run
        before the vault forgets the identifier; never on replay). ``keys``: signing keys by
        id as stored now, known without a query (see :attr:`keys`); it is updated in place."""
        self._connection = connection
        self._replay = replay
        self._erasure_hooks = erasure_hooks
        self._insurers: dict[str, Row[Any] | None] = {}
        """Insurer rows read so far (this projector lives for one batch; writes update it)."""
        self._premium_rows: list[dict[str, Any]] = []
        self._refund_rows: list[dict[str, Any]] = []
        self._subject_rows: list[dict[str, Any]] = []
        """Rows no rule reads while a batch is applied: written together by :meth:`flush`."""
        self._new_policies: dict[tuple[str, str], SimpleNamespace] = {}
        self._new_coverages: dict[tuple[str, str], list[SimpleNamespace]] = defaultdict(list)
        self._new_by_person: dict[str, list[SimpleNamespace]] = defaultdict(list)
        """Policies and coverages this batch created, not yet written: the rules read them here
        (and the database for older ones); :meth:`flush` inserts them, changes included."""
        self._handlers: dict[str, Callable[[events_pb2.Event, int], None]] = {
            "policy_issued": self._policy_issued,
            "policy_cancelled": self._policy_cancelled,
            "member_added": self._member_added,
            "member_removed": self._member_removed,
            "premium_paid": self._premium_paid,
            "insurer_change_notified": self._insurer_change_notified,
            "fee_collected": self._fee_collected,
            "fee_refunded": self._fee_refunded,
            "insurer_licensed": self._insurer_licensed,
            "insurer_suspended": self._insurer_suspended,
            "key_registered": self._key_registered,
            "key_revoked": self._key_revoked,
            "person_erased": self._person_erased,
            # Task A (issue 10): residence permits (their rules: ledger/compliance/obligations.py).
            **PermitProjection(connection, self._index).handlers(),
            # Penalty decisions (task B): ledger/compliance/decision_store.py owns them.
            **dict.fromkeys(decision_store.DECISION_BODIES, self._penalty_decision),
            **card_handlers(self),  # Task E (cards): the rules are in ledger/cards/projection.py
            # Task D (issue 11): funded cohorts, checked and written by ledger/funds.
            "cohort_enrolled": self._fund_event,
            "contribution_paid": self._fund_event,
            "cohort_ended": self._fund_event,
            # Task F (issue 11, item 4): the rules live in ledger/coverage/declarations.py.
            "beneficiaries_declared": lambda event, leaf: declarations.apply_beneficiaries_declared(
                self, event, leaf
            ),
            "declaration_decided": lambda event, leaf: declarations.apply_declaration_decided(
                self, event, leaf
            ),
        }
        self._funds = FundProjector(connection)
        self._keys: dict[str, InsurerKey | None] = {} if keys is None else keys
        """Keys read so far (None: not registered); an entry changing a key drops it."""
        self._signed = SignedBy("", dt.datetime.min.replace(tzinfo=dt.UTC))
        self._signing_key: InsurerKey | None = None
        """The entry being applied: who signed it (set by :meth:`apply`)."""
        self._absent_policies: set[tuple[str, str]] = set()
        """(insurer, policy) pairs this batch issues that the database did not hold when the
        batch began (:meth:`prefetch`): policies are only inserted by :meth:`flush`, which
        empties this, so none of them is stored until then."""
        self._uncovered: set[tuple[str, str]] = set()
        """(insurer, person token) pairs of this batch's new policies' members that had no
        coverage row of that insurer when the batch began (:meth:`prefetch`): no stored row can
        clash with them until :meth:`flush` (which empties this) inserts some."""
        self._clash_candidates: dict[tuple[str, str], _ClashCandidates] = {}
        """(insurer, person token) pairs of this batch's FeeCollected entries' people: every
        stored coverage row of that insurer for that person over a window of days, as it stood
        when the batch began (:meth:`prefetch`); emptied by :meth:`flush` and by any write to
        stored rows (:meth:`_execute`, an erasure), after which the database is asked again."""
        self._token_cache: dict[str, TokenState] = {}
        """States of tokens the vault issued, read so far in this batch (an absent token is
        asked again: another transaction may issue it). Only an erasure changes an issued
        token's state, and it empties this (:meth:`_person_erased`)."""

    @property
    def connection(self) -> Connection:
        """The connection (and transaction) this projector writes on."""
        return self._connection

    @property
    def keys(self) -> dict[str, InsurerKey | None]:
        """The signing keys this projector read, by id (None: not registered), as they stand
        after the entries it applied: an entry registering or revoking a key drops that key
        from here, and only this projector writes the key registry (``insurer_keys``)."""
        return self._keys

    def apply(self, event: events_pb2.Event, leaf_index: int, signed: SignedBy) -> None:
        """Check ``event`` (and who ``signed`` it) against the rules, then record it as entry
        ``leaf_index``.

        Raises a LedgerError naming the rule when the event is refused; nothing is written then.
        """
        kind = event.WhichOneof("body") or ""
        handler = self._handlers.get(kind)
        if handler is None:  # validate_event refuses these before they get here
            raise FailedPrecondition(f"event body {kind!r} has no rules", reason="EVENT_UNKNOWN")
        if signed.genesis:
            _check_genesis(event, leaf_index)
            self._signing_key = None
        else:
            self._signing_key = self._check_signer(event, kind, leaf_index, signed)
        self._signed = signed
        self._check_person_tokens(event)
        handler(event, leaf_index)

    def _check_person_tokens(self, event: events_pb2.Event) -> None:
        """Every token the event names was issued by the vault and (unless replaying) its
        person is not erased: an unknown token is NOT_FOUND, an erased person's
        FAILED_PRECONDITION (docs/privacy.md)."""
        named = person_tokens_of(event)
        if not named:
            return
        states = self._token_states([token for token, _ in named])
        for token, field in named:
            state = states.get(token)
            if state is None:
                raise NotFound(
                    f"{field} names a person token the identity vault never issued",
                    reason="PERSON_TOKEN_UNKNOWN",
                    field_violations=[FieldViolation(field, "unknown person token")],
                    metadata={"person_token": token},
                )
            if state.erased and not self._replay:
                raise FailedPrecondition(
                    f"{field} names a person who was erased",
                    reason="PERSON_ERASED",
                    field_violations=[FieldViolation(field, "the person was erased")],
                    metadata={"person_token": token},
                )

    def prefetch(self, events: Sequence[events_pb2.Event]) -> None:
        """Read what the rules ask of stored state for ``events`` (the batch about to be
        applied) in a few queries for the whole batch rather than several per event: the
        vault's state of every token they name, which of the policies they issue (or the
        renewals whose fee they record) are stored already, which of those policies' members
        the insurer covers already, and the coverage rows that could clash with a recorded
        fee's people. The rules still query the database for anything not answered here."""
        wanted = sorted({token for event in events for token, _ in person_tokens_of(event)})
        for chunk in _chunks(wanted):
            self._token_cache.update(token_states(self._connection, chunk))
        issued: dict[str, tuple[set[str], set[str]]] = defaultdict(lambda: (set(), set()))
        fees: dict[str, list[events_pb2.FeeCollected]] = defaultdict(list)
        for event in events:
            kind = event.WhichOneof("body")
            if kind == "policy_issued":
                policy_ids, members = issued[event.insurer_id]
                policy_ids.add(event.policy_issued.policy_id)
                members.update(member.person_token for member in event.policy_issued.members)
            elif kind == "fee_collected":
                issued[event.insurer_id][0].add(event.fee_collected.renewal_id)
                fees[event.insurer_id].append(event.fee_collected)
        for insurer_id, (policy_ids, members) in issued.items():
            stored_policies = self._stored(_SELECT_STORED_POLICY_IDS, insurer_id, policy_ids)
            self._absent_policies.update(
                (insurer_id, policy_id) for policy_id in policy_ids - stored_policies
            )
            covered = self._stored(_SELECT_COVERED_PERSON_KEYS, insurer_id, members)
            self._uncovered.update((insurer_id, key) for key in members - covered)
        for insurer_id, bodies in fees.items():
            self._prefetch_clashes(insurer_id, bodies)

    def _prefetch_clashes(self, insurer_id: str, bodies: Sequence[events_pb2.FeeCollected]) -> None:
        """Read, in one query a chunk of people, every stored coverage row of ``insurer_id``
        that the double-coverage check of these FeeCollected entries could find: the rows of
        their people over the days from the earliest period's start to the latest one's end."""
        first_day = min(to_date(body.period_start) for body in bodies)
        last_day = max(to_date(body.period_end) for body in bodies)
        people = sorted({line.person_token for body in bodies for line in body.lines})
        found: dict[str, list[Any]] = {key: [] for key in people}
        for chunk in _chunks(people):
            rows = self._connection.execute(
                _SELECT_CLASH,
                {
                    "person_keys": chunk,
                    "insurer_id": insurer_id,
                    "first_day": first_day,
                    "last_day": last_day,
                },
            )
            for row in rows:
                found[row.person_key].append(row)
        for key, stored in found.items():
            self._clash_candidates[(insurer_id, key)] = _ClashCandidates(
                first_day, last_day, stored
            )

    def _stored(self, statement: Any, insurer_id: str, wanted: set[str]) -> set[str]:
        """The values of ``wanted`` that ``statement`` finds stored for ``insurer_id``."""
        found: set[str] = set()
        for chunk in _chunks(sorted(wanted)):
            rows = self._connection.execute(statement, {"insurer_id": insurer_id, "keys": chunk})
            found.update(row[0] for row in rows)
        return found

    def _token_states(self, tokens: list[str]) -> dict[str, TokenState]:
        cache = self._token_cache
        missing = [token for token in tokens if token not in cache]
        if missing:
            cache.update(token_states(self._connection, missing))
        return {token: cache[token] for token in tokens if token in cache}

    def _check_signer(
        self, event: events_pb2.Event, kind: str, leaf_index: int, signed: SignedBy
    ) -> InsurerKey:
        """The signing key, once it may sign this event now (see the module doc)."""
        if leaf_index == GENESIS_LEAF_INDEX:
            raise FailedPrecondition(
                "leaf 0 is the genesis entry naming the operator's first key",
                reason="GENESIS_MISSING",
            )
        key = self._key(signed.key_id)
        checked = check_key_usable(key, signed.key_id, event.insurer_id, signed.integrated_at)
        occurred_at = event.occurred_at.ToDatetime(tzinfo=dt.UTC)
        check_key_at_event_time(key, signed.key_id, event.insurer_id, occurred_at)
        check_signer_role(kind, checked.role, event.insurer_id, signed.key_id)
        return checked

    def _key(self, key_id: str) -> InsurerKey | None:
        if key_id not in self._keys:
            self._keys[key_id] = keys_by_id(self._connection, [key_id]).get(key_id)
        return self._keys[key_id]

    def flush(self) -> None:
        """Write the rows kept for the end of the batch (call before the transaction commits)."""
        # What prefetch found absent may be stored from here on: ask the database again.
        self._absent_policies.clear()
        self._uncovered.clear()
        self._clash_candidates.clear()
        # One executemany a table (ledger.storage.rows): the batch's rows are most of its writes.
        insert_rows(self._connection, policies, [vars(row) for row in self._new_policies.values()])
        insert_rows(
            self._connection,
            coverages,
            [vars(row) for rows in self._new_coverages.values() for row in rows],
        )
        self._new_policies.clear()
        self._new_coverages.clear()
        self._new_by_person.clear()
        insert_rows(self._connection, premiums, self._premium_rows)
        insert_rows(self._connection, fee_refunds, self._refund_rows)
        insert_rows(self._connection, subject_entries, self._subject_rows)
        self._premium_rows, self._refund_rows, self._subject_rows = [], [], []

    # Task E (cards): what ledger/cards/projection.py needs of the entry being applied.

    @property
    def ledger_date(self) -> dt.date:
        """The ledger date of the entry being applied (its batch's integration time, UTC)."""
        return rules.ledger_date(self._signed.integrated_at)

    def require_licensed(self, insurer_id: str) -> None:
        """PERMISSION_DENIED unless ``insurer_id`` is licensed and not suspended."""
        self._require_licensed(insurer_id)

    def index(self, leaf_index: int, subjects: Iterable[str]) -> None:
        """Index entry ``leaf_index`` under ``subjects`` (``FindEntries``)."""
        self._index(leaf_index, subjects)

    # Insurers (operator events).

    def _insurer_licensed(self, event: events_pb2.Event, leaf_index: int) -> None:
        body = event.insurer_licensed
        field = "event.insurer_licensed"
        insurer_id = body.licensed_insurer_id
        row = self._insurer(insurer_id)
        if row is not None and row.status == "licensed":
            raise FailedPrecondition(
                f"insurer {insurer_id!r} is already licensed",
                reason="ALREADY_LICENSED",
                field_violations=[
                    FieldViolation(f"{field}.licensed_insurer_id", "already licensed")
                ],
                metadata={"insurer_id": insurer_id},
            )
        values = {
            "name": body.name,
            "licence_number": body.licence_number,
            "status": "licensed",
            "licensed_from": to_date(body.effective_date),
            "suspended_from": None,
            "leaf_index": leaf_index,
        }
        if row is None:
            self._execute(insert(insurers).values(insurer_id=insurer_id, **values))
        else:
            self._execute(
                update(insurers).where(insurers.c.insurer_id == insurer_id).values(**values)
            )
        self._insurers.pop(insurer_id, None)
        self._index(leaf_index, [f"insurer:{insurer_id}"])

    def _insurer_suspended(self, event: events_pb2.Event, leaf_index: int) -> None:
        body = event.insurer_suspended
        field = "event.insurer_suspended"
        insurer_id = body.suspended_insurer_id
        row = self._insurer(insurer_id)
        if row is None or row.status != "licensed":
            state = "never licensed" if row is None else "already suspended"
            raise FailedPrecondition(
                f"insurer {insurer_id!r} cannot be suspended: {state}",
                reason="NOT_LICENSED" if row is None else "ALREADY_SUSPENDED",
                field_violations=[FieldViolation(f"{field}.suspended_insurer_id", state)],
                metadata={"insurer_id": insurer_id},
            )
        self._execute(
            update(insurers)
            .where(insurers.c.insurer_id == insurer_id)
            .values(
                status="suspended",
                suspended_from=to_date(body.effective_date),
                leaf_index=leaf_index,
            )
        )
        self._insurers.pop(insurer_id, None)
        self._index(leaf_index, [f"insurer:{insurer_id}"])

    def _require_licensed(self, insurer_id: str) -> None:
        row = self._insurer(insurer_id)
        if row is None or row.status != "licensed":
            suspended = row is not None
            raise PermissionDenied(
                f"insurer {insurer_id!r} is "
                + (f"suspended since {row.suspended_from}" if row is not None else "not licensed"),
                reason="INSURER_SUSPENDED" if suspended else "INSURER_NOT_LICENSED",
                field_violations=[
                    FieldViolation("event.insurer_id", "suspended" if suspended else "not licensed")
                ],
                metadata={"insurer_id": insurer_id},
            )

    # Policies.

    def _policy_issued(self, event: events_pb2.Event, leaf_index: int) -> None:
        body = event.policy_issued
        field = "event.policy_issued"
        insurer_id = event.insurer_id
        self._require_licensed(insurer_id)
        if self._policy(insurer_id, body.policy_id) is not None:
            raise AlreadyExists(
                f"insurer {insurer_id!r} already issued policy {body.policy_id!r}",
                reason="POLICY_EXISTS",
                field_violations=[FieldViolation(f"{field}.policy_id", "already issued")],
                metadata={"insurer_id": insurer_id, "policy_id": body.policy_id},
            )
        start, end = to_date(body.start_date), to_date(body.end_date)
        self._refuse_double_coverage(
            insurer_id,
            [
                (member.person_token, f"{field}.members[{position}].person_token")
                for position, member in enumerate(body.members)
            ],
            start,
            end,
        )
        gap = self._transfer_gap(body, start) if body.HasField("replaces") else None
        sponsor = body.sponsor_token
        self._issue(
            _Issue(
                insurer_id=insurer_id,
                policy_id=body.policy_id,
                sponsor_key=sponsor,
                holder_key=party_key(body.holder),
                plan=body.plan,
                start=start,
                end=end,
                premium=body.annual_premium,
                members=[(m.person_token, m.relationship) for m in body.members],
                leaf_index=leaf_index,
                instalments=len(body.instalments),
            )
        )
        if body.instalments:
            # No schedule, no instalment obligation (docs/compliance.md "Premiums").
            self._execute(
                insert(premium_instalments),
                [
                    {
                        "insurer_id": insurer_id,
                        "policy_id": body.policy_id,
                        "position": position,
                        "due_date": to_date(instalment.due_date),
                        "amount_minor": instalment.amount.amount_minor,
                        "leaf_index": leaf_index,
                    }
                    for position, instalment in enumerate(body.instalments)
                ],
            )
        if gap is not None:
            self._execute(
                insert(transfer_gaps).values(
                    leaf_index=leaf_index,
                    insurer_id=insurer_id,
                    policy_id=body.policy_id,
                    replaced_insurer_id=body.replaces.insurer_id,
                    replaced_policy_id=body.replaces.policy_id,
                    first_day=gap[0],
                    last_day=gap[1],
                )
            )
        subjects = [f"person:{sponsor}", *(f"person:{m.person_token}" for m in body.members)]
        if body.holder.WhichOneof("kind") == "person_token":
            subjects.append(party_key(body.holder))
        self._index_policy(leaf_index, insurer_id, body.policy_id, subjects)

    def _transfer_gap(
        self, body: events_pb2.PolicyIssued, start: dt.date
    ) -> tuple[dt.date, dt.date] | None:
        """The days between the policy ``body`` replaces and its start (None: continuous)."""
        replaced = body.replaces
        old = self._policy(replaced.insurer_id, replaced.policy_id)
        if old is None:
            raise NotFound(
                f"policy {replaced.policy_id!r} of insurer {replaced.insurer_id!r}, which "
                f"{body.policy_id!r} replaces, was never issued",
                reason="REPLACED_POLICY_NOT_FOUND",
                field_violations=[FieldViolation("event.policy_issued.replaces", "no such policy")],
                metadata={
                    "insurer_id": replaced.insurer_id,
                    "policy_id": replaced.policy_id,
                },
            )
        return rules.transfer_gap(
            rules.PolicyState(
                policy_id=replaced.policy_id,
                start=old.start_date,
                end=old.end_date,
                cancelled_from=old.cancelled_from,
            ),
            start,
        )

    def _policy_cancelled(self, event: events_pb2.Event, leaf_index: int) -> None:
        body = event.policy_cancelled
        field = "event.policy_cancelled"
        insurer_id = event.insurer_id
        self._require_licensed(insurer_id)
        policy = self._own_policy(insurer_id, body.policy_id, f"{field}.policy_id")
        effective = to_date(body.effective_date)
        reason = _reason(body.reason)
        rules.check_cancellation(
            rules.PolicyState(
                policy_id=body.policy_id,
                start=policy.start_date,
                end=policy.end_date,
                cancelled_from=policy.cancelled_from,
                cancelled_leaf_index=policy.cancelled_leaf_index,
            ),
            rules.Cancellation(
                effective=effective,
                reason=reason,
                ledger_date=rules.ledger_date(self._signed.integrated_at),
            ),
            self._latest_notice(insurer_id, body.policy_id)
            if reason == rules.INSURER_CHANGE
            else None,
        )
        affected = self._cancel(insurer_id, body.policy_id, policy, effective, reason, leaf_index)
        self._index_policy(
            leaf_index,
            insurer_id,
            body.policy_id,
            [f"person:{policy.sponsor_key}", *(f"person:{row.person_key}" for row in affected)],
        )

    def _insurer_change_notified(self, event: events_pb2.Event, leaf_index: int) -> None:
        """Record the notice with its ledger date (the 30 days count from there)."""
        body = event.insurer_change_notified
        field = "event.insurer_change_notified"
        insurer_id = event.insurer_id
        self._require_licensed(insurer_id)
        policy = self._active_policy(insurer_id, body.policy_id, f"{field}.policy_id")
        self._execute(
            insert(insurer_change_notices).values(
                leaf_index=leaf_index,
                insurer_id=insurer_id,
                policy_id=body.policy_id,
                new_insurer_id=body.new_insurer_id,
                notified_on=rules.ledger_date(self._signed.integrated_at),
            )
        )
        self._index_policy(leaf_index, insurer_id, body.policy_id, [f"person:{policy.sponsor_key}"])

    def _latest_notice(self, insurer_id: str, policy_id: str) -> rules.InsurerChangeNotice | None:
        """The policy's most recent InsurerChangeNotified entry, this batch's included."""
        row = self._connection.execute(
            _SELECT_LATEST_NOTICE, {"insurer_id": insurer_id, "policy_id": policy_id}
        ).first()
        if row is None:
            return None
        return rules.InsurerChangeNotice(leaf_index=row.leaf_index, notified_on=row.notified_on)

    def _cancel(  # noqa: PLR0917 (a private helper; both callers name every value)
        self,
        insurer_id: str,
        policy_id: str,
        policy: Any,
        effective: dt.date,
        reason: str,
        leaf_index: int,
    ) -> list[Any]:
        """End ``policy`` and its members' coverage from ``effective``; the coverages ended."""
        if isinstance(policy, SimpleNamespace):
            policy.cancelled_from = effective
            policy.cancel_reason = reason
            policy.cancelled_leaf_index = leaf_index
        else:
            self._execute(
                update(policies)
                .where(_policy_is(insurer_id, policy_id))
                .values(
                    cancelled_from=effective, cancel_reason=reason, cancelled_leaf_index=leaf_index
                )
            )
        # A policy this batch issued has no stored coverage yet (the flush writes both).
        affected: list[Any] = (
            []
            if isinstance(policy, SimpleNamespace)
            else list(
                self._connection.execute(
                    _SELECT_COVERAGES_ENDING_FROM,
                    {"insurer_id": insurer_id, "policy_id": policy_id, "first_day": effective},
                )
            )
        )
        affected += [
            row
            for row in self._new_coverages.get((insurer_id, policy_id), [])
            if row.end_date >= effective
        ]
        for row in affected:
            self._end_coverage(row, effective - _ONE_DAY, reason, leaf_index)
        return affected

    def _member_added(self, event: events_pb2.Event, leaf_index: int) -> None:
        body = event.member_added
        field = "event.member_added"
        insurer_id = event.insurer_id
        self._require_licensed(insurer_id)
        policy = self._active_policy(insurer_id, body.policy_id, f"{field}.policy_id")
        effective = to_date(body.effective_date)
        _check_within(
            effective,
            policy.start_date,
            policy.end_date,
            f"{field}.effective_date",
            "a member's first day",
            body.policy_id,
        )
        key = body.member.person_token
        self._check_birth(key, effective)
        if self._current_coverage(insurer_id, body.policy_id, key) is not None:
            raise AlreadyExists(
                f"{key} is already a member of policy {body.policy_id!r}",
                reason="MEMBER_EXISTS",
                field_violations=[
                    FieldViolation(f"{field}.member.person_token", "already a member")
                ],
                metadata={"person": key, "policy_id": body.policy_id},
            )
        self._refuse_double_coverage(
            insurer_id, [(key, f"{field}.member.person_token")], effective, policy.end_date
        )
        self._new_coverage(
            insurer_id=insurer_id,
            policy_id=body.policy_id,
            person_key=key,
            start_date=effective,
            end_date=policy.end_date,
            sponsor_key=policy.sponsor_key,
            relationship=_relationship(body.member.relationship),
            end_reason=PERIOD_END,
            leaf_indexes=str(leaf_index),
        )
        self._index_policy(leaf_index, insurer_id, body.policy_id, [f"person:{key}"])

    def _check_birth(self, token: str, effective: dt.date) -> None:
        """The birth date the identity vault holds for ``token`` (none: no rule applies): not
        covered before birth, and back-dated to birth only within the newborn window.

        Not on replay (``rebuild``): the entry was accepted, a fact; the person may have been
        erased since (the vault no longer holds the date) or the date given later, so the
        replay does not judge it again (these rules only refuse, they change no projection).
        """
        if self._replay:
            return
        birth = birth_dates_of(self._connection, [token]).get(token)
        if birth is None:
            return
        field = "event.member_added.effective_date"
        if effective < birth:
            raise FailedPrecondition(
                f"the member is added from {effective}, before the birth date the identity "
                f"vault holds ({birth})",
                reason="BEFORE_BIRTH",
                field_violations=[FieldViolation(field, "before the member's birth date")],
            )
        rules.check_newborn_start(birth, effective, rules.ledger_date(self._signed.integrated_at))

    def _member_removed(self, event: events_pb2.Event, leaf_index: int) -> None:
        body = event.member_removed
        field = "event.member_removed"
        insurer_id = event.insurer_id
        self._require_licensed(insurer_id)
        policy = self._active_policy(insurer_id, body.policy_id, f"{field}.policy_id")
        key = body.person_token
        row = self._current_coverage(insurer_id, body.policy_id, key)
        if row is None:
            raise NotFound(
                f"{key} is not a current member of policy {body.policy_id!r}",
                reason="MEMBER_NOT_FOUND",
                field_violations=[FieldViolation(f"{field}.person_token", "not a current member")],
                metadata={"person": key, "policy_id": body.policy_id},
            )
        effective = to_date(body.effective_date)
        _check_within(
            effective,
            row.start_date,
            policy.end_date + _ONE_DAY,
            f"{field}.effective_date",
            "a removal",
            body.policy_id,
        )
        self._end_coverage(
            row, effective - _ONE_DAY, f"MEMBER_REMOVED:{_reason(body.reason)}", leaf_index
        )
        self._index_policy(leaf_index, insurer_id, body.policy_id, [f"person:{key}"])

    def _premium_paid(self, event: events_pb2.Event, leaf_index: int) -> None:
        body = event.premium_paid
        field = "event.premium_paid"
        insurer_id = event.insurer_id
        self._require_licensed(insurer_id)
        policy = self._own_policy(insurer_id, body.policy_id, f"{field}.policy_id")
        if body.amount.currency_code != policy.currency_code:
            raise FailedPrecondition(
                f"policy {body.policy_id!r} is in {policy.currency_code}, "
                f"the payment in {body.amount.currency_code}",
                reason="CURRENCY_MISMATCH",
                field_violations=[
                    FieldViolation(
                        f"{field}.amount.currency_code", f"must be {policy.currency_code}"
                    )
                ],
            )
        period_start, period_end = to_date(body.period_start), to_date(body.period_end)
        if period_start < policy.start_date or period_end > policy.end_date:
            raise FailedPrecondition(
                f"the period paid for ({period_start}..{period_end}) is outside policy "
                f"{body.policy_id!r} ({policy.start_date}..{policy.end_date})",
                reason="PERIOD_OUTSIDE_POLICY",
                field_violations=[
                    FieldViolation(
                        f"{field}.period_start"
                        if period_start < policy.start_date
                        else f"{field}.period_end",
                        "outside the policy's period",
                    )
                ],
            )
        payer = party_key(body.payer.party)
        self._premium_rows.append(
            {
                "leaf_index": leaf_index,
                "insurer_id": insurer_id,
                "policy_id": body.policy_id,
                "currency_code": body.amount.currency_code,
                "amount_minor": body.amount.amount_minor,
                "period_start": period_start,
                "period_end": period_end,
                "payer_type": events_pb2.PayerType.Name(body.payer.type)
                .removeprefix("PAYER_TYPE_")
                .lower(),
                "payer_key": payer,
                "paid_on": rules.ledger_date(self._signed.integrated_at),
            }
        )
        subjects = [payer] if payer.startswith("person:") else []
        self._index_policy(leaf_index, insurer_id, body.policy_id, subjects)

    # Renewal fees (signed by the collecting authority: its role, not a licence, lets it).

    def check_fee_collected(self, event: events_pb2.Event) -> None:
        """The rules of a FeeCollected entry against current state, writing nothing: the append
        runs it, and the renewal saga runs it (through :func:`check_fee_collected`) before any
        money moves, so the two cannot drift apart."""
        body = event.fee_collected
        field = "event.fee_collected"
        insurer_id = event.insurer_id
        state = self._token_states([body.sponsor_token]).get(body.sponsor_token)
        if state is not None:  # an unknown token is refused by the token check first
            self._require_jurisdiction(state.country, f"{field}.sponsor_token")
        if self._policy(insurer_id, body.renewal_id) is not None:
            raise AlreadyExists(
                f"renewal {body.renewal_id!r} already has its fee recorded",
                reason="RENEWAL_RECORDED",
                field_violations=[FieldViolation(f"{field}.renewal_id", "already recorded")],
                metadata={"renewal_id": body.renewal_id},
            )
        self._refuse_double_coverage(
            insurer_id,
            [
                (line.person_token, f"{field}.lines[{position}].person_token")
                for position, line in enumerate(body.lines)
            ],
            to_date(body.period_start),
            to_date(body.period_end),
        )

    def _fee_collected(self, event: events_pb2.Event, leaf_index: int) -> None:
        body = event.fee_collected
        insurer_id = event.insurer_id
        self.check_fee_collected(event)
        start, end = to_date(body.period_start), to_date(body.period_end)
        sponsor = body.sponsor_token
        self._issue(
            _Issue(
                insurer_id=insurer_id,
                policy_id=body.renewal_id,
                sponsor_key=sponsor,
                holder_key=f"person:{sponsor}",
                plan=GOVERNMENT_PLAN,
                start=start,
                end=end,
                premium=body.total,
                members=[(line.person_token, line.relationship) for line in body.lines],
                leaf_index=leaf_index,
            )
        )
        self._premium_rows.append(
            {
                "leaf_index": leaf_index,
                "insurer_id": insurer_id,
                "policy_id": body.renewal_id,
                "currency_code": body.total.currency_code,
                "amount_minor": body.total.amount_minor,
                "period_start": start,
                "period_end": end,
                "payer_type": "sponsor",
                "payer_key": f"person:{sponsor}",
                "paid_on": rules.ledger_date(self._signed.integrated_at),
            }
        )
        self._index_policy(
            leaf_index,
            insurer_id,
            body.renewal_id,
            [f"person:{sponsor}", *(f"person:{line.person_token}" for line in body.lines)],
        )

    def _fee_refunded(self, event: events_pb2.Event, leaf_index: int) -> None:
        body = event.fee_refunded
        field = "event.fee_refunded"
        insurer_id = event.insurer_id
        policy = self._own_policy(insurer_id, body.renewal_id, f"{field}.renewal_id")
        if body.amount.currency_code != policy.currency_code:
            raise FailedPrecondition(
                f"the fee of {body.renewal_id!r} is in {policy.currency_code}",
                reason="CURRENCY_MISMATCH",
                field_violations=[
                    FieldViolation(
                        f"{field}.amount.currency_code", f"must be {policy.currency_code}"
                    )
                ],
            )
        stored = self._connection.execute(
            select(fee_refunds.c.refund_reference, fee_refunds.c.amount_minor).where(
                fee_refunds.c.insurer_id == insurer_id, fee_refunds.c.policy_id == body.renewal_id
            )
        ).all()
        earlier = [(row.refund_reference, int(row.amount_minor)) for row in stored] + [
            (row["refund_reference"], int(row["amount_minor"]))
            for row in self._refund_rows
            if row["insurer_id"] == insurer_id and row["policy_id"] == body.renewal_id
        ]
        if any(reference == body.refund_reference for reference, _ in earlier):
            raise AlreadyExists(
                f"refund {body.refund_reference!r} of {body.renewal_id!r} is already recorded",
                reason="REFUND_EXISTS",
                field_violations=[FieldViolation(f"{field}.refund_reference", "already recorded")],
            )
        fee = self._connection.execute(
            select(func.coalesce(func.sum(premiums.c.amount_minor), 0)).where(
                premiums.c.insurer_id == insurer_id, premiums.c.policy_id == body.renewal_id
            )
        ).scalar_one() + sum(
            int(row["amount_minor"])
            for row in self._premium_rows
            if row["insurer_id"] == insurer_id and row["policy_id"] == body.renewal_id
        )
        refunded = sum(amount for _, amount in earlier)
        if refunded + body.amount.amount_minor > fee:
            raise FailedPrecondition(
                f"refunds of {body.renewal_id!r} would reach {refunded + body.amount.amount_minor}"
                f", more than its fee of {fee}",
                reason="REFUND_EXCEEDS_FEE",
                field_violations=[
                    FieldViolation(f"{field}.amount.amount_minor", f"at most {fee - refunded}")
                ],
                metadata={"fee_minor": str(fee), "refunded_minor": str(refunded)},
            )
        self._refund_rows.append(
            {
                "leaf_index": leaf_index,
                "insurer_id": insurer_id,
                "policy_id": body.renewal_id,
                "refund_reference": body.refund_reference,
                "currency_code": body.amount.currency_code,
                "amount_minor": body.amount.amount_minor,
            }
        )
        ended: list[Any] = []
        if refunded + body.amount.amount_minor == fee and policy.cancelled_from is None:
            # The whole fee is back: what it bought ends from the refund's date (from the
            # start, when refunded before the period began). A partial refund ends nothing.
            refund_day = event.occurred_at.ToDatetime(tzinfo=dt.UTC).date()
            effective = max(refund_day, policy.start_date)
            ended = self._cancel(
                insurer_id, body.renewal_id, policy, effective, FEE_REFUNDED, leaf_index
            )
        self._index_policy(
            leaf_index, insurer_id, body.renewal_id, [f"person:{row.person_key}" for row in ended]
        )

    def _require_jurisdiction(self, country: str, field: str) -> None:
        key = self._signing_key
        if key is None or not key.jurisdiction or key.jurisdiction == country:
            return
        raise PermissionDenied(
            f"authority {key.insurer_id!r} collects fees in {key.jurisdiction}, "
            f"not for a sponsor identified by {country}",
            reason="OUTSIDE_JURISDICTION",
            field_violations=[FieldViolation(field, f"must be {key.jurisdiction}")],
            metadata={"signer": key.insurer_id, "jurisdiction": key.jurisdiction},
        )

    # Erasure (an operator event).

    def _person_erased(self, event: events_pb2.Event, leaf_index: int) -> None:
        """Erase the person: their identifier is deleted from the vault and the reasons of the
        operator's grants to them are cleared (:func:`erase_token`) in this transaction, so the
        entry and the erasure commit together. The token itself stays issued (its history
        replays) and no later event may name it."""
        body = event.person_erased
        field = "event.person_erased.person_token"
        token = body.person_token
        state = self._token_states([token]).get(token)
        if state is None:
            raise NotFound(
                "the identity vault never issued this person token",
                reason="PERSON_TOKEN_UNKNOWN",
                field_violations=[FieldViolation(field, "unknown person token")],
                metadata={"person_token": token},
            )
        if state.erased and not self._replay:
            raise FailedPrecondition(
                "this person was already erased",
                reason="PERSON_ERASED",
                field_violations=[FieldViolation(field, "already erased")],
                metadata={"person_token": token},
            )
        if self._erasure_hooks and not self._replay:
            person = identity_of(self._connection, token)
            if person is not None:
                # A savepoint: the rules write nothing before they pass, but hooks do; a hook
                # that raises refuses the entry, and what the hooks before it wrote is undone.
                with self._connection.begin_nested():
                    self._erasure_hooks.run(self._connection, ErasedPerson(token, person))
        # The hooks and the erasure change what the vault (and the hooks, other projections)
        # say: read them again from here on.
        self._token_cache.clear()
        self._absent_policies.clear()
        self._uncovered.clear()
        self._clash_candidates.clear()
        erase_token(
            self._connection, token, self._signed.integrated_at, identifier=not self._replay
        )
        self._index(leaf_index, [f"person:{token}"])

    # Signing keys (operator events; the genesis entry registers the operator's first key).

    def _key_registered(self, event: events_pb2.Event, leaf_index: int) -> None:
        body = event.key_registered
        field = "event.key_registered"
        key_id = insurer_key_id(body.public_key)
        if self._key(key_id) is not None:
            raise AlreadyExists(
                f"key {key_id} is already registered",
                reason="KEY_ALREADY_REGISTERED",
                field_violations=[FieldViolation(f"{field}.public_key", "already registered")],
                metadata={"key_id": key_id},
            )
        role = role_from_proto(body.role) or SignerRole.INSURER  # validated: never None here
        held = self._connection.execute(
            select(insurer_keys.c.role)
            .where(insurer_keys.c.insurer_id == body.principal_id)
            .limit(1)
        ).scalar()
        if held is not None and held != role:
            raise FailedPrecondition(
                f"principal {body.principal_id!r} has role {held}, not {role}",
                reason="PRINCIPAL_ROLE_CONFLICT",
                field_violations=[FieldViolation(f"{field}.role", f"must be {held}")],
                metadata={"principal": body.principal_id, "role": str(held)},
            )
        until = body.valid_until.ToDatetime(tzinfo=dt.UTC) if body.HasField("valid_until") else None
        self._execute(
            insert(insurer_keys).values(
                key_id=key_id,
                insurer_id=body.principal_id,
                public_key=body.public_key,
                valid_from_us=to_micros(body.valid_from.ToDatetime(tzinfo=dt.UTC)),
                valid_until_us=None if until is None else to_micros(until),
                revoked_at_us=None,
                registered_at_us=to_micros(self._signed.integrated_at),
                role=str(role),
                jurisdiction=body.jurisdiction,
                leaf_index=leaf_index,
                revoked_leaf_index=None,
            )
        )
        self._keys.pop(key_id, None)
        self._index(leaf_index, [f"insurer:{body.principal_id}"])

    def _key_revoked(self, event: events_pb2.Event, leaf_index: int) -> None:
        body = event.key_revoked
        field = "event.key_revoked"
        key = self._key(body.key_id)
        metadata = {"key_id": body.key_id}
        if key is None:
            raise NotFound(
                f"no key {body.key_id!r}",
                reason="KEY_UNKNOWN",
                field_violations=[FieldViolation(f"{field}.key_id", "not registered")],
                metadata=metadata,
            )
        if key.revoked_at is not None:
            raise FailedPrecondition(
                f"key {body.key_id!r} was already revoked at {key.revoked_at.isoformat()}",
                reason="KEY_ALREADY_REVOKED",
                field_violations=[FieldViolation(f"{field}.key_id", "already revoked")],
                metadata=metadata,
            )
        if body.key_id == self._signed.key_id:
            raise FailedPrecondition(
                f"key {body.key_id!r} cannot sign its own revocation (sign with another key)",
                reason="KEY_REVOKES_ITSELF",
                field_violations=[FieldViolation(f"{field}.key_id", "the signing key")],
                metadata=metadata,
            )
        # Never before this entry: what the log accepted stays verifiable (docs/audit.md).
        integrated_at = self._signed.integrated_at
        wanted = (
            body.revoked_from.ToDatetime(tzinfo=dt.UTC)
            if body.HasField("revoked_from")
            else integrated_at
        )
        self._execute(
            update(insurer_keys)
            .where(insurer_keys.c.key_id == body.key_id)
            .values(
                revoked_at_us=to_micros(max(wanted, integrated_at)),
                revoked_leaf_index=leaf_index,
            )
        )
        self._keys.pop(body.key_id, None)
        self._index(leaf_index, [f"insurer:{key.insurer_id}"])

    # Reads and writes.

    def _penalty_decision(self, event: events_pb2.Event, leaf_index: int) -> None:
        """A penalty decision entry (task B): checked and recorded by its own module, from
        this entry's ledger date."""
        subjects = decision_store.apply_decision_event(
            self._connection, event, leaf_index, rules.ledger_date(self._signed.integrated_at)
        )
        self._index(leaf_index, subjects)

    def _execute(self, statement: Any, parameters: Any = None) -> None:
        # A stored row changes (a coverage ending early): what prefetch read may be stale.
        self._clash_candidates.clear()
        self._connection.execute(statement, parameters)

    def _insurer(self, insurer_id: str) -> Row[Any] | None:
        if insurer_id not in self._insurers:
            self._insurers[insurer_id] = self._connection.execute(
                _SELECT_INSURER, {"insurer_id": insurer_id}
            ).first()
        return self._insurers[insurer_id]

    def _issue(self, issue: _Issue) -> None:
        """A new policy and its members' coverage for its whole period (kept for the flush)."""
        self._new_policies[(issue.insurer_id, issue.policy_id)] = SimpleNamespace(
            insurer_id=issue.insurer_id,
            policy_id=issue.policy_id,
            sponsor_key=issue.sponsor_key,
            holder_key=issue.holder_key,
            plan=issue.plan,
            start_date=issue.start,
            end_date=issue.end,
            currency_code=issue.premium.currency_code,
            annual_premium_minor=issue.premium.amount_minor,
            cancelled_from=None,
            cancel_reason=None,
            issued_leaf_index=issue.leaf_index,
            cancelled_leaf_index=None,
            instalments=issue.instalments,
        )
        for member_key, relationship in issue.members:
            self._new_coverage(
                insurer_id=issue.insurer_id,
                policy_id=issue.policy_id,
                person_key=member_key,
                start_date=issue.start,
                end_date=issue.end,
                sponsor_key=issue.sponsor_key,
                relationship=_relationship(relationship),
                end_reason=PERIOD_END,
                leaf_indexes=str(issue.leaf_index),
            )

    def _new_coverage(self, **values: Any) -> None:
        row = SimpleNamespace(**values)
        self._new_coverages[(row.insurer_id, row.policy_id)].append(row)
        self._new_by_person[row.person_key].append(row)

    def _policy(self, insurer_id: str, policy_id: str) -> Any:
        pending = self._new_policies.get((insurer_id, policy_id))
        if pending is not None:
            return pending
        if (insurer_id, policy_id) in self._absent_policies:
            return None
        return self._connection.execute(
            _SELECT_POLICY, {"insurer_id": insurer_id, "policy_id": policy_id}
        ).first()

    def _own_policy(self, insurer_id: str, policy_id: str, field: str) -> Any:
        policy = self._policy(insurer_id, policy_id)
        if policy is None:
            raise NotFound(
                f"insurer {insurer_id!r} has no policy {policy_id!r}",
                reason="POLICY_NOT_FOUND",
                field_violations=[FieldViolation(field, "no such policy of this insurer")],
                metadata={"insurer_id": insurer_id, "policy_id": policy_id},
            )
        return policy

    def _active_policy(self, insurer_id: str, policy_id: str, field: str) -> Any:
        policy = self._own_policy(insurer_id, policy_id, field)
        if policy.cancelled_from is not None:
            raise FailedPrecondition(
                f"policy {policy_id!r} was cancelled from {policy.cancelled_from}; "
                "members change only on an active policy",
                reason="POLICY_CANCELLED",
                field_violations=[FieldViolation(field, "cancelled")],
                metadata={"policy_id": policy_id},
            )
        return policy

    def _current_coverage(self, insurer_id: str, policy_id: str, key: str) -> Any:
        for row in self._new_coverages.get((insurer_id, policy_id), []):
            if row.person_key == key and row.end_reason == PERIOD_END:
                return row
        return self._connection.execute(
            _SELECT_CURRENT_COVERAGE,
            {"insurer_id": insurer_id, "policy_id": policy_id, "person_key": key},
        ).first()

    def _refuse_double_coverage(
        self, insurer_id: str, people: list[tuple[str, str]], start: dt.date, end: dt.date
    ) -> None:
        """Refuse when ``insurer_id`` already covers one of ``people`` (key, field) on a day of
        ``start..end``; one query for all of them (none when :meth:`prefetch` found that the
        insurer covers none of them, or read their rows), then this batch's new coverages.
        Of several stored clashes, :func:`_first_clash` names one, the same with or without
        the prefetch."""
        clash: Any = None
        if all((insurer_id, key) in self._uncovered for key, _ in people):
            pass  # no stored row can clash
        elif all(self._clashes_known(insurer_id, key, start, end) for key, _ in people):
            clash = _first_clash(
                (
                    row
                    for key, _ in people
                    for row in self._clash_candidates[(insurer_id, key)].rows
                ),
                start,
                end,
            )
        else:
            rows = self._connection.execute(
                _SELECT_CLASH,
                {
                    "person_keys": [key for key, _ in people],
                    "insurer_id": insurer_id,
                    "first_day": start,
                    "last_day": end,
                },
            )
            clash = _first_clash(rows, start, end)
        if clash is None:
            clash = next(
                (
                    row
                    for key, _ in people
                    for row in self._new_by_person.get(key, [])
                    if row.insurer_id == insurer_id
                    and row.start_date <= end
                    and row.end_date >= start
                    and row.end_date >= row.start_date
                ),
                None,
            )
        if clash is not None:
            field = next(field for key, field in people if key == clash.person_key)
            raise FailedPrecondition(
                f"{insurer_id!r} already covers {clash.person_key} from {clash.start_date} to "
                f"{clash.end_date} under policy {clash.policy_id!r}",
                reason="DOUBLE_COVERAGE",
                field_violations=[FieldViolation(field, "already covered by this insurer")],
                metadata={"person": clash.person_key, "policy_id": clash.policy_id},
            )

    def _clashes_known(self, insurer_id: str, key: str, start: dt.date, end: dt.date) -> bool:
        """Whether :meth:`prefetch` read every stored row of ``insurer_id`` covering ``key``
        on a day of ``start..end`` (and nothing stored changed since)."""
        known = self._clash_candidates.get((insurer_id, key))
        return known is not None and known.first_day <= start and end <= known.last_day

    def _end_coverage(self, row: Any, last_day: dt.date, reason: str, leaf: int) -> None:
        if isinstance(row, SimpleNamespace):
            row.end_date = last_day
            row.end_reason = reason
            row.leaf_indexes = _leaves(row.leaf_indexes, leaf)
            return
        self._execute(
            update(coverages)
            .where(
                _coverage_of(row.insurer_id, row.policy_id),
                coverages.c.person_key == row.person_key,
                coverages.c.start_date == row.start_date,
            )
            .values(
                end_date=last_day, end_reason=reason, leaf_indexes=_leaves(row.leaf_indexes, leaf)
            )
        )

    def _fund_event(self, event: events_pb2.Event, leaf_index: int) -> None:
        """A funder's event (task D): its rules and projections live in ledger/funds."""
        self._index(leaf_index, self._funds.apply(event, leaf_index))

    def _index_policy(
        self, leaf_index: int, insurer_id: str, policy_id: str, subjects: Iterable[str]
    ) -> None:
        self._index(
            leaf_index,
            [
                f"policy:{insurer_id}:{policy_id}",
                f"policy-id:{policy_id}",
                f"insurer:{insurer_id}",
                *subjects,
            ],
        )

    def _index(self, leaf_index: int, subjects: Iterable[str]) -> None:
        self._subject_rows.extend(
            {"subject": subject, "leaf_index": leaf_index} for subject in sorted(set(subjects))
        )


def _chunks(values: list[str]) -> Iterator[list[str]]:
    """``values`` in slices of at most ``_TOKENS_PER_QUERY_MAX`` (one query's parameters)."""
    for start in range(0, len(values), _TOKENS_PER_QUERY_MAX):
        yield values[start : start + _TOKENS_PER_QUERY_MAX]


def _check_genesis(event: events_pb2.Event, leaf_index: int) -> None:
    """The genesis entry is leaf 0 and registers an operator key, nothing else."""
    registers_operator = (
        event.WhichOneof("body") == "key_registered"
        and event.key_registered.principal_id == OPERATOR_ID
        and role_from_proto(event.key_registered.role) == SignerRole.OPERATOR
    )
    if leaf_index != GENESIS_LEAF_INDEX or not registers_operator:
        raise FailedPrecondition(
            f"entry {leaf_index} is not a genesis entry: only leaf 0, registering the operator's "
            "first key, is signed by the log's key",
            reason="GENESIS_INVALID",
        )


def check_fee_collected(connection: Connection, event: events_pb2.Event) -> None:
    """Raise what appending FeeCollected ``event`` now would raise (the same rules, on a
    read-only snapshot: nothing is written on ``connection``)."""
    Projector(connection).check_fee_collected(event)


def _policy_is(insurer_id: str, policy_id: str) -> Any:
    return and_(policies.c.insurer_id == insurer_id, policies.c.policy_id == policy_id)


def _coverage_of(insurer_id: str, policy_id: str) -> Any:
    return and_(coverages.c.insurer_id == insurer_id, coverages.c.policy_id == policy_id)


def _check_within(  # noqa: PLR0917 (a private helper; every call names what it checks)
    day: dt.date, first: dt.date, last: dt.date, field: str, what: str, policy_id: str
) -> None:
    if first <= day <= last:
        return
    raise FailedPrecondition(
        f"{what} on {day} is outside {first}..{last} of policy {policy_id!r}",
        reason="DATE_OUTSIDE_POLICY",
        field_violations=[FieldViolation(field, f"must be within {first}..{last}")],
        metadata={"policy_id": policy_id},
    )
