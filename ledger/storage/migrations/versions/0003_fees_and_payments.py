"""Renewal fees: the fee_refunds projection.

The payments' own tables (quotes, payments, refunds, ...) were created here until they moved to
the payments' own Alembic branch (``payments/migrations/versions``, revision payments_0001),
which keeps them on a database migrated before the move.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "fee_refunds",
        sa.Column("leaf_index", sa.BigInteger, autoincrement=False),
        sa.Column("insurer_id", sa.String(64), nullable=False),
        sa.Column("policy_id", sa.String(128), nullable=False),
        sa.Column("refund_reference", sa.String(128), nullable=False),
        sa.Column("currency_code", sa.String(3), nullable=False),
        sa.Column("amount_minor", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("leaf_index", name="pk_fee_refunds"),
        sa.UniqueConstraint(
            "insurer_id", "refund_reference", name="uq_fee_refunds_insurer_reference"
        ),
    )
    op.create_index("ix_fee_refunds_insurer_id_policy", "fee_refunds", ["insurer_id", "policy_id"])


def downgrade() -> None:
    op.drop_index("ix_fee_refunds_insurer_id_policy", table_name="fee_refunds")
    op.drop_table("fee_refunds")
