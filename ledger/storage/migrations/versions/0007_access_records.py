"""Access records: who read whose data, when, why, at which tree size (append-only).

Revision ID: 0007
Revises: 0006
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

_TABLES = ("access_records", "access_record_people")


def upgrade() -> None:
    op.create_table(
        "access_records",
        sa.Column("record_id", sa.String(32), primary_key=True),
        sa.Column("recorded_at_us", sa.BigInteger, nullable=False),
        sa.Column("caller", sa.String(300), nullable=False),
        sa.Column("method", sa.String(200), nullable=False),
        sa.Column("purpose", sa.String(40), nullable=False),
        sa.Column("subject", sa.String(300), nullable=False),
        sa.Column("tree_size", sa.BigInteger, nullable=False),
    )
    op.create_index("access_records_by_caller", "access_records", ["caller", "recorded_at_us"])
    op.create_table(
        "access_record_people",
        sa.Column("record_id", sa.String(32), nullable=False),
        sa.Column("person_key", sa.String(200), nullable=False),
        sa.PrimaryKeyConstraint("record_id", "person_key"),
    )
    op.create_index("access_record_people_by_person", "access_record_people", ["person_key"])
    for table in _TABLES:
        _create_append_only_triggers(table)


def downgrade() -> None:
    for table in _TABLES:
        _drop_append_only_triggers(table)
    op.drop_table("access_record_people")
    op.drop_table("access_records")


def _create_append_only_triggers(table: str) -> None:
    # As the log's tables (0001): the database itself refuses to change or drop a record.
    if op.get_bind().dialect.name == "sqlite":
        for action in ("UPDATE", "DELETE"):
            op.execute(
                f"CREATE TRIGGER {table}_append_only_{action.lower()} BEFORE {action} ON {table} "
                f"BEGIN SELECT RAISE(ABORT, '{table} is append-only: {action} refused'); END"
            )
        return
    # ledger_refuse_change() is the log's own trigger function (0001).
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
