"""Initial schema: log entries, tree nodes, checkpoints (append-only) and the insurer key registry.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

APPEND_ONLY_TABLES = ("log_entries", "tree_nodes", "checkpoints")


def upgrade() -> None:
    op.create_table(
        "log_entries",
        sa.Column("leaf_index", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("insurer_id", sa.String(64), nullable=False),
        sa.Column("event_id", sa.String(128), nullable=False),
        sa.Column("leaf_hash", sa.LargeBinary(32), nullable=False),
        sa.Column("payload_sha256", sa.LargeBinary(32), nullable=False),
        sa.Column("entry_bytes", sa.LargeBinary, nullable=False),
        sa.PrimaryKeyConstraint("leaf_index", name="pk_log_entries"),
        sa.UniqueConstraint("insurer_id", "event_id", name="uq_log_entries_insurer_event"),
    )
    op.create_index("ix_log_entries_leaf_hash", "log_entries", ["leaf_hash"], unique=True)
    op.create_table(
        "tree_nodes",
        sa.Column("node_key", sa.BigInteger, autoincrement=False),
        sa.Column("hash", sa.LargeBinary(32), nullable=False),
        sa.PrimaryKeyConstraint("node_key", name="pk_tree_nodes"),
    )
    op.create_table(
        "checkpoints",
        sa.Column("tree_size", sa.BigInteger, autoincrement=False),
        sa.Column("root_hash", sa.LargeBinary(32), nullable=False),
        sa.Column("note_bytes", sa.LargeBinary, nullable=False),
        sa.Column("created_at_us", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("tree_size", name="pk_checkpoints"),
    )
    op.create_table(
        "insurer_keys",
        sa.Column("key_id", sa.String(64)),
        sa.Column("insurer_id", sa.String(64), nullable=False),
        sa.Column("public_key", sa.LargeBinary(32), nullable=False),
        sa.Column("valid_from_us", sa.BigInteger, nullable=False),
        sa.Column("valid_until_us", sa.BigInteger, nullable=True),
        sa.Column("revoked_at_us", sa.BigInteger, nullable=True),
        sa.Column("registered_at_us", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("key_id", name="pk_insurer_keys"),
    )
    op.create_index("ix_insurer_keys_insurer_id", "insurer_keys", ["insurer_id"])
    for table in APPEND_ONLY_TABLES:
        _create_append_only_triggers(table)


def downgrade() -> None:
    for table in APPEND_ONLY_TABLES:
        _drop_append_only_triggers(table)
    op.drop_table("insurer_keys")
    op.drop_table("checkpoints")
    op.drop_table("tree_nodes")
    op.drop_table("log_entries")


def _create_append_only_triggers(table: str) -> None:
    """Refuse UPDATE and DELETE (and, on PostgreSQL, TRUNCATE) in the database itself."""
    if op.get_bind().dialect.name == "sqlite":
        for action in ("UPDATE", "DELETE"):
            op.execute(
                f"CREATE TRIGGER {table}_append_only_{action.lower()} BEFORE {action} ON {table} "
                f"BEGIN SELECT RAISE(ABORT, '{table} is append-only: {action} refused'); END"
            )
        return
    op.execute(
        "CREATE OR REPLACE FUNCTION ledger_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$ "
        "BEGIN RAISE EXCEPTION '% is append-only: % refused', TG_TABLE_NAME, TG_OP "
        "USING ERRCODE = 'restrict_violation'; END $$"
    )
    op.execute(
        f"CREATE TRIGGER {table}_append_only BEFORE UPDATE OR DELETE ON {table} "
        "FOR EACH ROW EXECUTE FUNCTION ledger_refuse_change()"
    )
    op.execute(
        f"CREATE TRIGGER {table}_no_truncate BEFORE TRUNCATE ON {table} "
        "FOR EACH STATEMENT EXECUTE FUNCTION ledger_refuse_change()"
    )


def _drop_append_only_triggers(table: str) -> None:
    if op.get_bind().dialect.name == "sqlite":
        for action in ("update", "delete"):
            op.execute(f"DROP TRIGGER IF EXISTS {table}_append_only_{action}")
        return
    op.execute(f"DROP TRIGGER IF EXISTS {table}_append_only ON {table}")
    op.execute(f"DROP TRIGGER IF EXISTS {table}_no_truncate ON {table}")
