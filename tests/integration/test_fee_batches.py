"""Batches of renewal fees (FeeCollected), as the renewal saga submits them: the double-coverage
check answered from what the batch read once; append hooks run without a savepoint each unless
an entry carrying one is refused (then the batch runs again, each in a savepoint), and log only
what committed; the signing keys known from the previous batch while no other entry was
appended. On SQLite and PostgreSQL."""

from __future__ import annotations

import dataclasses
import datetime as dt
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from sqlalchemy import Connection, Engine, event, select, text

from clients.operator import key_revoked
from clients.verify import TrustedLog, verify_receipt
from ledger.coverage.projector import Projector, SignedBy
from ledger.errors import AlreadyExists, FailedPrecondition, InvariantViolation, PermissionDenied
from ledger.keys import insurer_key_id
from ledger.rpc.ledger_servicer import receipt_to_proto
from ledger.signers import SignerRole
from ledger.signing import Ed25519Signer, format_verifier_key
from ledger.storage import vault_store
from ledger.storage.append import Appender, PendingEntry, Receipt
from ledger.storage.append_hooks import AppendHook, hold_in_batches, register_append_hook
from ledger.storage.tables import (
    coverages,
    insurer_keys,
    log_entries,
    subject_entries,
    tree_nodes,
)
from ledger.v1 import events_pb2
from tests.builders import civil, fee_collected
from tests.conftest import onboard_directly, pending

NOW = dt.datetime(2026, 11, 22, 12, 0, tzinfo=dt.UTC)
AUTHORITY = "kw-gov-health"


@pytest.fixture
def authority() -> Ed25519Signer:
    return Ed25519Signer.generate(AUTHORITY)


@pytest.fixture
def appender(
    engine: Engine,
    log_signer: Ed25519Signer,
    operator_signer: Ed25519Signer,
    authority: Ed25519Signer,
) -> Appender:
    appender = Appender(engine, log_signer, log_signer.name)
    appender.initialize(NOW)
    onboard_directly(
        engine, appender, operator_signer, AUTHORITY, authority, NOW, role=SignerRole.AUTHORITY
    )
    return appender


def _fee(renewal_id: str, like: events_pb2.Event | None = None, year: int = 2026) -> Any:
    """A fee of ``renewal_id`` for a new sponsor, or for ``like``'s, over ``year``."""
    fee = fee_collected(AUTHORITY, renewal_id)
    body = fee.fee_collected
    if like is not None:
        body.sponsor_token = like.fee_collected.sponsor_token
        body.lines[0].person_token = like.fee_collected.sponsor_token
    body.period_start.CopyFrom(civil(dt.date(year, 1, 1)))
    body.period_end.CopyFrom(civil(dt.date(year, 12, 31)))
    return fee


def test_a_fee_for_someone_covered_on_those_days_is_refused_in_a_batch_or_across_batches(
    appender: Appender, authority: Ed25519Signer
) -> None:
    first = _fee("R-1")
    [recorded] = appender.append_batch([pending(authority, first)], NOW)
    assert isinstance(recorded, Receipt)
    # One batch: the same sponsor over the same year (covered before the batch), the next year
    # (the stored row is read, but its days do not overlap), and the next year again (covered
    # earlier in this batch).
    same_year, next_year, next_again = appender.append_batch(
        [
            pending(authority, _fee("R-2", like=first)),
            pending(authority, _fee("R-3", like=first, year=2027)),
            pending(authority, _fee("R-4", like=first, year=2027)),
        ],
        NOW,
    )
    sponsor = first.fee_collected.sponsor_token
    assert isinstance(same_year, FailedPrecondition) and same_year.reason == "DOUBLE_COVERAGE"
    assert same_year.message == (
        f"{AUTHORITY!r} already covers {sponsor} from 2026-01-01 to 2026-12-31 under policy 'R-1'"
    )
    assert same_year.details.metadata == {"person": sponsor, "policy_id": "R-1"}
    assert isinstance(next_year, Receipt) and next_year.leaf_index == recorded.leaf_index + 1
    assert isinstance(next_again, FailedPrecondition) and next_again.reason == "DOUBLE_COVERAGE"
    assert next_again.details.metadata == {"person": sponsor, "policy_id": "R-3"}
    # Across batches, and with the renewal already recorded.
    twice = _fee("R-1")
    twice.event_id = "fee-R-1-again"
    again, recorded_twice = appender.append_batch(
        [pending(authority, _fee("R-5", like=first)), pending(authority, twice)], NOW
    )
    assert isinstance(again, FailedPrecondition) and again.reason == "DOUBLE_COVERAGE"
    assert isinstance(recorded_twice, AlreadyExists)
    assert recorded_twice.reason == "RENEWAL_RECORDED"


_hook_log = hold_in_batches(logging.getLogger("tests.fee_batches"))


_FIRST = "pt_" + "a" * 26
"""Before _LAST in code point order (SQLite's, Python's); after it in Danish ("aa" is "å")."""
_LAST = "pt_" + "z" * 26
_DANISH_PERSON_KEYS = (
    'ALTER TABLE coverages ALTER COLUMN person_key TYPE varchar(64) COLLATE "da-x-icu"'
)


def _refusal(outcome: object) -> tuple[str, str, dict[str, str], list[str]]:
    assert isinstance(outcome, FailedPrecondition), outcome
    fields = [violation.field for violation in outcome.details.field_violations]
    return outcome.reason, outcome.message, dict(outcome.details.metadata), fields


def test_of_two_clashes_the_same_row_is_named_with_or_without_the_prefetch_on_both_engines(
    engine: Engine,
    appender: Appender,
    authority: Ed25519Signer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    postgres = engine.dialect.name == "postgresql"
    if postgres:
        # A database whose text order is not code point order (as a production database's
        # locale may be): its ORDER BY person_key puts _LAST first (checked below).
        with engine.begin() as connection:
            connection.execute(text(_DANISH_PERSON_KEYS))
    issued = iter([_LAST, _FIRST])
    monkeypatch.setattr(vault_store, "new_person_token", lambda: next(issued))
    last, first = _fee("R-1"), _fee("R-2")  # their sponsors are _LAST and _FIRST
    monkeypatch.undo()
    assert [last.fee_collected.sponsor_token, first.fee_collected.sponsor_token] == [_LAST, _FIRST]
    first.fee_collected.period_end.CopyFrom(civil(dt.date(2026, 3, 31)))
    later = _fee("R-3", like=first)  # _FIRST again, from July: two rows of one person
    later.fee_collected.period_start.CopyFrom(civil(dt.date(2026, 7, 1)))
    stored = appender.append_batch([pending(authority, fee) for fee in (last, first, later)], NOW)
    assert all(isinstance(outcome, Receipt) for outcome in stored)
    # Both people over the whole year: three stored rows clash; named is the first person by
    # code point, and of their rows the earliest.
    both = _fee("R-4", like=last)
    both.fee_collected.lines.add().CopyFrom(both.fee_collected.lines[0])
    both.fee_collected.lines[1].person_token = _FIRST
    both.fee_collected.lines[1].relationship = events_pb2.RELATIONSHIP_SPOUSE
    both.fee_collected.total.amount_minor *= 2
    named = (
        "DOUBLE_COVERAGE",
        f"{AUTHORITY!r} already covers {_FIRST} from 2026-01-01 to 2026-03-31 under policy 'R-2'",
        {"person": _FIRST, "policy_id": "R-2"},
        ["event.fee_collected.lines[1].person_token"],
    )
    before = _entry_count(engine)
    # With the prefetch (the appender reads the batch's rows at once).
    [prefetched] = appender.append_batch([pending(authority, both)], NOW)
    assert _refusal(prefetched) == named
    assert _entry_count(engine) == before
    # Without it (one query for this entry's people), in a transaction rolled back.
    signed = SignedBy(insurer_key_id(authority.public_key), NOW)
    with engine.connect() as connection, connection.begin():
        with pytest.raises(FailedPrecondition) as raised:
            Projector(connection).apply(both, before, signed)
        assert _refusal(raised.value) == named
        by_database = connection.execute(
            select(coverages.c.person_key)
            .where(coverages.c.person_key.in_([_FIRST, _LAST]))
            .order_by(coverages.c.person_key)
        ).scalars()
        order = [_LAST, _FIRST, _FIRST] if postgres else [_FIRST, _FIRST, _LAST]
        assert list(by_database) == order


def _hook_writes_then_maybe_refuses(connection: Connection, leaf_index: int, argument: str) -> None:
    """Writes a row naming ``argument`` and logs it; then refuses when ``argument`` says so."""
    connection.execute(
        subject_entries.insert().values(subject=f"hook:{argument}", leaf_index=leaf_index)
    )
    _hook_log.info("hook:%s at leaf %d", argument, leaf_index)
    if argument.startswith("refuse"):
        raise FailedPrecondition("the test hook refuses", reason="TEST_HOOK_REFUSED")


register_append_hook("tests.fee_batches", _hook_writes_then_maybe_refuses)


def _hooked(item: PendingEntry, argument: str) -> PendingEntry:
    return dataclasses.replace(item, on_append=AppendHook("tests.fee_batches", argument))


@contextmanager
def _statements(engine: Engine) -> Iterator[list[str]]:
    seen: list[str] = []

    def record(*arguments: Any) -> None:
        seen.append(str(arguments[2]))

    event.listen(engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", record)


def _hook_rows(engine: Engine) -> list[tuple[str, int]]:
    with engine.connect() as connection:
        rows = connection.execute(
            select(subject_entries.c.subject, subject_entries.c.leaf_index)
            .where(subject_entries.c.subject.like("hook:%"))
            .order_by(subject_entries.c.leaf_index)
        )
        return [(row.subject, int(row.leaf_index)) for row in rows]


def _entry_count(engine: Engine) -> int:
    with engine.connect() as connection:
        return len(connection.execute(select(log_entries.c.leaf_index)).all())


def test_hooks_run_without_savepoints_when_every_hooked_entry_is_appended(
    engine: Engine, appender: Appender, authority: Ed25519Signer
) -> None:
    with _statements(engine) as seen:
        outcomes = appender.append_batch(
            [_hooked(pending(authority, _fee(f"R-{n}")), f"ok-{n}") for n in range(3)], NOW
        )
    assert all(isinstance(outcome, Receipt) for outcome in outcomes)
    assert not [statement for statement in seen if "SAVEPOINT" in statement.upper()]
    leaves = [outcome.leaf_index for outcome in outcomes if isinstance(outcome, Receipt)]
    assert _hook_rows(engine) == [(f"hook:ok-{n}", leaf) for n, leaf in enumerate(leaves)]


def test_what_a_refused_entrys_hook_wrote_is_undone_and_the_rest_of_its_batch_is_appended(
    engine: Engine, appender: Appender, authority: Ed25519Signer
) -> None:
    first = _fee("R-1")
    before = _entry_count(engine)
    with _statements(engine) as seen:
        kept, hook_refused, rules_refused, plain, last = appender.append_batch(
            [
                _hooked(pending(authority, first), "a"),
                # Its hook writes, then refuses.
                _hooked(pending(authority, _fee("R-2")), "refuse-b"),
                # Its hook writes, then the rules refuse it (its sponsor is covered already).
                _hooked(pending(authority, _fee("R-3", like=first)), "c"),
                pending(authority, _fee("R-4")),
                _hooked(pending(authority, _fee("R-5")), "d"),
            ],
            NOW,
        )
    assert isinstance(kept, Receipt) and isinstance(plain, Receipt) and isinstance(last, Receipt)
    assert isinstance(hook_refused, FailedPrecondition)
    assert hook_refused.reason == "TEST_HOOK_REFUSED"
    assert isinstance(rules_refused, FailedPrecondition)
    assert rules_refused.reason == "DOUBLE_COVERAGE"
    assert [kept.leaf_index + 1, kept.leaf_index + 2] == [plain.leaf_index, last.leaf_index]
    assert last.tree_size == kept.tree_size == before + 3 == _entry_count(engine)
    assert _hook_rows(engine) == [("hook:a", kept.leaf_index), ("hook:d", last.leaf_index)]
    # The batch ran again, each hooked entry in a savepoint.
    assert [statement for statement in seen if "SAVEPOINT" in statement.upper()]


class _HookLines(logging.Handler):
    """Each hook line, and whether the row it tells of was committed when it was emitted (read
    on a connection of its own, which sees only committed rows)."""

    def __init__(self, engine: Engine) -> None:
        super().__init__(logging.INFO)
        self._engine = engine
        self.lines: list[tuple[str, bool]] = []

    def emit(self, record: logging.LogRecord) -> None:
        subject, _, leaf = record.getMessage().partition(" at leaf ")
        self.lines.append((record.getMessage(), (subject, int(leaf)) in _hook_rows(self._engine)))


@contextmanager
def _hook_lines(engine: Engine) -> Iterator[_HookLines]:
    handler = _HookLines(engine)
    _hook_log.addHandler(handler)
    level = _hook_log.level
    _hook_log.setLevel(logging.INFO)
    try:
        yield handler
    finally:
        _hook_log.setLevel(level)
        _hook_log.removeHandler(handler)


def test_hook_lines_of_a_rolled_back_attempt_are_not_logged_and_the_rest_once_committed(
    engine: Engine,
    appender: Appender,
    authority: Ed25519Signer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # The first attempt (no savepoints) runs both hooks and is rolled back when the second
    # refuses; the second attempt runs both again, the refused one in a savepoint rolled back.
    caplog.set_level(logging.INFO, logger=_hook_log.name)
    with _statements(engine) as seen, _hook_lines(engine) as hook_lines:
        kept, refused = appender.append_batch(
            [
                _hooked(pending(authority, _fee("R-1")), "a"),
                _hooked(pending(authority, _fee("R-2")), "refuse-b"),
            ],
            NOW,
        )
    assert [statement for statement in seen if "SAVEPOINT" in statement.upper()]  # it reran
    assert isinstance(kept, Receipt)
    assert isinstance(refused, FailedPrecondition) and refused.reason == "TEST_HOOK_REFUSED"
    assert _hook_rows(engine) == [("hook:a", kept.leaf_index)]
    # The accepted entry's line once, emitted when its row was committed; none of the refused
    # entry's, in either attempt.
    line = f"hook:a at leaf {kept.leaf_index}"
    assert hook_lines.lines == [(line, True)]
    assert [r.getMessage() for r in caplog.records if r.name == _hook_log.name] == [line]


def test_hook_lines_are_logged_at_once_outside_a_batch(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger=_hook_log.name)
    _hook_log.info("hook:outside at leaf %d", 0)
    assert [r.getMessage() for r in caplog.records] == ["hook:outside at leaf 0"]


def test_a_key_revoked_by_another_appender_is_refused_though_the_first_knew_it_unrevoked(
    engine: Engine,
    appender: Appender,
    authority: Ed25519Signer,
    log_signer: Ed25519Signer,
    operator_signer: Ed25519Signer,
) -> None:
    [first] = appender.append_batch([pending(authority, _fee("R-1"))], NOW)
    assert isinstance(first, Receipt)
    # Nothing appended since: the next batch knows the authority's key without reading it.
    with _statements(engine) as seen:
        [second] = appender.append_batch([pending(authority, _fee("R-2"))], NOW)
    assert isinstance(second, Receipt)
    assert not [statement for statement in seen if insurer_keys.name in statement]
    # Another appender on the same database (another replica) revokes it.
    other = Appender(engine, log_signer, log_signer.name)
    revoked = key_revoked(insurer_key_id(authority.public_key), reason="test", occurred_at=NOW)
    [revocation] = other.append_batch([pending(operator_signer, revoked)], NOW)
    assert isinstance(revocation, Receipt)
    before = _entry_count(engine)
    [refused] = appender.append_batch([pending(authority, _fee("R-3"))], NOW)
    assert isinstance(refused, PermissionDenied) and refused.reason == "KEY_REVOKED"
    assert _entry_count(engine) == before


def test_appenders_taking_turns_on_one_database_each_read_the_tree_the_other_left(
    engine: Engine, appender: Appender, authority: Ed25519Signer, log_signer: Ed25519Signer
) -> None:
    # Each batch reads the right edge of the tree its appender last committed with the head;
    # after the other appender's batches, the edge of the tree found instead.
    other = Appender(engine, log_signer, log_signer.name)
    trusted = TrustedLog.from_verifier_key(format_verifier_key(log_signer))
    turns = [appender, other, other, appender, appender, other, appender]
    for turn, (writer, size) in enumerate(zip(turns, [1, 2, 3, 1, 4, 5, 2], strict=True)):
        items = [pending(authority, _fee(f"R-{turn}-{n}")) for n in range(size)]
        outcomes = writer.append_batch(items, NOW)
        for item, outcome in zip(items, outcomes, strict=True):
            assert isinstance(outcome, Receipt)
            verified = verify_receipt(receipt_to_proto(outcome), trusted, item.envelope.payload)
            assert verified.checkpoint.size == _entry_count(engine)


def test_each_batch_reads_its_head_and_edge_in_one_statement_of_one_text_on_postgresql(
    engine: Engine, appender: Appender, authority: Ed25519Signer
) -> None:
    # The right edge's length follows the tree size's set bits. On PostgreSQL its keys are one
    # array parameter, so the text is the same at every size (psycopg prepares it once a
    # connection); SQLite's IN list has a placeholder a key.
    sizes = (1, 2, 3, 1, 4)
    with _statements(engine) as seen:
        for batch, size in enumerate(sizes):
            fees = [pending(authority, _fee(f"E-{batch}-{n}")) for n in range(size)]
            outcomes = appender.append_batch(fees, NOW)
            assert all(isinstance(outcome, Receipt) for outcome in outcomes)
    heads = [statement for statement in seen if "UNION ALL" in statement]
    assert len(heads) == len(sizes)
    assert all(tree_nodes.name in statement for statement in heads)
    if engine.dialect.name == "postgresql":
        assert len(set(heads)) == 1


def test_a_right_edge_node_missing_is_detected_by_the_next_batch_of_the_same_appender(
    engine: Engine, appender: Appender, authority: Ed25519Signer
) -> None:
    if engine.dialect.name != "sqlite":
        pytest.skip("tampering below the triggers is shown on SQLite")
    [first] = appender.append_batch([pending(authority, _fee("R-1"))], NOW)
    assert isinstance(first, Receipt)
    with engine.begin() as connection:
        connection.execute(text("DROP TRIGGER tree_nodes_append_only_delete"))
        highest = (
            connection.execute(select(tree_nodes.c.node_key).order_by(tree_nodes.c.node_key.desc()))
            .scalars()
            .first()
        )
        connection.execute(tree_nodes.delete().where(tree_nodes.c.node_key == highest))
    before = _entry_count(engine)
    with pytest.raises(InvariantViolation, match="tree nodes missing from storage"):
        appender.append_batch([pending(authority, _fee("R-2"))], NOW)
    assert _entry_count(engine) == before
