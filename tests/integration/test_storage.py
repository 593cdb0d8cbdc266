"""Storage on a real database (SQLite and PostgreSQL): migrations, append-only triggers, batches,
idempotency and proofs built from stored nodes."""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Iterator

import pytest
from sqlalchemy import Engine, func, select, text
from sqlalchemy import event as engine_events
from sqlalchemy.exc import DBAPIError

from clients.operator import key_revoked
from clients.samples import sample_events
from clients.verify import TrustedLog, verify_receipt
from ledger.clock import to_micros
from ledger.dsse import sign_envelope
from ledger.errors import AlreadyExists, OutOfRange, PermissionDenied
from ledger.events import EVENT_PAYLOAD_TYPE
from ledger.keys import insurer_key_id
from ledger.merkle import MemoryTree, leaf_hash, verify_consistency, verify_inclusion
from ledger.signing import Ed25519Signer, format_verifier_key
from ledger.storage.append import Appender, PendingEntry, Receipt
from ledger.storage.log_store import LogStore
from ledger.storage.migrate import alembic_config, downgrade, upgrade
from ledger.storage.tables import APPEND_ONLY_TABLES, checkpoints, log_entries, tree_nodes
from tests import clock as test_clock
from tests.builders import tokens
from tests.conftest import licensed_appender, pending

NOW = test_clock.now()
INSURER = "gulf-health"
FIRST = 3
"""Leaf 0 is the genesis entry naming the operator's key, leaves 1 and 2 register INSURER's key
and license it (see the appender fixture): entries, and the checkpoints made so far (the empty
tree's, the genesis's and the onboarding batch's), start from here."""
CHECKPOINTS = 3


def _pending(signer: Ed25519Signer, events: list[object]) -> list[PendingEntry]:
    items = []
    for event in events:
        payload = event.SerializeToString(deterministic=True)  # type: ignore[attr-defined]
        envelope = sign_envelope(
            EVENT_PAYLOAD_TYPE, payload, signer, insurer_key_id(signer.public_key)
        )
        items.append(
            PendingEntry(
                envelope=envelope,
                insurer_id=INSURER,
                event_id=event.event_id,  # type: ignore[attr-defined]
                key_id=insurer_key_id(signer.public_key),
            )
        )
    return items


@pytest.fixture
def appender(
    engine: Engine,
    log_signer: Ed25519Signer,
    insurer_signer: Ed25519Signer,
    operator_signer: Ed25519Signer,
) -> Appender:
    """An appender on a log whose first entry licenses INSURER (whose key is registered)."""
    return licensed_appender(engine, log_signer, operator_signer, INSURER, insurer_signer, NOW)


def _count(engine: Engine, table: object) -> int:
    with engine.connect() as connection:
        return int(connection.execute(select(func.count()).select_from(table)).scalar_one())  # type: ignore[arg-type]


def test_migrations_match_the_table_definitions(engine: Engine) -> None:
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    import payments.tables
    from ledger.storage.tables import metadata

    # The ledger's branch and the payments' own (payments/migrations) together make the schema.
    with engine.connect() as connection:
        differences = compare_metadata(
            MigrationContext.configure(connection),
            [metadata, payments.tables.metadata],  # type: ignore[arg-type]
        )
    assert differences == []


def test_migrations_downgrade_and_upgrade_again(engine: Engine) -> None:
    downgrade(engine, "base")
    with engine.connect() as connection:
        assert "log_entries" not in engine.dialect.get_table_names(connection)
    upgrade(engine)
    with engine.connect() as connection:
        assert "log_entries" in engine.dialect.get_table_names(connection)
    assert alembic_config().get_main_option("script_location")


@pytest.mark.parametrize("table", APPEND_ONLY_TABLES)
@pytest.mark.parametrize(
    "statement", ["UPDATE {table} SET {column} = {column}", "DELETE FROM {table}"]
)
def test_append_only_tables_refuse_update_and_delete(
    appender: Appender, engine: Engine, insurer_signer: Ed25519Signer, table: str, statement: str
) -> None:
    appender.append_batch(
        _pending(insurer_signer, list(sample_events(3, INSURER, NOW, tokens=tokens))), NOW
    )
    column = {"log_entries": "event_id", "tree_nodes": "hash", "checkpoints": "note_bytes"}[table]
    before = _count(
        engine,
        {"log_entries": log_entries, "tree_nodes": tree_nodes, "checkpoints": checkpoints}[table],
    )
    with pytest.raises(DBAPIError, match="append-only"), engine.begin() as connection:
        connection.execute(text(statement.format(table=table, column=column)))
    after = _count(
        engine,
        {"log_entries": log_entries, "tree_nodes": tree_nodes, "checkpoints": checkpoints}[table],
    )
    assert after == before > 0


@pytest.mark.postgres
def test_postgres_refuses_truncate(appender: Appender, engine: Engine) -> None:
    if engine.dialect.name != "postgresql":
        pytest.skip("TRUNCATE exists only on PostgreSQL")
    with pytest.raises(DBAPIError, match="append-only"), engine.begin() as connection:
        connection.execute(text("TRUNCATE checkpoints CASCADE"))
    assert _count(engine, checkpoints) == CHECKPOINTS


def test_initialize_signs_the_empty_tree_once(engine: Engine, log_signer: Ed25519Signer) -> None:
    appender = Appender(engine, log_signer, log_signer.name)
    appender.initialize(NOW)
    appender.initialize(NOW)
    assert _count(engine, checkpoints) == 1
    assert LogStore(engine).latest_checkpoint().tree_size == 0


def test_a_batch_is_one_checkpoint_and_every_receipt_verifies(
    appender: Appender, engine: Engine, log_signer: Ed25519Signer, insurer_signer: Ed25519Signer
) -> None:
    items = _pending(insurer_signer, list(sample_events(37, INSURER, NOW, tokens=tokens)))
    outcomes = appender.append_batch(items, NOW)
    trusted = TrustedLog.from_verifier_key(format_verifier_key(log_signer))
    from ledger.rpc.ledger_servicer import receipt_to_proto

    for item, outcome in zip(items, outcomes, strict=True):
        assert isinstance(outcome, Receipt)
        verified = verify_receipt(receipt_to_proto(outcome), trusted, item.envelope.payload)
        assert verified.checkpoint.size == FIRST + 37
    assert [o.leaf_index for o in outcomes if isinstance(o, Receipt)] == list(
        range(FIRST, FIRST + 37)
    )
    assert _count(engine, checkpoints) == CHECKPOINTS + 1
    assert _count(engine, log_entries) == FIRST + 37


def test_proofs_from_stored_nodes_match_an_in_memory_tree(
    appender: Appender, engine: Engine, insurer_signer: Ed25519Signer
) -> None:
    events = list(sample_events(70, INSURER, NOW, tokens=tokens))
    memory = MemoryTree()
    _, onboarding = LogStore(engine).entries(0, FIRST)
    for entry in onboarding:
        memory.append_leaf_hash(leaf_hash(entry))
    for start, end in [(0, 1), (1, 2), (2, 7), (7, 8), (8, 33), (33, 64), (64, 70)]:
        for outcome in appender.append_batch(_pending(insurer_signer, events[start:end]), NOW):
            assert isinstance(outcome, Receipt)
            assert memory.append_leaf_hash(outcome.leaf_hash) == outcome.leaf_index
    store = LogStore(engine)
    for tree_size in [1, 2, 7, 8, 33, 64, 70]:
        for leaf_index in range(0, tree_size, 3):
            size, proof = store.inclusion_proof(leaf_index, tree_size)
            assert proof == memory.inclusion_proof(leaf_index, tree_size)
            verify_inclusion(
                leaf_index, size, memory.get_leaf_hash(leaf_index), proof, memory.root(size)
            )
        for older in range(1, tree_size + 1, 5):
            _, proof = store.consistency_proof(older, tree_size)
            verify_consistency(older, tree_size, proof, memory.root(older), memory.root(tree_size))


def test_resubmitting_the_same_event_returns_its_first_receipt(
    appender: Appender, engine: Engine, insurer_signer: Ed25519Signer
) -> None:
    events = list(sample_events(5, INSURER, NOW, tokens=tokens))
    first = appender.append_batch(_pending(insurer_signer, events), NOW)
    appender.append_batch(
        _pending(
            insurer_signer, list(sample_events(4, INSURER, NOW, first_number=50, tokens=tokens))
        ),
        NOW,
    )
    again = appender.append_batch(_pending(insurer_signer, events[2:3]), NOW)
    original, repeated = first[2], again[0]
    assert isinstance(original, Receipt) and isinstance(repeated, Receipt)
    assert repeated.duplicate and not original.duplicate
    assert (repeated.leaf_index, repeated.checkpoint, repeated.inclusion_proof) == (
        original.leaf_index,
        original.checkpoint,
        original.inclusion_proof,
    )
    assert _count(engine, log_entries) == FIRST + 9
    assert _count(engine, checkpoints) == CHECKPOINTS + 2  # none for the duplicate-only batch


def test_the_same_event_twice_in_one_batch_is_written_once(
    appender: Appender, engine: Engine, insurer_signer: Ed25519Signer
) -> None:
    event = next(sample_events(1, INSURER, NOW, tokens=tokens))
    outcomes = appender.append_batch(_pending(insurer_signer, [event, event]), NOW)
    assert isinstance(outcomes[0], Receipt) and isinstance(outcomes[1], Receipt)
    assert outcomes[1].duplicate and outcomes[1].leaf_index == outcomes[0].leaf_index == FIRST
    assert _count(engine, log_entries) == FIRST + 1


@pytest.mark.parametrize("same_batch", [False, True])
def test_an_event_id_reused_with_other_bytes_is_refused_naming_the_field(
    appender: Appender, engine: Engine, insurer_signer: Ed25519Signer, same_batch: bool
) -> None:
    event = next(sample_events(1, INSURER, NOW, tokens=tokens))
    changed = type(event)()
    changed.CopyFrom(event)
    changed.policy_issued.members[1].relationship = 4
    if same_batch:
        outcomes = appender.append_batch(_pending(insurer_signer, [event, changed]), NOW)
        conflict = outcomes[1]
    else:
        appender.append_batch(_pending(insurer_signer, [event]), NOW)
        conflict = appender.append_batch(_pending(insurer_signer, [changed]), NOW)[0]
    assert isinstance(conflict, AlreadyExists)
    assert (
        conflict.details.field_violations[0].field == "event.policy_issued.members[1].relationship"
    )
    assert _count(engine, log_entries) == FIRST + 1
    assert _count(engine, checkpoints) == CHECKPOINTS + 1


def test_a_key_revoked_earlier_in_the_batch_is_refused_and_nothing_is_written(
    appender: Appender,
    engine: Engine,
    insurer_signer: Ed25519Signer,
    operator_signer: Ed25519Signer,
) -> None:
    # Admitted while the key was valid; the revocation commits first, in the same batch.
    items = _pending(insurer_signer, list(sample_events(3, INSURER, NOW, tokens=tokens)))
    revocation = key_revoked(
        insurer_key_id(insurer_signer.public_key), reason="compromised", occurred_at=NOW
    )
    outcomes = appender.append_batch([pending(operator_signer, revocation), *items], NOW)
    assert isinstance(outcomes[0], Receipt)
    assert all(isinstance(outcome, PermissionDenied) for outcome in outcomes[1:])
    assert outcomes[1].reason == "KEY_REVOKED"  # type: ignore[union-attr]
    assert _count(engine, log_entries) == FIRST + 1
    assert _count(engine, checkpoints) == CHECKPOINTS + 1


def test_stored_entry_bytes_are_exactly_what_was_hashed(
    appender: Appender, engine: Engine, insurer_signer: Ed25519Signer
) -> None:
    items = _pending(insurer_signer, list(sample_events(4, INSURER, NOW, tokens=tokens)))
    outcomes = appender.append_batch(items, NOW)
    _, entries = LogStore(engine).entries(FIRST, FIRST + 10)
    from ledger.entry import decode_entry

    for item, outcome, data in zip(items, outcomes, entries, strict=True):
        assert isinstance(outcome, Receipt)
        assert leaf_hash(data) == outcome.leaf_hash
        assert decode_entry(data).envelope.payload == item.envelope.payload
        assert decode_entry(data).integrated_time == NOW.replace(microsecond=NOW.microsecond)
    assert to_micros(NOW) > 0


def test_a_tampered_node_is_detected_before_the_next_append(
    appender: Appender, engine: Engine, insurer_signer: Ed25519Signer
) -> None:
    if engine.dialect.name != "sqlite":
        pytest.skip("tampering below the triggers is shown on SQLite")
    appender.append_batch(
        _pending(insurer_signer, list(sample_events(4, INSURER, NOW, tokens=tokens))), NOW
    )
    with engine.begin() as connection:
        connection.execute(text("DROP TRIGGER tree_nodes_append_only_update"))
        connection.execute(text("UPDATE tree_nodes SET hash = zeroblob(32)"))
    from ledger.errors import InvariantViolation

    with pytest.raises(InvariantViolation, match="do not give the signed root"):
        appender.append_batch(
            _pending(
                insurer_signer, list(sample_events(2, INSURER, NOW, first_number=9, tokens=tokens))
            ),
            NOW,
        )
    assert _count(engine, log_entries) == FIRST + 4


def test_a_batchs_duplicate_lookup_searches_the_unique_index_rather_than_scanning_the_log(
    tmp_path: object,
) -> None:
    """Every batch asks which of its event ids are stored: SQLite must answer from the
    (insurer_id, event_id) index, not by reading the whole log (a row-value IN list did)."""
    from pathlib import Path

    from ledger.storage.append import _SELECT_STORED_EVENTS
    from ledger.storage.db import create_ledger_engine, sqlite_url

    engine = create_ledger_engine(sqlite_url(Path(str(tmp_path)) / "ledger.db"))
    upgrade(engine)
    statement = _SELECT_STORED_EVENTS.params(insurer_id=INSURER, event_ids=["e-1", "e-2", "e-3"])
    compiled = statement.compile(engine, compile_kwargs={"literal_binds": True})
    with engine.connect() as connection:
        plan = " ".join(
            str(row[-1]) for row in connection.execute(text(f"EXPLAIN QUERY PLAN {compiled}"))
        )
    engine.dispose()
    assert "SEARCH log_entries USING INDEX" in plan, plan
    assert "SCAN log_entries" not in plan, plan


@contextlib.contextmanager
def _tree_node_reads(engine: Engine) -> Iterator[list[str]]:
    """The SELECTs of tree nodes run on ``engine`` inside the block."""
    statements: list[str] = []

    def record(_connection: object, _cursor: object, statement: str, *_: object) -> None:
        if statement.lstrip().upper().startswith("SELECT") and "tree_nodes" in statement:
            statements.append(statement)

    engine_events.listen(engine, "before_cursor_execute", record)
    try:
        yield statements
    finally:
        engine_events.remove(engine, "before_cursor_execute", record)


def test_receipts_built_in_memory_equal_the_proofs_from_stored_nodes(
    appender: Appender, engine: Engine, insurer_signer: Ed25519Signer
) -> None:
    """A batch's receipts take their proofs from the right edge read at its start and the
    nodes it made, with no read of stored nodes beyond that right edge; each equals the
    proof the store serves at the batch's tree size, for batches of every shape of start
    and size (powers of two, one past, odd)."""
    events = list(sample_events(150, INSURER, NOW, tokens=tokens))
    store = LogStore(engine)
    bounds = [0, 1, 2, 5, 13, 16, 17, 45, 61, 62, 100, 129, 150]
    for start, end in itertools.pairwise(bounds):
        with _tree_node_reads(engine) as reads:
            outcomes = appender.append_batch(_pending(insurer_signer, events[start:end]), NOW)
        assert len(reads) == 1, reads  # the right edge, checked against the signed root
        tree_size = FIRST + end
        for outcome in outcomes:
            assert isinstance(outcome, Receipt) and not outcome.duplicate
            assert outcome.tree_size == tree_size
            _, proof = store.inclusion_proof(outcome.leaf_index, tree_size)
            assert list(outcome.inclusion_proof) == proof
        assert store.checkpoint_at(tree_size) is not None
        assert outcomes[-1].checkpoint == store.checkpoint_at(tree_size).note_bytes  # type: ignore[union-attr]
    with engine.connect() as connection:
        created = connection.execute(
            select(checkpoints.c.created_at_us).where(checkpoints.c.tree_size == FIRST + 150)
        ).scalar_one()
    assert created == to_micros(NOW)


def test_receipts_read_stored_nodes_for_any_node_not_in_memory(
    appender: Appender,
    engine: Engine,
    insurer_signer: Ed25519Signer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Should the nodes in memory lack one (they do not: see _Written), the receipts read it
    from storage and are the same."""
    import ledger.storage.append as append_module

    events = list(sample_events(20, INSURER, NOW, tokens=tokens))
    appender.append_batch(_pending(insurer_signer, events[:6]), NOW)
    monkeypatch.setattr(append_module, "_edge_nodes", lambda tree: {})
    with _tree_node_reads(engine) as reads:
        outcomes = appender.append_batch(_pending(insurer_signer, events[6:20]), NOW)
    assert len(reads) == 2, reads  # the right edge, then the old edge's nodes for the proofs
    store = LogStore(engine)
    for outcome in outcomes:
        assert isinstance(outcome, Receipt)
        _, proof = store.inclusion_proof(outcome.leaf_index, FIRST + 20)
        assert list(outcome.inclusion_proof) == proof


def test_an_entry_without_its_checkpoint_is_detected_before_the_next_append(
    appender: Appender, engine: Engine, insurer_signer: Ed25519Signer
) -> None:
    from ledger.errors import InvariantViolation

    with engine.begin() as connection:
        connection.execute(
            log_entries.insert().values(
                leaf_index=FIRST,
                insurer_id=INSURER,
                event_id="stray",
                leaf_hash=b"\x01" * 32,
                payload_sha256=b"\x02" * 32,
                entry_bytes=b"stray",
            )
        )
    with pytest.raises(InvariantViolation, match="entries and checkpoint disagree"):
        appender.append_batch(
            _pending(insurer_signer, list(sample_events(2, INSURER, NOW, tokens=tokens))), NOW
        )
    assert _count(engine, log_entries) == FIRST + 1
    assert _count(engine, checkpoints) == CHECKPOINTS


def test_an_entry_with_its_proof_on_one_connection_equals_the_three_reads(
    appender: Appender, engine: Engine, insurer_signer: Ed25519Signer
) -> None:
    """LogStore.entry_with_proof (a renewal's receipt) answers what latest_checkpoint, entries
    and inclusion_proof answer, and refuses a leaf beyond the newest checkpoint alike."""
    events = list(sample_events(9, INSURER, NOW, tokens=tokens))
    for start, end in [(0, 4), (4, 9)]:
        appender.append_batch(_pending(insurer_signer, events[start:end]), NOW)
    store = LogStore(engine)
    head = store.latest_checkpoint()
    for leaf_index in range(head.tree_size):
        _, [entry] = store.entries(leaf_index, leaf_index + 1)
        _, proof = store.inclusion_proof(leaf_index, head.tree_size)
        assert store.entry_with_proof(leaf_index) == (head, entry, proof)
    with pytest.raises(OutOfRange) as raised:
        store.entry_with_proof(head.tree_size)
    assert raised.value.reason == "INDEX_BEYOND_SIZE"
