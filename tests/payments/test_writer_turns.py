"""Saga writers take turns before they take a pooled connection (payments.saga.writer_turns): a
writer may wait inside its transaction for the ledger's admission, whose key lookup takes a
second connection of the same pool, so one connection is always left for such a lookup. At 16
renewal callers on one PostgreSQL worker (a pool of 5 + 5), every connection was held by writers
waiting for one more, until the pool's timeout."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

from sqlalchemy import create_engine, select, text

from ledger.storage.db import PoolShare, create_ledger_engine, sqlite_url
from payments.saga import UnitOfWork, WriterTurns, writer_turns


def test_turns_bound_the_threads_inside_and_a_nested_entry_is_part_of_its_turn() -> None:
    turns = WriterTurns(2)
    inside, leave = threading.Event(), threading.Event()

    def other() -> None:
        with turns:
            inside.set()
            leave.wait(60)

    with turns, turns:  # nested: still one turn
        helper = threading.Thread(target=other)
        helper.start()
        assert inside.wait(60)
        # Both turns are taken (this thread's, once, and the helper's): a third waits.
        assert not turns._slots.acquire(blocking=False)
        leave.set()
        helper.join(60)
        assert turns._slots.acquire(blocking=False)  # the helper's turn came back
        turns._slots.release()
    # This thread's turn came back too.
    assert turns._slots.acquire(blocking=False) and turns._slots.acquire(blocking=False)


def test_sqlite_writers_go_one_at_a_time(tmp_path: object) -> None:
    engine = create_ledger_engine(sqlite_url(f"{tmp_path}/payments.db"))
    try:
        assert writer_turns(engine).count == 1
    finally:
        engine.dispose()


def test_postgres_writers_leave_one_connection_of_the_pool_free(
    fresh_postgres_url: str,
) -> None:
    for share, count in ((PoolShare(3, 2), 4), (PoolShare(1, 1), 1), (PoolShare(1, 0), 1)):
        engine = create_ledger_engine(fresh_postgres_url, pool=share)
        try:
            assert writer_turns(engine).count == count, share
        finally:
            engine.dispose()


def test_postgres_writers_that_each_need_a_second_connection_all_finish(
    fresh_postgres_url: str,
) -> None:
    """A pool of 2 and 6 writers, each asking a second connection inside its transaction (as
    the admission's key lookup does): each gets it, none waits for the pool's timeout."""
    engine = create_engine(fresh_postgres_url, pool_size=1, max_overflow=1, pool_timeout=30)
    uow = UnitOfWork(engine)

    def writer(number: int) -> int:
        with uow.write() as connection:
            connection.execute(text("SELECT 1"))
            with engine.connect() as nested:
                return int(nested.execute(select(number)).scalar_one())

    try:
        with ThreadPoolExecutor(6) as pool:
            assert sorted(pool.map(writer, range(6))) == list(range(6))
        assert engine.pool.checkedout() == 0  # type: ignore[attr-defined]
    finally:
        engine.dispose()
