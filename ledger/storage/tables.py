"""The ledger's tables (SQLAlchemy Core). Alembic migrations create them; this module queries them.

``log_entries``, ``tree_nodes`` and ``checkpoints`` are append-only (database triggers refuse
UPDATE and DELETE). ``insurer_keys`` is the operator's key registry and may change (revocation).
Instants are stored as integer microseconds since the Unix epoch, UTC, identical on every engine.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Column,
    Index,
    LargeBinary,
    MetaData,
    String,
    Table,
    UniqueConstraint,
)

__all__ = [
    "APPEND_ONLY_TABLES",
    "checkpoints",
    "insurer_keys",
    "log_entries",
    "metadata",
    "tree_nodes",
]

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_name)s",
        "uq": "uq_%(table_name)s_%(column_0_name)s",
        "pk": "pk_%(table_name)s",
    }
)

log_entries = Table(
    "log_entries",
    metadata,
    Column("leaf_index", BigInteger, primary_key=True, autoincrement=False),
    Column("insurer_id", String(64), nullable=False),
    Column("event_id", String(128), nullable=False),
    Column("leaf_hash", LargeBinary(32), nullable=False),
    Column("payload_sha256", LargeBinary(32), nullable=False),
    Column("entry_bytes", LargeBinary, nullable=False),
    UniqueConstraint("insurer_id", "event_id", name="uq_log_entries_insurer_event"),
    Index("ix_log_entries_leaf_hash", "leaf_hash", unique=True),
)
"""One row per leaf. ``entry_bytes`` is the LedgerEntry exactly as hashed into the leaf."""

tree_nodes = Table(
    "tree_nodes",
    metadata,
    Column("node_key", BigInteger, primary_key=True, autoincrement=False),
    Column("hash", LargeBinary(32), nullable=False),
)
"""Every complete subtree's hash; ``node_key`` = level << 56 | index (see ledger.storage.nodes)."""

checkpoints = Table(
    "checkpoints",
    metadata,
    Column("tree_size", BigInteger, primary_key=True, autoincrement=False),
    Column("root_hash", LargeBinary(32), nullable=False),
    Column("note_bytes", LargeBinary, nullable=False),
    Column("created_at_us", BigInteger, nullable=False),
)
"""One signed checkpoint per committed batch; ``note_bytes`` is the C2SP note as signed."""

insurer_keys = Table(
    "insurer_keys",
    metadata,
    Column("key_id", String(64), primary_key=True),
    Column("insurer_id", String(64), nullable=False, index=True),
    Column("public_key", LargeBinary(32), nullable=False),
    Column("valid_from_us", BigInteger, nullable=False),
    Column("valid_until_us", BigInteger, nullable=True),
    Column("revoked_at_us", BigInteger, nullable=True),
    Column("registered_at_us", BigInteger, nullable=False),
)
"""Insurer Ed25519 keys with validity windows; ``key_id`` is derived from the public key."""

APPEND_ONLY_TABLES = ("log_entries", "tree_nodes", "checkpoints")
