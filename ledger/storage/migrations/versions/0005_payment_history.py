"""The payments' state history (``payments/tables.py``: ``payment_history``).

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "payment_history",
        sa.Column(
            "history_id",
            sa.BigInteger().with_variant(sa.Integer, "sqlite"),
            autoincrement=True,
        ),
        sa.Column("payment_id", sa.String(64), nullable=False),
        sa.Column("refund_id", sa.String(128), nullable=False),
        sa.Column("from_state", sa.String(16), nullable=False),
        sa.Column("to_state", sa.String(16), nullable=False),
        sa.Column("why", sa.String(500), nullable=False),
        sa.Column("gateway_reference", sa.String(128), nullable=False),
        sa.Column("leaf_index", sa.BigInteger, nullable=True),
        sa.Column("at_us", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("history_id", name="pk_payment_history"),
    )
    op.create_index("ix_payment_history_payment_id", "payment_history", ["payment_id"])


def downgrade() -> None:
    op.drop_index("ix_payment_history_payment_id", table_name="payment_history")
    op.drop_table("payment_history")
