"""Insurer-change notices (InsurerChangeNotified entries with their ledger date) and transfer gaps
(replacement policies that did not start the day after the old one ended): projections.

Revision ID: 0010
Revises: 0009
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "insurer_change_notices",
        sa.Column("leaf_index", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("insurer_id", sa.String(64), nullable=False),
        sa.Column("policy_id", sa.String(128), nullable=False),
        sa.Column("new_insurer_id", sa.String(64), nullable=False),
        sa.Column("notified_on", sa.Date, nullable=False),
    )
    op.create_index(
        "ix_insurer_change_notices_policy",
        "insurer_change_notices",
        ["insurer_id", "policy_id", "notified_on"],
    )
    op.create_table(
        "transfer_gaps",
        sa.Column("leaf_index", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("insurer_id", sa.String(64), nullable=False),
        sa.Column("policy_id", sa.String(128), nullable=False),
        sa.Column("replaced_insurer_id", sa.String(64), nullable=False),
        sa.Column("replaced_policy_id", sa.String(128), nullable=False),
        sa.Column("first_day", sa.Date, nullable=False),
        sa.Column("last_day", sa.Date, nullable=False),
    )
    op.create_index(
        "ix_transfer_gaps_replaced",
        "transfer_gaps",
        ["replaced_insurer_id", "replaced_policy_id"],
    )


def downgrade() -> None:
    op.drop_index("ix_transfer_gaps_replaced", table_name="transfer_gaps")
    op.drop_table("transfer_gaps")
    op.drop_index("ix_insurer_change_notices_policy", table_name="insurer_change_notices")
    op.drop_table("insurer_change_notices")
