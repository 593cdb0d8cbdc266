"""Bulk-load a large tree straight into SQLite, for the proof-latency figures.

Builds real LedgerEntry bytes, leaf hashes and every complete node with the same CompactRange the
sequencer uses, then signs one checkpoint at the final size. Much faster than submitting a
million events, and the stored layout is identical.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import sqlite3
from pathlib import Path

from ledger.checkpoint import Checkpoint, sign_checkpoint
from ledger.clock import to_micros
from ledger.dsse import Envelope, EnvelopeSignature
from ledger.entry import encode_entry
from ledger.events import EVENT_PAYLOAD_TYPE
from ledger.identifiers import example_iqama
from ledger.identity.tokens import new_person_token
from ledger.merkle import CompactRange, leaf_hash
from ledger.signing import Ed25519Signer
from ledger.storage.db import create_ledger_engine, sqlite_url
from ledger.storage.migrate import upgrade
from ledger.storage.nodes import node_key

_CHUNK = 50_000


def bulk_load(database: Path, signer: Ed25519Signer, entries: int) -> None:
    """Create ``database`` holding a tree of ``entries`` synthetic entries and its checkpoint."""
    engine = create_ledger_engine(sqlite_url(database))
    upgrade(engine)
    engine.dispose()
    now = dt.datetime.now(dt.UTC)
    envelope = Envelope(
        "application/vnd.policy-ledger.event.v1+protobuf",
        b"p" * 200,
        (EnvelopeSignature("ed25519:bench", b"s" * 64),),
    )
    tree = CompactRange.empty()
    connection = sqlite3.connect(database, isolation_level=None)
    connection.execute("PRAGMA journal_mode=WAL")
    connection.execute("PRAGMA synchronous=OFF")
    for start in range(0, entries, _CHUNK):
        rows = []
        nodes: list[tuple[int, bytes]] = []  # (node key, hash)
        for index in range(start, min(entries, start + _CHUNK)):
            data = encode_entry(index, now, envelope)
            digest = leaf_hash(data)
            nodes.extend((node_key(node), value) for node, value in tree.append(digest))
            rows.append((index, "bench", f"e{index}", digest, digest, data))
        connection.execute("BEGIN")
        connection.executemany(
            "INSERT INTO log_entries (leaf_index, insurer_id, event_id, leaf_hash, payload_sha256, "
            "entry_bytes) VALUES (?, ?, ?, ?, ?, ?)",
            rows,
        )
        connection.executemany("INSERT INTO tree_nodes (node_key, hash) VALUES (?, ?)", nodes)
        connection.execute("COMMIT")
    root = tree.root()
    note = sign_checkpoint(Checkpoint(signer.name, entries, root), signer)
    connection.execute(
        "INSERT INTO checkpoints (tree_size, root_hash, note_bytes, created_at_us) "
        "VALUES (?, ?, ?, ?)",
        (entries, root, note, to_micros(now)),
    )
    connection.close()


def household_members(number: int) -> list[str]:
    """The identifiers (``COUNTRY:TYPE:VALUE``) of bulk household ``number``: sponsor, spouse,
    child. The projections name them by the tokens :func:`bulk_load_policies` gives them."""
    return [f"SA:RESIDENCE_ID:{example_iqama(number * 3 + offset)}" for offset in range(3)]


def bulk_load_policies(
    database: Path, policies_count: int, insurer_id: str = "bench-insurer"
) -> None:
    """Add ``policies_count`` household policies (3 members each) straight into the projections.

    Rows are what the projector writes for a PolicyIssued event, people by person token, with
    the identity vault's rows of each member; they are not backed by log entries (the figure
    measured is the household check's read path, not the append path).
    """
    start, end = dt.date(2026, 1, 1), dt.date(2026, 12, 31)
    connection = sqlite3.connect(database, isolation_level=None)
    connection.execute("PRAGMA journal_mode=WAL")
    connection.execute("PRAGMA synchronous=OFF")
    connection.execute(
        "INSERT INTO insurers (insurer_id, name, licence_number, status, licensed_from, "
        "suspended_from, leaf_index) VALUES (?, 'Bench', 'B-1', 'licensed', '2020-01-01', NULL, 0)",
        (insurer_id,),
    )
    relationships = ("self", "spouse", "child")
    for first in range(0, policies_count, _CHUNK):
        policy_rows, token_rows, identity_rows = [], [], []
        coverage_rows: list[tuple[str, ...]] = []
        for number in range(first, min(policies_count, first + _CHUNK)):
            members = household_members(number)
            keys = [new_person_token() for _ in members]
            for token, member in zip(keys, members, strict=True):
                country, id_type, value = member.split(":", 2)
                token_rows.append((token, country, 0))
                identity_rows.append((token, id_type, country, value))
            policy_id = f"BP{number:08d}"
            policy_rows.append(
                (
                    insurer_id,
                    policy_id,
                    keys[0],
                    f"person:{keys[0]}",
                    "CCHI-BASIC",
                    start.isoformat(),
                    end.isoformat(),
                    "SAR",
                    450_000,
                    number,
                )
            )
            coverage_rows.extend(
                (
                    insurer_id,
                    policy_id,
                    key,
                    start.isoformat(),
                    end.isoformat(),
                    keys[0],
                    relationship,
                    "PERIOD_END",
                    str(number),
                )
                for key, relationship in zip(keys, relationships, strict=True)
            )
        connection.execute("BEGIN")
        connection.executemany(
            "INSERT INTO person_tokens (token, country, issued_at_us) VALUES (?, ?, ?)",
            token_rows,
        )
        connection.executemany(
            "INSERT INTO person_identities (token, id_type, country, value) VALUES (?, ?, ?, ?)",
            identity_rows,
        )
        connection.executemany(
            "INSERT INTO policies (insurer_id, policy_id, sponsor_key, holder_key, plan, "
            "start_date, end_date, currency_code, annual_premium_minor, cancelled_from, "
            "cancel_reason, issued_leaf_index, cancelled_leaf_index) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, NULL, NULL, ?, NULL)",
            policy_rows,
        )
        connection.executemany(
            "INSERT INTO coverages (insurer_id, policy_id, person_key, start_date, end_date, "
            "sponsor_key, relationship, end_reason, leaf_indexes) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            coverage_rows,
        )
        connection.execute("COMMIT")
    connection.execute("ANALYZE")
    connection.close()


def _signed_chunk(args: tuple[str, int, int]) -> list[tuple[int, bytes, bytes, str]]:
    """(index, payload, signature, event id) for entries ``start..end`` (a worker process)."""
    from ledger.dsse import pae
    from ledger.signing import parse_signer_key
    from ledger.v1 import events_pb2

    signer_key, start, end = args
    signer = parse_signer_key(signer_key)
    rows = []
    for index in range(start, end):
        event = events_pb2.Event(event_id=f"bench-{index}", insurer_id="bench-insurer")
        event.occurred_at.seconds = 1_780_000_000
        event.premium_paid.policy_id = f"P{index}"
        payload = event.SerializeToString(deterministic=True)
        rows.append((index, payload, signer.sign(pae(EVENT_PAYLOAD_TYPE, payload)), event.event_id))
    return rows


def _anchor_keys(
    database: Path, log_signer: Ed25519Signer, insurer: Ed25519Signer, now: dt.datetime
) -> tuple[int, CompactRange]:
    """The genesis entry and the insurer's KeyRegistered, through the appender (the audit
    learns every key from the log); returns the next leaf index and the tree so far."""
    from clients.operator import key_registered
    from ledger.dsse import sign_envelope
    from ledger.keys import insurer_key_id
    from ledger.signers import SignerRole
    from ledger.storage.append import Appender, PendingEntry, read_head

    operator = Ed25519Signer.generate("operator")
    engine = create_ledger_engine(sqlite_url(database))
    upgrade(engine)
    appender = Appender(engine, log_signer, log_signer.name, operator.public_key)
    appender.initialize(now)
    event = key_registered(
        "bench-insurer",
        insurer.public_key,
        role=SignerRole.INSURER,
        valid_from=now - dt.timedelta(days=3650),
        occurred_at=now,
    )
    payload = event.SerializeToString(deterministic=True)
    operator_key_id = insurer_key_id(operator.public_key)
    envelope = sign_envelope(EVENT_PAYLOAD_TYPE, payload, operator, operator_key_id)
    item = PendingEntry(envelope, event.insurer_id, event.event_id, operator_key_id, event)
    appender.append_batch([item], now)
    with engine.connect() as connection:
        head, tree = read_head(connection)
    engine.dispose()
    return head.tree_size, tree


def bulk_load_signed(database: Path, log_signer: Ed25519Signer, entries: int) -> Ed25519Signer:
    """Like :func:`bulk_load`, with real DSSE envelopes signed by a registered insurer key (in
    a process pool), for the full-audit figure. Returns the insurer's signer."""
    from concurrent.futures import ProcessPoolExecutor

    from ledger.keys import insurer_key_id
    from ledger.signing import format_signer_key

    insurer = Ed25519Signer.generate("bench-insurer")
    key_id = insurer_key_id(insurer.public_key)
    now = dt.datetime.now(dt.UTC)
    first, tree = _anchor_keys(database, log_signer, insurer, now)
    connection = sqlite3.connect(database, isolation_level=None)
    connection.execute("PRAGMA journal_mode=WAL")
    connection.execute("PRAGMA synchronous=OFF")
    work = [
        (format_signer_key(insurer), start, min(first + entries, start + _CHUNK))
        for start in range(first, first + entries, _CHUNK)
    ]
    with ProcessPoolExecutor() as pool:
        for signed in pool.map(_signed_chunk, work):
            rows = []
            nodes: list[tuple[int, bytes]] = []  # (node key, hash)
            for index, payload, signature, event_id in signed:
                envelope = Envelope(
                    EVENT_PAYLOAD_TYPE, payload, (EnvelopeSignature(key_id, signature),)
                )
                data = encode_entry(index, now, envelope)
                digest = leaf_hash(data)
                nodes.extend((node_key(node), value) for node, value in tree.append(digest))
                rows.append(
                    (
                        index,
                        "bench-insurer",
                        event_id,
                        digest,
                        hashlib.sha256(payload).digest(),
                        data,
                    )
                )
            connection.execute("BEGIN")
            connection.executemany(
                "INSERT INTO log_entries (leaf_index, insurer_id, event_id, leaf_hash, "
                "payload_sha256, entry_bytes) VALUES (?, ?, ?, ?, ?, ?)",
                rows,
            )
            connection.executemany("INSERT INTO tree_nodes (node_key, hash) VALUES (?, ?)", nodes)
            connection.execute("COMMIT")
    note = sign_checkpoint(Checkpoint(log_signer.name, tree.size, tree.root()), log_signer)
    connection.execute(
        "INSERT INTO checkpoints (tree_size, root_hash, note_bytes, created_at_us) "
        "VALUES (?, ?, ?, ?)",
        (tree.size, tree.root(), note, to_micros(now)),
    )
    connection.close()
    return insurer


def copy_into(database: Path, url: str) -> int:
    """Copy every non-empty table of the SQLite ``database`` into the (migrated, empty) database
    at ``url``, parents first; the number of rows copied. The PostgreSQL figures load a
    SQLite file with the loaders above, then copy it (the stored layout is the same)."""
    from sqlalchemy import func, select

    import ledger.storage.vault_store  # noqa: F401  (its tables join the metadata)
    from ledger.storage.tables import metadata

    source = create_ledger_engine(sqlite_url(database))
    target = create_ledger_engine(url)
    upgrade(target)
    copied = 0
    try:
        with source.connect() as reading, target.begin() as writing:
            for table in metadata.sorted_tables:
                if not reading.execute(select(func.count()).select_from(table)).scalar():
                    continue
                rows = reading.execution_options(yield_per=_CHUNK).execute(select(table))
                for chunk in rows.partitions():
                    writing.execute(table.insert(), [row._asdict() for row in chunk])
                    copied += len(chunk)
            if writing.dialect.name == "postgresql":
                writing.exec_driver_sql("ANALYZE")
    finally:
        source.dispose()
        target.dispose()
    return copied
