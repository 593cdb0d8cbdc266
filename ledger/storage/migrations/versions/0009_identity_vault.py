"""The identity vault: person tokens and the identifiers they stand for.

Revision ID: 0009
Revises: 0008
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # A token's row is never deleted (erasure only dates it), so that the log's history of a
    # token stays replayable; the identifier lives in person_identities, which erasure deletes.
    op.create_table(
        "person_tokens",
        sa.Column("token", sa.String(40), primary_key=True),
        sa.Column("country", sa.String(2), nullable=False),
        sa.Column("issued_at_us", sa.BigInteger, nullable=False),
        sa.Column("erased_at_us", sa.BigInteger, nullable=True),
    )
    op.create_table(
        "person_identities",
        sa.Column("token", sa.String(40), primary_key=True),
        sa.Column("id_type", sa.String(20), nullable=False),
        sa.Column("country", sa.String(2), nullable=False),
        sa.Column("value", sa.String(32), nullable=False),
    )
    op.create_index(
        "person_identities_by_identifier",
        "person_identities",
        ["country", "id_type", "value"],
        unique=True,
    )


def downgrade() -> None:
    op.drop_index("person_identities_by_identifier", table_name="person_identities")
    op.drop_table("person_identities")
    op.drop_table("person_tokens")
