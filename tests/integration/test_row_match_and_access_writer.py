"""Multi-column lookups answered from an index (ledger/storage/row_match.py), and access
records stored in group commits (ledger/rpc/access.py's writer)."""

from __future__ import annotations

import asyncio
import datetime as dt
import gc
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, select, text

from ledger.coverage.model import PersonRef
from ledger.rpc.access import _known_tokens, _RecordWriter, _tokens_and_subject, note_person_tokens
from ledger.storage.access_log import AccessLog, AccessRecord
from ledger.storage.db import create_ledger_engine, sqlite_url
from ledger.storage.migrate import upgrade
from ledger.storage.row_match import CHUNK, any_row
from ledger.storage.vault_store import (
    _IDENTITY_ROW,
    IDENTITY_ROWS_ONE_BY_ONE_MAX,
    VaultStore,
    person_identities,
)

NOW = dt.datetime(2026, 3, 1, tzinfo=dt.UTC)


@pytest.fixture
def engine(tmp_path: Path) -> Engine:
    created = create_ledger_engine(sqlite_url(tmp_path / "ledger.db"))
    upgrade(created)
    return created


def _person(number: int) -> PersonRef:
    return PersonRef(id_type="residence_id", value=f"2{number:09d}", country="SA")


def test_tokens_of_finds_exactly_the_known_people_past_a_chunk(engine: Engine) -> None:
    vault = VaultStore(engine)
    known = [_person(number) for number in range(CHUNK + 30)]
    tokens = vault.tokens_for(known, NOW)
    asked = [*known, _person(10_000), _person(10_001)]  # two the vault does not know
    found = vault.tokens_of(asked)
    assert found == dict(zip(known, tokens, strict=True))


def _sqlite_plan(engine: Engine, statement: Any) -> str:
    """SQLite's EXPLAIN QUERY PLAN of ``statement`` (its parameters written in), one line."""
    compiled = statement.compile(engine, compile_kwargs={"literal_binds": True})
    with engine.connect() as connection:
        return " ".join(
            str(row[-1]) for row in connection.execute(text(f"EXPLAIN QUERY PLAN {compiled}"))
        )


def test_the_lookup_searches_the_index_rather_than_scanning(engine: Engine) -> None:
    key = (person_identities.c.country, person_identities.c.id_type, person_identities.c.value)
    [condition] = any_row(key, [("SA", "residence_id", "1"), ("SA", "residence_id", "2")])
    statement = select(person_identities).where(condition)
    plan = _sqlite_plan(engine, statement)
    assert "SEARCH person_identities USING INDEX" in plan
    assert "SCAN person_identities" not in plan


@pytest.mark.parametrize(
    "count", [1, IDENTITY_ROWS_ONE_BY_ONE_MAX - 2, IDENTITY_ROWS_ONE_BY_ONE_MAX, 3 * 8]
)
def test_a_few_people_one_by_one_and_many_at_once_find_the_same_tokens(
    database_url: str, count: int
) -> None:
    """Up to IDENTITY_ROWS_ONE_BY_ONE_MAX people (two of them unknown, one asked twice) are
    looked up one by one with a statement built once, more with row_match's statement: the
    answer is the same, on both engines."""
    engine = create_ledger_engine(database_url)
    try:
        upgrade(engine)
        vault = VaultStore(engine)
        known = [_person(number) for number in range(count)]
        tokens = vault.tokens_for(known, NOW)
        asked = [*known[: max(0, count - 2)], _person(10_000), _person(10_001), known[0]]
        assert vault.tokens_of(asked) == {
            person: token for person, token in zip(known, tokens, strict=True) if person in asked
        }
        again = vault.tokens_for([*known, _person(10_002)], NOW)  # the known keep their tokens
        assert again[:count] == tokens and again[count] not in tokens
    finally:
        engine.dispose()


def test_the_one_person_lookup_searches_the_index(engine: Engine) -> None:
    statement = _IDENTITY_ROW.params(country="SA", id_type="residence_id", value="1")
    plan = _sqlite_plan(engine, statement)
    assert "SEARCH person_identities USING INDEX" in plan
    assert "SCAN person_identities" not in plan


def test_no_rows_no_condition() -> None:
    assert list(any_row((person_identities.c.token,), [])) == []


def _record(caller: str) -> AccessRecord:
    return AccessRecord(
        recorded_at=NOW,
        caller=caller,
        method="/ledger.v1.CoverageService/CheckHousehold",
        purpose="RENEWAL",
        person_keys=("tok-b", "tok-a"),
        subject="household of tok-a",
        tree_size=7,
    )


def test_the_writer_stores_every_record_and_fails_only_the_call_whose_record_fails(
    engine: Engine,
) -> None:
    log = AccessLog(engine)
    writer = _RecordWriter(log)

    def broken() -> AccessRecord:
        raise RuntimeError("the vault did not answer")

    async def calls() -> list[BaseException | None]:
        outcomes = await asyncio.gather(
            *(writer.store(lambda n=n: _record(f"caller-{n}")) for n in range(5)),
            writer.store(broken),
            return_exceptions=True,
        )
        return list(outcomes)

    outcomes = asyncio.run(calls())
    assert outcomes[:5] == [None] * 5
    assert isinstance(outcomes[5], RuntimeError)
    stored = log.list()
    assert sorted(record.caller for record in stored) == [f"caller-{n}" for n in range(5)]
    assert all(record.person_keys == ("tok-a", "tok-b") for record in stored)


def test_a_failed_transaction_fails_every_call_it_held(engine: Engine) -> None:
    writer = _RecordWriter(AccessLog(engine))
    with engine.begin() as connection:
        connection.execute(text("DROP TABLE access_record_people"))

    async def calls() -> list[BaseException | None]:
        return list(
            await asyncio.gather(
                *(writer.store(lambda n=n: _record(f"caller-{n}")) for n in range(3)),
                return_exceptions=True,
            )
        )

    outcomes = asyncio.run(calls())
    assert all(isinstance(outcome, Exception) for outcome in outcomes)
    with engine.connect() as connection:
        assert connection.execute(text("SELECT count(*) FROM access_records")).scalar() == 0


def test_tokens_handed_over_are_used_and_only_the_others_asked_of_the_vault(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    vault = VaultStore(engine)
    sponsor, spouse, child, stranger = (_person(number) for number in (1, 2, 3, 4))
    sponsor_token, spouse_token, child_token = vault.tokens_for([sponsor, spouse, child], NOW)
    asked: list[list[PersonRef]] = []
    real = VaultStore.tokens_of

    def counted(self: VaultStore, people: list[PersonRef]) -> dict[PersonRef, str]:
        asked.append(list(people))
        return real(self, people)

    monkeypatch.setattr(VaultStore, "tokens_of", counted)
    people = ((sponsor, spouse, child, stranger), "household of")
    # Without tokens handed over: the vault is asked for everyone (the stranger is no one).
    everyone = _tokens_and_subject(vault, people)
    assert everyone == ((sponsor_token, spouse_token, child_token), f"household of {sponsor_token}")
    assert asked == [[sponsor, spouse, child, stranger]]
    # Handed over (the stranger as unknown): the same record, the vault not asked.
    known = {sponsor: sponsor_token, spouse: spouse_token, child: child_token, stranger: None}
    assert _tokens_and_subject(vault, people, known) == everyone
    assert len(asked) == 1
    # Some handed over: only the others are asked of the vault.
    assert _tokens_and_subject(vault, people, {sponsor: sponsor_token, stranger: None}) == everyone
    assert asked[1] == [spouse, child]
    # An unknown sponsor handed over as such.
    assert _tokens_and_subject(vault, ((stranger, spouse), "household of"), {stranger: None}) == (
        (spouse_token,),
        "household of an unknown person",
    )


def test_tokens_are_handed_over_only_inside_a_recorded_call() -> None:
    note_person_tokens([(_person(1), "tok-1")])  # outside: nothing happens, nothing fails
    found: dict[PersonRef, str | None] = {}
    reset = _known_tokens.set(found)
    try:
        note_person_tokens([(_person(1), "tok-1"), (_person(2), None)])
    finally:
        _known_tokens.reset(reset)
    assert found == {_person(1): "tok-1", _person(2): None}


def test_the_writers_thread_ends_with_the_writer(engine: Engine) -> None:
    """The writer's own thread does not outlive it (a stopped server's writer leaves no thread
    behind, as the loop's default executor, which wrote the records before, ended with it)."""
    writer = _RecordWriter(AccessLog(engine))

    async def one(writer: _RecordWriter) -> None:
        await writer.store(lambda: _record("caller"))

    asyncio.run(one(writer))
    threads = list(writer._executor._threads)
    assert threads and all(thread.is_alive() for thread in threads)
    del writer
    gc.collect()
    for thread in threads:
        thread.join()  # returns only once the writer's thread has ended
    assert not any(thread.is_alive() for thread in threads)
