"""Person attributes in the identity vault: a birth date per identity (no longer signed into the
log's Member.birth_date; erased with the identifier).

Revision ID: 0011
Revises: 0010
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("person_identities") as batch:
        batch.add_column(sa.Column("birth_date", sa.Date, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("person_identities") as batch:
        batch.drop_column("birth_date")
