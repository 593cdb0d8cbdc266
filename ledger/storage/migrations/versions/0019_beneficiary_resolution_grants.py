"""The operator's grants of more people to resolve, per person (docs/privacy.md, "A person
asking for tokens"): each row adds ``additional`` to one person's bound
(``limits.beneficiary_people_resolved_max``), with who granted it, when and why. Append-only,
as the access records (0007): a grant is never changed or deleted. A database before this
revision has no grants: every person's bound is the base one.

Revision ID: 0019
Revises: 0018
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0019"
down_revision = "0018"
branch_labels = None
depends_on = None

_TABLE = "beneficiary_resolution_grants"


def upgrade() -> None:
    op.create_table(
        _TABLE,
        sa.Column("beneficiary_token", sa.String(40), nullable=False),
        sa.Column("grant_number", sa.Integer, nullable=False, autoincrement=False),
        sa.Column("additional", sa.Integer, nullable=False),
        sa.Column("reason", sa.String(256), nullable=False),
        sa.Column("granted_by", sa.String(300), nullable=False),
        sa.Column("granted_at_us", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint(
            "beneficiary_token", "grant_number", name="pk_beneficiary_resolution_grants"
        ),
    )
    _create_append_only_triggers(_TABLE)


def downgrade() -> None:
    _drop_append_only_triggers(_TABLE)
    op.drop_table(_TABLE)


def _create_append_only_triggers(table: str) -> None:
    # As the access records' (0007): the database itself refuses to change or drop a grant.
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
