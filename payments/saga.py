"""What every renewal use case works with, passed in: the unit of work (the one way to open a
transaction), the gateways, the ledger recorder, the clock; and the stored payment as a typed
value. The use cases themselves are in ``quotes``, ``charges``, ``recording``, ``refunds`` and
``reconciliation``; ``renewal.Renewals`` is their facade."""

from __future__ import annotations

import datetime as dt
import hashlib
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Protocol

from sqlalchemy import Connection, Engine, QueuePool, bindparam, select

from ledger.clock import Clock
from ledger.coverage.projector import check_fee_collected
from ledger.coverage.reader import CoverageReader
from ledger.errors import (
    FailedPrecondition,
    FieldViolation,
    InvalidArgument,
    LedgerError,
    NotFound,
    Unavailable,
)
from ledger.storage.append import Receipt
from ledger.storage.db import WRITE_LOCK_OPTION
from ledger.v1 import events_pb2
from payments.fee_entries import FeeEntries
from payments.gateway import PaymentGateway
from payments.states import PAYMENT_BY_ID, PAYMENT_BY_ID_LOCKED, PaymentState, move_payment
from payments.tables import quotes

__all__ = [
    "Crash",
    "PaymentRecord",
    "Recorder",
    "Saga",
    "UnitOfWork",
    "WriterTurns",
    "load_payment",
    "load_quote",
    "move",
    "payment_id_of",
    "refuse_unrecordable",
    "refuse_unrecordable_reading",
    "unrecordable_refused",
    "writer_turns",
]


class Recorder(Protocol):
    """Appends a signed event to the ledger; ``on_append`` runs in the same transaction."""

    def __call__(
        self, event: events_pb2.Event, on_append: Callable[[Connection, int], None]
    ) -> Receipt: ...

    def check(self, event: events_pb2.Event) -> None:
        """Raise what the ledger's admission would refuse in ``event`` signed now (its signing
        key unknown, revoked or expired; the event malformed), appending nothing."""


class Crash(Exception):
    """Raised by a crash hook to simulate the process dying at a step (fault-injection tests)."""


class WriterTurns:
    """At most ``count`` threads inside at once; the others wait their turn. A thread already
    inside enters again freely (a nested write is part of its turn)."""

    def __init__(self, count: int) -> None:
        self.count = count
        self._slots = threading.BoundedSemaphore(count)
        self._depth = threading.local()

    def __enter__(self) -> None:
        depth = getattr(self._depth, "value", 0)
        if depth == 0:
            self._slots.acquire()
        self._depth.value = depth + 1

    def __exit__(self, *_exc: object) -> None:
        self._depth.value -= 1
        if self._depth.value == 0:
            self._slots.release()


def writer_turns(engine: Engine) -> WriterTurns:
    """How many saga writers of this process may hold a pooled connection at once.

    A saga writer may wait, inside its transaction, for the ledger's admission, whose key lookup
    takes a second connection of the same pool: with every connection held by such writers,
    each waits for the others until the pool's timeout (seen at 16 renewal callers on one
    PostgreSQL worker, whose pool was 5 + 5). So at most one fewer writer than the pool's
    connections holds one; the last is always left for a nested lookup (reads never nest, so
    they give theirs back). SQLite: one at a time (its one write lock serialises every writer
    anyway; see :meth:`UnitOfWork.write`)."""
    pool = engine.pool
    if engine.dialect.name == "sqlite" or not isinstance(pool, QueuePool):
        return WriterTurns(1)
    # QueuePool's overflow bound has no public reader; `size()` is public.
    connections = pool.size() + max(0, int(getattr(pool, "_max_overflow", 0)))
    return WriterTurns(max(1, connections - 1))


class UnitOfWork:
    """The one way the payments open transactions on their database."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._writers = writer_turns(engine)
        """This process's saga writers take turns here before they take a connection (see
        :func:`writer_turns` and :meth:`write`)."""

    @contextmanager
    def write(self) -> Iterator[Connection]:
        """A transaction that takes the database's write lock first (SQLite ``BEGIN
        IMMEDIATE``): a read-then-write transaction would otherwise fail with "database is
        locked" when another writer committed after its first read. PostgreSQL: an ordinary
        transaction; a concurrent duplicate insert fails on the primary key and the caller
        retries.

        On SQLite, whose one write lock serialises every writer anyway, this process's saga
        writers first queue on a lock of their own, so that (1) they wake as soon as the one
        before commits rather than in SQLite's busy handler's sleeps (up to 100 ms each), and
        (2) at most one of them holds a pooled connection while it waits for the database's
        lock: a writer that waits inside its transaction for the ledger's admission (whose key
        lookup needs a connection of the same pool) then always finds one free. PostgreSQL:
        at most one fewer writers than the pool's connections, for the same reason."""
        with (
            self._writers,
            self.engine.connect().execution_options(**{WRITE_LOCK_OPTION: True}) as connection,
            connection.begin(),
        ):
            yield connection

    @property
    def writers_serialised(self) -> bool:
        """Whether every write transaction waits for every other one (SQLite's one write
        lock): then what a write transaction can do before it begins, it should."""
        return self.engine.dialect.name == "sqlite"

    @contextmanager
    def read(self) -> Iterator[Connection]:
        """A connection for reads (each statement sees what is committed)."""
        with self.engine.connect() as connection:
            yield connection


@dataclass(frozen=True)
class Saga:
    """The renewal use cases' dependencies."""

    uow: UnitOfWork
    gateways: Mapping[str, PaymentGateway]
    recorder: Recorder
    coverage: CoverageReader
    clock: Clock
    authority_id: str
    entries: FeeEntries
    """Builds the FeeCollected / FeeRefunded entries (payments.fee_entries)."""
    quote_ttl: dt.timedelta
    crash: Callable[[str], None]
    """Fault injection: called at each saga step (tests raise :class:`Crash`)."""

    def gateway(self, name: str) -> PaymentGateway:
        """The adapter called ``name``; INVALID_ARGUMENT when none is configured."""
        adapter = self.gateways.get(name)
        if adapter is None:
            raise InvalidArgument(
                f"unknown gateway {name!r}; configured: {', '.join(sorted(self.gateways))}",
                reason="GATEWAY_UNKNOWN",
                field_violations=[FieldViolation("gateway", "not configured")],
            )
        return adapter

    def payment(self, payment_id: str) -> PaymentRecord:
        """The payment as stored now."""
        with self.uow.read() as connection:
            return load_payment(connection, payment_id)


@dataclass(frozen=True)
class PaymentRecord:
    """A payment's state, as stored."""

    payment_id: str
    quote_id: str
    gateway: str
    state: PaymentState
    currency: str
    amount_minor: int
    captured_minor: int
    refunded_minor: int
    gateway_reference: str
    redirect_url: str
    leaf_index: int | None
    message: str


_QUOTE_BY_ID = select(quotes).where(quotes.c.quote_id == bindparam("quote_id"))
"""Built once (its cache key generated once), as payments.states' statements."""
_QUOTE_BY_ID_LOCKED = _QUOTE_BY_ID.with_for_update()


def load_payment(connection: Connection, payment_id: str, *, lock: bool = False) -> PaymentRecord:
    """The payment row as a record (``lock``: held until the transaction ends); NOT_FOUND."""
    query = PAYMENT_BY_ID_LOCKED if lock else PAYMENT_BY_ID
    row = connection.execute(query, {"payment_id": payment_id}).first()
    if row is None:
        raise NotFound(
            f"no payment {payment_id!r}",
            reason="PAYMENT_NOT_FOUND",
            field_violations=[FieldViolation("payment_id", "unknown")],
        )
    return PaymentRecord(
        payment_id=row.payment_id,
        quote_id=row.quote_id,
        gateway=row.gateway,
        state=PaymentState(row.state),
        currency=row.currency_code,
        amount_minor=int(row.amount_minor),
        captured_minor=int(row.captured_minor),
        refunded_minor=int(row.refunded_minor),
        gateway_reference=row.gateway_reference,
        redirect_url=row.redirect_url,
        leaf_index=None if row.leaf_index is None else int(row.leaf_index),
        message=row.message,
    )


def load_quote(connection: Connection, quote_id: str, *, lock: bool = False) -> Any:
    """The quote row; ``lock``: held until the transaction ends (PostgreSQL ``FOR UPDATE``;
    SQLite's write transaction already serializes every writer)."""
    query = _QUOTE_BY_ID_LOCKED if lock else _QUOTE_BY_ID
    row = connection.execute(query, {"quote_id": quote_id}).first()
    if row is None:
        raise NotFound(
            f"no quote {quote_id!r}",
            reason="QUOTE_NOT_FOUND",
            field_violations=[FieldViolation("quote_id", "unknown")],
        )
    return row


def move(
    saga: Saga,
    payment_id: str,
    state: PaymentState,
    *,
    message: str = "",
    captured: int | None = None,
    gateway_reference: str = "",
    redirect_url: str = "",
    leaf: int | None = None,
) -> None:
    """Move the payment, in a write transaction of its own, if the transition table allows it
    (see payments.states)."""
    with saga.uow.write() as connection:
        move_payment(
            connection,
            payment_id,
            state,
            why=message,
            now=saga.clock.now(),
            captured_minor=captured,
            gateway_reference=gateway_reference,
            redirect_url=redirect_url,
            leaf_index=leaf,
        )


def payment_id_of(quote_id: str) -> str:
    """A quote's payment id: the merchant reference, derived so retries never charge twice
    (letters and digits only: KNET's track id rules)."""
    return "pay" + hashlib.sha256(quote_id.encode()).hexdigest()[:24]


def refuse_unrecordable(saga: Saga, connection: Connection, event: events_pb2.Event) -> None:
    """Refuse (FAILED_PRECONDITION, the rule's reason) what recording would refuse now: the
    ledger's admission of the signed entry (authority key valid, event well-formed) and the
    FeeCollected rules against current state (authority licensed, nobody in the household
    already covered by it for the period) -- the very function the append runs."""
    with unrecordable_refused():
        saga.recorder.check(event)
        check_fee_collected(connection, event)


def refuse_unrecordable_reading(saga: Saga, event: events_pb2.Event) -> None:
    """:func:`refuse_unrecordable` outside any transaction: the admission with no connection
    held, then the rules on a read connection (for a check made before a write transaction)."""
    with unrecordable_refused():
        saga.recorder.check(event)
        with saga.uow.read() as connection:
            check_fee_collected(connection, event)


@contextmanager
def unrecordable_refused() -> Iterator[None]:
    """What the block raises (a refusal by the admission or the rules) as FAILED_PRECONDITION
    with the rule's reason; UNAVAILABLE as it is (retry)."""
    try:
        yield
    except Unavailable:
        raise
    except LedgerError as error:
        raise FailedPrecondition(
            f"this renewal cannot be recorded, so nothing is charged: {error.message}",
            reason=error.details.reason or error.code,
            field_violations=list(error.details.field_violations),
            metadata=dict(error.details.metadata),
        ) from error
