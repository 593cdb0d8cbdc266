"""Insurance cards (task E, docs/cards.md): one row per card number ever issued, its status.

Revision ID: 0015
Revises: 0014
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0015"
down_revision = "0014"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "cards",
        sa.Column("card_number", sa.String(16), nullable=False),
        sa.Column("insurer_id", sa.String(64), nullable=False),
        sa.Column("person_key", sa.String(64), nullable=False),
        sa.Column("issued_on", sa.Date, nullable=False),
        sa.Column("valid_until", sa.Date, nullable=False),
        sa.Column("issued_leaf", sa.BigInteger, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("status_leaf", sa.BigInteger, nullable=True),
        sa.Column("replaced_by", sa.String(16), nullable=True),
        sa.PrimaryKeyConstraint("card_number", name="pk_cards"),
    )
    op.create_index("ix_cards_person_key", "cards", ["person_key", "insurer_id"])


def downgrade() -> None:
    op.drop_index("ix_cards_person_key", table_name="cards")
    op.drop_table("cards")
