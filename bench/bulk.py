"""Bulk-load a large tree straight into SQLite, for the proof-latency figures.

Builds real LedgerEntry bytes, leaf hashes and every complete node with the same CompactRange the
sequencer uses, then signs one checkpoint at the final size. Much faster than submitting a
million events, and the stored layout is identical.
"""

from __future__ import annotations

import datetime as dt
import sqlite3
from pathlib import Path

from ledger.checkpoint import Checkpoint, sign_checkpoint
from ledger.clock import to_micros
from ledger.dsse import Envelope, EnvelopeSignature
from ledger.entry import encode_entry
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
        rows, nodes = [], []
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
