"""Residence permits and the obligations to insure they create (issue 10, task A;
docs/compliance.md "Obligations").

Both tables are projections of PermitIssued / PermitRenewed / PermitEnded entries, so
``policy-ledger rebuild`` recomputes and compares them.

Revision ID: 0013
Revises: 0012
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "permits",
        sa.Column("authority_id", sa.String(64), nullable=False),
        sa.Column("permit_id", sa.String(128), nullable=False),
        sa.Column("holder_token", sa.String(64), nullable=False),
        sa.Column("sponsor_key", sa.String(256), nullable=False),
        sa.Column("entry_date", sa.Date, nullable=False),
        sa.Column("start_date", sa.Date, nullable=False),
        sa.Column("end_date", sa.Date, nullable=False),
        sa.Column("ended_from", sa.Date, nullable=True),
        sa.Column("end_reason", sa.String(32), nullable=True),
        sa.Column("leaf_indexes", sa.String(2000), nullable=False),
        sa.PrimaryKeyConstraint("authority_id", "permit_id", name="pk_permits"),
    )
    op.create_table(
        "obligations",
        sa.Column("authority_id", sa.String(64), nullable=False),
        sa.Column("permit_id", sa.String(128), nullable=False),
        sa.Column("person_token", sa.String(64), nullable=False),
        sa.Column("relationship", sa.String(32), nullable=False),
        sa.Column("obligated_from", sa.Date, nullable=False),
        sa.Column("obligated_until", sa.Date, nullable=False),
        sa.Column("responsible_key", sa.String(256), nullable=False),
        sa.Column("leaf_indexes", sa.String(2000), nullable=False),
        sa.PrimaryKeyConstraint("authority_id", "permit_id", "person_token", name="pk_obligations"),
    )
    op.create_index(
        "ix_obligations_responsible_key", "obligations", ["responsible_key", "person_token"]
    )


def downgrade() -> None:
    op.drop_index("ix_obligations_responsible_key", table_name="obligations")
    op.drop_table("obligations")
    op.drop_table("permits")
