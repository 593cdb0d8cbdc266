"""Enrolment codes: issued codes (hash only), wrong tries, redemptions (append-only).

Revision ID: 0008
Revises: 0007
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

_TABLES = ("enrolment_codes", "enrolment_wrong_codes", "enrolment_redemptions")


def upgrade() -> None:
    op.create_table(
        "enrolment_codes",
        sa.Column("code_id", sa.String(32), primary_key=True),
        sa.Column("role", sa.String(20), nullable=False),
        sa.Column("name", sa.String(64), nullable=False),
        sa.Column("code_sha256", sa.String(64), nullable=False),
        sa.Column("issued_at_us", sa.BigInteger, nullable=False),
        sa.Column("expires_at_us", sa.BigInteger, nullable=False),
    )
    op.create_index("enrolment_codes_by_party", "enrolment_codes", ["role", "name", "issued_at_us"])
    op.create_table(
        "enrolment_wrong_codes",
        sa.Column("attempt_id", sa.String(32), primary_key=True),
        sa.Column("code_id", sa.String(32), nullable=False),
        sa.Column("attempted_at_us", sa.BigInteger, nullable=False),
    )
    op.create_index("enrolment_wrong_codes_by_code", "enrolment_wrong_codes", ["code_id"])
    op.create_table(
        "enrolment_redemptions",
        sa.Column("code_id", sa.String(32), primary_key=True),
        sa.Column("redeemed_at_us", sa.BigInteger, nullable=False),
        sa.Column("certificate_serial", sa.String(64), nullable=False),
    )
    for table in _TABLES:
        _create_append_only_triggers(table)


def downgrade() -> None:
    for table in _TABLES:
        _drop_append_only_triggers(table)
    op.drop_table("enrolment_redemptions")
    op.drop_table("enrolment_wrong_codes")
    op.drop_table("enrolment_codes")


def _create_append_only_triggers(table: str) -> None:
    # As the log's tables (0001): a used code cannot be made unused, a wrong try not forgotten.
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
