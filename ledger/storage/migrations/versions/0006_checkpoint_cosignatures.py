"""Witness cosignatures of checkpoints (issue 12).

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "checkpoint_cosignatures",
        sa.Column("tree_size", sa.BigInteger, nullable=False, autoincrement=False),
        sa.Column("witness_name", sa.String(256), nullable=False),
        sa.Column("key_id", sa.LargeBinary(4), nullable=False),
        sa.Column("signature_line", sa.LargeBinary, nullable=False),
        sa.Column("received_at_us", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint(
            "tree_size", "witness_name", "key_id", name="pk_checkpoint_cosignatures"
        ),
    )


def downgrade() -> None:
    op.drop_table("checkpoint_cosignatures")
